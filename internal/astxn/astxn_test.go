package astxn

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// memStore is the Store in memory.
type memStore struct {
	mu      sync.Mutex
	txns    map[string]string
	handled map[string]bool
}

func (m *memStore) TxnDone(_ context.Context, id, sha string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.txns[id] == sha, nil
}

func (m *memStore) MarkTxnDone(_ context.Context, id, sha string, _ time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.txns[id] = sha
	return nil
}

func (m *memStore) EventHandled(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.handled[id], nil
}

func (m *memStore) MarkEventHandled(_ context.Context, id, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.handled[id] = true
	return nil
}

type rig struct {
	h   *Handler
	srv *httptest.Server
	mu  sync.Mutex
	got []string // event ids dispatched, in order
	// client plays the homeserver's HTTP client (nil: http.DefaultClient).
	client *http.Client
}

func newRig(t *testing.T) *rig {
	t.Helper()
	as := appservice.Create()
	as.Registration = &appservice.Registration{ServerToken: "hs-token", AppToken: "as-token"}
	ep := appservice.NewEventProcessor(as)
	ep.ExecMode = appservice.Sync
	g := &rig{}
	record := func(_ context.Context, evt *event.Event) {
		g.mu.Lock()
		g.got = append(g.got, string(evt.ID))
		g.mu.Unlock()
	}
	for _, typ := range []event.Type{event.EventMessage, event.EventReaction, event.StateMember} {
		ep.On(typ, record)
	}
	g.h = &Handler{AS: as, EP: ep, Store: &memStore{txns: map[string]string{}, handled: map[string]bool{}}}
	g.srv = httptest.NewServer(Wrap(http.NotFoundHandler(), g.h))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *rig) dispatched() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.got...)
}

func msg(eventID string) string {
	return fmt.Sprintf(`{"type":"m.room.message","room_id":"!r:x","sender":"@a:x","event_id":%q,"origin_server_ts":1,"content":{"msgtype":"m.text","body":"hi"}}`, eventID)
}

func (g *rig) put(t *testing.T, txnID string, events ...string) int {
	t.Helper()
	body := `{"events":[` + strings.Join(events, ",") + `]}`
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, g.srv.URL+"/_matrix/app/v1/transactions/"+txnID, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer hs-token")
	c := g.client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // so the connection is kept
	resp.Body.Close()
	return resp.StatusCode
}

func TestEachEventOnceWhateverTheTransaction(t *testing.T) {
	g := newRig(t)
	member := `{"type":"m.room.member","state_key":"@a:x","room_id":"!r:x","sender":"@a:x","event_id":"$m","origin_server_ts":1,"content":{"membership":"join"}}`
	for _, step := range []struct {
		txn    string
		events []string
	}{
		{"t1", []string{msg("$1"), member}},
		{"t1", []string{msg("$1"), member}},            // a replay: ignored whole
		{"t2", []string{msg("$1")}},                    // the same event in another transaction
		{"t1", []string{msg("$1"), msg("$2"), member}}, // the id reused with more events (Dendrite)
	} {
		if code := g.put(t, step.txn, step.events...); code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", step.txn, code)
		}
	}
	// $1 and $2 once each; the state event is not deduplicated by id (it
	// is not a message) but the replay of t1 was skipped as a whole.
	if got := strings.Join(g.dispatched(), " "); got != "$1 $m $2 $m" {
		t.Fatalf("dispatched %q, want \"$1 $m $2 $m\"", got)
	}
	// Catch-up finding the same events hands none of them again.
	n := g.h.DeliverMissed(t.Context(), "!r:x", []*event.Event{
		{ID: "$1", Type: event.EventMessage, Sender: "@a:x"},
		{ID: "$3", Type: event.EventMessage, Sender: "@a:x"},
	})
	if n != 1 || g.dispatched()[4] != "$3" {
		t.Fatalf("DeliverMissed handed %d, dispatched %v", n, g.dispatched())
	}
}

func TestConcurrentPathsHandOnce(t *testing.T) {
	g := newRig(t)
	var events []string
	var missed []*event.Event
	for i := range 50 {
		eid := fmt.Sprintf("$c%02d", i)
		events = append(events, msg(eid))
		missed = append(missed, &event.Event{ID: id.EventID(eid), Type: event.EventMessage, Sender: "@a:x"})
	}
	var wg sync.WaitGroup
	wg.Go(func() { g.put(t, "tx", events...) })
	wg.Go(func() { g.h.DeliverMissed(t.Context(), "!r:x", missed) })
	wg.Wait()
	got := g.dispatched()
	if len(got) != 50 {
		t.Fatalf("dispatched %d events, want 50 (each once)", len(got))
	}
	for i, eid := range got { // both paths walk in order, so the merge is in order
		if want := fmt.Sprintf("$c%02d", i); eid != want {
			t.Fatalf("event %d is %s, want %s", i, eid, want)
		}
	}
}

func TestHeldTransactionWaitsForRelease(t *testing.T) {
	g := newRig(t)
	g.h.Hold()
	done := make(chan int, 1)
	go func() { done <- g.put(t, "held", msg("$h")) }()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for g.h.gate.waiting.Load() == 0 {
		select {
		case <-tick.C:
		case code := <-done:
			t.Fatalf("transaction answered (%d) while held", code)
		case <-t.Context().Done():
			t.Fatal("transaction never reached the gate")
		}
	}
	// Held: the catch-up pass delivers first; then the transaction goes.
	g.h.DeliverMissed(t.Context(), "!r:x", []*event.Event{{ID: "$lost", Type: event.EventMessage, Sender: "@a:x"}})
	select {
	case code := <-done:
		t.Fatalf("transaction answered (%d) while held", code)
	default:
	}
	g.h.Release()
	if code := <-done; code != http.StatusOK {
		t.Fatalf("HTTP %d", code)
	}
	if got := strings.Join(g.dispatched(), " "); got != "$lost $h" {
		t.Fatalf("dispatched %q, want the lost message first", got)
	}
}

func TestGateWaitIsBounded(t *testing.T) {
	var g gate
	if !g.wait(t.Context(), time.Hour) {
		t.Fatal("an open gate made us wait")
	}
	g.hold()
	g.hold() // idempotent
	if g.wait(t.Context(), 10*time.Millisecond) {
		t.Fatal("a held gate let us through")
	}
	g.release()
	g.release()
	if !g.wait(t.Context(), time.Hour) {
		t.Fatal("a released gate made us wait")
	}
}

// A numbered transaction id that skips one makes the handler catch up
// before handling it; timestamps as ids (Dendrite) and hashes (tuwunel) do
// not.
func TestTransactionGapTriggersCatchUp(t *testing.T) {
	g := newRig(t)
	var reasons []string
	g.h.CatchUp = func(_ context.Context, reason string) {
		reasons = append(reasons, reason)
		// The pass finds the left-behind transaction's event in the room.
		g.h.DeliverMissed(t.Context(), "!r:x", []*event.Event{{ID: "$left", Type: event.EventMessage, Sender: "@a:x"}})
	}
	for _, txn := range []string{"7", "8", "8", "10", "11", "1796144280834300749", "1796144281579703653", "q3ZnV_hash", "12"} {
		g.put(t, txn, msg("$"+txn))
	}
	if len(reasons) != 1 {
		t.Fatalf("catch-up ran %d times (%v), want once (for 10 after 8)", len(reasons), reasons)
	}
	got := strings.Join(g.dispatched(), " ")
	if !strings.HasPrefix(got, "$7 $8 $left $10 $11") {
		t.Fatalf("dispatched %q: want the left-behind message before transaction 10's", got)
	}
}

// A transaction that opens a new connection after an earlier one carried
// transactions (the homeserver restarted) is preceded by a catch-up pass;
// transactions on a kept connection, and the run's first, are not.
func TestReconnectedHomeserverTriggersCatchUp(t *testing.T) {
	g := newRig(t)
	g.srv.Close()
	g.srv = httptest.NewUnstartedServer(Wrap(http.NotFoundHandler(), g.h))
	g.srv.Config.ConnContext = ConnContext
	g.srv.Start()
	t.Cleanup(g.srv.Close)
	g.client = &http.Client{Transport: &http.Transport{}}
	var reasons []string
	g.h.CatchUp = func(_ context.Context, reason string) {
		reasons = append(reasons, reason)
		g.h.DeliverMissed(t.Context(), "!r:x", []*event.Event{{ID: "$lost-in-restart", Type: event.EventMessage, Sender: "@a:x"}})
	}
	g.put(t, "a1", msg("$a1"))
	g.put(t, "a2", msg("$a2"))
	if len(reasons) != 0 {
		t.Fatalf("catch-up ran for %v on the first connection", reasons)
	}
	g.srv.CloseClientConnections() // the homeserver restarts: a new process, a new client
	g.client = &http.Client{Transport: &http.Transport{}}
	g.put(t, "b1", msg("$b1"))
	g.put(t, "b2", msg("$b2"))
	if len(reasons) != 1 || reasons[0] != "homeserver reconnected" {
		t.Fatalf("catch-up ran for %v, want once for the reconnection", reasons)
	}
	if got := strings.Join(g.dispatched(), " "); got != "$a1 $a2 $lost-in-restart $b1 $b2" {
		t.Fatalf("dispatched %q: want what catch-up found before the new connection's transaction", got)
	}
}
