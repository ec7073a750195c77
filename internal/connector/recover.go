package connector

import (
	"context"
	"fmt"
	"time"

	"github.com/rcsgate/rcsgate/internal/ctxutil"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// msgIDKey carries the phone message id in the Matrix event, so a send cut
// short by a crash can be found in the room instead of being sent again: a
// homeserver may commit an event yet not record its transaction id when the
// request is cut (Dendrite 0.13 does), so the transaction id alone does not
// make the resend idempotent.
const msgIDKey = "net.rcsgate.msg_id"

// maxRecoverPages bounds how far back (pages of 100) the lookup reads.
const maxRecoverPages = 50

// alreadyInRoom looks for the event of the phone message whose send a
// stopped process began at since. If it is there, the bridge's message row is
// recorded for it and found is true: the message must not be sent again.
func (in *inbound) alreadyInRoom(ctx context.Context, since time.Time) (found bool, err error) {
	c := in.c
	if c.status == nil || c.status.Connector == nil || c.status.Bot == nil {
		return false, nil
	}
	portal, err := c.br.GetExistingPortalByKey(ctx, in.portal)
	if err != nil || portal == nil || portal.MXID == "" {
		return false, err
	}
	ghost, err := c.br.GetGhostByID(ctx, in.sender.Sender)
	if err != nil || ghost == nil {
		return false, err
	}
	if err := c.awaitRoomCaughtUp(ctx, portal.MXID); err != nil {
		return false, err
	}
	// Page back through the room until events older than the cut send
	// (with slack for clock skew); the other direction's traffic may have
	// put many events after it.
	oldest := since.Add(-time.Minute).UnixMilli()
	want := ghost.Intent.GetMXID()
	filter := &mautrix.FilterPart{Types: []event.Type{event.EventMessage, event.EventEncrypted}}
	from := ""
	var pages, read, scanned, undecryptable int
	stop := "history read"
	defer func() {
		if !found && err == nil {
			zerolog.Ctx(ctx).Info().Int("pages", pages).Int("events", read).Int("from_contact", scanned).
				Int("undecryptable", undecryptable).Str("stopped", stop).
				Msg("Message being sent when the bridge stopped is not in the room; sending it")
		}
	}()
	for page := 0; page < maxRecoverPages; page++ {
		resp, err := c.status.Bot.Messages(ctx, portal.MXID, from, "", mautrix.DirectionBackward, filter, 100)
		if err != nil {
			return false, fmt.Errorf("read room to recover a cut send: %w", err)
		}
		pages++
		for _, evt := range resp.Chunk {
			read++
			if evt.Timestamp < oldest {
				stop = "older than the cut send"
				return false, nil
			}
			if evt.Sender != want {
				continue
			}
			scanned++
			if evt.Type == event.EventEncrypted {
				evt.RoomID = portal.MXID
				evt = c.status.decryptOwn(ctx, evt)
				if evt.Type == event.EventEncrypted {
					undecryptable++
					continue
				}
			}
			if err := evt.Content.ParseRaw(evt.Type); err != nil && evt.Content.Raw == nil {
				continue
			}
			if got, _ := evt.Content.Raw[msgIDKey].(string); got != in.msg.ID {
				continue
			}
			if known, err := c.br.DB.Message.GetPartByMXID(ctx, evt.ID); err != nil {
				return false, fmt.Errorf("recover a cut send: %w", err)
			} else if known != nil {
				return true, nil // recorded already (the stop came after bridgev2's record)
			}
			msg := &database.Message{
				ID: networkid.MessageID(in.msg.ID), MXID: evt.ID, Room: in.portal, SenderID: in.sender.Sender,
				SenderMXID: evt.Sender, Timestamp: time.UnixMilli(evt.Timestamp),
			}
			if err := c.br.DB.Message.Insert(ctx, msg); err != nil {
				return false, fmt.Errorf("record recovered message: %w", err)
			}
			zerolog.Ctx(ctx).Info().Stringer("event_id", evt.ID).
				Msg("Message sent before the bridge stopped was found in the room; not sending it again")
			return true, nil
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		from = resp.End
	}
	return false, nil
}

// recoveryMarkType is the state event the bot writes into a portal before
// it looks there for a send cut by a stop (clients do not show it).
const recoveryMarkType = "net.rcsgate.recovery_mark"

// Bounds of the wait for a recovery mark to show in the room's history.
const (
	markWaitMax  = 30 * time.Second
	markPollMin  = 25 * time.Millisecond
	markPollMax  = time.Second
	markLookBack = 20 // events read per poll
)

// awaitRoomCaughtUp writes a mark into the room and waits until the room's
// history shows it, once per portal per process. A homeserver handles a
// room's events in order, but may make them readable later than it accepted
// them: Dendrite queues a send on disk and, after its own crash, processes
// and indexes it only some time after it is back. Once the mark is readable,
// so is every send of ours that reached the homeserver before the stop —
// without this, the lookup can miss the cut send and the message is sent
// twice (seen in the whole-box power-cut test). Past markWaitMax the lookup
// goes ahead (logged): a homeserver that cannot show the mark should not hold
// the phone's messages for good.
func (c *Connector) awaitRoomCaughtUp(ctx context.Context, room id.RoomID) error {
	if _, done := c.caughtUp.Load(room); done {
		return nil
	}
	log := zerolog.Ctx(ctx)
	bot := c.status.Bot
	mark := fmt.Sprintf("%d-%d", c.started.UnixMilli(), time.Now().UnixNano())
	resp, err := bot.SendStateEvent(ctx, room, event.Type{Type: recoveryMarkType, Class: event.StateEventType}, "",
		map[string]any{"mark": mark})
	if err != nil {
		return fmt.Errorf("write recovery mark: %w", err)
	}
	filter := &mautrix.FilterPart{Types: []event.Type{{Type: recoveryMarkType, Class: event.StateEventType}}}
	deadline := time.Now().Add(markWaitMax)
	wait := ctxutil.Doubling{Next: markPollMin, Max: markPollMax}
	for {
		page, err := bot.Messages(ctx, room, "", "", mautrix.DirectionBackward, filter, markLookBack)
		if err != nil {
			return fmt.Errorf("read room for the recovery mark: %w", err)
		}
		for _, evt := range page.Chunk {
			if evt.ID == resp.EventID {
				c.caughtUp.Store(room, struct{}{})
				return nil
			}
		}
		if time.Now().After(deadline) {
			log.Warn().Stringer("room_id", room).Dur("waited", markWaitMax).
				Msg("Homeserver did not show the recovery mark in the room's history; looking for the cut send anyway")
			return nil
		}
		if !wait.Wait(ctx) {
			return ctx.Err()
		}
	}
}

// decryptOwn decrypts an event the bridge sent: with the ghost's own device
// if it has one, else with the bot's (which encrypts for ghosts without
// one). It returns evt unchanged if neither can.
func (s *StatusMatrix) decryptOwn(ctx context.Context, evt *event.Event) *event.Event {
	if d := s.GhostDevices(); d != nil {
		if dec, err := d.Decrypt(ctx, evt); err == nil {
			return dec
		}
	}
	if s.Crypto != nil {
		if dec, err := s.Crypto.Decrypt(ctx, evt); err == nil {
			return dec
		}
	}
	return evt
}
