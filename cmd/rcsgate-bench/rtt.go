package main

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/harness"
)

// echoWait bounds the wait for any single echo.
const echoWait = 30 * time.Second

// msgIDKey is where the bridge puts the phone's message id in a bridged
// event (internal/connector); the breakdown follows the echo by it.
const msgIDKey = "net.rcsgate.msg_id"

// trip is one timed round trip.
type trip struct {
	T0       time.Time  // just before the send request
	Accepted time.Time  // the homeserver answered the send with an event id
	Echoed   time.Time  // the echo reached the sender's sync
	EventID  id.EventID // the message sent
	PhoneID  string     // the echo's phone message id (bridge only)
}

func (t trip) rtt() time.Duration { return t.Echoed.Sub(t.T0) }

func rtts(trips []trip) []time.Duration {
	out := make([]time.Duration, len(trips))
	for i, t := range trips {
		out[i] = t.rtt()
	}
	return out
}

// roundTrips sends warmup+n messages one at a time into room and waits for
// peer to send each body back; it returns the n timed round trips.
func roundTrips(ctx context.Context, cli *harness.Client, room id.RoomID, peer id.UserID, label string, warmup, n int) ([]trip, error) {
	run := nonce()
	out := make([]trip, 0, n)
	for i := range warmup + n {
		body := fmt.Sprintf("%s %s %05d", label, run, i)
		from := cli.Now()
		t := trip{T0: time.Now()}
		resp, err := cli.SendText(ctx, room, body)
		if err != nil {
			return nil, fmt.Errorf("%s: sending message %d: %w", label, i, err)
		}
		t.Accepted, t.EventID = time.Now(), resp.EventID
		wctx, cancel := context.WithTimeout(ctx, echoWait)
		evt, _, err := cli.WaitEvent(wctx, from, cli.Message(room, peer, body))
		t.Echoed = time.Now()
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: no echo of message %d from %s within %s: %w", label, i, peer, echoWait, err)
		}
		t.PhoneID = phoneID(evt)
		if i >= warmup {
			out = append(out, t)
		}
		if done := i + 1 - warmup; done > 0 && (done%50 == 0 || done == n) {
			progress("%s: %d/%d round trips, last %.1f ms", label, done, n, ms(t.rtt()))
		}
	}
	return out, nil
}

// phoneID is the phone message id a bridged event carries ("" if none).
func phoneID(evt *event.Event) string {
	s, _ := evt.Content.Raw[msgIDKey].(string)
	return s
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
