package chanbench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rcsgate/rcsgate/internal/chanquic"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// quicConf is the product's connection tuning (internal/chanquic: the
// server's and the agent's).
func quicConf(server bool) *quic.Config {
	if server {
		return chanquic.ServerConfig(60 * time.Second)
	}
	return chanquic.ClientConfig()
}

// quicTransport is the product's shape: mutual TLS 1.3 over QUIC, the
// control frames on the first bidirectional stream, each media transfer on a
// stream of its own, 0-RTT Hello on reconnect.
type quicTransport struct {
	pl     place
	certs  *certs
	st     *serverStats
	tr     *quic.Transport
	ln     *quic.EarlyListener
	addr   *net.UDPAddr
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	cache *ticketCache
}

// ticketCache is the client's session cache, telling when a ticket arrives:
// the server makes each ticket good for one 0-RTT use, so a connection that
// is dropped should have delivered its successor first, as a real one does
// within a round trip of its handshake.
type ticketCache struct {
	tls.ClientSessionCache
	mu  sync.Mutex
	put chan struct{} // closed and replaced at every ticket
}

func newTicketCache() *ticketCache {
	return &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(8), put: make(chan struct{})}
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, cs)
	c.mu.Lock()
	close(c.put)
	c.put = make(chan struct{})
	c.mu.Unlock()
}

// next is closed at the next ticket.
func (c *ticketCache) next() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.put
}

func newQUIC(ctx context.Context, pl place, c *certs) (*quicTransport, error) {
	var pc *net.UDPConn
	if err := pl.serverDo(func() (err error) {
		pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: pl.serverIP})
		return err
	}); err != nil {
		return nil, fmt.Errorf("quic server socket: %w", err)
	}
	tr := &quic.Transport{Conn: pc}
	tlsConf := c.serverTLS(wire.ALPNChannel)
	(&chanquic.ReplayGuard{}).Install(tlsConf) // as devicechan: one 0-RTT use per ticket
	ln, err := tr.ListenEarly(tlsConf, quicConf(true))
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("quic listen: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	q := &quicTransport{pl: pl, certs: c, st: newServerStats(), tr: tr, ln: ln,
		addr: pc.LocalAddr().(*net.UDPAddr), cancel: cancel, cache: newTicketCache()}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			q.wg.Add(1)
			go func() { defer q.wg.Done(); q.serve(ctx, conn) }()
		}
	}()
	return q, nil
}

func (q *quicTransport) name() string        { return "QUIC" }
func (q *quicTransport) stats() *serverStats { return q.st }

func (q *quicTransport) forget() {
	q.mu.Lock()
	q.cache = newTicketCache()
	q.mu.Unlock()
}

func (q *quicTransport) close() {
	q.cancel()
	_ = q.ln.Close()
	_ = q.tr.Close()
	_ = q.tr.Conn.Close()
	q.wg.Wait()
}

// serve is the server end of one connection, as devicechan does it: a
// resumed connection with 0-RTT data is served at once (Hello and messages
// are what devicechan serves early); any other waits for the handshake (the
// client certificate is only known then). The first stream is control,
// every later one media.
func (q *quicTransport) serve(ctx context.Context, conn *quic.Conn) {
	defer conn.CloseWithError(0, "")
	if !conn.ConnectionState().Used0RTT {
		select {
		case <-conn.HandshakeComplete():
		case <-conn.Context().Done():
			return
		case <-ctx.Done():
			return
		}
	}
	cctx := conn.Context()
	str, err := conn.AcceptStream(cctx)
	if err != nil {
		return
	}
	go func() {
		for {
			ms, err := conn.AcceptStream(cctx)
			if err != nil {
				return
			}
			go func() {
				_, _ = io.Copy(counter{&q.st.media}, ms)
			}()
		}
	}()
	write := func(m wire.Msg) error { return wire.WriteMsg(str, m) }
	for {
		t, payload, err := wire.ReadFrame(str)
		if err != nil {
			return
		}
		if err := q.st.handle(t, payload, time.Now(), write); err != nil {
			_ = conn.CloseWithError(1, "protocol")
			return
		}
	}
}

type quicConn struct {
	tr     *quic.Transport
	conn   *quic.Conn
	str    *quic.Stream
	early  bool
	ticket <-chan struct{} // closed once this connection delivered a ticket
	wmu    sync.Mutex
}

// settle waits (at most a second) for the connection's session ticket.
func (c *quicConn) settle(ctx context.Context) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-c.ticket:
	case <-t.C:
	case <-ctx.Done():
	}
}

// dial follows agent/dial.go: DialEarly, Hello and the first message on a
// fresh stream (0-RTT when a ticket allows), both again if the server
// refused the early data; then wait for Welcome.
func (q *quicTransport) dial(ctx context.Context, first wire.Message) (clientConn, error) {
	var udp *net.UDPConn
	if err := q.pl.clientDo(func() (err error) {
		udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: q.pl.clientIP})
		return err
	}); err != nil {
		return nil, fmt.Errorf("quic client socket: %w", err)
	}
	q.mu.Lock()
	cache := q.cache
	q.mu.Unlock()
	tr := &quic.Transport{Conn: udp}
	c := &quicConn{tr: tr, ticket: cache.next()}
	fail := func(err error) (clientConn, error) { c.close(); return nil, err }
	conn, err := tr.DialEarly(ctx, q.addr, q.certs.clientTLS(wire.ALPNChannel, cache), quicConf(false))
	if err != nil {
		return fail(fmt.Errorf("quic dial: %w", err))
	}
	c.conn = conn
	select {
	case <-conn.HandshakeComplete():
	default:
		c.early = true
	}
	hello := func() error {
		st, err := c.conn.OpenStream()
		if err != nil {
			return fmt.Errorf("open control stream: %w", err)
		}
		c.str = st
		if err := wire.WriteMsg(st, wire.Hello{Proto: wire.ProtocolVersion, Agent: "rcsgate-chanbench", Backend: "bench"}); err != nil {
			return err
		}
		return wire.WriteMsg(st, first)
	}
	if err := hello(); err != nil {
		return fail(err)
	}
	select {
	case <-conn.HandshakeComplete():
	case <-conn.Context().Done():
		return fail(fmt.Errorf("quic handshake: %w", context.Cause(conn.Context())))
	case <-ctx.Done():
		return fail(fmt.Errorf("quic handshake: %w", context.Cause(ctx)))
	}
	if c.early && !conn.ConnectionState().Used0RTT {
		next, err := conn.NextConnection(ctx)
		if err != nil {
			return fail(fmt.Errorf("after 0-RTT rejection: %w", err))
		}
		c.conn = next
		if err := hello(); err != nil {
			return fail(err)
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.str.SetReadDeadline(dl)
	}
	m, err := wire.ReadMsg(c.str)
	if err != nil {
		return fail(fmt.Errorf("read welcome: %w", err))
	}
	if _, ok := m.(wire.Welcome); !ok {
		return fail(fmt.Errorf("server answered hello with %s", m.FrameType()))
	}
	_ = c.str.SetReadDeadline(time.Time{})
	return c, nil
}

func (c *quicConn) send(m wire.Msg) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return wire.WriteMsg(c.str, m)
}

func (c *quicConn) recv() (wire.Msg, error) { return wire.ReadMsg(c.str) }

func (c *quicConn) resumed() (bool, bool) {
	cs := c.conn.ConnectionState()
	return cs.TLS.DidResume, c.early && cs.Used0RTT
}

// media opens its own stream, as the product will, so text frames on the
// control stream never wait behind media bytes.
func (c *quicConn) media(ctx context.Context, size int64, chunk int) (int64, error) {
	st, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return 0, fmt.Errorf("open media stream: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { st.CancelWrite(1) })
	defer stop()
	buf := make([]byte, chunk)
	var n int64
	for n < size {
		k := int(min(int64(chunk), size-n))
		w, err := st.Write(buf[:k])
		n += int64(w)
		if err != nil {
			return n, fmt.Errorf("media write: %w", err)
		}
	}
	if err := st.Close(); err != nil {
		return n, fmt.Errorf("media close: %w", err)
	}
	return n, nil
}

func (c *quicConn) close() {
	if c.conn != nil {
		_ = c.conn.CloseWithError(0, "client drops the connection")
	}
	_ = c.tr.Close()
	_ = c.tr.Conn.Close()
}

// counter counts media bytes as they arrive, so a transfer cut short by the
// measuring window still shows what got through.
type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }
