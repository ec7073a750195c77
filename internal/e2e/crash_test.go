package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/harness"
)

// Issue 3: kill -9 the bridge and the agent at random points while 2,000
// messages flow both ways; afterwards every message arrived exactly once, in
// order per direction.
func TestCrashBothWaysExactlyOnce(t *testing.T) {
	// Runs by default on every homeserver (RCSGATE_CRASH=0 skips it).
	// Dendrite commits an event whose PUT /send was cut by the kill without
	// recording its transaction id (clientapi/routing/sendevent.go), so the
	// bridge finds such a send in the room by its net.rcsgate.msg_id before
	// sending again (internal/connector/recover.go). RCSGATE_CRASH_N
	// (messages each way, default 1000) and RCSGATE_CRASH_KILLS (kills of
	// each process, default 3) size a run; RCSGATE_CRASH_SEED replays one.
	skipCrash(t)
	n := envInt(t, "RCSGATE_CRASH_N", 1000)      // messages each way
	kills := envInt(t, "RCSGATE_CRASH_KILLS", 3) // of each process
	rng := seeded(t)
	t.Logf("%d messages each way, %d kills of each process", n, kills)

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	st, cli, mgmt := up(t, ctx)
	l := startLoad(t, ctx, st, cli, mgmt, "+12025550142", n, 16)

	// Killer: 3 × bridge, 3 × agent, at random points of the 2,000.
	type kill struct {
		at    int64
		agent bool
	}
	var plan []kill
	for i := 0; i < 2*kills; i++ {
		plan = append(plan, kill{at: int64(n/10 + rng.Intn(2*n-2*n/5)), agent: i%2 == 1})
	}
	sort.Slice(plan, func(i, j int) bool { return plan[i].at < plan[j].at })
	var downtime []time.Duration
	for _, k := range plan {
		l.waitProgress(k.at)
		t0 := time.Now()
		if k.agent {
			if err := st.StopAgent(syscall.SIGKILL); err != nil {
				t.Logf("kill agent: %v", err)
			}
			if err := st.StartAgent(ctx); err != nil {
				t.Fatalf("restart agent: %v", err)
			}
			l.ctl.Store(st.ControlURL)
		} else {
			if err := st.StopGateway(syscall.SIGKILL); err != nil {
				t.Logf("kill bridge: %v", err)
			}
			if err := st.StartGateway(ctx); err != nil {
				t.Fatalf("restart bridge: %v", err)
			}
		}
		downtime = append(downtime, time.Since(t0))
		t.Logf("SIGKILL %s at %d/%d messages handed in; back in %v", map[bool]string{true: "agent", false: "bridge"}[k.agent], l.progress.Load(), 2*n, time.Since(t0).Round(time.Millisecond))
	}
	handedIn := l.waitSenders()
	total := l.waitDelivered()
	l.check()
	t.Logf("%d messages each way in %v (all handed in after %v); kills done in %v; Matrix send retries %d, inject retries %d",
		n, total.Round(time.Millisecond), handedIn.Round(time.Millisecond), downtime, l.sendRetries.Load(), l.injectRetries.Load())
	t.Logf("agent log: duplicate sends dropped by the phone %d, re-handed inbound %d; rcsgate log lines with 'duplicate' %d",
		countLog(st.AgentLog(), "duplicate send dropped"), countLog(st.AgentLog(), "phone handed a message again"), countLog(st.GatewayLog(), "uplicate"))
	// Every phone message is in Matrix, so no send is still marked in
	// flight — also those a kill cut after bridgev2 had recorded them.
	if err := st.StopGateway(syscall.SIGTERM); err != nil {
		t.Fatalf("stop bridge: %v", err)
	}
	if n := countInflight(t, filepath.Join(st.Opts.Dir, "rcsgate", "rcsgate.db")); n != 0 {
		t.Errorf("%d phone messages still marked in flight after all were delivered; want 0", n)
	}
}

// countInflight counts the phone messages rcsgate's store marks as being
// sent to Matrix.
func countInflight(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM inflight`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// skipCrash skips the long crash tests with RCSGATE_CRASH=0 or -short.
func skipCrash(t *testing.T) {
	t.Helper()
	if os.Getenv("RCSGATE_CRASH") == "0" {
		t.Skip("RCSGATE_CRASH=0: full-stack SIGKILL tests skipped")
	}
	if testing.Short() {
		t.Skip("crash tests take minutes")
	}
}

// seeded returns a random source, from RCSGATE_CRASH_SEED to replay a run.
func seeded(t *testing.T) *rand.Rand {
	t.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("RCSGATE_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("RCSGATE_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d (RCSGATE_CRASH_SEED to replay)", seed)
	return rand.New(rand.NewSource(seed))
}

// load drives messages both ways through a portal while a test crashes
// things: Matrix → phone with a window of concurrent sends, each stored
// once whatever happens to the homeserver (harness.Client.SendTextOnce);
// phone → Matrix with sequential injections, one that fails offered again
// with the same phone id (the agent queues an id once).
type load struct {
	t        *testing.T
	ctx      context.Context
	st       *harness.Stack
	cli      *harness.Client
	portal   id.RoomID
	ghost    id.UserID
	user     id.UserID
	contact  string
	n        int
	started  time.Time
	ctl      atomic.Value // the agent's control URL, new after each restart
	progress atomic.Int64 // messages handed in, both ways

	sendRetries, injectRetries atomic.Int64
	errc                       chan error // each sender's result
	failure                    atomic.Pointer[error]

	mu    sync.Mutex
	sends map[string][2]time.Time // Matrix → phone body → when its send started and returned

	// filled by waitDelivered
	p2m, m2pTimeline []harness.TimelineMessage
	sent             []harness.SentMsg
}

func startLoad(t *testing.T, ctx context.Context, st *harness.Stack, cli *harness.Client, mgmt id.RoomID, contact string, n, window int) *load {
	t.Helper()
	portal, ghost, err := cli.StartChat(ctx, mgmt, contact)
	if err != nil {
		t.Fatal(err)
	}
	l := &load{t: t, ctx: ctx, st: st, cli: cli, portal: portal, ghost: ghost, user: id.UserID(st.Info.UserID),
		contact: contact, n: n, started: time.Now(), errc: make(chan error, 2), sends: map[string][2]time.Time{}}
	l.ctl.Store(st.ControlURL)
	go l.matrixToPhone(window)
	go l.phoneToMatrix()
	return l
}

func (l *load) matrixToPhone(window int) {
	sem := make(chan struct{}, window)
	var wg sync.WaitGroup
	errs := make(chan error, l.n)
	for i := 1; i <= l.n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			body := fmt.Sprintf("m2p-%04d", i)
			t0 := time.Now()
			_, failed, err := l.cli.SendTextOnce(l.ctx, l.portal, body)
			l.mu.Lock()
			l.sends[body] = [2]time.Time{t0, time.Now()}
			l.mu.Unlock()
			l.sendRetries.Add(int64(failed))
			if failed > 0 {
				l.t.Logf("Matrix send of %s: %d attempts failed before it was stored (or found stored)", body, failed)
			}
			if err != nil {
				errs <- err
				return
			}
			l.progress.Add(1)
		})
	}
	wg.Wait()
	close(errs)
	l.done(<-errs) // nil when closed empty
}

// done reports a sender's result.
func (l *load) done(err error) {
	if err != nil {
		l.failure.CompareAndSwap(nil, &err)
	}
	l.errc <- err
}

func (l *load) phoneToMatrix() {
	for i := 1; i <= l.n; i++ {
		body := fmt.Sprintf("p2m-%04d", i)
		for attempt := 0; ; attempt++ {
			if l.ctx.Err() != nil {
				l.done(fmt.Errorf("inject %s: %w", body, l.ctx.Err()))
				return
			}
			if attempt > 4000 {
				l.done(fmt.Errorf("inject %s: gave up after %d attempts", body, attempt))
				return
			}
			actx, acancel := context.WithTimeout(l.ctx, 10*time.Second)
			err := l.st.InjectAt(actx, l.ctl.Load().(string), "crash-"+body, l.contact, body)
			acancel()
			if err == nil {
				break
			}
			l.injectRetries.Add(1)
			// Wait for the restarted agent: a fresh control URL or a short pause bound by ctx.
			tm := time.NewTimer(50 * time.Millisecond)
			select {
			case <-l.ctx.Done():
			case <-tm.C:
			}
			tm.Stop()
		}
		l.progress.Add(1)
	}
	l.done(nil)
}

// waitProgress waits until at messages (both ways) were handed in.
func (l *load) waitProgress(at int64) {
	l.t.Helper()
	for l.progress.Load() < at {
		if l.ctx.Err() != nil {
			l.t.Fatalf("flow stalled at %d before %d: %v", l.progress.Load(), at, l.ctx.Err())
		}
		if err := l.failure.Load(); err != nil {
			l.t.Fatal(*err)
		}
		tm := time.NewTimer(20 * time.Millisecond)
		<-tm.C
	}
}

// waitSenders waits for both senders and returns how long handing in took.
func (l *load) waitSenders() time.Duration {
	l.t.Helper()
	for i := 0; i < 2; i++ {
		select {
		case err := <-l.errc:
			if err != nil {
				l.t.Fatal(err)
			}
		case <-l.ctx.Done():
			l.t.Fatalf("senders did not finish: %v", l.ctx.Err())
		}
	}
	return time.Since(l.started)
}

// waitDelivered waits until every message arrived (or the deadline) and
// returns the time since the load started.
func (l *load) waitDelivered() time.Duration {
	t, ctx, n := l.t, l.ctx, l.n
	var sentErr error // the last failure to read the phone's sent list
	lastReport := time.Now()
	for {
		l.p2m = l.cli.Messages(l.portal, l.ghost)
		l.m2pTimeline = l.cli.Messages(l.portal, l.user)
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second) // one hung call must not eat the budget
		all, err := l.st.SentAt(sctx, l.ctl.Load().(string))
		scancel()
		l.sent, sentErr = l.sent[:0], err
		if err == nil {
			for _, s := range all {
				if s.Chat == l.contact {
					l.sent = append(l.sent, s)
				}
			}
		}
		// Distinct bodies: a duplicate must not end the wait before the
		// last message is in (it would show up as lost).
		if distinct(bodies(l.p2m)) >= n && distinct(sentTexts(l.sent)) >= n && distinct(bodies(l.m2pTimeline)) >= n {
			break
		}
		if time.Since(lastReport) >= 10*time.Second {
			lastReport = time.Now()
			t.Logf("after %v: phone→Matrix %d/%d, Matrix→phone %d/%d (timeline %d)", time.Since(l.started).Round(time.Second),
				distinct(bodies(l.p2m)), n, distinct(sentTexts(l.sent)), n, distinct(bodies(l.m2pTimeline)))
		}
		if ctx.Err() != nil {
			t.Errorf("deadline: phone→Matrix %d/%d, Matrix→phone %d/%d (timeline %d; reading the phone's sent list: %v)", len(l.p2m), n, len(l.sent), n, len(l.m2pTimeline), sentErr)
			if sentErr != nil {
				// A hung control API: have the agent dump its goroutines
				// into its log (kept with RCSGATE_KEEP_LOGS).
				_ = l.st.StopAgent(syscall.SIGQUIT)
			}
			break
		}
		tm := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-tm.C:
		}
	}
	return time.Since(l.started)
}

// check wants every message exactly once, in order: phone → Matrix in
// injection order; Matrix → phone in the order the user sent them, where
// that is defined — a message whose send returned before another's began
// was stored first and must reach the phone first; two sends in flight at
// once may be stored (and so delivered) either way round.
func (l *load) check() {
	t := l.t
	checkSeq(t, "phone→Matrix", bodies(l.p2m), "p2m", l.n)
	sentBodies := sentTexts(l.sent)
	checkSeq(t, "Matrix→phone (sim)", sentBodies, "m2p", l.n)
	pos := map[string]int{}
	for i, b := range sentBodies {
		if _, ok := pos[b]; !ok {
			pos[b] = i
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	type span struct {
		body       string
		start, end time.Time
	}
	spans := make([]span, 0, len(l.sends))
	for b, se := range l.sends {
		spans = append(spans, span{b, se[0], se[1]})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start.Before(spans[j].start) })
	violations := 0
	for j, b := range spans {
		for _, a := range spans[:j] {
			pa, okA := pos[a.body]
			pb, okB := pos[b.body]
			if okA && okB && a.end.Before(b.start) && pa > pb {
				violations++
				if violations <= 5 {
					t.Errorf("Matrix→phone: %s reached the phone after %s, but its send had returned before that one began", a.body, b.body)
				}
			}
		}
	}
	if violations > 0 {
		t.Errorf("Matrix→phone: %d pairs out of the order they were sent in", violations)
	}
	if tl := bodies(l.m2pTimeline); fmt.Sprint(tl) != fmt.Sprint(sentBodies) {
		// Not an error: concurrent sends have no one order; the client's
		// view and the bridge's may differ where sends overlapped.
		for i := 0; i < len(tl) && i < len(sentBodies); i++ {
			if tl[i] != sentBodies[i] {
				t.Logf("note: the client's timeline and the phone differ first at %d (%q vs %q), sends that overlapped", i, tl[i], sentBodies[i])
				break
			}
		}
	}
}

// envInt reads a positive count from the environment, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

func distinct(s []string) int {
	seen := map[string]bool{}
	for _, b := range s {
		seen[b] = true
	}
	return len(seen)
}

func sentTexts(sent []harness.SentMsg) []string {
	out := make([]string, len(sent))
	for i, s := range sent {
		out[i] = s.Text
	}
	return out
}

func bodies(ms []harness.TimelineMessage) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Body
	}
	return out
}

// checkSeq wants exactly prefix-0001 … prefix-n, each once, in order; the
// timeline order is what a pipelined sender defines, so for Matrix→phone
// the comparison with the timeline is the real check and this one counts.
func checkSeq(t *testing.T, what string, got []string, prefix string, n int) {
	t.Helper()
	count := map[string]int{}
	for _, b := range got {
		count[b]++
	}
	var dup, lost []string
	for i := 1; i <= n; i++ {
		b := fmt.Sprintf("%s-%04d", prefix, i)
		switch c := count[b]; {
		case c == 0:
			lost = append(lost, b)
		case c > 1:
			dup = append(dup, b)
		}
	}
	if len(got) != n || len(dup) > 0 || len(lost) > 0 {
		t.Errorf("%s: %d messages, want %d; duplicated %d %v; lost %d %v", what, len(got), n, len(dup), head(dup), len(lost), head(lost))
	}
	if prefix == "p2m" {
		for i, b := range got {
			if want := fmt.Sprintf("%s-%04d", prefix, i+1); b != want {
				t.Errorf("%s: out of order at %d: %q, want %q", what, i, b, want)
				break
			}
		}
	}
}

func head(s []string) []string {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}

func countLog(b []byte, needle string) int {
	c := 0
	for i := 0; ; {
		j := indexFrom(b, needle, i)
		if j < 0 {
			return c
		}
		c++
		i = j + len(needle)
	}
}

func indexFrom(b []byte, needle string, from int) int {
	if from >= len(b) {
		return -1
	}
	for i := from; i+len(needle) <= len(b); i++ {
		if string(b[i:i+len(needle)]) == needle {
			return i
		}
	}
	return -1
}
