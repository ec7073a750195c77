package e2e

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/harness"
)

// Issue 15: a message the phone keeps failing to send (the simulator's
// stuck contact has no signal) holds up only its own chat: a conversation
// with another contact goes on meanwhile.
func TestStuckContactHoldsOnlyItsChat(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, cli, mgmt := up(t, ctx)
	stuck, _, err := cli.StartChat(ctx, mgmt, sim.StuckNumber)
	if err != nil {
		t.Fatal(err)
	}
	echo, ghost, err := cli.StartChat(ctx, mgmt, harness.EchoNumber)
	if err != nil {
		t.Fatal(err)
	}
	from := cli.Now()
	held, err := cli.SendText(ctx, stuck, "never leaves the phone "+nonce(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		text := "meanwhile in another chat " + nonce(t)
		if _, err := cli.SendText(ctx, echo, text); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		_, _, err := cli.WaitEvent(wctx, from, cli.Message(echo, ghost, text))
		wcancel()
		if err != nil {
			t.Fatalf("echo %d did not come back while the stuck contact's message waits: %v", i, err)
		}
	}
	// The stuck message is still waiting, not sent and not failed.
	for _, e := range cli.Events()[from:] {
		if statusOf(stuck, held.EventID, event.MessageStatusSuccess)(e) || statusOf(stuck, held.EventID, event.MessageStatusFail)(e) {
			t.Fatalf("the stuck contact's message got a final status: %s", e.Content.Raw)
		}
	}
	sent, err := st.SentEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sent {
		if s.ID == string(held.EventID) {
			t.Fatal("the simulator sent the stuck contact's message")
		}
	}
}
