package connector

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/commands"
	"maunium.net/go/mautrix/bridgev2/matrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/ghostcrypto"
	"github.com/rcsgate/rcsgate/internal/hoptrace"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// StatusMatrix wraps bridgev2's Matrix connector so that the send status a
// Matrix user sees tells the truth about the phone. bridgev2 reports
// "success" once our connector has queued a message; we never pass that on.
// Instead:
//
//   - the phone takes the message within pendingGrace (the usual case): no
//     "pending", and "success" sentSettle after the phone took it (every
//     status event is a write into the room; this keeps it out of the
//     message's own round trip), merged into a delivery report that comes
//     in that time; with Config.SentOnlyAfterPending, nothing at all;
//   - the phone is offline, or has not taken it after pendingGrace:
//     "pending" with why, then "success" or "failed" once the phone reports;
//   - the phone fails it: "failed" with the phone's reason and a notice,
//     always;
//   - the contact's phone reports it delivered (or read): "success" naming
//     the contact in delivered_to_users.
//
// So a sender never sees "success" before the phone has the message, every
// "pending" is followed by the outcome, and failures are always visible.
// Statuses go out in order through one worker, coalesced: a newer status for
// an event whose last one has not gone out yet replaces it, so a late
// "pending" never overwrites an early "success", and a burst of state
// changes costs one write.
type StatusMatrix struct {
	*matrix.Connector
	c *Connector
	q *statusQueue
	// order makes "read state, queue status" atomic against "advance state,
	// queue status", so the last status queued always reflects the last state.
	order sync.Mutex
	// shown holds messages whose sender was shown "pending" (guarded by
	// order): they get "success" when the phone takes them. Messages queued
	// before this process started are treated as shown (see wasShown).
	shown map[string]bool
	// grace is pendingGrace and settle sentSettle; tests change them.
	grace, settle time.Duration
	// sendMSS sends one status to the homeserver; tests replace it.
	sendMSS func(statusJob)
	// ghosts: each ghost's own device, where the homeserver allows it.
	ghosts atomic.Pointer[ghostcrypto.Devices]
	// quiet, if set, is told which ghost sends (see SetQuiet).
	quiet func(id.UserID)
}

// SetQuiet has every ghost that sends passed to quiet (astxn.Quiet.Ensure:
// its notifications are turned off, once per process), covering ghosts
// that joined before it ran. Call it before the bridge starts.
func (s *StatusMatrix) SetQuiet(quiet func(id.UserID)) { s.quiet = quiet }

// pendingGrace is how long a connected phone has to take a message before
// its sender is shown "pending". A phone on a working connection takes a
// message in milliseconds; a second is short enough that a stuck one is
// noticed at once by a person, and long enough to keep status events off
// the path of nearly every message.
const pendingGrace = time.Second

// sentSettle is how long "sent" waits for a message the phone took at once:
// its status event is then written into the room after the message's own
// round trip rather than in the middle of it (the contact's answer is often
// on its way), and a delivery report arriving in the meantime replaces it.
const sentSettle = 500 * time.Millisecond

type statusJob struct {
	ms   bridgev2.MessageStatus
	info bridgev2.MessageStatusEventInfo
}

// NewStatusMatrix wraps mx; pass the result to bridgev2.NewBridge.
func NewStatusMatrix(mx *matrix.Connector, c *Connector) *StatusMatrix {
	s := newStatusMatrix(c, pendingGrace)
	s.Connector = mx
	s.sendMSS = s.send
	go s.worker(nil)
	return s
}

func newStatusMatrix(c *Connector, grace time.Duration) *StatusMatrix {
	s := &StatusMatrix{c: c, q: newStatusQueue(), shown: map[string]bool{}, grace: grace, settle: sentSettle}
	c.status = s
	return s
}

// SendMessageStatus intercepts bridgev2's statuses. Its "success" for a
// message we queued only means "queued": the phone's own report decides.
// Every failure a person must act on becomes a visible notice.
func (s *StatusMatrix) SendMessageStatus(ctx context.Context, ms *bridgev2.MessageStatus, info *bridgev2.MessageStatusEventInfo) {
	s.order.Lock()
	defer s.order.Unlock()
	if !ms.SendNotice && mustAct(ms) {
		shown := *ms
		shown.SendNotice = true
		ms = &shown
	}
	if info.EventType == event.EventMessage && ms.Status == event.MessageStatusSuccess {
		if sent, err := s.c.store.GetSent(ctx, string(info.SourceEventID)); err == nil {
			if sent.State == store.SentQueued {
				if !s.c.ch.Connected(sent.DeviceID) {
					s.showPending(sent.MsgID, "The phone is offline; the message is queued and goes out when it reconnects", *info)
				} else {
					infoCopy := *info
					time.AfterFunc(s.grace, func() { s.pendingDue(sent.MsgID, infoCopy) })
				}
			}
			return // the phone's report (see report) is what the sender sees
		}
	}
	s.enqueue(*ms, *info)
}

// actOn: failures bridgev2 reports only as status events (which few clients
// show) although the person has something to do about them.
var actOn = []error{
	bridgev2.ErrNoPermissionToInteract.InternalError,                            // ask the admin
	bridgev2.ErrNoPermissionForCommands.InternalError,                           // likewise
	bridgev2.WrapErrorInStatus(bridgev2.ErrTargetMessageNotFound).InternalError, // the edit or reply did not go
}

func mustAct(ms *bridgev2.MessageStatus) bool {
	if ms.Status != event.MessageStatusFail && ms.Status != event.MessageStatusRetriable {
		return false
	}
	for _, e := range actOn {
		if errors.Is(ms.InternalError, e) {
			return true
		}
	}
	return false
}

// sentDue shows "sent" for a message the phone took at once, unless a later
// state was reported meanwhile (it queued its own status).
func (s *StatusMatrix) sentDue(msgID string, ms bridgev2.MessageStatus, info bridgev2.MessageStatusEventInfo) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.order.Lock()
	defer s.order.Unlock()
	if sent, err := s.c.store.GetSent(ctx, msgID); err != nil || sent.State != wire.StateSent {
		return
	}
	s.enqueue(ms, info)
}

// pendingDue shows "pending" for a message the connected phone has not
// taken within the grace period.
func (s *StatusMatrix) pendingDue(msgID string, info bridgev2.MessageStatusEventInfo) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.order.Lock()
	defer s.order.Unlock()
	sent, err := s.c.store.GetSent(ctx, msgID)
	if err != nil || sent.State != store.SentQueued || s.shown[msgID] {
		return
	}
	msg := "Waiting for the phone to take it"
	if !s.c.ch.Connected(sent.DeviceID) {
		msg = "The phone is offline; the message is queued and goes out when it reconnects"
	}
	s.showPending(msgID, msg, info)
}

// showPending queues a "pending" status and remembers that the sender saw
// it. The caller holds order.
func (s *StatusMatrix) showPending(msgID, why string, info bridgev2.MessageStatusEventInfo) {
	s.shown[msgID] = true
	s.enqueue(bridgev2.MessageStatus{Status: event.MessageStatusPending, Message: why}, info)
}

// wasShown reports whether the sender of m may have seen "pending" (and so
// must see the outcome). The caller holds order.
func (s *StatusMatrix) wasShown(m store.SentMsg) bool {
	return s.shown[m.MsgID] || m.Created.Before(s.c.started.Truncate(time.Millisecond))
}

func (s *StatusMatrix) enqueue(ms bridgev2.MessageStatus, info bridgev2.MessageStatusEventInfo) {
	if info.EventType.IsEphemeral() || info.SourceEventID == "" {
		return
	}
	s.q.push(statusJob{ms: ms, info: info})
}

// worker sends statuses one at a time, in order, until done is closed
// (never, in the daemon).
func (s *StatusMatrix) worker(done <-chan struct{}) {
	for {
		job, ok := s.q.pop(done)
		if !ok {
			return
		}
		s.sendMSS(job)
	}
}

// send does what bridgev2's own status sender does (MSS event, and a notice
// for failures), synchronously so order is kept.
func (s *StatusMatrix) send(job statusJob) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := s.Log.With().Stringer("event_id", job.info.SourceEventID).Logger()
	if !job.ms.DisableMSS && s.Config.Matrix.MessageStatusEvents {
		if _, err := s.Bot.SendMessageEvent(ctx, job.info.RoomID, event.BeeperMessageStatus, job.ms.ToMSSEvent(&job.info)); err != nil {
			log.Err(err).Msg("Sending message status failed")
		} else {
			hoptrace.Mark(hoptrace.StatusPrefix+string(job.ms.Status), string(job.info.SourceEventID))
		}
	}
	if job.ms.SendNotice && s.Config.Matrix.MessageErrorNotices && job.info.MessageType != event.MsgNotice &&
		(job.ms.Status == event.MessageStatusFail || job.ms.Status == event.MessageStatusRetriable) {
		notice := job.ms.ToNoticeEvent(&job.info)
		if job.info.EventType.IsState() {
			// Not "your message was not bridged": it was a room change.
			notice.Body = "\u26a0\ufe0f " + job.ms.Message
			if job.ms.ErrorAsMessage || job.ms.Message == "" {
				notice.Body = "\u26a0\ufe0f " + job.ms.InternalError.Error()
			}
		}
		if _, err := s.Bot.SendMessageEvent(ctx, job.info.RoomID, event.EventMessage, notice); err != nil {
			log.Err(err).Msg("Sending failure notice failed")
		}
	}
}

// statusQueue is the worker's FIFO with at most one status per event: a
// status pushed for an event whose last one still waits replaces it in
// place (statuses of one event only ever move forward, see report).
type statusQueue struct {
	mu    sync.Mutex
	order []id.EventID
	jobs  map[id.EventID]statusJob
	ready chan struct{} // capacity 1: something was pushed
}

func newStatusQueue() *statusQueue {
	return &statusQueue{jobs: map[id.EventID]statusJob{}, ready: make(chan struct{}, 1)}
}

func (q *statusQueue) push(job statusJob) {
	q.mu.Lock()
	evt := job.info.SourceEventID
	if _, waiting := q.jobs[evt]; !waiting {
		q.order = append(q.order, evt)
	}
	q.jobs[evt] = job
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop waits for the oldest waiting status; ok is false once done is closed.
func (q *statusQueue) pop(done <-chan struct{}) (job statusJob, ok bool) {
	for {
		q.mu.Lock()
		if len(q.order) > 0 {
			evt := q.order[0]
			q.order[0] = ""
			q.order = q.order[1:]
			job := q.jobs[evt]
			delete(q.jobs, evt)
			q.mu.Unlock()
			return job, true
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-done:
			return statusJob{}, false
		}
	}
}

// waiting lists the statuses not yet sent, oldest first.
func (q *statusQueue) waiting() []statusJob {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]statusJob, 0, len(q.order))
	for _, evt := range q.order {
		out = append(out, q.jobs[evt])
	}
	return out
}

// report sends the status for a state change of a message we queued (see
// StatusMatrix for what the sender sees when).
func (c *Connector) report(ctx context.Context, msgID, state, reason string) {
	if c.status != nil {
		c.status.order.Lock()
		defer c.status.order.Unlock()
	}
	changed, err := c.store.AdvanceSent(ctx, msgID, state)
	if err != nil || !changed {
		return // a resent status, or a message we no longer track
	}
	sent, err := c.store.GetSent(ctx, msgID)
	if err != nil || c.status == nil {
		return
	}
	info := bridgev2.MessageStatusEventInfo{
		RoomID: id.RoomID(sent.RoomID), SourceEventID: id.EventID(msgID), EventType: event.EventMessage,
		MessageType: event.MessageType(sent.MsgType), Sender: id.UserID(sent.Sender),
	}
	log := zerolog.Ctx(ctx).Debug().Str("msg_id", msgID).Str("state", state)
	var ms bridgev2.MessageStatus
	switch state {
	case wire.StateSent:
		ms = bridgev2.MessageStatus{Status: event.MessageStatusSuccess, IsCertain: true}
		if !c.status.wasShown(sent) && c.cfg.SentOnlyAfterPending {
			delete(c.status.shown, msgID)
			log.Msg("Phone took the message at once; no status event (bridge.sent_status: when_pending)")
			return
		}
		if !c.status.wasShown(sent) {
			// Taken at once: "sent" goes out a little later, off the path of
			// the messages around it, and not at all if a later state (a
			// delivery report, a failure) comes first and says more.
			delete(c.status.shown, msgID)
			time.AfterFunc(c.status.settle, func() { c.status.sentDue(msgID, ms, info) })
			log.Msg("Phone took the message at once; its status follows shortly")
			return
		}
	case wire.StateDelivered, wire.StateRead:
		ms = bridgev2.MessageStatus{Status: event.MessageStatusSuccess, IsCertain: true, DeliveredTo: c.deliveredTo(ctx, sent)}
	case wire.StateFailed:
		if reason == "" {
			reason = "the phone could not send it"
		}
		ms = bridgev2.MessageStatus{
			Status: event.MessageStatusFail, ErrorReason: event.MessageStatusNetworkError,
			Message: "Not sent: " + reason, IsCertain: true, SendNotice: true,
		}
	default:
		return
	}
	delete(c.status.shown, msgID)
	c.status.enqueue(ms, info)
	log.Msg("Message status reported to Matrix")
}

// deliveredTo names the contact of a direct chat as the one the message
// reached; empty (delivered, to whom unknown) for groups.
func (c *Connector) deliveredTo(ctx context.Context, sent store.SentMsg) []id.UserID {
	if c.br == nil || c.br.Matrix == nil {
		return []id.UserID{}
	}
	portal, err := c.br.GetPortalByMXID(ctx, id.RoomID(sent.RoomID))
	if err != nil || portal == nil || portal.OtherUserID == "" {
		return []id.UserID{}
	}
	return []id.UserID{c.br.Matrix.FormatGhostMXID(portal.OtherUserID)}
}

// expireLoop fails messages that waited in a device queue longer than the TTL.
func (c *Connector) expireLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		ids, err := c.store.ExpireOutbox(ctx, c.cfg.QueueTTL)
		if err != nil && !errors.Is(err, context.Canceled) {
			c.br.Log.Err(err).Msg("Expiring old queued messages failed")
		}
		for _, msgID := range ids {
			c.report(ctx, msgID, wire.StateFailed, "the phone did not connect within "+c.cfg.QueueTTL.String())
		}
		if len(ids) > 0 {
			c.br.Log.Warn().Int("count", len(ids)).Msg("Queued messages expired before the phone took them")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DiscardMegolmSessionCommand is bridgev2's discard-megolm-session admin
// command bound to mx: the stock one type-asserts Bridge.Matrix to
// *matrix.Connector, which panics with StatusMatrix in its place.
func DiscardMegolmSessionCommand(mx *matrix.Connector) *commands.FullHandler {
	h := *matrix.CommandDiscardMegolmSession
	h.Func = func(ce *commands.Event) {
		if mx.Crypto == nil {
			ce.Reply("This bridge instance doesn't have end-to-bridge encryption enabled")
			return
		}
		mx.Crypto.ResetSession(ce.Ctx, ce.RoomID)
		ce.Reply("Successfully reset Megolm session in this room. New decryption keys will be shared the next time a message is sent from the remote network.")
	}
	return &h
}
