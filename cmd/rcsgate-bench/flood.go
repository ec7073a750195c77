package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/harness"
)

// drainWait bounds the wait for outstanding echoes after sending stops.
const drainWait = 30 * time.Second

// FloodResult is the outcome of the sustained-throughput phase.
type FloodResult struct {
	Sent       int           // accepted by the homeserver
	Echoed     int           // distinct bodies that came back
	Lost       int           // Sent - Echoed after the drain
	Duplicates int           // echoes of a body already seen
	Unknown    int           // echoes of a body never sent
	SendPhase  time.Duration // from the first send until sending stopped
	Elapsed    time.Duration // from the first send until the last echo
	Rate       float64       // Echoed / Elapsed, messages per second
	Latency    []time.Duration
	Barrier    bool // a final message sent after the drain came back
}

type flight struct {
	t0     time.Time
	echoes int
}

// flooder keeps up to window messages in flight to the echo contact.
type flooder struct {
	cli   *harness.Client
	room  id.RoomID
	ghost id.UserID
	run   string
	limit int

	tokens chan struct{} // one per message sent and not yet echoed
	seq    atomic.Int64

	mu       sync.Mutex
	flights  map[string]*flight
	res      FloodResult
	lastEcho time.Time
	changed  chan struct{} // closed and replaced on every echo
	barrier  string
	barrierC chan struct{}
}

// floodSlices: each path's sustained traffic runs in this many slices,
// alternating with the other path's.
const floodSlices = 3

// merge adds a slice's outcome to r (first: r is still empty).
func (r *FloodResult) merge(s FloodResult, first bool) {
	r.Sent += s.Sent
	r.Echoed += s.Echoed
	r.Lost += s.Lost
	r.Duplicates += s.Duplicates
	r.Unknown += s.Unknown
	r.SendPhase += s.SendPhase
	r.Elapsed += s.Elapsed
	r.Latency = append(r.Latency, s.Latency...)
	r.Barrier = s.Barrier && (first || r.Barrier)
	if r.Elapsed > 0 {
		r.Rate = float64(r.Echoed) / r.Elapsed.Seconds()
	}
}

// flood runs the sustained-throughput phase for d, then drains.
func flood(ctx context.Context, cli *harness.Client, room id.RoomID, ghost id.UserID, d time.Duration, window, limit int) (FloodResult, error) {
	f := &flooder{
		cli: cli, room: room, ghost: ghost, run: nonce(), limit: limit,
		tokens:   make(chan struct{}, window),
		flights:  make(map[string]*flight),
		changed:  make(chan struct{}),
		barrierC: make(chan struct{}),
	}
	f.barrier = "flood " + f.run + " barrier"

	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan struct{})
	from := cli.Now()
	go func() { defer close(consumerDone); f.consume(cctx, from) }()
	defer func() { stopConsumer(); <-consumerDone }()

	start := time.Now()
	sctx, stopSending := context.WithTimeout(ctx, d)
	defer stopSending()
	var wg sync.WaitGroup
	var sendErr error
	var errOnce sync.Once
	for range window {
		wg.Go(func() {
			if err := f.sendLoop(ctx, sctx); err != nil {
				errOnce.Do(func() { sendErr = err })
				stopSending()
			}
		})
	}
	wg.Wait()
	sendEnd := time.Now()
	if sendErr != nil {
		return FloodResult{}, sendErr
	}
	progress("throughput: sending stopped after %s; draining (up to %s)", sendEnd.Sub(start).Round(time.Millisecond), drainWait)

	// Drain: wait until every sent message came back, or give up.
	dctx, cancel := context.WithTimeout(ctx, drainWait)
	defer cancel()
	for dctx.Err() == nil {
		f.mu.Lock()
		done := f.res.Echoed >= f.res.Sent
		ch := f.changed
		f.mu.Unlock()
		if done {
			break
		}
		select {
		case <-ch:
		case <-dctx.Done():
		}
	}

	// The path is ordered, so once a message sent after everything else has
	// come back, late duplicates of earlier ones would have arrived too.
	f.mu.Lock()
	complete := f.res.Echoed >= f.res.Sent
	f.mu.Unlock()
	if complete && ctx.Err() == nil {
		bctx, cancel := context.WithTimeout(ctx, echoWait)
		_, err := cli.SendText(bctx, room, f.barrier)
		if err == nil {
			select {
			case <-f.barrierC:
			case <-bctx.Done():
			}
		}
		cancel()
		if err != nil {
			return FloodResult{}, fmt.Errorf("throughput: sending the final message: %w", err)
		}
	}

	stopConsumer()
	<-consumerDone
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.res
	r.SendPhase = sendEnd.Sub(start)
	r.Lost = r.Sent - r.Echoed
	if !f.lastEcho.IsZero() {
		r.Elapsed = f.lastEcho.Sub(start)
		r.Rate = float64(r.Echoed) / r.Elapsed.Seconds()
	}
	return r, ctx.Err()
}

// sendLoop sends unique bodies while sctx lasts, each once a window slot is
// free. Sends already started complete under ctx.
func (f *flooder) sendLoop(ctx, sctx context.Context) error {
	for {
		select {
		case f.tokens <- struct{}{}:
		case <-sctx.Done():
			return nil
		}
		seq := f.seq.Add(1)
		if sctx.Err() != nil || seq > int64(f.limit) {
			<-f.tokens
			return nil
		}
		body := fmt.Sprintf("flood %s %06d", f.run, seq)
		fl := &flight{t0: time.Now()}
		f.mu.Lock()
		f.flights[body] = fl // before sending: the echo may beat the response
		f.mu.Unlock()
		if _, err := f.cli.SendText(ctx, f.room, body); err != nil {
			return fmt.Errorf("throughput: sending message %d: %w", seq, err)
		}
		f.mu.Lock()
		f.res.Sent++
		sent := f.res.Sent
		f.mu.Unlock()
		if sent%1000 == 0 {
			progress("throughput: %d sent", sent)
		}
	}
}

// consume reads the ghost's messages in the portal in order until ctx ends.
func (f *flooder) consume(ctx context.Context, cur harness.Cursor) {
	match := f.cli.Message(f.room, f.ghost, "")
	for {
		evt, next, err := f.cli.WaitEvent(ctx, cur, match)
		if err != nil {
			return // ctx ended
		}
		cur = next
		now := time.Now()
		body := evt.Content.AsMessage().Body
		f.mu.Lock()
		switch fl := f.flights[body]; {
		case body == f.barrier:
			select {
			case <-f.barrierC:
				f.res.Duplicates++
			default:
				f.res.Barrier = true
				close(f.barrierC)
			}
		case fl == nil:
			f.res.Unknown++
		case fl.echoes > 0:
			fl.echoes++
			f.res.Duplicates++
		default:
			fl.echoes = 1
			f.res.Echoed++
			f.res.Latency = append(f.res.Latency, now.Sub(fl.t0))
			f.lastEcho = now
			select {
			case <-f.tokens:
			default:
			}
		}
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}
}
