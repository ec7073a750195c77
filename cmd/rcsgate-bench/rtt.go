package main

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/harness"
)

// echoWait bounds the wait for any single echo.
const echoWait = 30 * time.Second

// roundTrips sends warmup+n messages one at a time into room and waits for
// peer to send each body back; it returns the n timed round trips.
func roundTrips(ctx context.Context, cli *harness.Client, room id.RoomID, peer id.UserID, label string, warmup, n int) ([]time.Duration, error) {
	run := nonce()
	out := make([]time.Duration, 0, n)
	for i := range warmup + n {
		body := fmt.Sprintf("%s %s %05d", label, run, i)
		from := cli.Now()
		t0 := time.Now()
		if _, err := cli.SendText(ctx, room, body); err != nil {
			return nil, fmt.Errorf("%s: sending message %d: %w", label, i, err)
		}
		wctx, cancel := context.WithTimeout(ctx, echoWait)
		_, _, err := cli.WaitEvent(wctx, from, cli.Message(room, peer, body))
		rtt := time.Since(t0)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: no echo of message %d from %s within %s: %w", label, i, peer, echoWait, err)
		}
		if i >= warmup {
			out = append(out, rtt)
		}
		if done := i + 1 - warmup; done > 0 && (done%50 == 0 || done == n) {
			progress("%s: %d/%d round trips, last %.1f ms", label, done, n, ms(rtt))
		}
	}
	return out, nil
}

// echoLoop makes b answer every message from a in room with the same body,
// in order, until ctx ends. It returns nil when ctx ends.
func echoLoop(ctx context.Context, b *harness.Client, room id.RoomID, a id.UserID) error {
	var cur harness.Cursor
	for {
		evt, next, err := b.WaitEvent(ctx, cur, b.Message(room, a, ""))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		cur = next
		if _, err := b.SendText(ctx, room, evt.Content.AsMessage().Body); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("echo user: sending: %w", err)
		}
	}
}
