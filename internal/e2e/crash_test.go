package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/harness"
	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// Issue 3: kill -9 the bridge and the agent at random points while 2,000
// messages flow both ways; afterwards every message arrived exactly once, in
// order per direction.
func TestCrashBothWaysExactlyOnce(t *testing.T) {
	// Runs by default (RCSGATE_CRASH=0 skips it). Dendrite commits an event
	// whose PUT /send was cut by the kill without recording its transaction
	// id (clientapi/routing/sendevent.go), so the bridge finds such a send in
	// the room by its net.rcsgate.msg_id before sending again
	// (internal/connector/recover.go). RCSGATE_CRASH_N (messages each way,
	// default 1000) and RCSGATE_CRASH_KILLS (kills of each process, default
	// 3) size a run; RCSGATE_CRASH_SEED replays one.
	// On Synapse it is opt-in (RCSGATE_CRASH=1): in one of our runs the
	// test's own Matrix client never got one of its 1,000 concurrent sends
	// into Synapse (999 stored, no error logged), and the run hung to its
	// deadline; not yet explained, so it does not gate CI there.
	switch kind, _ := testpeer.KindFromEnv(); {
	case os.Getenv("RCSGATE_CRASH") == "0":
		t.Skip("RCSGATE_CRASH=0: full-stack SIGKILL test skipped")
	case kind == "synapse" && os.Getenv("RCSGATE_CRASH") != "1":
		t.Skip("full-stack SIGKILL test is opt-in on Synapse: set RCSGATE_CRASH=1")
	}
	if testing.Short() {
		t.Skip("crash test takes minutes")
	}
	const (
		contact = "+12025550142"
		window  = 16 // Matrix sends in flight
	)
	n := envInt(t, "RCSGATE_CRASH_N", 1000)      // messages each way
	kills := envInt(t, "RCSGATE_CRASH_KILLS", 3) // of each process
	seed := time.Now().UnixNano()
	if s := os.Getenv("RCSGATE_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("RCSGATE_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d (RCSGATE_CRASH_SEED to replay), %d messages each way, %d kills of each process", seed, n, kills)
	rng := rand.New(rand.NewSource(seed))

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	st, cli, mgmt := up(t, ctx)
	portal, ghost, err := cli.StartChat(ctx, mgmt, contact)
	if err != nil {
		t.Fatal(err)
	}
	user := id.UserID(st.Info.UserID)
	var ctl atomic.Value
	ctl.Store(st.ControlURL)
	start := time.Now()

	var progress atomic.Int64 // messages handed in, both ways
	var injectRetries atomic.Int64
	errc := make(chan error, 2)

	// Matrix → phone: a window of sends in flight.
	go func() {
		sem := make(chan struct{}, window)
		var wg sync.WaitGroup
		var firstErr atomic.Value
		for i := 1; i <= n; i++ {
			sem <- struct{}{}
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				defer func() { <-sem }()
				if _, err := cli.SendText(ctx, portal, fmt.Sprintf("m2p-%04d", i)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				progress.Add(1)
			}(i)
		}
		wg.Wait()
		if e, _ := firstErr.Load().(error); e != nil {
			errc <- fmt.Errorf("matrix send: %w", e)
			return
		}
		errc <- nil
	}()

	// phone → Matrix: sequential injections; one that fails (agent down)
	// is offered again with the same phone id, so it is queued once.
	go func() {
		for i := 1; i <= n; i++ {
			body := fmt.Sprintf("p2m-%04d", i)
			for attempt := 0; ; attempt++ {
				if ctx.Err() != nil {
					errc <- fmt.Errorf("inject %s: %w", body, ctx.Err())
					return
				}
				if attempt > 2000 {
					errc <- fmt.Errorf("inject %s: gave up after %d attempts", body, attempt)
					return
				}
				actx, acancel := context.WithTimeout(ctx, 10*time.Second)
				err := st.InjectAt(actx, ctl.Load().(string), "crash-"+body, contact, body)
				acancel()
				if err == nil {
					break
				}
				injectRetries.Add(1)
				// Wait for the restarted agent: a fresh control URL or a short pause bound by ctx.
				tm := time.NewTimer(50 * time.Millisecond)
				select {
				case <-ctx.Done():
				case <-tm.C:
				}
				tm.Stop()
			}
			progress.Add(1)
		}
		errc <- nil
	}()

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
		for progress.Load() < k.at {
			if ctx.Err() != nil {
				t.Fatalf("flow stalled at %d before kill at %d: %v", progress.Load(), k.at, ctx.Err())
			}
			tm := time.NewTimer(20 * time.Millisecond)
			<-tm.C
		}
		t0 := time.Now()
		if k.agent {
			if err := st.StopAgent(syscall.SIGKILL); err != nil {
				t.Logf("kill agent: %v", err)
			}
			if err := st.StartAgent(ctx); err != nil {
				t.Fatalf("restart agent: %v", err)
			}
			ctl.Store(st.ControlURL)
		} else {
			if err := st.StopGateway(syscall.SIGKILL); err != nil {
				t.Logf("kill bridge: %v", err)
			}
			if err := st.StartGateway(ctx); err != nil {
				t.Fatalf("restart bridge: %v", err)
			}
		}
		downtime = append(downtime, time.Since(t0))
		t.Logf("SIGKILL %s at %d/%d messages handed in; back in %v", map[bool]string{true: "agent", false: "bridge"}[k.agent], progress.Load(), 2*n, time.Since(t0).Round(time.Millisecond))
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("senders did not finish: %v", ctx.Err())
		}
	}
	handedIn := time.Since(start)

	// Wait until everything arrived (or the deadline), then check.
	var p2m, m2pTimeline []harness.TimelineMessage
	var sent []harness.SentMsg
	var sentErr error // the last failure to read the phone's sent list
	for {
		p2m = cli.Messages(portal, ghost)
		m2pTimeline = cli.Messages(portal, user)
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second) // one hung call must not eat the budget
		all, err := st.SentAt(sctx, ctl.Load().(string))
		scancel()
		sent, sentErr = sent[:0], err
		if err == nil {
			for _, s := range all {
				if s.Chat == contact {
					sent = append(sent, s)
				}
			}
		}
		// Distinct bodies: a duplicate must not end the wait before the
		// last message is in (it would show up as lost).
		if distinct(bodies(p2m)) >= n && distinct(sentTexts(sent)) >= n && distinct(bodies(m2pTimeline)) >= n {
			break
		}
		if ctx.Err() != nil {
			t.Errorf("deadline: phone→Matrix %d/%d, Matrix→phone %d/%d (timeline %d; reading the phone's sent list: %v)", len(p2m), n, len(sent), n, len(m2pTimeline), sentErr)
			if sentErr != nil {
				// A hung control API: have the agent dump its goroutines
				// into its log (kept with RCSGATE_KEEP_LOGS).
				_ = st.StopAgent(syscall.SIGQUIT)
			}
			break
		}
		tm := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-tm.C:
		}
	}
	total := time.Since(start)

	// phone → Matrix: the ghost's messages in timeline order = injection order.
	checkSeq(t, "phone→Matrix", bodies(p2m), "p2m", n)
	// Matrix → phone: sim order = timeline order of the user's messages.
	tl := bodies(m2pTimeline)
	sentBodies := sentTexts(sent)
	checkSeq(t, "Matrix→phone (sim)", sentBodies, "m2p", n)
	if fmt.Sprint(tl) != fmt.Sprint(sentBodies) {
		t.Errorf("Matrix→phone: sim order differs from the timeline order of the user's messages")
		for i := 0; i < len(tl) && i < len(sentBodies); i++ {
			if tl[i] != sentBodies[i] {
				t.Errorf("first difference at %d: timeline %q, sim %q", i, tl[i], sentBodies[i])
				break
			}
		}
	}
	t.Logf("%d messages each way in %v (all handed in after %v); kills done in %v; inject retries %d", n, total.Round(time.Millisecond), handedIn.Round(time.Millisecond), downtime, injectRetries.Load())
	t.Logf("agent log: duplicate sends dropped by the phone %d, re-handed inbound %d; rcsgate log lines with 'duplicate' %d",
		countLog(st.AgentLog(), "duplicate send dropped"), countLog(st.AgentLog(), "phone handed a message again"), countLog(st.GatewayLog(), "uplicate"))
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
