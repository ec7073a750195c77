// Package chanbench measures the device-channel protocol (internal/wire
// frames) over QUIC, as the product carries it, against the usual
// alternative, WebSocket on TLS 1.3 over TCP, on loopback and on an impaired
// link (network namespaces, nftables loss, per-packet delay). It is a
// benchmark only: nothing in the product imports it.
package chanbench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// place says where a condition's sockets live: the bench process opens the
// server's sockets through serverDo and the client's through clientDo (a
// socket keeps the network namespace it was created in).
type place struct {
	clientDo, serverDo func(func() error) error
	clientIP, serverIP net.IP
}

func direct(f func() error) error { return f() }

// loopback is the plain 127.0.0.1 path of the bench's own namespace.
func loopback() place {
	ip := net.IPv4(127, 0, 0, 1)
	return place{clientDo: direct, serverDo: direct, clientIP: ip, serverIP: ip}
}

// transport is one way of carrying the channel: a server it started and a
// client that dials it.
type transport interface {
	name() string
	// dial connects and sends Hello and first as soon as the transport
	// allows (QUIC: in 0-RTT when the session cache holds a ticket, as the
	// agent does; WebSocket: together, right after the upgrade), and returns
	// once the Welcome came; first's ack follows.
	dial(ctx context.Context, first wire.Message) (clientConn, error)
	// forget empties the client's session cache (the next dial is cold).
	forget()
	stats() *serverStats
	close()
}

// clientConn is a greeted channel connection.
type clientConn interface {
	send(m wire.Msg) error
	recv() (wire.Msg, error)
	// media sends size bytes of media in chunks on the same connection until
	// done or ctx ends, and returns the bytes written.
	media(ctx context.Context, size int64, chunk int) (int64, error)
	// resumed reports TLS resumption and, for QUIC, accepted 0-RTT data.
	resumed() (resumed, zeroRTT bool)
	// settle waits until the connection has given the client the session
	// ticket for its next resumption (not timed).
	settle(ctx context.Context)
	close()
}

// serverStats is what a bench server saw: every message id it acked (to find
// loss and doubles), the handler cost of each message, media bytes.
type serverStats struct {
	mu    sync.Mutex
	recv  map[string]int
	cost  []time.Duration
	media atomic.Int64
}

func newServerStats() *serverStats { return &serverStats{recv: map[string]int{}} }

// handle answers one frame read at start: Welcome for Hello, Ack for a
// Message. The cost recorded runs from the frame in hand to the ack written.
func (s *serverStats) handle(t wire.Type, payload []byte, start time.Time, write func(wire.Msg) error) error {
	m, err := wire.Decode(t, payload)
	if err != nil {
		return fmt.Errorf("decode %s: %w", t, err)
	}
	switch m := m.(type) {
	case wire.Hello:
		return write(wire.Welcome{Proto: wire.ProtocolVersion, DeviceID: "chanbench", ServerMS: time.Now().UnixMilli()})
	case wire.Message:
		s.mu.Lock()
		s.recv[m.ID]++
		s.mu.Unlock()
		if err := write(wire.Ack{IDs: []string{m.ID}}); err != nil {
			return err
		}
		d := time.Since(start)
		s.mu.Lock()
		s.cost = append(s.cost, d)
		s.mu.Unlock()
	}
	return nil
}

func (s *serverStats) costs() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.cost...)
}

func (s *serverStats) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.recv[id]
}

// ledger is the client's side of the loss/double check: every id sent and
// how often it was acked.
type ledger struct {
	prefix string
	mu     sync.Mutex
	next   int
	sent   []string
	acked  map[string]int
}

func newLedger(prefix string) *ledger { return &ledger{prefix: prefix, acked: map[string]int{}} }

func (l *ledger) newID() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	id := fmt.Sprintf("%s-%07d", l.prefix, l.next)
	l.sent = append(l.sent, id)
	return id
}

func (l *ledger) ack(id string) {
	l.mu.Lock()
	l.acked[id]++
	l.mu.Unlock()
}

// check counts ids never received or never acked (lost) and ids received or
// acked more than once, or acked without being sent (doubled).
func (l *ledger) check(srv *serverStats) (sent, lost, doubled int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sentSet := make(map[string]bool, len(l.sent))
	for _, id := range l.sent {
		sentSet[id] = true
		a, r := l.acked[id], srv.count(id)
		switch {
		case a == 0 || r == 0:
			lost++
		case a > 1 || r > 1:
			doubled++
		}
	}
	for id := range l.acked {
		if !sentSet[id] {
			doubled++
		}
	}
	return len(l.sent), lost, doubled
}

// sampleText is a typical short chat message.
var sampleText = strings.Repeat("hello from the bench ", 5)

// session runs one reader over a clientConn and hands acks to whoever
// waits for them.
type session struct {
	c    clientConn
	led  *ledger
	acks chan string
	done chan struct{} // closed when the reader ends
	stop chan struct{}
	err  error // why the reader ended; read after done
	once sync.Once
}

func newSession(c clientConn, led *ledger) *session {
	s := &session{c: c, led: led, acks: make(chan string, 1024), done: make(chan struct{}), stop: make(chan struct{})}
	go s.read()
	return s
}

func (s *session) read() {
	defer close(s.done)
	for {
		m, err := s.c.recv()
		if err != nil {
			s.err = err
			return
		}
		a, ok := m.(wire.Ack)
		if !ok {
			continue
		}
		for _, id := range a.IDs {
			s.led.ack(id)
			select {
			case s.acks <- id:
			case <-s.stop:
				return
			}
		}
	}
}

func (s *session) send() (string, error) {
	m := newMessage(s.led)
	if err := s.c.send(m); err != nil {
		return m.ID, fmt.Errorf("send %s: %w", m.ID, err)
	}
	return m.ID, nil
}

func newMessage(led *ledger) wire.Message {
	return wire.Message{ID: led.newID(), Chat: "+12025550100", Text: sampleText, TSMS: time.Now().UnixMilli()}
}

var errReaderGone = errors.New("connection reader ended")

// nextAck waits for the next ack id.
func (s *session) nextAck(ctx context.Context) (string, error) {
	select {
	case id := <-s.acks:
		return id, nil
	case <-s.done:
		select { // acks read just before the end still count
		case id := <-s.acks:
			return id, nil
		default:
		}
		return "", fmt.Errorf("%w: %w", errReaderGone, s.err)
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for ack: %w", context.Cause(ctx))
	}
}

// roundTrip sends one message and waits for its ack.
func (s *session) roundTrip(ctx context.Context) (time.Duration, error) {
	t0 := time.Now()
	id, err := s.send()
	if err != nil {
		return 0, err
	}
	for {
		got, err := s.nextAck(ctx)
		if err != nil {
			return 0, err
		}
		if got == id {
			return time.Since(t0), nil
		}
	}
}

func (s *session) close() {
	s.once.Do(func() {
		close(s.stop)
		s.c.close()
		<-s.done
	})
}

// firstMessage dials with a first message and returns the time from the
// dial's start to that message's ack, with the live session.
func firstMessage(ctx context.Context, tr transport, led *ledger) (time.Duration, *session, error) {
	t0 := time.Now()
	first := newMessage(led)
	c, err := tr.dial(ctx, first)
	if err != nil {
		return 0, nil, fmt.Errorf("dial: %w", err)
	}
	s := newSession(c, led)
	for {
		got, err := s.nextAck(ctx)
		if err != nil {
			s.close()
			return 0, nil, fmt.Errorf("first message: %w", err)
		}
		if got == first.ID {
			return time.Since(t0), s, nil
		}
	}
}

// flood sends n messages with at most window unacked and returns the time
// until the last ack.
func flood(ctx context.Context, s *session, n, window int) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, window)
	werr := make(chan error, 1)
	t0 := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				werr <- ctx.Err()
				return
			}
			if _, err := s.send(); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	for got := 0; got < n; got++ {
		if _, err := s.nextAck(ctx); err != nil {
			return 0, err
		}
		<-sem
	}
	d := time.Since(t0)
	if err := <-werr; err != nil {
		return 0, err
	}
	return d, nil
}

// holResult is text latency while media runs on the same connection.
type holResult struct {
	rtts     []time.Duration // pings started while the transfer ran
	written  int64           // media bytes the client wrote
	complete bool            // the server received the whole transfer within the window
	got      int64           // media bytes the server received by the window's end
	elapsed  time.Duration   // the window: transfer start to its end (or the whole file in)
}

// hol starts a media transfer of size bytes on s's connection and pings
// until maxPings, the window, or the end of the transfer (received, the
// server's count, reaches size: a TCP sender's writes end long before that,
// in its socket buffer); the transfer is then cancelled.
func hol(ctx context.Context, s *session, size int64, chunk, maxPings int, window time.Duration, received func() int64) (holResult, error) {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type mres struct {
		n   int64
		err error
	}
	mdone := make(chan mres, 1)
	go func() {
		n, err := s.c.media(mctx, size, chunk)
		mdone <- mres{n, err}
	}()
	var r holResult
	var m *mres
	start := time.Now()
	deadline := start.Add(window)
	for i := 0; i < maxPings && time.Now().Before(deadline); i++ {
		if m == nil {
			select {
			case x := <-mdone:
				m = &x
			default:
			}
		}
		if (m != nil && m.err != nil) || received() >= size {
			break
		}
		d, err := s.roundTrip(ctx)
		if err != nil {
			return r, fmt.Errorf("ping during transfer: %w", err)
		}
		r.rtts = append(r.rtts, d)
	}
	r.got, r.elapsed = received(), time.Since(start)
	// A transfer that failed by itself (not by our cancel) is an error.
	var failed error
	if m != nil && m.err != nil {
		failed = m.err
	}
	r.complete = received() >= size
	cancel()
	if m == nil {
		x := <-mdone
		m = &x
	}
	r.written = m.n
	if failed != nil {
		return r, fmt.Errorf("media: %w", failed)
	}
	return r, nil
}

// pct is the nearest-rank percentile of ds (0 for none).
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := int(float64(len(s))*p/100+0.999999) - 1
	return s[min(max(k, 0), len(s)-1)]
}
