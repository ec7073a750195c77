package gateway

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"

	"github.com/rcsgate/rcsgate/internal/astxn"
)

// The appservice listener takes transactions from the homeserver, and
// anything else that can reach its port (on loopback: every local process;
// behind a misconfigured firewall: the network). It is bounded like any
// other door: a connection cap, header, body and idle timeouts, and a
// request without the homeserver's token is answered 401 at once, before a
// byte of its body is read, and its connection closed.

// appserviceLimits bound the listener; tests shorten them.
type appserviceLimits struct {
	MaxConns          int           // concurrent connections; more wait in the kernel's backlog
	ReadHeaderTimeout time.Duration // request line and headers
	ReadTimeout       time.Duration // the whole request, body included (transactions are ≤ 64 MiB)
	IdleTimeout       time.Duration // between requests on a kept-alive connection
	MaxHeaderBytes    int
}

var defaultAppserviceLimits = appserviceLimits{
	MaxConns:          64,
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       2 * time.Minute,
	IdleTimeout:       90 * time.Second,
	MaxHeaderBytes:    64 << 10,
}

// newAppserviceServer wraps h with the token check and returns the server
// and the capped listener to serve it on. There is no write timeout on
// purpose: a transaction is answered only once handled, and a cut answer
// would make the homeserver send it again while it is still being handled.
func newAppserviceServer(ln net.Listener, h http.Handler, hsToken string, lim appserviceLimits) (*http.Server, net.Listener) {
	srv := &http.Server{
		Handler:           requireHSToken(hsToken, h),
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ConnContext:       astxn.ConnContext,
	}
	return srv, &limitListener{Listener: ln, sem: make(chan struct{}, lim.MaxConns)}
}

// limitListener accepts at most cap(sem) connections at a time; Accept
// waits for one to close (the kernel's backlog holds the rest).
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// openPaths answer without a token: mautrix's liveness probes, which read
// no body.
var openPaths = map[string]bool{"/_matrix/mau/live": true, "/_matrix/mau/ready": true}

// requireHSToken answers a request without the homeserver's token with 401
// and closes the connection straight away: net/http would otherwise read (up
// to 256 KiB of) the unread body before answering and closing, at whatever
// pace the client likes.
func requireHSToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		auth := r.Header.Get("Authorization")
		if subtle.ConstantTimeCompare([]byte(auth), want) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		// Not a byte more from this client: the body is never read.
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
		if !strings.HasPrefix(auth, "Bearer ") {
			mautrix.MMissingToken.WithMessage("Missing access token").Write(w)
			return
		}
		mautrix.MUnknownToken.WithMessage("Invalid access token").Write(w)
	})
}
