package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/wire"
)

const waitFor = 10 * time.Second

// fakeServer is just enough of rcsgate's device channel to drive the agent:
// it pairs with the one token it knows and hands every welcomed channel to
// the test.
type fakeServer struct {
	t     *testing.T
	ln    *quic.Listener
	ca    *pki.CA
	pin   [32]byte
	token string
	// reply answers Hello; nil means Welcome.
	reply func(wire.Hello) wire.Msg
	opts  fakeOpts
	chans chan *peer
	// rejectTickets makes the server ignore session tickets (full
	// handshake, 0-RTT rejected), as after a restart with new ticket keys.
	rejectTickets atomic.Bool
	// refuseCerts makes the handshake refuse every device certificate, as
	// rcsgate does for a revoked or unknown device.
	refuseCerts atomic.Bool
	handshakes  atomic.Int32 // channel handshakes that reached the certificate check
	pc          *countingConn
}

// countingConn counts the packets the server receives per source port.
type countingConn struct {
	net.PacketConn
	mu   sync.Mutex
	from map[int]int
}

func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(b)
	if ua, ok := addr.(*net.UDPAddr); ok && err == nil {
		c.mu.Lock()
		c.from[ua.Port]++
		c.mu.Unlock()
	}
	return n, addr, err
}

func (s *fakeServer) packetsFrom(port int) int {
	s.pc.mu.Lock()
	defer s.pc.mu.Unlock()
	return s.pc.from[port]
}

type fakeOpts struct {
	reply    func(wire.Hello) wire.Msg
	features []string // in Welcome
	early    bool     // accept 0-RTT
}

// peer is the server's view of one channel.
type peer struct {
	conn   *quic.Conn
	stream *quic.Stream
	hello  wire.Hello
	msgs   chan wire.Msg // closed when the stream ends
	wmu    sync.Mutex
}

func newFakeServer(t *testing.T, reply func(wire.Hello) wire.Msg) *fakeServer {
	t.Helper()
	return newFakeServerOpts(t, fakeOpts{reply: reply})
}

// newServerIdentity makes a fake server's device CA, channel certificate,
// pairing token and TLS config (fixed ticket keys, shared by the clones
// quic-go makes, so sessions resume).
func newServerIdentity(t *testing.T, o fakeOpts) (*fakeServer, *tls.Config) {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.LoadOrCreateChannelCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := pki.NewToken()
	s := &fakeServer{t: t, ca: ca, pin: pki.Pin(cert.Leaf), token: tok, reply: o.reply, opts: o, chans: make(chan *peer, 16)}
	tlsConf := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{wire.ALPNChannel, wire.ALPNPair},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
	}
	tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.NegotiatedProtocol != wire.ALPNChannel {
			return nil
		}
		s.handshakes.Add(1)
		if s.refuseCerts.Load() {
			return errors.New("device revoked")
		}
		return nil
	}
	var key [32]byte
	_, _ = rand.Read(key[:])
	tlsConf.SetSessionTicketKeys([][32]byte{key})
	return s, tlsConf
}

func newFakeServerOpts(t *testing.T, o fakeOpts) *fakeServer {
	t.Helper()
	s, tlsConf := newServerIdentity(t, o)
	tlsConf.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		if s.rejectTickets.Load() {
			return nil, nil
		}
		return tlsConf.DecryptTicket(identity, cs)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s.pc = &countingConn{PacketConn: udp, from: map[int]int{}}
	ln, err := quic.Listen(s.pc, tlsConf, &quic.Config{MaxIdleTimeout: 60 * time.Second, Allow0RTT: o.early})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	s.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go s.serve(ctx, conn)
		}
	}()
	return s
}

func (s *fakeServer) link() wire.PairLink {
	return wire.PairLink{Addrs: []string{s.ln.Addr().String()}, Token: s.token, Pin: s.pin}
}

// closeGently lets the peer read what we wrote: it ends our side of the
// stream and waits for the agent to close the connection before closing it.
func closeGently(conn *quic.Conn, st *quic.Stream) {
	_ = st.Close()
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
	}
	_ = conn.CloseWithError(0, "done")
}

func (s *fakeServer) serve(ctx context.Context, conn *quic.Conn) {
	select { // as the real server: act only on a completed handshake
	case <-conn.HandshakeComplete():
	case <-conn.Context().Done():
		return
	}
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		conn.CloseWithError(1, "no stream")
		return
	}
	first, err := wire.ReadMsg(st)
	if err != nil {
		conn.CloseWithError(1, "bad first frame")
		return
	}
	switch conn.ConnectionState().TLS.NegotiatedProtocol {
	case wire.ALPNPair:
		req, ok := first.(wire.PairRequest)
		var resp wire.Msg = wire.Error{Code: "bad_token", Message: "unknown pairing token"}
		if ok && req.Token == s.token {
			der, id, err := s.ca.SignCSR(req.CSR, req.Name)
			if err != nil {
				resp = wire.Error{Code: "bad_csr", Message: err.Error()}
			} else {
				resp = wire.PairResponse{Cert: der, CA: s.ca.Cert.Raw, DeviceID: id.String()}
			}
		}
		_ = wire.WriteMsg(st, resp)
		closeGently(conn, st)
	case wire.ALPNChannel:
		hello, ok := first.(wire.Hello)
		if !ok || len(conn.ConnectionState().TLS.PeerCertificates) == 0 {
			conn.CloseWithError(1, "no hello or no client certificate")
			return
		}
		id := pki.DeviceIDOfCert(conn.ConnectionState().TLS.PeerCertificates[0])
		var r wire.Msg = wire.Welcome{Proto: wire.ProtocolVersion, DeviceID: id.String(), ServerMS: time.Now().UnixMilli(), Features: s.opts.features}
		if s.reply != nil {
			r = s.reply(hello)
		}
		_ = wire.WriteMsg(st, r)
		if _, refused := r.(wire.Error); refused {
			closeGently(conn, st)
			return
		}
		p := &peer{conn: conn, stream: st, hello: hello, msgs: make(chan wire.Msg, 64)}
		go func() {
			defer close(p.msgs)
			for {
				m, err := wire.ReadMsg(st)
				if err != nil {
					return
				}
				p.msgs <- m
			}
		}()
		s.chans <- p
	}
}

func (s *fakeServer) nextChannel(t *testing.T) *peer {
	t.Helper()
	select {
	case p := <-s.chans:
		return p
	case <-time.After(waitFor):
		t.Fatal("agent did not connect")
		return nil
	}
}

func (p *peer) send(t *testing.T, m wire.Msg) {
	t.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := wire.WriteMsg(p.stream, m); err != nil {
		t.Fatalf("server write %s: %v", m.FrameType(), err)
	}
}

func (p *peer) next(t *testing.T) wire.Msg {
	t.Helper()
	select {
	case m, ok := <-p.msgs:
		if !ok {
			t.Fatal("channel closed while waiting for a frame")
		}
		return m
	case <-time.After(waitFor):
		t.Fatal("no frame from agent")
		return nil
	}
}

func expect[T wire.Msg](t *testing.T, p *peer) T {
	t.Helper()
	m := p.next(t)
	v, ok := m.(T)
	if !ok {
		var want T
		t.Fatalf("got %s %+v, want %s", m.FrameType(), m, want.FrameType())
	}
	return v
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition, not synchronising by sleep
	}
}

// syncBuffer collects logs from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(t *testing.T) (zerolog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", buf.String())
		}
	})
	return zerolog.New(buf).Level(zerolog.DebugLevel).With().Timestamp().Logger(), buf
}

func TestPairing(t *testing.T) {
	srv := newFakeServer(t, nil)
	ctx := t.Context()

	t.Run("wrong pin", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		link := srv.link()
		link.Pin[0] ^= 0xff
		_, err := Pair(ctx, link, dir, PairOptions{})
		if !errors.Is(err, ErrPinMismatch) {
			t.Fatalf("got %v, want ErrPinMismatch", err)
		}
		if !strings.Contains(err.Error(), "server certificate does not match the pairing link's pin") {
			t.Fatalf("error does not say why: %v", err)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("a failed pairing must store nothing (stat: %v)", err)
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		link := srv.link()
		link.Token = strings.Repeat("x", 32)
		_, err := Pair(ctx, link, t.TempDir(), PairOptions{})
		var we wire.Error
		if !errors.As(err, &we) || we.Code != "bad_token" {
			t.Fatalf("got %v, want the server's bad_token error", err)
		}
	})

	t.Run("first address that answers", func(t *testing.T) {
		dir := t.TempDir()
		link := srv.link()
		link.Addrs = append([]string{"127.0.0.1:1"}, link.Addrs...) // nothing listens there
		if _, err := Pair(ctx, link, dir, PairOptions{Name: "test phone", DialTimeout: time.Second}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("success", func(t *testing.T) {
		dir := t.TempDir()
		id, err := Pair(ctx, srv.link(), dir, PairOptions{Name: "test phone"})
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(dir, KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v, want 0600", KeyFile, fi.Mode().Perm())
		}
		for _, f := range []string{CertFile, CAFile, ServerFile} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatalf("%s not stored: %v", f, err)
			}
		}
		ident, err := LoadIdentity(dir)
		if err != nil {
			t.Fatal(err)
		}
		if ident.DeviceID != id || ident.Pin != srv.pin || ident.Server.Addrs[0] != srv.ln.Addr().String() {
			t.Fatalf("stored identity does not match: %+v", ident.Server)
		}
		var raw map[string]any
		b, _ := os.ReadFile(filepath.Join(dir, ServerFile))
		if err := json.Unmarshal(b, &raw); err != nil || raw["pin"] == nil || raw["addrs"] == nil {
			t.Fatalf("server.json: %s", b)
		}
		if got, err := LoadDeviceID(dir); err != nil || got != id {
			t.Fatalf("LoadDeviceID: %v %v", got, err)
		}
		if _, err := Pair(ctx, srv.link(), dir, PairOptions{}); !errors.Is(err, ErrAlreadyPaired) {
			t.Fatalf("pairing over an identity: got %v, want ErrAlreadyPaired", err)
		}
	})
}

type runningAgent struct {
	*Agent
	sim  *sim.Sim // the phone, unless agentOpts.phone replaced it
	logs *syncBuffer
	stop func()
	dir  string
}

func startAgent(t *testing.T, srv *fakeServer, onRetry func(time.Duration, error)) *runningAgent {
	t.Helper()
	return startAgentWith(t, srv, agentOpts{onRetry: onRetry})
}

type agentOpts struct {
	dir     string          // state directory; "" pairs a new one
	phone   backend.Backend // nil means a fresh sim
	onRetry func(time.Duration, error)
	config  func(*Config) // last word on the config
	runErr  error         // what Run must end with (errors.Is); nil: nil on cancel
}

func pairedDir(t *testing.T, srv *fakeServer) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := Pair(t.Context(), srv.link(), dir, PairOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func startAgentWith(t *testing.T, srv *fakeServer, o agentOpts) *runningAgent {
	t.Helper()
	dir := o.dir
	if dir == "" {
		dir = pairedDir(t, srv)
	}
	log, logs := testLogger(t)
	phone := sim.New(log)
	var be backend.Backend = phone
	if o.phone != nil {
		be = o.phone
	}
	cfg := Config{
		StateDir: dir, Backend: be, Log: log, Version: "test",
		Backoff: &Backoff{Schedule: []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond}},
		OnRetry: o.onRetry,
	}
	if o.config != nil {
		o.config(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if (o.runErr == nil && err != nil) || (o.runErr != nil && !errors.Is(err, o.runErr)) {
				t.Errorf("Run returned %v on cancel, want %v", err, o.runErr)
			}
		case <-time.After(waitFor):
			t.Error("Run did not return after cancel")
		}
		be.Close()
	}
	t.Cleanup(stop)
	return &runningAgent{Agent: a, sim: phone, logs: logs, stop: stop, dir: dir}
}

func TestChannel(t *testing.T) {
	srv := newFakeServer(t, nil)
	ra := startAgent(t, srv, nil)

	p1 := srv.nextChannel(t)
	if p1.hello.Proto != wire.ProtocolVersion || p1.hello.Backend != "sim" || p1.hello.Agent != "rcsgate-agent/test" {
		t.Fatalf("hello: %+v", p1.hello)
	}
	waitUntil(t, "agent reports connected", ra.Connected)

	// A message to the echo contact: Ack, then Status sent, and the echo
	// comes back as an inbound message (it may overtake the ack).
	p1.send(t, wire.Message{ID: "s1", Chat: sim.EchoNumber, Text: "hello echo", TSMS: 1})
	var gotAck, gotStatus bool
	var echo wire.Message
	for !gotAck || !gotStatus || echo.ID == "" {
		switch m := p1.next(t).(type) {
		case wire.Ack:
			if len(m.IDs) != 1 || m.IDs[0] != "s1" || gotAck {
				t.Fatalf("unexpected ack %+v", m)
			}
			gotAck = true
		case wire.Status:
			if !gotAck {
				t.Fatal("status before ack")
			}
			if m.ID != "s1" || m.State != wire.StateSent {
				t.Fatalf("status %+v", m)
			}
			gotStatus = true
		case wire.Message:
			echo = m
		default:
			t.Fatalf("unexpected %s", m.FrameType())
		}
	}
	if echo.Chat != sim.EchoNumber || echo.From != sim.EchoNumber || echo.Text != "hello echo" || echo.ID == "s1" {
		t.Fatalf("echo: %+v", echo)
	}
	p1.send(t, wire.Ack{IDs: []string{echo.ID}})
	waitUntil(t, "echo acked", func() bool { return ra.Pending() == 0 })

	// A bad number fails for good: still acked, then Status failed.
	p1.send(t, wire.Message{ID: "s2", Chat: "12345", Text: "x"})
	if a := expect[wire.Ack](t, p1); a.IDs[0] != "s2" {
		t.Fatalf("ack %+v", a)
	}
	if st := expect[wire.Status](t, p1); st.ID != "s2" || st.State != wire.StateFailed || st.Reason == "" {
		t.Fatalf("status %+v", st)
	}

	// Ping is answered with the same values.
	p1.send(t, wire.Ping{Nonce: 42, TSMS: 7})
	if pong := expect[wire.Pong](t, p1); pong.Nonce != 42 || pong.TSMS != 7 {
		t.Fatalf("pong %+v", pong)
	}

	// Two messages from a quiet contact; the server reads them but drops
	// the connection before acking.
	const quiet = "+15551234567"
	if err := ra.sim.Inject(quiet, "are you there"); err != nil {
		t.Fatal(err)
	}
	if err := ra.sim.Inject(quiet, "hello?"); err != nil {
		t.Fatal(err)
	}
	in1, in2 := expect[wire.Message](t, p1), expect[wire.Message](t, p1)
	if in1.Text != "are you there" || in2.Text != "hello?" || in1.From != quiet || in1.Chat != quiet {
		t.Fatalf("inbound: %+v %+v", in1, in2)
	}
	_ = p1.conn.CloseWithError(0x10, "test drop")

	// After the reconnect both come again, same ids, same order.
	p2 := srv.nextChannel(t)
	r1, r2 := expect[wire.Message](t, p2), expect[wire.Message](t, p2)
	if r1.ID != in1.ID || r2.ID != in2.ID {
		t.Fatalf("resent %q %q, want %q %q", r1.ID, r2.ID, in1.ID, in2.ID)
	}
	p2.send(t, wire.Ack{IDs: []string{r1.ID, r2.ID}})
	waitUntil(t, "resent messages acked", func() bool { return ra.Pending() == 0 })

	// The server sends s1 again (say it lost our ack): acked and status
	// repeated, but the phone sends it only once.
	p2.send(t, wire.Message{ID: "s1", Chat: sim.EchoNumber, Text: "hello echo", TSMS: 1})
	if a := expect[wire.Ack](t, p2); a.IDs[0] != "s1" {
		t.Fatalf("ack %+v", a)
	}
	if st := expect[wire.Status](t, p2); st.ID != "s1" || st.State != wire.StateSent {
		t.Fatalf("status %+v", st)
	}
	p2.send(t, wire.Ping{Nonce: 1})
	expect[wire.Pong](t, p2) // nothing (no second echo) came before it
	n := 0
	for _, s := range ra.sim.SentMessages() {
		if s.ID == "s1" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("s1 sent to the phone %d times, want 1", n)
	}

	ra.stop()
	if ra.Connected() {
		t.Fatal("still connected after stop")
	}
	logs := ra.logs.String()
	if !strings.Contains(logs, `"connected"`) {
		t.Fatalf("no connected log line")
	}
	for _, secret := range []string{"hello echo", "are you there", "hello?", quiet, sim.EchoNumber, srv.token} {
		if strings.Contains(logs, secret) {
			t.Fatalf("log contains %q", secret)
		}
	}
}

// TestRevokedStopsDialling: once the server refuses the device's
// certificate (revoked, as rcsgate does it: kicked with code 2, then the
// handshake fails with bad_certificate), the agent dials no more, Run
// returns ErrUnpaired, and a restart returns it without dialling — until
// the device is paired again.
func TestRevokedStopsDialling(t *testing.T) {
	srv := newFakeServer(t, nil)
	dir := pairedDir(t, srv)
	log, logs := testLogger(t)
	run := func() (chan error, context.CancelFunc) {
		a, err := New(Config{StateDir: dir, Backend: sim.New(log), Log: log, Version: "test",
			Backoff: &Backoff{Schedule: []time.Duration{5 * time.Millisecond}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		return done, cancel
	}
	done, cancel := run()
	defer cancel()
	p := srv.nextChannel(t)
	srv.refuseCerts.Store(true)
	_ = p.conn.CloseWithError(2, "device revoked")
	var err error
	select {
	case err = <-done:
	case <-time.After(waitFor):
		t.Fatal("agent still running after the server refused its certificate")
	}
	if !errors.Is(err, ErrUnpaired) || !strings.Contains(err.Error(), "unpaired — pair again") {
		t.Fatalf("Run returned %v, want ErrUnpaired", err)
	}
	if n := srv.handshakes.Load(); n > 2 {
		t.Fatalf("%d handshakes: the agent kept dialling after the refusal", n)
	}
	if _, ok := LoadUnpaired(dir); !ok {
		t.Fatal("unpaired state not recorded")
	}
	if !strings.Contains(logs.String(), "unpaired — pair again") {
		t.Fatal("unpaired state not logged")
	}
	// A restart does not dial at all.
	before := srv.handshakes.Load()
	done, cancel2 := run()
	defer cancel2()
	select {
	case err = <-done:
	case <-time.After(waitFor):
		t.Fatal("restarted agent dialled a server that refused it")
	}
	if !errors.Is(err, ErrUnpaired) || srv.handshakes.Load() != before {
		t.Fatalf("restart: %v after %d new handshakes, want ErrUnpaired and none", err, srv.handshakes.Load()-before)
	}
	// Paired again: the state is cleared and the agent connects.
	srv.refuseCerts.Store(false)
	if _, err := Pair(t.Context(), srv.link(), dir, PairOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, ok := LoadUnpaired(dir); ok {
		t.Fatal("unpaired state survived pairing again")
	}
	done, cancel3 := run()
	defer func() { cancel3(); <-done }()
	srv.nextChannel(t)
}

// TestRefusedHelloIsFinal: a server that refuses the Hello with "revoked"
// (a protocol-level refusal) is just as final.
func TestRefusedHelloIsFinal(t *testing.T) {
	srv := newFakeServer(t, func(wire.Hello) wire.Msg {
		return wire.Error{Code: CodeRevoked, Message: "device revoked"}
	})
	dir := pairedDir(t, srv)
	log, _ := testLogger(t)
	a, err := New(Config{StateDir: dir, Backend: sim.New(log), Log: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := a.Run(ctx); !errors.Is(err, ErrUnpaired) {
		t.Fatalf("Run returned %v, want ErrUnpaired", err)
	}
}
