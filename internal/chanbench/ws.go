package chanbench

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// Every WebSocket message starts with one tag byte: a wire frame follows,
// or a media chunk. One connection carries both, interleaved at message
// granularity, as a WebSocket product would have to.
const (
	tagFrame byte = 'F'
	tagMedia byte = 'M'
)

// wsReadLimit admits the largest frame or media chunk with room to spare.
const wsReadLimit = 2 << 20

// wsTransport is the baseline: WebSocket (github.com/coder/websocket, ISC)
// over TLS 1.3 over TCP, the same mutual TLS and resumption via TLS 1.3
// session tickets. Go's crypto/tls sends no early data, so a resumed TCP
// connection still pays the TCP and TLS round trips.
type wsTransport struct {
	pl     place
	certs  *certs
	st     *serverStats
	ln     net.Listener
	srv    *http.Server
	url    string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	cc    string // TCP congestion control, "" for the system's default
	mu    sync.Mutex
	cache tls.ClientSessionCache
}

func newWS(ctx context.Context, pl place, c *certs, cc string) (*wsTransport, error) {
	var ln net.Listener
	if err := pl.serverDo(func() (err error) {
		lc := net.ListenConfig{Control: congestion(cc)} // accepted sockets inherit it
		ln, err = lc.Listen(ctx, "tcp", net.JoinHostPort(pl.serverIP.String(), "0"))
		return err
	}); err != nil {
		return nil, fmt.Errorf("websocket server socket: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &wsTransport{pl: pl, certs: c, st: newServerStats(), ln: ln, ctx: ctx, cancel: cancel, cc: cc,
		url: "wss://" + ln.Addr().String() + "/channel", cache: tls.NewLRUClientSessionCache(8)}
	w.srv = &http.Server{
		Handler:           http.HandlerFunc(w.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only: the WebSocket upgrade needs it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     log.New(io.Discard, "", 0), // dropped clients are expected
	}
	tln := tls.NewListener(ln, c.serverTLS("http/1.1"))
	w.wg.Add(1)
	go func() { defer w.wg.Done(); _ = w.srv.Serve(tln) }()
	return w, nil
}

func (w *wsTransport) name() string        { return "WebSocket" }
func (w *wsTransport) stats() *serverStats { return w.st }

func (w *wsTransport) forget() {
	w.mu.Lock()
	w.cache = tls.NewLRUClientSessionCache(8)
	w.mu.Unlock()
}

func (w *wsTransport) close() {
	w.cancel()
	_ = w.srv.Close()
	w.wg.Wait()
}

// serveHTTP is the server end of one connection: one reader handles text
// frames and media chunks in arrival order (one TCP byte stream).
func (w *wsTransport) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(rw, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(wsReadLimit)
	ctx := w.ctx
	write := func(m wire.Msg) error {
		b, err := wire.Encode(m)
		if err != nil {
			return err
		}
		return c.Write(ctx, websocket.MessageBinary, append([]byte{tagFrame}, b...))
	}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		start := time.Now()
		if len(data) == 0 {
			return
		}
		switch data[0] {
		case tagMedia:
			w.st.media.Add(int64(len(data) - 1))
		case tagFrame:
			t, payload, err := wire.ReadFrame(bytes.NewReader(data[1:]))
			if err != nil {
				return
			}
			if err := w.st.handle(t, payload, start, write); err != nil {
				return
			}
		default:
			return
		}
	}
}

type wsConn struct {
	c      *websocket.Conn
	resume bool
}

// dial opens TCP (inside the client's namespace), does the TLS handshake
// itself so it can see whether the session resumed, upgrades, and greets.
func (w *wsTransport) dial(ctx context.Context, first wire.Message) (clientConn, error) {
	w.mu.Lock()
	cache := w.cache
	w.mu.Unlock()
	var state tls.ConnectionState
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var raw net.Conn
			if err := w.pl.clientDo(func() (err error) {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: w.pl.clientIP}, Control: congestion(w.cc)}
				raw, err = d.DialContext(ctx, network, addr)
				return err
			}); err != nil {
				return nil, fmt.Errorf("tcp dial: %w", err)
			}
			tc := tls.Client(raw, w.certs.clientTLS("http/1.1", cache))
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			state = tc.ConnectionState()
			return tc, nil
		},
		DisableCompression: true,
	}
	c, _, err := websocket.Dial(ctx, w.url, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: tr}, CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, fmt.Errorf("websocket dial: %w", err)
	}
	c.SetReadLimit(wsReadLimit)
	wc := &wsConn{c: c, resume: state.DidResume}
	if err := wc.send(wire.Hello{Proto: wire.ProtocolVersion, Agent: "rcsgate-chanbench", Backend: "bench"}); err != nil {
		wc.close()
		return nil, fmt.Errorf("send hello: %w", err)
	}
	if err := wc.send(first); err != nil { // without waiting for the Welcome
		wc.close()
		return nil, fmt.Errorf("send first message: %w", err)
	}
	m, err := wc.recvCtx(ctx)
	if err != nil {
		wc.close()
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	if _, ok := m.(wire.Welcome); !ok {
		wc.close()
		return nil, fmt.Errorf("server answered hello with %s", m.FrameType())
	}
	return wc, nil
}

func (c *wsConn) send(m wire.Msg) error {
	b, err := wire.Encode(m)
	if err != nil {
		return err
	}
	// Background: a cancelled context makes coder/websocket close the
	// connection, and a text write is never abandoned halfway.
	return c.c.Write(context.Background(), websocket.MessageBinary, append([]byte{tagFrame}, b...))
}

// settle: TLS over TCP delivers its ticket before the first reply.
func (c *wsConn) settle(context.Context) {}

func (c *wsConn) recv() (wire.Msg, error) { return c.recvCtx(context.Background()) }

var errBadTag = errors.New("websocket message with unknown tag")

func (c *wsConn) recvCtx(ctx context.Context) (wire.Msg, error) {
	for {
		_, data, err := c.c.Read(ctx)
		if err != nil {
			return nil, err
		}
		if len(data) == 0 {
			return nil, errBadTag
		}
		switch data[0] {
		case tagMedia:
			continue
		case tagFrame:
			return wire.ReadMsg(bytes.NewReader(data[1:]))
		default:
			return nil, fmt.Errorf("%w: %d", errBadTag, data[0])
		}
	}
}

func (c *wsConn) resumed() (bool, bool) { return c.resume, false }

// media writes chunks as WebSocket messages on the one connection; text
// frames get their turn between chunks, then queue behind whatever the TCP
// send buffer already holds.
func (c *wsConn) media(ctx context.Context, size int64, chunk int) (int64, error) {
	buf := make([]byte, 1+chunk)
	buf[0] = tagMedia
	var n int64
	for n < size {
		k := int(min(int64(chunk), size-n))
		if err := c.c.Write(ctx, websocket.MessageBinary, buf[:1+k]); err != nil {
			return n, fmt.Errorf("media write: %w", err)
		}
		n += int64(k)
	}
	return n, nil
}

// close drops the connection without a closing handshake, as a client
// losing its network would.
func (c *wsConn) close() { _ = c.c.CloseNow() }

// congestion sets a socket's TCP congestion control (TCP_CONGESTION), so
// the baseline can be run with the kernel default (often BBR, blind to
// random loss) or with CUBIC, the loss-based kind quic-go implements.
func congestion(cc string) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if cc == "" {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("TCP congestion control %q: %w", cc, serr)
		}
		return nil
	}
}

// TCPCongestionDefault is the kernel's default TCP congestion control.
func TCPCongestionDefault() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
