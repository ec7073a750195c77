package sim

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
)

// chanSink hands every delivered message to a channel.
type chanSink struct{ c chan backend.Inbound }

func (s chanSink) Typing(string, bool) {}
func (s chanSink) Deliver(ctx context.Context, in backend.Inbound) error {
	select {
	case s.c <- in:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func started(t *testing.T) (*Sim, chan backend.Inbound) {
	t.Helper()
	s := New(zerolog.Nop())
	c := make(chan backend.Inbound, 16)
	if err := s.Start(t.Context(), chanSink{c}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c
}

func next(t *testing.T, c chan backend.Inbound) backend.Inbound {
	t.Helper()
	select {
	case in := <-c:
		return in
	case <-time.After(5 * time.Second):
		t.Fatal("nothing delivered")
		return backend.Inbound{}
	}
}

func TestEcho(t *testing.T) {
	s, c := started(t)
	if err := s.Send(t.Context(), backend.Event{ID: "m1", Chat: EchoNumber, Text: "ping 1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(t.Context(), backend.Event{ID: "m2", Chat: EchoNumber, Text: "ping 2"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ping 1", "ping 2"} {
		in := next(t, c)
		if in.Chat != EchoNumber || in.From != EchoNumber || in.Text != want || in.TS.IsZero() {
			t.Fatalf("echo %+v, want text %q", in, want)
		}
	}
	sent := s.SentMessages()
	if len(sent) != 2 || sent[0].ID != "m1" || sent[1].Chat != EchoNumber || sent[1].Text != "ping 2" {
		t.Fatalf("sent %+v", sent)
	}
}

func TestQuietContact(t *testing.T) {
	s, c := started(t)
	if err := s.Send(t.Context(), backend.Event{ID: "q1", Chat: "+4915112345678", Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	// Follow with an echo: deliveries are in order, so if the quiet contact
	// had answered, that answer would come first.
	if err := s.Send(t.Context(), backend.Event{ID: "e1", Chat: EchoNumber, Text: "marker"}); err != nil {
		t.Fatal(err)
	}
	if in := next(t, c); in.Text != "marker" {
		t.Fatalf("quiet contact answered: %+v", in)
	}
	if got := len(s.SentMessages()); got != 2 {
		t.Fatalf("%d sent, want 2", got)
	}
}

func TestInvalidNumberIsPermanent(t *testing.T) {
	s, _ := started(t)
	for _, n := range []string{"", "12025550100", "+123456", "+1234567890123456", "+1202555o100", "+ 2025550100"} {
		err := s.Send(t.Context(), backend.Event{ID: "x", Chat: n, Text: "hi"})
		if _, ok := backend.IsPermanent(err); !ok {
			t.Fatalf("Send to %q: got %v, want a permanent error", n, err)
		}
	}
	if len(s.SentMessages()) != 0 {
		t.Fatal("invalid sends were recorded")
	}
	for _, n := range []string{"+1234567", "+123456789012345", EchoNumber} {
		if !ValidNumber(n) {
			t.Fatalf("%q should be valid", n)
		}
	}
}

// flakySink refuses the first delivery, then accepts.
type flakySink struct {
	mu    sync.Mutex
	calls int
	c     chan backend.Inbound
}

func (f *flakySink) Typing(string, bool) {}
func (f *flakySink) Deliver(ctx context.Context, in backend.Inbound) error {
	f.mu.Lock()
	f.calls++
	first := f.calls == 1
	f.mu.Unlock()
	if first {
		return context.DeadlineExceeded
	}
	f.c <- in
	return nil
}

func TestInjectRetriesRefusedDelivery(t *testing.T) {
	s := New(zerolog.Nop())
	if err := s.Inject("+15551234567", "x"); err != ErrNotStarted {
		t.Fatalf("inject before start: %v", err)
	}
	f := &flakySink{c: make(chan backend.Inbound, 1)}
	if err := s.Start(t.Context(), f); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Inject("+15551234567", "again"); err != nil {
		t.Fatal(err)
	}
	if in := next(t, f.c); in.Text != "again" || in.From != "+15551234567" {
		t.Fatalf("%+v", in)
	}
}

func TestSentLogSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(zerolog.Nop(), dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"a", "b", "a"} {
		if err := s.Send(context.Background(), backend.Event{ID: id, Chat: "+12025550142", Text: fmt.Sprint("t", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if s.Duplicates() != 1 {
		t.Fatalf("duplicates = %d, want 1", s.Duplicates())
	}
	// A torn last line, as a crash mid-write leaves it.
	s.sentLog.Write([]byte(`{"id":"c","ch`))
	s.Close()
	s2, err := Open(zerolog.Nop(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got := s2.SentMessages()
	if len(got) != 2 || got[0].ID != "a" || got[1].ID != "b" || got[1].Text != "t1" {
		t.Fatalf("after reopen: %+v", got)
	}
	if err := s2.Send(context.Background(), backend.Event{ID: "c", Chat: "+12025550142", Text: "x"}); err != nil {
		t.Fatal(err)
	}
	if n := len(s2.SentMessages()); n != 3 {
		t.Fatalf("sent = %d, want 3", n)
	}
}
