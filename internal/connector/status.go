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
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// StatusMatrix wraps bridgev2's Matrix connector so that the send status a
// Matrix user sees tells the truth about the phone: bridgev2 reports
// "success" once our connector has queued a message; we turn that into
// "pending" until the phone has taken it, then "success" or "failed" with the
// phone's reason. All statuses go out in order through one worker, so a late
// "pending" never overwrites an early "success".
type StatusMatrix struct {
	*matrix.Connector
	c    *Connector
	jobs chan statusJob
	// order makes "read state, queue status" atomic against "advance state,
	// queue status", so the last status queued always reflects the last state.
	order sync.Mutex
	// ghosts: each ghost's own device, where the homeserver allows it.
	ghosts atomic.Pointer[ghostcrypto.Devices]
}

type statusJob struct {
	ms   bridgev2.MessageStatus
	info bridgev2.MessageStatusEventInfo
}

// NewStatusMatrix wraps mx; pass the result to bridgev2.NewBridge.
func NewStatusMatrix(mx *matrix.Connector, c *Connector) *StatusMatrix {
	s := &StatusMatrix{Connector: mx, c: c, jobs: make(chan statusJob, 1024)}
	c.status = s
	go s.worker()
	return s
}

// SendMessageStatus intercepts bridgev2's statuses for messages we queued,
// and makes every failure a person must act on a visible notice.
func (s *StatusMatrix) SendMessageStatus(ctx context.Context, ms *bridgev2.MessageStatus, info *bridgev2.MessageStatusEventInfo) {
	s.order.Lock()
	defer s.order.Unlock()
	if !ms.SendNotice && mustAct(ms) {
		shown := *ms
		shown.SendNotice = true
		ms = &shown
	}
	if info.EventType == event.EventMessage && ms.Status == event.MessageStatusSuccess {
		if sent, err := s.c.store.GetSent(ctx, string(info.SourceEventID)); err == nil && sent.State == store.SentQueued {
			pending := *ms
			pending.Status = event.MessageStatusPending
			pending.Message = "Waiting for the phone to take it"
			if !s.c.ch.Connected(sent.DeviceID) {
				pending.Message = "The phone is offline; the message is queued and goes out when it reconnects"
			}
			ms = &pending
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

func (s *StatusMatrix) enqueue(ms bridgev2.MessageStatus, info bridgev2.MessageStatusEventInfo) {
	s.jobs <- statusJob{ms: ms, info: info}
}

func (s *StatusMatrix) worker() {
	for job := range s.jobs {
		s.send(job)
	}
}

// send does what bridgev2's own status sender does (MSS event, and a notice
// for failures), synchronously so order is kept.
func (s *StatusMatrix) send(job statusJob) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := s.Log.With().Stringer("event_id", job.info.SourceEventID).Logger()
	if job.info.EventType.IsEphemeral() || job.info.SourceEventID == "" {
		return
	}
	if !job.ms.DisableMSS && s.Config.Matrix.MessageStatusEvents {
		if _, err := s.Bot.SendMessageEvent(ctx, job.info.RoomID, event.BeeperMessageStatus, job.ms.ToMSSEvent(&job.info)); err != nil {
			log.Err(err).Msg("Sending message status failed")
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

// report sends the status for a state change of a message we queued.
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
	if err != nil {
		return
	}
	info := bridgev2.MessageStatusEventInfo{
		RoomID: id.RoomID(sent.RoomID), SourceEventID: id.EventID(msgID), EventType: event.EventMessage,
		MessageType: event.MessageType(sent.MsgType), Sender: id.UserID(sent.Sender),
	}
	var ms bridgev2.MessageStatus
	switch state {
	case wire.StateSent, wire.StateDelivered, wire.StateRead:
		ms = bridgev2.MessageStatus{Status: event.MessageStatusSuccess, IsCertain: true}
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
	if c.status != nil {
		c.status.enqueue(ms, info)
	}
	zerolog.Ctx(ctx).Debug().Str("msg_id", msgID).Str("state", state).Msg("Message status reported to Matrix")
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
