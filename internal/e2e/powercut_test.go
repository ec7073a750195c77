package e2e

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// Issue 15: the whole box loses power — homeserver, bridge and agent are
// SIGKILLed at the same moment while messages flow both ways — and comes
// back; afterwards every message arrived exactly once, in order. What a
// homeserver had accepted but not pushed to the bridge is found by
// catch-up; the test's own Matrix client stores each message once across
// the homeserver's crash (harness.Client.SendTextOnce). RCSGATE_POWERCUT_N
// (messages each way, default 300) and RCSGATE_POWERCUT_CUTS (default 2)
// size a run; RCSGATE_CRASH_SEED replays one; RCSGATE_CRASH=0 skips it.
func TestPowerCutWholeBox(t *testing.T) {
	skipCrash(t)
	if kind, _ := testpeer.KindFromEnv(); kind == "dendrite" {
		// Seen in most runs with Dendrite 0.13.8 (and never on Synapse or
		// tuwunel): right after Dendrite itself was SIGKILLed and started,
		// its /messages showed none of a portal's hundreds of messages
		// ("Fetched 0 events locally", while a state event written a moment
		// later was there), so the bridge could not find the phone message
		// whose send the cut interrupted and sent it a second time. Killing
		// Dendrite alone (TestCatchUpDeliversWhatTheHomeserverLost) and the
		// bridge and agent under load (TestCrashFullStack) run here.
		t.Skip("Dendrite 0.13.8: whole-box power cut not run (its history is unreadable right after its own crash; see the comment)")
	}
	n := envInt(t, "RCSGATE_POWERCUT_N", 300)
	cuts := envInt(t, "RCSGATE_POWERCUT_CUTS", 2)
	rng := seeded(t)
	t.Logf("%d messages each way, %d power cuts of the whole box", n, cuts)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	st, cli, mgmt := up(t, ctx)
	l := startLoad(t, ctx, st, cli, mgmt, "+12025550143", n, 8)

	var plan []int64
	for range cuts {
		plan = append(plan, int64(n/5+rng.Intn(2*n-2*n/5)))
	}
	sort.Slice(plan, func(i, j int) bool { return plan[i] < plan[j] })
	var back []time.Duration
	for _, at := range plan {
		l.waitProgress(at)
		handed := l.progress.Load()
		t0 := time.Now()
		if err := st.PowerCut(); err != nil {
			t.Fatalf("power cut: %v", err)
		}
		// The box boots: homeserver, then bridge, then phone agent.
		if err := st.StartHomeserver(ctx); err != nil {
			t.Fatalf("homeserver after the power cut: %v", err)
		}
		if err := st.StartGateway(ctx); err != nil {
			t.Fatalf("bridge after the power cut: %v", err)
		}
		if err := st.StartAgent(ctx); err != nil {
			t.Fatalf("agent after the power cut: %v", err)
		}
		l.ctl.Store(st.ControlURL)
		back = append(back, time.Since(t0))
		t.Logf("power cut at %d/%d messages handed in; homeserver, bridge and agent back in %v", handed, 2*n, time.Since(t0).Round(time.Millisecond))
	}
	handedIn := l.waitSenders()
	total := l.waitDelivered()
	l.check()
	t.Logf("%d messages each way in %v (all handed in after %v); %d power cuts, back in %v; Matrix send retries %d, inject retries %d",
		n, total.Round(time.Millisecond), handedIn.Round(time.Millisecond), cuts, back, l.sendRetries.Load(), l.injectRetries.Load())
	t.Logf("catch-up passes:\n%s", grepLines(st.GatewayLog(), "Catch-up pass done"))
}
