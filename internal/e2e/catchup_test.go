package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/harness"
	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// Issue 15: Matrix messages the homeserver accepted but never pushed to the
// bridge are found by catch-up and reach the phone once each, in order —
// when the homeserver comes back from a crash, and when the bridge starts.
// The harness's tap plays a homeserver that loses transactions (it answers
// 200 and passes nothing on).
func TestCatchUpDeliversWhatTheHomeserverLost(t *testing.T) {
	if kind, _ := testpeer.KindFromEnv(); kind == "dendrite" {
		// Seen in about 1 run in 5 with Dendrite 0.13.8: after its own
		// SIGKILL it did not push a message sent a moment after it was back
		// (its appservice consumer's ack floor was ahead of the queue it
		// restored from disk: "ack floor 39 is ahead of stream's last
		// sequence 0"), so that message waits for catch-up's 10-min pass.
		t.Skip("Dendrite 0.13.8: homeserver-crash catch-up not run (it may not push right after its own crash; see the comment)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, cli, mgmt := upWith(t, ctx, harness.Options{TransactionTap: true})
	const contact = "+12025550155" // a quiet contact: the phone's sent list is ours alone
	portal, _, err := cli.StartChat(ctx, mgmt, contact)
	if err != nil {
		t.Fatal(err)
	}
	n := nonce(t)
	var want []string
	var lost []id.EventID // sent while the tap swallows transactions
	send := func(what string) {
		t.Helper()
		body := fmt.Sprintf("%s %s", what, n)
		resp, err := cli.SendText(ctx, portal, body)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, body)
		lost = append(lost, resp.EventID)
	}
	drop := func(on bool) {
		t.Helper()
		if on {
			lost = lost[:0]
			if err := st.DropTransactions(true); err != nil {
				t.Fatal(err)
			}
			return
		}
		// Stop swallowing once the homeserver believes it delivered them all.
		if err := waitFor(ctx, func() bool {
			for _, e := range lost {
				if !st.Dropped(e) {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatalf("the homeserver never pushed the messages sent while the tap swallowed them: %v", err)
		}
		if err := st.DropTransactions(false); err != nil {
			t.Fatal(err)
		}
	}
	waitPhone := func(stage string) {
		t.Helper()
		if _, err := st.WaitSent(ctx, func(s sim.Sent) bool { return s.Text == want[len(want)-1] }); err != nil {
			var got []string
			sent, lerr := st.Sent(context.WithoutCancel(ctx))
			for _, s := range sent {
				got = append(got, s.Text)
			}
			if lerr != nil {
				got = append(got, "(listing failed: "+lerr.Error()+")")
			}
			t.Fatalf("%s: %v; want %q, the phone sent %q", stage, err, want[len(want)-1], got)
		}
	}

	// 1. Lost while the homeserver runs; it crashes and comes back.
	drop(true)
	send("lost before the homeserver crash 1")
	send("lost before the homeserver crash 2")
	send("lost before the homeserver crash 3")
	drop(false)
	if err := st.KillHomeserver(); err != nil {
		t.Fatal(err)
	}
	if err := st.StartHomeserver(ctx); err != nil {
		t.Fatal(err)
	}
	waitPhone("after the homeserver came back")
	send("sent after the homeserver came back")
	waitPhone("live after the come-back")

	// 2. Lost while the bridge runs; the bridge is killed and started.
	drop(true)
	send("lost before the bridge restart 1")
	send("lost before the bridge restart 2")
	drop(false)
	if err := st.StopGateway(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := st.StartGateway(ctx); err != nil {
		t.Fatal(err)
	}
	waitPhone("after the bridge restart")

	sent, err := st.SentEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sent {
		if s.Chat == contact {
			got = append(got, s.Text)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("the phone sent:\n%s\nwant, each once and in this order:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	log := st.GatewayLog()
	for _, reason := range []string{`"reason":"homeserver back"`, `"reason":"start"`} {
		if !bytes.Contains(log, []byte(reason)) {
			t.Errorf("rcsgate log has no catch-up pass with %s", reason)
		}
	}
	t.Logf("catch-up passes:\n%s", grepLines(log, "Catch-up pass done"))
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

func grepLines(b []byte, needle string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, needle) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
