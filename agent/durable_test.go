package agent

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/wire"
)

const quietNumber = "+15551234567"

// gatePhone is a backend whose Send can be held back, recording every call.
type gatePhone struct {
	mu    sync.Mutex
	calls []string
	gate  chan struct{} // nil: Send returns at once; else each Send takes a token
	sink  backend.Sink
}

func (p *gatePhone) Name() string                               { return "gate" }
func (p *gatePhone) Caps() (map[string]wire.Caps, []int)        { return nil, nil }
func (p *gatePhone) Typing(context.Context, string, bool) error { return nil }
func (p *gatePhone) Start(_ context.Context, sink backend.Sink) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sink = sink
	return nil
}
func (p *gatePhone) Close() error { return nil }
func (p *gatePhone) Send(ctx context.Context, ev backend.Event) error {
	id := ev.ID
	if p.gate != nil {
		select {
		case <-p.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, id)
	return nil
}
func (p *gatePhone) sent() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// collectAcks reads frames until the acks cover ids; statuses seen on the
// way are returned.
func collectAcks(t *testing.T, p *peer, ids ...string) []wire.Status {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var sts []wire.Status
	for len(want) > 0 {
		switch m := p.next(t).(type) {
		case wire.Ack:
			for _, id := range m.IDs {
				delete(want, id)
			}
		case wire.Status:
			sts = append(sts, m)
		default:
			t.Fatalf("unexpected %s while waiting for acks", m.FrameType())
		}
	}
	return sts
}

// nextMessage skips acks and statuses up to the next message.
func nextMessage(t *testing.T, p *peer) wire.Message {
	t.Helper()
	for {
		switch m := p.next(t).(type) {
		case wire.Message:
			return m
		case wire.Ack, wire.Status:
		default:
			t.Fatalf("unexpected %s", m.FrameType())
		}
	}
}

func collectStatuses(t *testing.T, p *peer, n int, got []wire.Status) []wire.Status {
	t.Helper()
	for len(got) < n {
		got = append(got, expect[wire.Status](t, p))
	}
	return got
}

func statusIDsOf(sts []wire.Status) []string {
	var ids []string
	for _, s := range sts {
		ids = append(ids, s.ID)
	}
	return ids
}

// A server message is acked once stored, handed to the phone from the
// journal even across a restart, and its status kept until the server acks
// it; a message sent again is never handed to the phone twice.
func TestServerMessagesSurviveRestart(t *testing.T) {
	srv := newFakeServerOpts(t, fakeOpts{features: []string{wire.FeatureStatusAck}})
	dir := pairedDir(t, srv)
	stuck := &gatePhone{gate: make(chan struct{})} // the phone takes nothing
	ra := startAgentWith(t, srv, agentOpts{dir: dir, phone: stuck})
	p := srv.nextChannel(t)
	if !wire.HasFeature(p.hello.Features, wire.FeatureStatusAck) {
		t.Fatalf("hello does not announce %s: %+v", wire.FeatureStatusAck, p.hello)
	}
	for _, id := range []string{"s1", "s2", "s3"} {
		p.send(t, wire.Message{ID: id, Chat: quietNumber, Text: "to " + id, TSMS: 1})
	}
	if sts := collectAcks(t, p, "s1", "s2", "s3"); len(sts) != 0 {
		t.Fatalf("statuses before the phone took anything: %+v", sts)
	}
	// Pong reports the queues: three messages wait for the phone.
	p.send(t, wire.Ping{Nonce: 9, TSMS: 1})
	pong := expect[wire.Pong](t, p)
	if pong.Nonce != 9 || pong.Out == nil || pong.In == nil || *pong.Out != 0 || *pong.In != 3 {
		t.Fatalf("pong %+v (out %v in %v), want out 0 in 3", pong, pong.Out, pong.In)
	}
	ra.stop() // the agent stops (or dies) before the phone took s1

	phone := &gatePhone{}
	ra2 := startAgentWith(t, srv, agentOpts{dir: dir, phone: phone})
	p2 := srv.nextChannel(t)
	sts := collectStatuses(t, p2, 3, nil)
	if got := statusIDsOf(sts); !slices.Equal(got, []string{"s1", "s2", "s3"}) || sts[0].State != wire.StateSent {
		t.Fatalf("statuses %+v", sts)
	}
	if got := phone.sent(); !slices.Equal(got, []string{"s1", "s2", "s3"}) {
		t.Fatalf("phone got %v", got)
	}
	// The server sends s2 again (it lost our ack): acked, not handed again,
	// and no extra status (the pending one is acked or resent by itself).
	p2.send(t, wire.Message{ID: "s2", Chat: quietNumber, Text: "to s2"})
	if a := expect[wire.Ack](t, p2); !slices.Equal(a.IDs, []string{"s2"}) {
		t.Fatalf("ack %+v", a)
	}
	// Reconnect without acking the statuses: all three come again.
	_ = p2.conn.CloseWithError(0x10, "test drop")
	p3 := srv.nextChannel(t)
	sts = collectStatuses(t, p3, 3, nil)
	if got := statusIDsOf(sts); !slices.Equal(got, []string{"s1", "s2", "s3"}) {
		t.Fatalf("statuses resent %v", got)
	}
	var refs []wire.StatusRef
	for _, s := range sts {
		refs = append(refs, wire.StatusRef{ID: s.ID, State: s.State})
	}
	p3.send(t, wire.Ack{Statuses: refs})
	waitUntil(t, "statuses acked", func() bool { return ra2.Depth().Status == 0 })
	// Once acked, a status is not sent again, and a resent message is only
	// acked.
	_ = p3.conn.CloseWithError(0x10, "test drop")
	p4 := srv.nextChannel(t)
	p4.send(t, wire.Message{ID: "s1", Chat: quietNumber, Text: "to s1"})
	if a := expect[wire.Ack](t, p4); !slices.Equal(a.IDs, []string{"s1"}) {
		t.Fatalf("ack %+v", a)
	}
	p4.send(t, wire.Ping{Nonce: 1})
	expect[wire.Pong](t, p4) // nothing came before it
	if got := phone.sent(); !slices.Equal(got, []string{"s1", "s2", "s3"}) {
		t.Fatalf("phone got %v, want each once", got)
	}
}

// A server without FeatureStatusAck gets each status once, as in protocol 1.
func TestStatusesWithoutStatusAcks(t *testing.T) {
	srv := newFakeServer(t, nil)
	phone := &gatePhone{}
	ra := startAgentWith(t, srv, agentOpts{phone: phone})
	p := srv.nextChannel(t)
	p.send(t, wire.Message{ID: "s1", Chat: quietNumber, Text: "x"})
	sts := collectAcks(t, p, "s1")
	sts = collectStatuses(t, p, 1, sts)
	if sts[0].ID != "s1" {
		t.Fatalf("status %+v", sts[0])
	}
	waitUntil(t, "status done", func() bool { return ra.Depth().Status == 0 })
	_ = p.conn.CloseWithError(0x10, "test drop")
	p2 := srv.nextChannel(t)
	p2.send(t, wire.Ping{Nonce: 1})
	expect[wire.Pong](t, p2) // no status resent before it
}

// Deliver stores before returning, dedupes a message the backend hands
// again with the same key (across restarts too), and refuses clearly when
// the queue is full.
func TestDeliverDedupesAndRefusesWhenFull(t *testing.T) {
	dir := t.TempDir()
	phone := &gatePhone{}
	newAgent := func() *Agent {
		a, err := New(Config{StateDir: dir, Backend: phone, Log: zerolog.Nop(), OutboxLimit: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	a := newAgent()
	ctx := t.Context()
	in := func(key string) backend.Inbound {
		return backend.Inbound{ID: key, Chat: quietNumber, From: quietNumber, Text: "hi " + key}
	}
	for _, k := range []string{"k1", "k1", "k2"} {
		if err := a.Deliver(ctx, in(k)); err != nil {
			t.Fatal(err)
		}
	}
	if a.Pending() != 2 {
		t.Fatalf("pending %d, want 2 (k1 once)", a.Pending())
	}
	err := a.Deliver(ctx, in("k3"))
	if !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("got %v, want ErrOutboxFull", err)
	}
	a.Close()
	if err := a.Deliver(ctx, in("k4")); err == nil {
		t.Fatal("Deliver after Close stored nothing but returned nil")
	}
	a = newAgent()
	if err := a.Deliver(ctx, in("k2")); err != nil || a.Pending() != 2 {
		t.Fatalf("after restart: %v, pending %d", err, a.Pending())
	}
	es := a.j.OutAfter(0, 0)
	if len(es) != 2 || es[0].Msg.ID != backend.WireID("k1") || es[0].Msg.Text != "hi k1" {
		t.Fatalf("queued %+v", es)
	}
}

// 0-RTT: the second connection resumes and sends Hello in the first
// flight; when the server rejects 0-RTT (new ticket keys), Hello is sent
// again after the handshake and the channel works all the same.
func TestZeroRTTResumption(t *testing.T) {
	srv := newFakeServerOpts(t, fakeOpts{early: true})
	ra := startAgentWith(t, srv, agentOpts{})
	roundTrip := func(p *peer, id string) {
		t.Helper()
		p.send(t, wire.Message{ID: id, Chat: quietNumber, Text: "to " + id})
		collectAcks(t, p, id)
	}
	p1 := srv.nextChannel(t)
	if p1.conn.ConnectionState().Used0RTT {
		t.Fatal("first connection cannot be 0-RTT")
	}
	roundTrip(p1, "a") // the session ticket has arrived by now
	// A phone message the server does not ack before the drop goes out
	// again with the next Hello, in the first flight.
	if err := ra.sim.Inject(quietNumber, "unacked before the drop"); err != nil {
		t.Fatal(err)
	}
	unacked := nextMessage(t, p1)
	_ = p1.conn.CloseWithError(0x10, "test drop")
	p2 := srv.nextChannel(t)
	if !p2.conn.ConnectionState().Used0RTT {
		t.Fatal("reconnect did not use 0-RTT")
	}
	if again := nextMessage(t, p2); again.ID != unacked.ID {
		t.Fatalf("after the reconnect the server got %q, want the unacked %q again", again.ID, unacked.ID)
	}
	p2.send(t, wire.Ack{IDs: []string{unacked.ID}})
	roundTrip(p2, "b")
	srv.rejectTickets.Store(true)
	_ = p2.conn.CloseWithError(0x10, "test drop")
	p3 := srv.nextChannel(t)
	if p3.conn.ConnectionState().Used0RTT {
		t.Fatal("0-RTT accepted although the server ignores tickets")
	}
	roundTrip(p3, "c")
	ra.stop()
	logs := ra.logs.String()
	if !containsAll(logs, `"resumed_0rtt":true`, `"resumed_0rtt":false`) {
		t.Fatal("connected log lines do not say whether 0-RTT was used")
	}
	// The unacked message rides with a Hello sent as 0-RTT data. On
	// loopback a resumed handshake can complete before the Hello is
	// written; then both go on the completed connection (the log says so).
	if !strings.Contains(logs, `"resumed_0rtt":true,"hello_in_0rtt":true,"sent_in_0rtt":1`) &&
		!strings.Contains(logs, `"out":1,"in":0,"status":0,"resumed_0rtt":true,"hello_in_0rtt":false,"sent_in_0rtt":0`) {
		t.Fatal("connected log lines do not say that the unacked message went with a 0-RTT Hello")
	}
}

// Migration: the connection moves to a new local socket (as when the phone
// changes network) without a new handshake, and messages keep flowing.
func TestMigrationKeepsTheConnection(t *testing.T) {
	srv := newFakeServer(t, nil)
	ra := startAgentWith(t, srv, agentOpts{config: func(c *Config) { c.NetCheckInterval = time.Hour }})
	p := srv.nextChannel(t)
	p.send(t, wire.Message{ID: "m1", Chat: quietNumber, Text: "before"})
	collectAcks(t, p, "m1")
	cc := ra.curConn.Load()
	before := cc.localAddr().(*net.UDPAddr).Port
	if srv.packetsFrom(before) == 0 {
		t.Fatal("server saw nothing from the agent's socket")
	}

	ra.migrateNow <- struct{}{}
	waitUntil(t, "migrated", func() bool { return cc.localAddr().(*net.UDPAddr).Port != before })
	after := cc.localAddr().(*net.UDPAddr).Port
	p.send(t, wire.Message{ID: "m2", Chat: quietNumber, Text: "after"})
	collectAcks(t, p, "m2")
	if err := ra.sim.Inject(quietNumber, "from the phone after migrating"); err != nil {
		t.Fatal(err)
	}
	if m := nextMessage(t, p); m.Text != "from the phone after migrating" {
		t.Fatalf("got %+v", m)
	}
	if n := srv.packetsFrom(after); n == 0 {
		t.Fatalf("server got nothing from the new socket (port %d)", after)
	}
	select {
	case <-srv.chans:
		t.Fatal("a new connection was made")
	default:
	}
	if !containsAll(ra.logs.String(), "connection migrated to a new local address") {
		t.Fatal("migration not logged")
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !contains(s, x) {
			return false
		}
	}
	return true
}

func contains(s, sub string) bool { return len(sub) == 0 || indexOf(s, sub) >= 0 }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// lanePhone fails every send to stuck (a transient error, as a phone
// without signal for that contact) until unstuck, records the rest, and
// tracks how many sends run at once.
type lanePhone struct {
	gatePhone
	stuck    string
	unstuck  chan struct{}
	attempts int
	inFlight int
	maxIn    int
	hold     chan struct{} // if set, every send waits for a token
}

func (p *lanePhone) Send(ctx context.Context, ev backend.Event) error {
	p.mu.Lock()
	p.inFlight++
	p.maxIn = max(p.maxIn, p.inFlight)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.inFlight--
		p.mu.Unlock()
	}()
	if p.hold != nil {
		select {
		case <-p.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if ev.Chat == p.stuck {
		select {
		case <-p.unstuck:
		default:
			p.mu.Lock()
			p.attempts++
			p.mu.Unlock()
			return errors.New("no signal for this contact")
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, ev.ID)
	return nil
}

func (p *lanePhone) tries() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts
}

// One message the phone keeps failing holds up only its own chat: the
// other chats' messages go through (each chat in order) meanwhile, and the
// stuck chat's follow in order once the phone takes them.
func TestStuckChatHoldsOnlyItsLane(t *testing.T) {
	srv := newFakeServerOpts(t, fakeOpts{features: []string{wire.FeatureStatusAck}})
	const stuckChat, a, b = "+15550000009", "+15550000001", "+15550000002"
	phone := &lanePhone{stuck: stuckChat, unstuck: make(chan struct{})}
	fast := &Backoff{Schedule: []time.Duration{5 * time.Millisecond, 10 * time.Millisecond}}
	startAgentWith(t, srv, agentOpts{phone: phone, config: func(c *Config) { c.SendRetry = fast }})
	p := srv.nextChannel(t)
	for _, m := range []wire.Message{
		{ID: "s1", Chat: stuckChat}, {ID: "a1", Chat: a}, {ID: "s2", Chat: stuckChat},
		{ID: "a2", Chat: a}, {ID: "b1", Chat: b}, {ID: "a3", Chat: a},
	} {
		m.Text, m.TSMS = "to "+m.ID, 1
		p.send(t, m)
	}
	waitUntil(t, "the other chats went through while s1 keeps failing", func() bool {
		return len(phone.sent()) == 4 && phone.tries() >= 3
	})
	got := phone.sent()
	var inA []string
	for _, id := range got {
		if id[0] == 'a' {
			inA = append(inA, id)
		}
	}
	if !slices.Equal(inA, []string{"a1", "a2", "a3"}) || !slices.Contains(got, "b1") {
		t.Fatalf("phone sent %v, want a1 a2 a3 in order and b1", got)
	}
	close(phone.unstuck) // signal for the contact again
	waitUntil(t, "the stuck chat went through", func() bool { return len(phone.sent()) == 6 })
	if got := phone.sent()[4:]; !slices.Equal(got, []string{"s1", "s2"}) {
		t.Fatalf("stuck chat sent %v, want s1 then s2", got)
	}
}

// Sends for many chats at once stay within SendConcurrency.
func TestSendConcurrencyBound(t *testing.T) {
	srv := newFakeServerOpts(t, fakeOpts{features: []string{wire.FeatureStatusAck}})
	phone := &lanePhone{hold: make(chan struct{}), unstuck: make(chan struct{})}
	startAgentWith(t, srv, agentOpts{phone: phone, config: func(c *Config) { c.SendConcurrency = 2 }})
	p := srv.nextChannel(t)
	for i := range 6 {
		p.send(t, wire.Message{ID: "m" + string(rune('0'+i)), Chat: "+1555000000" + string(rune('0'+i)), Text: "x", TSMS: 1})
	}
	waitUntil(t, "two sends under way", func() bool {
		phone.mu.Lock()
		defer phone.mu.Unlock()
		return phone.inFlight == 2
	})
	for range 6 {
		phone.hold <- struct{}{}
	}
	waitUntil(t, "all sent", func() bool { return len(phone.sent()) == 6 })
	if phone.maxIn != 2 {
		t.Fatalf("%d sends ran at once, want at most (and here exactly) 2", phone.maxIn)
	}
}
