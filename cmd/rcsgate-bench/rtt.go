package main

import (
	"context"
	"fmt"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/ctxutil"
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

// rttPath is one way a message goes around: cli sends into room, peer
// sends it back.
type rttPath struct {
	label string
	ctx   context.Context // ends early if the path's echo user fails
	cli   *harness.Client
	room  id.RoomID
	peer  id.UserID
}

// Interleaving: the paths take turns in blocks of rttBlock messages, and a
// block starts only rttSettle after the previous one ended, so work a path
// leaves behind (the homeserver pushing its last echo to the bridge, the
// bot's paced sync, the bridge's "sent" statuses, written half a second
// after each message) does not land on the other path. Blocks are long
// enough that most of a path's trips pay for its own leftover work, as they
// would in steady use.
const (
	rttBlock  = 50
	rttSettle = time.Second
)

// interleavedRoundTrips sends warmup+n messages on every path, one at a
// time, the paths taking turns in blocks, so that whatever other processes
// do to the machine falls on every path alike. It returns the n timed trips
// of each path.
func interleavedRoundTrips(paths []rttPath, warmup, n int) ([][]trip, error) {
	run := nonce()
	out := make([][]trip, len(paths))
	total := warmup + n
	for start := 0; start < total; start += rttBlock {
		for k, p := range paths {
			if err := settle(p.ctx); err != nil {
				return nil, err
			}
			for i := start; i < min(start+rttBlock, total); i++ {
				t, err := roundTrip(p, fmt.Sprintf("%s %s %05d", p.label, run, i))
				if err != nil {
					return nil, fmt.Errorf("%s: message %d: %w", p.label, i, err)
				}
				if i >= warmup {
					out[k] = append(out[k], t)
				}
			}
		}
		if done := min(start+rttBlock, total) - warmup; done > 0 && (done%50 == 0 || done == n) {
			progress("round trips: %d/%d on each path, last %s %.1f ms", done, n, paths[0].label, ms(out[0][len(out[0])-1].rtt()))
		}
	}
	return out, nil
}

// settle lets the previous block's leftover work finish (a pause in a
// measurement, not a wait for a result).
func settle(ctx context.Context) error {
	if !ctxutil.Sleep(ctx, rttSettle) {
		return ctx.Err()
	}
	return nil
}

// roundTrip sends body into p's room and waits for p's peer to send it back.
func roundTrip(p rttPath, body string) (trip, error) {
	ctx, cli := p.ctx, p.cli
	from := cli.Now()
	t := trip{T0: time.Now()}
	resp, err := cli.SendText(ctx, p.room, body)
	if err != nil {
		return t, fmt.Errorf("sending: %w", err)
	}
	t.Accepted, t.EventID = time.Now(), resp.EventID
	wctx, cancel := context.WithTimeout(ctx, echoWait)
	defer cancel()
	evt, _, err := cli.WaitEvent(wctx, from, cli.Message(p.room, p.peer, body))
	t.Echoed = time.Now()
	if err != nil {
		return t, fmt.Errorf("no echo from %s within %s: %w", p.peer, echoWait, err)
	}
	t.PhoneID = phoneID(evt)
	return t, nil
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
