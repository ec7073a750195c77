package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/rcsgate/rcsgate/internal/hoptrace"
)

// A trace written by hand: each hop's delta is the time since the previous
// mark seen, a missing mark folds into the next hop, and status events are
// counted before and after the echo.
func TestBreakdown(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	trips := []trip{
		{T0: at(0), Accepted: at(10), Echoed: at(100), EventID: "$a", PhoneID: "ph-a"},
		{T0: at(1000), Accepted: at(1010), Echoed: at(1200), EventID: "$b", PhoneID: "ph-b"},
	}
	tr := hoptrace.Trace{}
	mark := func(hop, key string, ms int) {
		if tr[hop] == nil {
			tr[hop] = map[string]time.Time{}
		}
		tr[hop][key] = at(ms)
	}
	// $a passes every hop 10 ms apart (the last one, the sync, takes 10 ms).
	for i, hop := range []string{hoptrace.Pushed, hoptrace.Queued, hoptrace.OnStream, hoptrace.AgentStored, hoptrace.Handed} {
		mark(hop, "$a", 10*(i+1))
	}
	for i, hop := range []string{hoptrace.Delivered, hoptrace.InRecv, hoptrace.InSend, hoptrace.InMatrix} {
		mark(hop, "ph-a", 60+10*i)
	}
	mark(hoptrace.Answered, "$a", 30)
	// $b lacks out.stream: its 40 ms from out.queued go to the next hop.
	mark(hoptrace.Pushed, "$b", 1020)
	mark(hoptrace.Queued, "$b", 1030)
	mark(hoptrace.AgentStored, "$b", 1070)
	mark(hoptrace.StatusPrefix+string(event.MessageStatusPending), "$b", 1100) // before its echo
	mark(hoptrace.StatusPrefix+string(event.MessageStatusSuccess), "$b", 1300) // after

	b := breakdown(trips, tr)
	if b.Trips != 2 || b.Traced != 1 {
		t.Fatalf("trips %d traced %d, want 2 and 1", b.Trips, b.Traced)
	}
	byHop := map[string]HopFigures{}
	for _, h := range b.Hops {
		byHop[h.Hop] = h
	}
	if h := byHop["client -> homeserver -> appservice push"]; h.N != 2 || h.P50 != 10 || h.P99 != 20 {
		t.Fatalf("push hop %+v, want n 2, p50 10, p99 20", h)
	}
	if h := byHop["outbox -> QUIC stream"]; h.N != 1 || h.P50 != 10 {
		t.Fatalf("stream hop %+v: only $a has the mark", h)
	}
	if h := byHop["QUIC -> agent journal (fsync)"]; h.N != 2 || h.P99 != 40 {
		t.Fatalf("agent hop %+v: $b's gap since out.queued belongs here", h)
	}
	if h := byHop["homeserver -> sender's sync"]; h.N != 2 || h.P50 != 10 {
		t.Fatalf("sync hop %+v", h)
	}
	if b.TxnAnswered.N != 1 || b.TxnAnswered.P50 != 20 {
		t.Fatalf("transaction answered %+v, want one of 20 ms", b.TxnAnswered)
	}
	var got []string
	for _, s := range b.Statuses {
		got = append(got, fmt.Sprintf("%s:%d/%d", s.Status, s.Sent, s.BeforeEcho))
	}
	if strings.Join(got, " ") != "PENDING:1/1 SUCCESS:1/0" {
		t.Fatalf("status counts %v", got)
	}
}
