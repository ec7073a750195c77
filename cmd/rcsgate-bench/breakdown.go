package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/rcsgate/rcsgate/internal/hoptrace"
)

// The per-hop breakdown of the bridge's round trip: the bench times the
// ends (send, echo seen), rcsgate and the agent mark each hop in between
// (internal/hoptrace), all on one clock.

// milestone is one point a round trip passes.
type milestone struct {
	name string // the hop that ends here
	at   func(trip, hoptrace.Trace) (time.Time, bool)
}

func byEvent(hop string) func(trip, hoptrace.Trace) (time.Time, bool) {
	return func(t trip, tr hoptrace.Trace) (time.Time, bool) { return tr.At(hop, string(t.EventID)) }
}

func byPhone(hop string) func(trip, hoptrace.Trace) (time.Time, bool) {
	return func(t trip, tr hoptrace.Trace) (time.Time, bool) { return tr.At(hop, t.PhoneID) }
}

var milestones = []milestone{
	{"start", func(t trip, _ hoptrace.Trace) (time.Time, bool) { return t.T0, true }},
	{"client -> homeserver -> appservice push", byEvent(hoptrace.Pushed)},
	{"bridge: handle event, outbox commit", byEvent(hoptrace.Queued)},
	{"outbox -> QUIC stream", byEvent(hoptrace.OnStream)},
	{"QUIC -> agent journal (fsync)", byEvent(hoptrace.AgentStored)},
	{"agent -> phone took it", byEvent(hoptrace.Handed)},
	{"phone echo -> agent journal", byPhone(hoptrace.Delivered)},
	{"agent -> bridge (QUIC)", byPhone(hoptrace.InRecv)},
	{"bridge: handle phone message", byPhone(hoptrace.InSend)},
	{"ghost send -> homeserver accepted", byPhone(hoptrace.InMatrix)},
	{"homeserver -> sender's sync", func(t trip, _ hoptrace.Trace) (time.Time, bool) { return t.Echoed, true }},
}

// HopFigures is one row of the breakdown, in milliseconds.
type HopFigures struct {
	Hop string  `json:"hop"`
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// StatusCount is how many status events of one kind the bridge sent for the
// timed messages, and how many of them before the echo was seen.
type StatusCount struct {
	Status     string `json:"status"`
	Sent       int    `json:"sent"`
	BeforeEcho int    `json:"before_echo"`
}

// Breakdown is where the bridge's round trip goes.
type Breakdown struct {
	Hops []HopFigures `json:"hops"`
	// TxnAnswered: from the transaction's arrival to its 200 (the
	// homeserver sends the next one only then).
	TxnAnswered HopFigures    `json:"txn_answered"`
	Statuses    []StatusCount `json:"status_events"`
	Trips       int           `json:"trips"`
	Traced      int           `json:"traced"` // trips with every mark
}

func breakdown(trips []trip, tr hoptrace.Trace) Breakdown {
	b := Breakdown{Trips: len(trips)}
	deltas := make([][]time.Duration, len(milestones))
	for _, t := range trips {
		prev, _ := milestones[0].at(t, tr)
		all := true
		for i := 1; i < len(milestones); i++ {
			at, ok := milestones[i].at(t, tr)
			if !ok {
				all = false
				continue // the next hop is measured from the last mark seen
			}
			deltas[i] = append(deltas[i], at.Sub(prev))
			prev = at
		}
		if all {
			b.Traced++
		}
	}
	for i := 1; i < len(milestones); i++ {
		b.Hops = append(b.Hops, hopFigures(milestones[i].name, deltas[i]))
	}
	var answered []time.Duration
	for _, t := range trips {
		p, ok1 := tr.At(hoptrace.Pushed, string(t.EventID))
		a, ok2 := tr.At(hoptrace.Answered, string(t.EventID))
		if ok1 && ok2 {
			answered = append(answered, a.Sub(p))
		}
	}
	b.TxnAnswered = hopFigures("transaction pushed -> answered", answered)
	for _, st := range []event.MessageStatus{event.MessageStatusPending, event.MessageStatusSuccess, event.MessageStatusRetriable, event.MessageStatusFail} {
		c := StatusCount{Status: string(st)}
		for _, t := range trips {
			if at, ok := tr.At(hoptrace.StatusPrefix+string(st), string(t.EventID)); ok {
				c.Sent++
				if at.Before(t.Echoed) {
					c.BeforeEcho++
				}
			}
		}
		if c.Sent > 0 || st == event.MessageStatusPending || st == event.MessageStatusSuccess {
			b.Statuses = append(b.Statuses, c)
		}
	}
	return b
}

func hopFigures(name string, d []time.Duration) HopFigures {
	h := HopFigures{Hop: name, N: len(d)}
	if s, err := Summarize(d); err == nil {
		h.P50, h.P99 = ms(s.P50), ms(s.P99)
	}
	return h
}

func (b Breakdown) print(w io.Writer) {
	fmt.Fprintf(w, "\nWhere the bridge's round trip goes: per hop, ms (%d of %d trips carry every mark)\n", b.Traced, b.Trips)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "hop\tn\tp50\tp99\t")
	var sum float64
	for _, h := range b.Hops {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t\n", h.Hop, h.N, h.P50, h.P99)
		sum += h.P50
	}
	fmt.Fprintf(tw, "sum of p50s\t\t%.2f\t\t\n", sum)
	_ = tw.Flush()
	fmt.Fprintf(w, "  off the path: %s p50 %.2f  p99 %.2f ms\n", b.TxnAnswered.Hop, b.TxnAnswered.P50, b.TxnAnswered.P99)
	fmt.Fprintf(w, "  status events (each a homeserver write in the room):")
	for _, s := range b.Statuses {
		fmt.Fprintf(w, "  %s %d (%d before the echo)", s.Status, s.Sent, s.BeforeEcho)
	}
	fmt.Fprintf(w, "  for %d messages\n", b.Trips)
}
