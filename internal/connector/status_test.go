package connector

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// fakeChannel is a device channel whose devices are online as told.
type fakeChannel struct{ online map[string]bool }

func (f *fakeChannel) Notify(string)                                   {}
func (f *fakeChannel) Connected(dev string) bool                       { return f.online[dev] }
func (f *fakeChannel) Kick(string, string)                             {}
func (f *fakeChannel) Pin() [32]byte                                   { return [32]byte{} }
func (f *fakeChannel) SendTyping(string, string, bool) error           { return nil }
func (f *fakeChannel) Caps(string) (map[string]wire.Caps, []int, bool) { return nil, nil, false }
func (f *fakeChannel) FetchMedia(context.Context, string, string, string, io.Writer, func(wire.MediaHeader) error) (wire.MediaHeader, error) {
	return wire.MediaHeader{}, wire.ErrMediaUnavailable
}
func (f *fakeChannel) StreamMedia(context.Context, string, string, string, int) (wire.MediaStream, error) {
	return wire.NewMediaStream(&wire.MediaReader{}, nil), wire.ErrMediaUnavailable
}

const testDevice = "dev-0123456789"

var sentStatus = bridgev2.MessageStatus{Status: event.MessageStatusSuccess, IsCertain: true}

// statusRig is a connector with a real store and a status wrapper whose
// timers never fire on their own: tests call pendingDue and sentDue when
// their time is "over" and read the queue instead of sending.
type statusRig struct {
	c  *Connector
	s  *StatusMatrix
	ch *fakeChannel
}

func newStatusRig(t *testing.T, online bool) *statusRig {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "rcsgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := New(Config{}, st)
	ch := &fakeChannel{online: map[string]bool{testDevice: online}}
	c.SetChannel(ch)
	c.started = time.Now()
	s := newStatusMatrix(c, time.Hour)
	s.settle = time.Hour // tests call sentDue themselves
	return &statusRig{c: c, s: s, ch: ch}
}

// queue stores a Matrix message for the phone, as HandleMatrixMessage does,
// and delivers bridgev2's "success" (= queued) for it.
func (r *statusRig) queue(t *testing.T, evt string) bridgev2.MessageStatusEventInfo {
	t.Helper()
	ctx := context.Background()
	if err := r.c.store.EnqueueSent(ctx, store.SentMsg{MsgID: evt, DeviceID: testDevice, RoomID: "!room:x", Sender: "@a:x",
		MsgType: string(event.MsgText)}, []byte("frame"), 100); err != nil {
		t.Fatal(err)
	}
	info := bridgev2.MessageStatusEventInfo{RoomID: "!room:x", SourceEventID: id.EventID(evt), EventType: event.EventMessage,
		MessageType: event.MsgText, Sender: "@a:x"}
	r.s.SendMessageStatus(ctx, &bridgev2.MessageStatus{Status: event.MessageStatusSuccess}, &info)
	return info
}

// shown is what the queue would send, as "status:message" per event.
func (r *statusRig) shown() []string {
	var out []string
	for _, j := range r.s.q.waiting() {
		out = append(out, string(j.info.SourceEventID)+"="+string(j.ms.Status))
	}
	return out
}

func TestStatusesShownToTheSender(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		online bool
		steps  func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo)
		want   []string
	}{
		{"phone takes it at once: no pending, sent after the settle", true, func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo) {
			r.c.report(ctx, "$m", wire.StateSent, "")
			r.s.pendingDue("$m", info) // the grace ends after it was taken
			if got := r.shown(); len(got) != 0 {
				t.Fatalf("statuses %v at once; want none until the settle is over", got)
			}
			r.s.sentDue("$m", sentStatus, info)
		}, []string{"$m=SUCCESS"}},
		{"a delivery report within the settle says it all", true, func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo) {
			r.c.report(ctx, "$m", wire.StateSent, "")
			r.c.report(ctx, "$m", wire.StateDelivered, "")
			r.s.sentDue("$m", sentStatus, info) // finds the message already past "sent"
		}, []string{"$m=SUCCESS"}},
		{"failed within the settle: only the failure", true, func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo) {
			r.c.report(ctx, "$m", wire.StateSent, "")
			r.c.report(ctx, "$m", wire.StateFailed, "carrier refused")
			r.s.sentDue("$m", sentStatus, info)
		}, []string{"$m=FAIL_PERMANENT"}},
		{"phone slow: pending after the grace, then success", true, func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo) {
			r.s.pendingDue("$m", info)
			if got := r.shown(); len(got) != 1 || got[0] != "$m=PENDING" {
				t.Fatalf("pending not queued at the end of the grace: %v", got)
			}
			r.c.report(ctx, "$m", wire.StateSent, "")
		}, []string{"$m=SUCCESS"}}, // coalesced: the pending had not gone out yet
		{"phone offline: pending at once", false, func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo) {}, []string{"$m=PENDING"}},
		{"phone fails it at once: failed", true, func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo) {
			r.c.report(ctx, "$m", wire.StateFailed, "no signal")
		}, []string{"$m=FAIL_PERMANENT"}},
		{"delivered after sent went out", true, func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo) {
			r.c.report(ctx, "$m", wire.StateSent, "")
			r.s.sentDue("$m", sentStatus, info)
			if _, ok := r.s.q.pop(nil); !ok {
				t.Fatal("sent status not queued")
			}
			r.c.report(ctx, "$m", wire.StateDelivered, "")
		}, []string{"$m=SUCCESS"}},
		{"a repeated or backwards state changes nothing", true, func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo) {
			r.c.report(ctx, "$m", wire.StateFailed, "x")
			r.c.report(ctx, "$m", wire.StateFailed, "x")
			r.c.report(ctx, "$m", wire.StateSent, "")
		}, []string{"$m=FAIL_PERMANENT"}},
		{"queued before a restart: the outcome is shown", true, func(t *testing.T, r *statusRig, info bridgev2.MessageStatusEventInfo) {
			r.c.started = time.Now().Add(time.Minute) // as if this process started after the message was queued
			r.c.report(ctx, "$m", wire.StateSent, "")
		}, []string{"$m=SUCCESS"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newStatusRig(t, tc.online)
			info := r.queue(t, "$m")
			tc.steps(t, r, info)
			got := r.shown()
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("statuses %v, want %v", got, tc.want)
			}
		})
	}
}

// A pending that already went out is always followed by the outcome.
func TestPendingSentThenOutcome(t *testing.T) {
	ctx := context.Background()
	r := newStatusRig(t, true)
	info := r.queue(t, "$m")
	r.s.pendingDue("$m", info)
	if job, ok := r.s.q.pop(nil); !ok || job.ms.Status != event.MessageStatusPending {
		t.Fatalf("first status %+v, want pending", job.ms)
	}
	r.c.report(ctx, "$m", wire.StateSent, "")
	if got := r.shown(); strings.Join(got, ",") != "$m=SUCCESS" {
		t.Fatalf("after the phone took it: %v, want success", got)
	}
}

// The phone's delivery report names the contact; failures carry a notice.
func TestStatusContent(t *testing.T) {
	ctx := context.Background()
	r := newStatusRig(t, true)
	r.queue(t, "$d")
	r.c.report(ctx, "$d", wire.StateDelivered, "")
	r.queue(t, "$f")
	r.c.report(ctx, "$f", wire.StateFailed, "")
	jobs := r.s.q.waiting()
	if len(jobs) != 2 {
		t.Fatalf("%d statuses, want 2", len(jobs))
	}
	if d := jobs[0].ms.ToMSSEvent(&jobs[0].info); d.DeliveredToUsers == nil {
		t.Fatal("a delivered status must carry delivered_to_users")
	}
	f := jobs[1].ms
	if !f.SendNotice || !f.IsCertain || !strings.Contains(f.Message, "Not sent") {
		t.Fatalf("failed status %+v: want a certain failure with a notice and a reason", f)
	}
}

// Statuses of events bridgev2 tracks alone (reactions, refusals) pass
// through in order.
func TestUntrackedStatusesPassThrough(t *testing.T) {
	ctx := context.Background()
	r := newStatusRig(t, true)
	react := bridgev2.MessageStatusEventInfo{RoomID: "!room:x", SourceEventID: "$r", EventType: event.EventReaction}
	r.s.SendMessageStatus(ctx, &bridgev2.MessageStatus{Status: event.MessageStatusSuccess}, &react)
	refused := bridgev2.MessageStatusEventInfo{RoomID: "!room:x", SourceEventID: "$x", EventType: event.EventMessage}
	r.s.SendMessageStatus(ctx, &bridgev2.MessageStatus{Status: event.MessageStatusFail, SendNotice: true}, &refused)
	if got := strings.Join(r.shown(), ","); got != "$r=SUCCESS,$x=FAIL_PERMANENT" {
		t.Fatalf("statuses %s", got)
	}
}

// The grace timer itself fires: a connected phone that does not take the
// message makes the sender see "pending" on its own.
func TestGraceTimerShowsPending(t *testing.T) {
	r := newStatusRig(t, true)
	r.s.grace = 10 * time.Millisecond
	r.queue(t, "$slow")
	done := make(chan struct{})
	timer := time.AfterFunc(10*time.Second, func() { close(done) })
	defer timer.Stop()
	job, ok := r.s.q.pop(done)
	if !ok || job.ms.Status != event.MessageStatusPending || job.info.SourceEventID != "$slow" {
		t.Fatalf("got %+v (ok %v), want pending for $slow within 10 s", job, ok)
	}
}

func TestStatusQueueCoalesces(t *testing.T) {
	q := newStatusQueue()
	job := func(evt string, st event.MessageStatus) statusJob {
		return statusJob{ms: bridgev2.MessageStatus{Status: st}, info: bridgev2.MessageStatusEventInfo{SourceEventID: id.EventID(evt)}}
	}
	q.push(job("$a", event.MessageStatusPending))
	q.push(job("$b", event.MessageStatusPending))
	q.push(job("$a", event.MessageStatusSuccess))
	var got []string
	for range 2 {
		j, _ := q.pop(nil)
		got = append(got, string(j.info.SourceEventID)+"="+string(j.ms.Status))
	}
	if strings.Join(got, ",") != "$a=SUCCESS,$b=PENDING" {
		t.Fatalf("popped %v: want $a's newest status in $a's place, then $b", got)
	}
	closed := make(chan struct{})
	close(closed)
	if _, ok := q.pop(closed); ok {
		t.Fatal("pop on an empty queue must end when done is closed")
	}
}

// bridge.sent_status: when_pending — a message taken at once gets no status
// event; one whose sender saw "pending" still gets its outcome.
func TestSentOnlyAfterPending(t *testing.T) {
	ctx := context.Background()
	r := newStatusRig(t, true)
	r.c.cfg.SentOnlyAfterPending = true
	info := r.queue(t, "$fast")
	r.c.report(ctx, "$fast", wire.StateSent, "")
	r.s.pendingDue("$fast", info) // the grace ends after it was taken
	if got := r.shown(); len(got) != 0 {
		t.Fatalf("statuses %v for a message taken at once, want none", got)
	}
	slow := r.queue(t, "$slow")
	r.s.pendingDue("$slow", slow)
	r.c.report(ctx, "$slow", wire.StateSent, "")
	if got := strings.Join(r.shown(), ","); got != "$slow=SUCCESS" {
		t.Fatalf("statuses %s, want the slow message's outcome", got)
	}
}
