package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rcsgate/rcsgate/internal/chanquic"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// ErrPinMismatch is returned when the server's certificate is not the one
// the pairing link pinned.
var ErrPinMismatch = errors.New("server certificate does not match the pairing link's pin")

// quicConfig is the connection tuning shared by pairing and the channel
// (and by the server and the channel benchmark, see internal/chanquic).
func quicConfig() *quic.Config { return chanquic.ClientConfig() }

// pinnedTLS returns a TLS 1.3 client config that trusts exactly the server
// certificate whose SPKI hashes to pin, and sets *mismatch when a server
// presented another one (quic-go does not wrap the callback's error, so the
// flag is how the caller tells a pin failure apart).
func pinnedTLS(alpn string, pin [sha256.Size]byte, mismatch *atomic.Bool) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpn},
		InsecureSkipVerify: true, // replaced by the pin check below, never by nothing
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				mismatch.Store(true)
				return ErrPinMismatch
			}
			got := pki.Pin(cs.PeerCertificates[0])
			if subtle.ConstantTimeCompare(got[:], pin[:]) != 1 {
				mismatch.Store(true)
				return ErrPinMismatch
			}
			if cs.NegotiatedProtocol != alpn {
				return fmt.Errorf("server did not agree to protocol %q", alpn)
			}
			return nil
		},
	}
}

// dialFirst dials addrs in order and returns the first connection that
// completes the handshake. Each failure is kept; a pin mismatch is reported
// with errors.Is(err, ErrPinMismatch).
func dialFirst(ctx context.Context, addrs []string, tlsConf *tls.Config, mismatch *atomic.Bool, perAddr time.Duration) (*quic.Conn, string, error) {
	var errs []error
	for _, addr := range addrs {
		if ctx.Err() != nil {
			break
		}
		mismatch.Store(false)
		dctx, cancel := context.WithTimeout(ctx, perAddr)
		conn, err := quic.DialAddr(dctx, addr, tlsConf.Clone(), quicConfig())
		cancel()
		if err == nil {
			return conn, addr, nil
		}
		errs = append(errs, addrErr(addr, err, mismatch))
	}
	return nil, "", dialFailed(ctx, errs)
}

// dialErrors is one failure per address, printed on one line.
type dialErrors []error

// addrErr is why one address failed; a pin mismatch outranks the TLS error
// it caused, since it is what the user must act on.
func addrErr(addr string, err error, mismatch *atomic.Bool) error {
	if mismatch.Load() {
		err = ErrPinMismatch
	}
	return fmt.Errorf("%s: %w", addr, err)
}

// dialFailed sums up why no address worked.
func dialFailed(ctx context.Context, errs []error) error {
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return errors.New("no server address")
	}
	return dialErrors(errs)
}

func (e dialErrors) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (e dialErrors) Unwrap() []error { return e }

// chanConn is a channel connection and the UDP sockets (one per path) it
// runs on; they are closed together.
type chanConn struct {
	conn *quic.Conn
	addr string

	mu  sync.Mutex
	trs []*quic.Transport
}

// addTransport keeps tr (a migration path) to be closed with the connection.
func (c *chanConn) addTransport(tr *quic.Transport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trs = append(c.trs, tr)
}

// localAddr is the socket address of the path in use. (quic.Conn.LocalAddr
// races with quic-go's own path switch in v0.65, so it is not used.)
func (c *chanConn) localAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.trs[len(c.trs)-1].Conn.LocalAddr()
}

func (c *chanConn) close() {
	_ = c.conn.CloseWithError(0, "agent closing")
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tr := range c.trs {
		_ = tr.Close()
		_ = tr.Conn.Close()
	}
	c.trs = nil
}

// newTransport opens a UDP socket on all local addresses (IPv4 and IPv6)
// with a QUIC transport on it.
func newTransport() (*quic.Transport, error) {
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, err
	}
	return &quic.Transport{Conn: udp}, nil
}

// dialChannel dials addrs in order with 0-RTT allowed (DialEarly: with a
// session ticket from an earlier connection, the Hello can travel in the
// first flight) and returns the first connection. While pr reports that the
// server answers again, a dial that has been waiting on lost packets is
// restarted at once rather than left to quic-go's growing retransmission
// timer. A pin mismatch is reported with errors.Is(err, ErrPinMismatch).
func dialChannel(ctx context.Context, addrs []string, tlsConf *tls.Config, mismatch *atomic.Bool, perAddr time.Duration, pr *prober) (*chanConn, error) {
	var errs []error
	for _, addr := range addrs {
		if ctx.Err() != nil {
			break
		}
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		mismatch.Store(false)
		conn, tr, err := dialEarly(ctx, raddr, tlsConf, perAddr, pr)
		if err == nil {
			return &chanConn{conn: conn, addr: addr, trs: []*quic.Transport{tr}}, nil
		}
		errs = append(errs, addrErr(addr, err, mismatch))
	}
	return nil, dialFailed(ctx, errs)
}

// errRedial: the server answers probes again while our handshake waits on
// packets lost during the outage; dial again rather than wait for quic-go's
// growing retransmission timer.
var errRedial = errors.New("server answers again; dialing afresh")

// redialWatch turns the prober's "answering again" signal into a redial
// decision for one attempt: an attempt gets half a probe interval to finish
// by itself (its own packets may be getting through too), then it is redone.
type redialWatch struct {
	pr      *prober
	started time.Time
	grace   <-chan time.Time
}

func newRedialWatch(pr *prober) *redialWatch {
	pr.drain()
	return &redialWatch{pr: pr, started: time.Now()}
}

// answered fires on a probe answer; grace when the attempt's time is up.
func (w *redialWatch) answered() <-chan struct{}   { return w.pr.answered() }
func (w *redialWatch) graceOver() <-chan time.Time { return w.grace }

// onAnswer says whether to redial now, or arms graceOver.
func (w *redialWatch) onAnswer() bool {
	left := w.pr.interval/2 - time.Since(w.started)
	if left <= 0 {
		return true
	}
	w.grace = time.After(left)
	return false
}

// dialEarly dials one address within perAddr, abandoning and restarting
// the dial when the prober reports the server answering again while the
// dial still waits (see redialWatch).
func dialEarly(ctx context.Context, raddr *net.UDPAddr, tlsConf *tls.Config, perAddr time.Duration, pr *prober) (*quic.Conn, *quic.Transport, error) {
	deadline := time.Now().Add(perAddr)
	for redials := 0; ; redials++ {
		tr, err := newTransport()
		if err != nil {
			return nil, nil, err
		}
		w := newRedialWatch(pr)
		dctx, cancel := context.WithDeadline(ctx, deadline)
		type result struct {
			conn *quic.Conn
			err  error
		}
		done := make(chan result, 1)
		go func() {
			c, err := tr.DialEarly(dctx, raddr, tlsConf.Clone(), quicConfig())
			done <- result{c, err}
		}()
		var r result
		restart := false
	wait:
		for {
			select {
			case r = <-done:
				break wait
			case <-w.answered():
				if !w.onAnswer() {
					continue
				}
			case <-w.graceOver():
			}
			cancel()
			r = <-done
			restart = r.err != nil
			break wait
		}
		cancel()
		if r.err == nil {
			return r.conn, tr, nil
		}
		_ = tr.Close()
		_ = tr.Conn.Close()
		if !restart || redials == maxRedials || ctx.Err() != nil || time.Now().After(deadline) {
			return nil, nil, r.err
		}
		deadline = time.Now().Add(perAddr)
	}
}

// hello opens the control stream and sends Hello, possibly as 0-RTT data
// followed by first (phone messages: the server acks them a round trip after
// the dial instead of three, see devicechan's serveEarly), then waits for the
// handshake to complete. Only what is safe to replay goes early: the Hello,
// and messages keyed by their ids, which the server bridges once however
// often they arrive. If the server rejected 0-RTT, none of it arrived, so the
// Hello is sent again on the now complete connection and sentEarly is 0;
// otherwise sentEarly is how many of first went out. inZeroRTT says whether
// the Hello went as accepted 0-RTT data (not when the handshake, resumed
// over a fast path, was complete before the Hello was written).
//
// With 0-RTT, DialEarly returns before any packet came back, so a network
// outage shows up here: when pr reports the server answering again while
// the handshake still waits, hello returns errRedial.
func (c *chanConn) hello(ctx context.Context, h wire.Hello, first []wire.Message, mismatch *atomic.Bool, pr *prober) (st *quic.Stream, sentEarly int, inZeroRTT bool, err error) {
	early := false
	select {
	case <-c.conn.HandshakeComplete():
	default:
		early = true
	}
	deadline, _ := ctx.Deadline()
	send := func(msgs []wire.Message) (*quic.Stream, error) {
		st, err := c.conn.OpenStream()
		if err != nil {
			return nil, fmt.Errorf("open control stream: %w", err)
		}
		_ = st.SetDeadline(deadline)
		if err := wire.WriteMsg(st, h); err != nil {
			return nil, fmt.Errorf("send hello: %w", err)
		}
		for _, m := range msgs {
			if err := wire.WriteMsg(st, m); err != nil {
				return nil, fmt.Errorf("send message: %w", err)
			}
		}
		return st, nil
	}
	if !early {
		first = nil // a full handshake: the session sends them
	}
	w := newRedialWatch(pr)
	st, err = send(first)
	if err != nil {
		return nil, 0, false, err
	}
handshake:
	for {
		select {
		case <-c.conn.HandshakeComplete():
			break handshake
		case <-c.conn.Context().Done(): // the handshake failed
			if mismatch.Load() {
				return nil, 0, false, ErrPinMismatch
			}
			return nil, 0, false, fmt.Errorf("handshake: %w", context.Cause(c.conn.Context()))
		case <-ctx.Done():
			return nil, 0, false, fmt.Errorf("handshake: %w", context.Cause(ctx))
		case <-w.answered():
			if w.onAnswer() {
				return nil, 0, false, errRedial
			}
		case <-w.graceOver():
			return nil, 0, false, errRedial
		}
	}
	if early && !c.conn.ConnectionState().Used0RTT {
		conn, err := c.conn.NextConnection(ctx)
		if err != nil {
			return nil, 0, false, fmt.Errorf("after 0-RTT rejection: %w", err)
		}
		c.conn = conn
		if st, err = send(nil); err != nil {
			return nil, 0, false, err
		}
		return st, 0, false, nil
	}
	return st, len(first), early, nil
}
