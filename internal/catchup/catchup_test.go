package catchup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// fakeHS plays the homeserver's /sync and /messages for one bot. Events
// live in one global stream; a sync token is a stream position.
type fakeHS struct {
	mu      sync.Mutex
	events  []fakeEvent
	down    bool
	syncs   int
	pollers int // long-polls under way
	polled  chan struct{}
	// who asked: "poll <token>" for each long-poll, "sync <token>" for
	// each other sync
	asked []string
}

type fakeEvent struct {
	room id.RoomID
	evt  map[string]any
}

func (f *fakeHS) add(room id.RoomID, sender id.UserID, typ, body string, ts time.Time) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	eid := fmt.Sprintf("$e%d", len(f.events)+1)
	f.events = append(f.events, fakeEvent{room: room, evt: map[string]any{
		"event_id": eid, "type": typ, "sender": sender, "origin_server_ts": ts.UnixMilli(),
		"content": map[string]any{"msgtype": "m.text", "body": body},
	}})
	return eid
}

func (f *fakeHS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	down := f.down
	f.mu.Unlock()
	if down {
		http.Error(w, "down", http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(r.URL.Path, "/sync"):
		f.sync(w, r)
	case strings.Contains(r.URL.Path, "/messages"):
		f.messages(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeHS) sync(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var filter mautrix.Filter
	_ = json.Unmarshal([]byte(q.Get("filter")), &filter)
	since := -1
	if s := q.Get("since"); s != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(s, "s"))
		if err != nil {
			http.Error(w, `{"errcode":"M_INVALID_PARAM","error":"bad since"}`, http.StatusBadRequest)
			return
		}
		since = n
	}
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if tm, _ := strconv.Atoi(q.Get("timeout")); tm > 0 { // a long-poll: held until it breaks
		f.mu.Lock()
		f.pollers++
		f.asked = append(f.asked, "poll "+token)
		f.mu.Unlock()
		select {
		case f.polled <- struct{}{}:
		default:
		}
		<-r.Context().Done()
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	f.asked = append(f.asked, "sync "+token)
	limit := 100
	if filter.Room != nil && filter.Room.Timeline != nil && filter.Room.Timeline.Limit > 0 {
		limit = filter.Room.Timeline.Limit
	}
	type timeline struct {
		Events    []map[string]any `json:"events"`
		Limited   bool             `json:"limited"`
		PrevBatch string           `json:"prev_batch"`
	}
	rooms := map[id.RoomID]*timeline{}
	byRoom := map[id.RoomID][]int{}
	for i := range f.events {
		if i >= since || since < 0 {
			byRoom[f.events[i].room] = append(byRoom[f.events[i].room], i)
		}
	}
	for room, idx := range byRoom {
		tl := &timeline{}
		if len(idx) > limit {
			tl.Limited = true
			idx = idx[len(idx)-limit:]
		}
		tl.PrevBatch = "s" + strconv.Itoa(idx[0])
		for _, i := range idx {
			e := map[string]any{}
			for k, v := range f.events[i].evt {
				if k != "room_id" {
					e[k] = v
				}
			}
			tl.Events = append(tl.Events, e)
		}
		rooms[room] = tl
	}
	join := map[id.RoomID]any{}
	for room, tl := range rooms {
		join[room] = map[string]any{"timeline": tl}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"next_batch": "s" + strconv.Itoa(len(f.events)), "rooms": map[string]any{"join": join}})
}

// messages pages one room from a position: backwards from "sN"
// (exclusive), forwards from "sN" (inclusive).
func (f *fakeHS) messages(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	room := id.RoomID(strings.Split(strings.SplitN(r.URL.Path, "/rooms/", 2)[1], "/")[0])
	q := r.URL.Query()
	from, _ := strconv.Atoi(strings.TrimPrefix(q.Get("from"), "s"))
	limit, _ := strconv.Atoi(q.Get("limit"))
	var chunk []map[string]any
	end := ""
	add := func(i int) {
		e := map[string]any{"room_id": room}
		for k, v := range f.events[i].evt {
			e[k] = v
		}
		chunk = append(chunk, e)
	}
	if q.Get("dir") == "f" {
		for i := from; i < len(f.events) && len(chunk) < limit; i++ {
			if f.events[i].room == room {
				add(i)
				end = "s" + strconv.Itoa(i+1)
			}
		}
	} else {
		for i := from - 1; i >= 0 && len(chunk) < limit; i-- {
			if f.events[i].room == room {
				add(i)
				end = "s" + strconv.Itoa(i)
			}
		}
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"chunk": chunk, "start": q.Get("from"), "end": end})
}

// memStore is the Store, in memory.
type memStore struct {
	mu     sync.Mutex
	values map[string]string
	forgot []time.Time
}

func (m *memStore) Value(_ context.Context, k string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[k]
	return v, ok, nil
}

func (m *memStore) SetValue(_ context.Context, k, v string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if v == "" {
		delete(m.values, k)
	} else {
		m.values[k] = v
	}
	return nil
}

func (m *memStore) ForgetEventsBefore(_ context.Context, t time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgot = append(m.forgot, t)
	return 0, nil
}

// recorder is the Deliverer: it hands each event id once, like astxn.
type recorder struct {
	mu      sync.Mutex
	handled map[id.EventID]bool
	order   []string // bodies, as delivered
	holds   []string // "hold" / "release", in order
	held    chan bool
}

func (d *recorder) DeliverMissed(_ context.Context, room id.RoomID, evts []*event.Event) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, e := range evts {
		if e.RoomID != room && e.RoomID != "" {
			panic("event of another room")
		}
		if d.handled[e.ID] {
			continue
		}
		d.handled[e.ID] = true
		_ = e.Content.ParseRaw(e.Type)
		body := ""
		if m := e.Content.AsMessage(); m != nil {
			body = m.Body
		}
		d.order = append(d.order, body)
		n++
	}
	return n
}

func (d *recorder) Handled(_ context.Context, eid id.EventID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.handled[eid]
}

func (d *recorder) Hold()    { d.note("hold", true) }
func (d *recorder) Release() { d.note("release", false) }
func (d *recorder) note(s string, held bool) {
	d.mu.Lock()
	d.holds = append(d.holds, s)
	d.mu.Unlock()
	select {
	case d.held <- held:
	default:
	}
}

func (d *recorder) bodies() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.order...)
}

const (
	portal   = id.RoomID("!portal:x")
	portal2  = id.RoomID("!portal2:x")
	mgmt     = id.RoomID("!mgmt:x")
	alice    = id.UserID("@alice:x")
	ghost    = id.UserID("@rcs_abc:x")
	tMessage = "m.room.message"
)

type rig struct {
	hs    *fakeHS
	srv   *httptest.Server
	store *memStore
	rec   *recorder
	r     *Runner
	now   time.Time
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	g := &rig{
		hs:    &fakeHS{polled: make(chan struct{}, 16)},
		store: &memStore{values: map[string]string{}},
		rec:   &recorder{handled: map[id.EventID]bool{}, held: make(chan bool, 16)},
		now:   time.Now(),
	}
	g.srv = httptest.NewServer(g.hs)
	t.Cleanup(g.srv.Close)
	g.r = &Runner{
		Cfg: cfg,
		Client: func(context.Context) (*mautrix.Client, error) {
			return mautrix.NewClient(g.srv.URL, "@bot:x", "token")
		},
		Store:   g.store,
		Deliver: g.rec,
		Portals: func(context.Context) (map[id.RoomID]bool, error) {
			return map[id.RoomID]bool{portal: true, portal2: true}, nil
		},
		Own: func(u id.UserID) bool { return u == "@bot:x" || strings.HasPrefix(string(u), "@rcs_") },
		Log: zerolog.New(zerolog.NewTestWriter(t)),
		Now: func() time.Time { return g.now },
	}
	return g
}

// run runs the Runner until the test ends.
func (g *rig) run(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); g.r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// setDown makes the homeserver refuse everything (breaking the long-poll
// under way) or answer again.
func (g *rig) setDown(down bool) {
	g.hs.mu.Lock()
	g.hs.down = down
	g.hs.mu.Unlock()
	if down {
		g.srv.CloseClientConnections()
	}
}

func (g *rig) pass(t *testing.T) Result {
	t.Helper()
	cli, _ := g.r.Client(t.Context())
	res, err := g.r.Pass(t.Context(), cli, "test")
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestPassDeliversWhatTransactionsMissed(t *testing.T) {
	g := newRig(t, Config{})
	g.hs.add(portal, alice, tMessage, "before the first pass", g.now)
	if res := g.pass(t); !res.Init || res.Delivered != 0 {
		t.Fatalf("first pass = %+v, want only a checkpoint", res)
	}
	// Missed: two messages in a portal, one in another, the ghost's echo,
	// a bot command in the management room, and a state event.
	g.hs.add(portal, alice, tMessage, "one", g.now)
	g.hs.add(portal2, alice, tMessage, "other room", g.now)
	g.hs.add(portal, ghost, tMessage, "ghost echo", g.now)
	g.hs.add(mgmt, alice, tMessage, "logout", g.now)
	g.hs.add(portal, alice, "m.room.member", "state", g.now)
	g.hs.add(portal, alice, tMessage, "two", g.now)
	res := g.pass(t)
	if res.Delivered != 3 || res.Rooms != 2 {
		t.Fatalf("pass = %+v, want 3 delivered in 2 rooms", res)
	}
	got := strings.Join(g.rec.bodies(), ",")
	if !strings.Contains(got, "one") || strings.Index(got, "one") > strings.Index(got, "two") || !strings.Contains(got, "other room") ||
		strings.Contains(got, "ghost") || strings.Contains(got, "logout") || strings.Contains(got, "state") {
		t.Fatalf("delivered %q", got)
	}
	// Nothing new: nothing delivered, and the checkpoint moved on.
	if res := g.pass(t); res.Delivered != 0 || res.Seen != 0 {
		t.Fatalf("idle pass = %+v", res)
	}
	if len(g.store.forgot) == 0 || !g.store.forgot[0].Before(g.now.Add(-DefaultMaxAge)) {
		t.Fatalf("old handled-event records not forgotten beyond max age: %v", g.store.forgot)
	}
}

func TestPassPagesBackAndKeepsBounds(t *testing.T) {
	g := newRig(t, Config{MaxEvents: 150, MaxAge: time.Hour})
	g.pass(t) // checkpoint
	// 2 too old, then 250 in one room: more than a sync page (100), more
	// than MaxEvents (150).
	g.hs.add(portal, alice, tMessage, "ancient 1", g.now.Add(-3*time.Hour))
	g.hs.add(portal, alice, tMessage, "ancient 2", g.now.Add(-2*time.Hour))
	for i := range 250 {
		g.hs.add(portal, alice, tMessage, fmt.Sprintf("m%03d", i), g.now)
	}
	res := g.pass(t)
	if res.Gaps != 1 || res.Delivered != 150 || !res.More || res.TooOld != 2 {
		t.Fatalf("round 1 = %+v, want a room paged through, the oldest 150 delivered, more to come, 2 too old", res)
	}
	res = g.pass(t) // the next round starts from the same checkpoint
	if res.Delivered != 100 || res.More {
		t.Fatalf("round 2 = %+v, want the other 100 and no more", res)
	}
	got := g.rec.bodies()
	if len(got) != 250 || got[0] != "m000" || got[249] != "m249" {
		t.Fatalf("delivered %d: %s … %s, want m000 … m249", len(got), got[0], got[len(got)-1])
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("out of order at %d: %s after %s", i, got[i], got[i-1])
		}
	}
	if res := g.pass(t); res.Seen != 0 {
		t.Fatalf("a pass after everything was delivered saw %+v", res)
	}
}

func TestPassDropsTooOldAndResetsBadCheckpoint(t *testing.T) {
	g := newRig(t, Config{MaxAge: time.Hour})
	g.pass(t)
	g.hs.add(portal, alice, tMessage, "stale", g.now.Add(-2*time.Hour))
	g.hs.add(portal, alice, tMessage, "fresh", g.now)
	if res := g.pass(t); res.Delivered != 1 || res.TooOld != 1 {
		t.Fatalf("pass = %+v, want 1 delivered and 1 too old", res)
	}
	// A checkpoint the homeserver refuses (it was reset) is dropped, and
	// the next pass takes a new one.
	_ = g.store.SetValue(t.Context(), checkpointKey, `{"token":"garbage","at_ms":1}`)
	cli, _ := g.r.Client(t.Context())
	if _, err := g.r.Pass(t.Context(), cli, "test"); err == nil {
		t.Fatal("pass with a refused checkpoint succeeded")
	}
	if res := g.pass(t); !res.Init {
		t.Fatalf("pass after a refused checkpoint = %+v, want a new checkpoint", res)
	}
}

func TestRunHoldsTransactionsUntilCaughtUp(t *testing.T) {
	g := newRig(t, Config{Interval: -1})
	g.pass(t) // a checkpoint from an earlier run
	g.hs.add(portal, alice, tMessage, "lost before the restart", g.now)
	g.run(t)

	// The caller held transactions; Run releases them after the start pass.
	if held := <-g.rec.held; held {
		t.Fatal("Run held again instead of releasing after the start pass")
	}
	if got := g.rec.bodies(); len(got) != 1 || got[0] != "lost before the restart" {
		t.Fatalf("start pass delivered %q", got)
	}
	<-g.hs.polled // watching

	// The homeserver dies (the long-poll breaks) and comes back: held
	// until the pass after it, which finds what it lost meanwhile.
	g.setDown(true)
	if held := <-g.rec.held; !held {
		t.Fatal("transactions not held while the homeserver is away")
	}
	g.hs.add(portal, alice, tMessage, "lost in the homeserver crash", g.now)
	g.setDown(false)
	if held := <-g.rec.held; held {
		t.Fatal("not released after the homeserver came back")
	}
	if got := g.rec.bodies(); len(got) != 2 || got[1] != "lost in the homeserver crash" {
		t.Fatalf("after the come-back pass delivered %q", got)
	}
}

// The watch long-polls with its own client (a user in no room, so portal
// traffic never wakes it), and passes sync with the bot's; a watch device
// the homeserver will not give does not keep transactions held.
func TestWatchUsesItsOwnClient(t *testing.T) {
	g := newRig(t, Config{Interval: -1})
	g.pass(t) // a checkpoint from an earlier run
	watchUp := make(chan bool, 1)
	watchUp <- false // the first attempt fails
	g.r.WatchClient = func(context.Context) (*mautrix.Client, error) {
		select {
		case ok := <-watchUp:
			if !ok {
				return nil, errors.New("login refused")
			}
		default:
		}
		return mautrix.NewClient(g.srv.URL, "@rcs__watch:x", "watch-token")
	}
	g.run(t)
	if held := <-g.rec.held; held {
		t.Fatal("Run held instead of releasing after the start pass")
	}
	<-g.hs.polled // the watch got its client after a retry and polls

	g.setDown(true)
	if held := <-g.rec.held; !held {
		t.Fatal("transactions not held while the homeserver is away")
	}
	g.setDown(false)
	if held := <-g.rec.held; held {
		t.Fatal("not released after the homeserver came back")
	}
	<-g.hs.polled // watching again
	g.hs.mu.Lock()
	asked := append([]string(nil), g.hs.asked...)
	g.hs.mu.Unlock()
	// The rig's first pass, the start pass, the watch's first sync (no
	// since: timeout 0) and its long-poll, its first sync once the
	// homeserver is back, the come-back pass, the watch's long-poll.
	want := []string{"sync token", "sync token", "sync watch-token", "poll watch-token", "sync watch-token", "sync token", "poll watch-token"}
	if !slices.Equal(asked, want) {
		t.Fatalf("syncs asked %q, want %q", asked, want)
	}
}

func TestDisabledReleasesAtOnce(t *testing.T) {
	g := newRig(t, Config{MaxAge: -1})
	g.r.Run(t.Context()) // returns at once
	if len(g.rec.holds) != 1 || g.rec.holds[0] != "release" {
		t.Fatalf("holds = %v, want one release", g.rec.holds)
	}
	if g.hs.syncs != 0 {
		t.Fatal("disabled catch-up asked the homeserver")
	}
}

// The count bound is on missed messages: a busy room whose messages the
// transactions brought costs nothing against it.
func TestMaxEventsCountsOnlyMissed(t *testing.T) {
	g := newRig(t, Config{MaxEvents: 100})
	g.pass(t)
	for i := range 300 {
		eid := g.hs.add(portal, alice, tMessage, fmt.Sprintf("h%03d", i), g.now)
		if i < 250 {
			g.rec.handled[id.EventID(eid)] = true // arrived by transaction
		}
	}
	res := g.pass(t)
	if res.Seen != 300 || res.Missed != 50 || res.Delivered != 50 || res.OverLimit != 0 {
		t.Fatalf("pass = %+v, want 300 seen, 50 missed and delivered, none over the limit", res)
	}
}
