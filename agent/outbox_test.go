package agent

import (
	"errors"
	"fmt"
	"testing"

	"github.com/rcsgate/rcsgate/internal/wire"
)

func ids(es []OutboxEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Msg.ID)
	}
	return out
}

func eq(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestOutboxOrderResendAck(t *testing.T) {
	o := NewOutbox(0)
	for _, id := range []string{"a1", "b1", "a2", "b2"} {
		if err := o.Add(wire.Message{ID: id, Chat: "+1" + id[:1]}); err != nil {
			t.Fatal(err)
		}
	}
	// First connection: everything, in order.
	es, _ := o.After(0)
	if got := ids(es); !eq(got, []string{"a1", "b1", "a2", "b2"}) {
		t.Fatalf("first send: %v", got)
	}
	last := es[len(es)-1].Seq

	// Nothing new after the last written entry; the change channel fires on Add.
	es, changed := o.After(last)
	if len(es) != 0 {
		t.Fatalf("nothing new expected, got %v", ids(es))
	}
	select {
	case <-changed:
		t.Fatal("changed before any Add")
	default:
	}
	if err := o.Add(wire.Message{ID: "a3"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Add did not signal")
	}
	if es, _ := o.After(last); !eq(ids(es), []string{"a3"}) {
		t.Fatalf("after last: %v", ids(es))
	}

	// The server acks some (out of order, plus an unknown id).
	if n := o.Ack("b1", "a2", "nope"); n != 2 {
		t.Fatalf("acked %d, want 2", n)
	}
	if o.Len() != 3 {
		t.Fatalf("len %d, want 3", o.Len())
	}
	// Reconnect: resend all unacked from the start, original order, same ids.
	if es, _ := o.After(0); !eq(ids(es), []string{"a1", "b2", "a3"}) {
		t.Fatalf("resend: %v", ids(es))
	}
	// Re-adding a queued id is a no-op.
	if err := o.Add(wire.Message{ID: "a1"}); err != nil || o.Len() != 3 {
		t.Fatalf("re-add: %v, len %d", err, o.Len())
	}
	o.Ack("a1", "b2", "a3")
	if o.Len() != 0 {
		t.Fatalf("len %d after acking all", o.Len())
	}
	// Seqs keep increasing after removal.
	_ = o.Add(wire.Message{ID: "z"})
	es, _ = o.After(0)
	if len(es) != 1 || es[0].Seq <= last {
		t.Fatalf("seq did not increase: %+v", es)
	}
}

func TestOutboxLimit(t *testing.T) {
	o := NewOutbox(2)
	_ = o.Add(wire.Message{ID: "1"})
	_ = o.Add(wire.Message{ID: "2"})
	if err := o.Add(wire.Message{ID: "3"}); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("got %v, want ErrOutboxFull", err)
	}
	o.Ack("1")
	if err := o.Add(wire.Message{ID: "3"}); err != nil {
		t.Fatal(err)
	}
}

func TestSeenSetBounded(t *testing.T) {
	s := newSeenSet(3)
	for _, id := range []string{"a", "b", "c", "d"} {
		s.add(id, outcome{State: wire.StateSent})
	}
	if _, ok := s.get("a"); ok {
		t.Fatal("oldest id should have been evicted")
	}
	for _, id := range []string{"b", "c", "d"} {
		if _, ok := s.get(id); !ok {
			t.Fatalf("%s missing", id)
		}
	}
	s.add("e", outcome{State: wire.StateFailed, Reason: "x"})
	if _, ok := s.get("b"); ok {
		t.Fatal("b should have been evicted")
	}
	if o, _ := s.get("e"); o.State != wire.StateFailed || o.Reason != "x" {
		t.Fatalf("outcome not kept: %+v", o)
	}
}
