package devicechan

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/netsim"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// recorder is a Handler that remembers what the server told it.
type recorder struct {
	mu      sync.Mutex
	paired  []string
	inbound []wire.Message
	status  []wire.Status
	up      map[string]bool
	denied  string // an owner MayPair refuses
	// onInbound, if set, sees each message as it is handled.
	onInbound func(wire.Message)
	// onStatus, if set, sees each status before it is recorded.
	onStatus func(wire.Status)
}

func (r *recorder) MayPair(_ context.Context, owner string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if owner == r.denied {
		return errors.New("not allowed")
	}
	return nil
}

func (r *recorder) DevicePaired(_ context.Context, d store.Device, _ string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paired = append(r.paired, d.ID)
}
func (r *recorder) HandleInbound(_ context.Context, _ string, m wire.Message) error {
	r.mu.Lock()
	on := r.onInbound
	r.inbound = append(r.inbound, m)
	r.mu.Unlock()
	if on != nil {
		on(m)
	}
	return nil
}
func (r *recorder) HandleTyping(context.Context, string, wire.Typing) {}
func (r *recorder) OpenMedia(context.Context, string, string) (wire.MediaFile, error) {
	return wire.MediaFile{}, wire.ErrMediaUnavailable
}
func (r *recorder) HandleStatus(_ context.Context, _ string, s wire.Status) {
	r.mu.Lock()
	on := r.onStatus
	r.mu.Unlock()
	if on != nil {
		on(s)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status = append(r.status, s)
}
func (r *recorder) DeviceState(_ context.Context, dev string, connected bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.up[dev] = connected
}
func (r *recorder) snapshot() recorder {
	r.mu.Lock()
	defer r.mu.Unlock()
	up := map[string]bool{}
	for k, v := range r.up {
		up[k] = v
	}
	return recorder{paired: append([]string(nil), r.paired...), inbound: append([]wire.Message(nil), r.inbound...),
		status: append([]wire.Status(nil), r.status...), up: up}
}

type fixture struct {
	srv  *Server
	st   *store.Store
	rec  *recorder
	addr string
	ctx  context.Context
	logs *syncBuf // the server's log
	dir  string   // the server's state (database, keys)
	// agentErr gets what Run returned for agents started by startAgent.
	agentErr chan error
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith lets set tune the server before it listens.
func newFixtureWith(t testing.TB, set func(*Server)) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := t.TempDir()
	st, err := store.Open(ctx, filepath.Join(dir, "rcsgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.LoadOrCreateChannelCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{up: map[string]bool{}}
	logs := &syncBuf{}
	srv := New(st, ca, cert, rec, zerolog.New(logs))
	if set != nil {
		set(srv)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Listen(ctx, pc); err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, st: st, rec: rec, addr: pc.LocalAddr().String(), ctx: ctx, logs: logs, dir: dir, agentErr: make(chan error, 8)}
}

func (f *fixture) link(t *testing.T, ttl time.Duration) wire.PairLink {
	t.Helper()
	tok, err := pki.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.AddPairToken(f.ctx, pki.HashToken(tok), "@u:example.org", "phone", ttl); err != nil {
		t.Fatal(err)
	}
	return wire.PairLink{Addrs: []string{f.addr}, Token: tok, Pin: f.srv.Pin()}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func TestPairing(t *testing.T) {
	f := newFixture(t)
	good := f.link(t, time.Minute)
	expired := f.link(t, -time.Second)
	unknown := good
	unknown.Token = strings.Repeat("u", 43)
	wrongPin := f.link(t, time.Minute)
	wrongPin.Pin[0] ^= 0xff

	id, err := agent.Pair(f.ctx, good, t.TempDir(), agent.PairOptions{Name: "p"})
	if err != nil {
		t.Fatalf("pairing with a fresh token: %v", err)
	}
	eventually(t, "DevicePaired", func() bool { return len(f.rec.snapshot().paired) == 1 })
	if d, err := f.st.GetDevice(f.ctx, id.String()); err != nil || d.Owner != "@u:example.org" {
		t.Fatalf("device not stored for its owner: %+v %v", d, err)
	}
	tests := []struct {
		name string
		link wire.PairLink
		want string
	}{
		{"reused token", good, "token_used"},
		{"expired token", expired, "token_expired"},
		{"unknown token", unknown, "token_unknown"},
		{"wrong pin", wrongPin, "pin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := agent.Pair(f.ctx, tc.link, t.TempDir(), agent.PairOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	if n := len(f.rec.snapshot().paired); n != 1 {
		t.Fatalf("%d devices paired, want 1", n)
	}
}

// newRelayedFixture is a fixture whose agents reach a second listener, with
// a short idle timeout, through a relay the test can cut.
func newRelayedFixture(t *testing.T) (*fixture, *netsim.Relay) {
	t.Helper()
	f := newFixture(t)
	f.srv.IdleTimeout = 2 * time.Second
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.Listen(f.ctx, pc); err != nil {
		t.Fatal(err)
	}
	relay, err := netsim.NewRelay(f.ctx, pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	f.addr = relay.Addr()
	return f, relay
}

// runAgent pairs and runs a real agent with the simulator against f.
func runAgent(t *testing.T, f *fixture) (pki.DeviceID, *sim.Sim, *agent.Agent, context.CancelFunc) {
	t.Helper()
	dir, _ := pairAgent(t, f)
	return startAgent(t, f, dir)
}

// pairAgent pairs a new agent state directory with f.
func pairAgent(t *testing.T, f *fixture) (string, pki.DeviceID) {
	t.Helper()
	dir := t.TempDir()
	id, err := agent.Pair(f.ctx, f.link(t, time.Minute), dir, agent.PairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return dir, id
}

// startAgent runs the agent paired in dir and waits until it is connected.
func startAgent(t *testing.T, f *fixture, dir string) (pki.DeviceID, *sim.Sim, *agent.Agent, context.CancelFunc) {
	t.Helper()
	id, err := agent.LoadDeviceID(dir)
	if err != nil {
		t.Fatal(err)
	}
	phone := sim.New(zerolog.Nop())
	a, err := agent.New(agent.Config{StateDir: dir, Backend: phone, Log: zerolog.Nop(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := a.Run(ctx)
		if err != nil && !errors.Is(err, agent.ErrUnpaired) {
			t.Errorf("agent: %v", err)
		}
		f.agentErr <- err
	}()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "agent connected", func() bool { return a.Connected() && f.srv.Connected(id.String()) })
	return id, phone, a, cancel
}

func TestDeliveryBothWaysWithoutDuplicates(t *testing.T) {
	f := newFixture(t)
	id, phone, _, _ := runAgent(t, f)
	dev := id.String()
	quiet := wire.Message{ID: "mx-1", Chat: "+12025550123", Text: "to a quiet contact"}
	for i := 0; i < 2; i++ { // the same id twice: one phone message
		if err := f.srv.Enqueue(f.ctx, dev, quiet); err != nil {
			t.Fatal(err)
		}
	}
	echo := wire.Message{ID: "mx-2", Chat: sim.EchoNumber, Text: "ping"}
	if err := f.srv.Enqueue(f.ctx, dev, echo); err != nil {
		t.Fatal(err)
	}
	eventually(t, "echo back from the phone", func() bool {
		for _, m := range f.rec.snapshot().inbound {
			if m.From == sim.EchoNumber && m.Text == "ping" {
				return true
			}
		}
		return false
	})
	eventually(t, "outbox drained", func() bool { n, _ := f.st.QueueDepth(f.ctx, dev); return n == 0 })
	eventually(t, "sent statuses", func() bool { return len(f.rec.snapshot().status) >= 2 })
	eventually(t, "RTT recorded from the agent's pong", func() bool {
		d, err := f.st.GetDevice(f.ctx, dev)
		return err == nil && d.RTT > 0 && !d.Connected.IsZero()
	})
	// Two chats: each goes in its own lane, so only "once each" is promised
	// between them (order holds within a chat).
	sent := phone.SentMessages()
	ids := map[string]int{}
	for _, m := range sent {
		ids[m.ID]++
	}
	if len(sent) != 2 || ids["mx-1"] != 1 || ids["mx-2"] != 1 {
		t.Fatalf("phone sent %+v, want mx-1 and mx-2 once each", sent)
	}
}

// A status being recorded does not hold up the phone message read after
// it (the contact's answer usually follows the phone's "sent"); the status
// is recorded (and acked) once its handler returns.
func TestStatusDoesNotHoldUpAnswer(t *testing.T) {
	f := newFixture(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	free := func() { released.Do(func() { close(release) }) }
	t.Cleanup(free) // a failed test must not leave the session stuck
	f.rec.mu.Lock()
	f.rec.onStatus = func(wire.Status) { once.Do(func() { close(entered) }); <-release }
	f.rec.mu.Unlock()
	id, phone, _, _ := runAgent(t, f)
	dev := id.String()
	if err := f.srv.Enqueue(f.ctx, dev, wire.Message{ID: "mx-1", Chat: "+12025550123", Text: "to a quiet contact"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the phone's sent status never reached the handler")
	}
	if err := phone.Inject("+12025550124", "an answer"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the phone's message while its status is still being recorded", func() bool {
		for _, m := range f.rec.snapshot().inbound {
			if m.Text == "an answer" {
				return true
			}
		}
		return false
	})
	if n := len(f.rec.snapshot().status); n != 0 {
		t.Fatalf("%d statuses recorded while their handler was held", n)
	}
	free()
	eventually(t, "the sent status recorded", func() bool {
		st := f.rec.snapshot().status
		return len(st) == 1 && st[0].ID == "mx-1" && st[0].State == wire.StateSent
	})
}

func TestRevocationClosesAndRefuses(t *testing.T) {
	f := newFixture(t)
	id, _, a, _ := runAgent(t, f)
	dev := id.String()
	// Revoke as the CLI does: only the store changes; the server notices.
	start := time.Now()
	if err := f.st.RevokeDevice(f.ctx, dev); err != nil {
		t.Fatal(err)
	}
	eventually(t, "live connection closed", func() bool { return !a.Connected() && !f.srv.Connected(dev) })
	if d := time.Since(start); d > time.Second {
		t.Fatalf("revocation took %s to close the connection", d)
	}
	d, err := f.st.GetDevice(f.ctx, dev)
	if err != nil || d.Revoked.IsZero() || !d.Connected.IsZero() {
		t.Fatalf("store after revocation: %+v %v", d, err)
	}
	eventually(t, "handler told the device is gone", func() bool { return !f.rec.snapshot().up[dev] })
	// The agent is told, and stops: Run ends with ErrUnpaired after one
	// refused handshake, so the server logs one refusal, not one a second.
	select {
	case err := <-f.agentErr:
		if !errors.Is(err, agent.ErrUnpaired) {
			t.Fatalf("agent ended with %v, want ErrUnpaired", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("revoked agent is still running")
	}
	if n := strings.Count(f.logs.String(), "Refused device handshake"); n > 1 {
		t.Fatalf("%d refused handshakes logged for one revoked agent, want at most 1:\n%s", n, f.logs.String())
	}
}

func TestHandshakeRefusals(t *testing.T) {
	f := newFixture(t)
	otherCA, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)
	foreignDER, _, err := otherCA.SignCSR(csr, "intruder")
	if err != nil {
		t.Fatal(err)
	}
	foreign := tls.Certificate{Certificate: [][]byte{foreignDER}, PrivateKey: key}
	// A device signed by our CA but never stored (e.g. deleted) is unknown.
	ours, _, err := f.srv.ca.SignCSR(csr, "ghost")
	if err != nil {
		t.Fatal(err)
	}
	unknown := tls.Certificate{Certificate: [][]byte{ours}, PrivateKey: key}
	// A paired device, then revoked.
	rkey, _ := pki.NewDeviceKey()
	rcsr, _ := pki.NewCSR(rkey)
	rder, rid, err := f.srv.ca.SignCSR(rcsr, "lost phone")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.AddDevice(f.ctx, store.Device{ID: rid.String(), Name: "lost", Owner: "@u:x", CertDER: rder}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.RevokeDevice(f.ctx, rid.String()); err != nil {
		t.Fatal(err)
	}
	revoked := tls.Certificate{Certificate: [][]byte{rder}, PrivateKey: rkey}
	tests := []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no client certificate", nil},
		{"certificate from another CA", []tls.Certificate{foreign}},
		{"unknown device", []tls.Certificate{unknown}},
		{"revoked device", []tls.Certificate{revoked}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
			defer cancel()
			conn, err := quic.DialAddr(ctx, f.addr, &tls.Config{
				InsecureSkipVerify: true, NextProtos: []string{wire.ALPNChannel},
				MinVersion: tls.VersionTLS13, Certificates: tc.certs,
			}, nil)
			if err == nil {
				// TLS 1.3 finishes the client side first; the refusal shows on first use.
				str, serr := conn.OpenStreamSync(ctx)
				if serr == nil {
					_ = wire.WriteMsg(str, wire.Hello{Proto: 1})
					_, err = wire.ReadMsg(str)
				} else {
					err = serr
				}
			}
			var tErr *quic.TransportError
			if err == nil || !(errors.As(err, &tErr) || strings.Contains(err.Error(), "certificate")) {
				t.Fatalf("got %v, want the handshake refused", err)
			}
		})
	}
}

// A phone that stops answering (network cut) is reported gone within the
// idle timeout, and comes back on its own once the network returns.
func TestSilentPhoneReportedAndReturns(t *testing.T) {
	f, relay2 := newRelayedFixture(t)
	id, _, a, _ := runAgent(t, f)
	dev := id.String()
	relay2.Partition(true)
	cut := time.Now()
	eventually(t, "server reports the silent phone", func() bool { return !f.rec.snapshot().up[dev] })
	if d := time.Since(cut); d > 2*f.srv.IdleTimeout {
		t.Fatalf("silent phone reported after %s", d)
	}
	relay2.Partition(false)
	eventually(t, "phone back after the partition", func() bool { return a.Connected() && f.srv.Connected(dev) })
}
