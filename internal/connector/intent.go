package connector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/matrix"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/ghostcrypto"
	"github.com/rcsgate/rcsgate/internal/hoptrace"
)

// GhostIntent hands bridgev2 ghost intents whose sends are idempotent and,
// in encrypted rooms, encrypted by the ghost's own device where it has one.
func (s *StatusMatrix) GhostIntent(userID networkid.UserID) bridgev2.MatrixAPI {
	in := s.Connector.GhostIntent(userID)
	if as, ok := in.(*matrix.ASIntent); ok {
		return &idempotentIntent{ASIntent: as, s: s}
	}
	return in
}

// SetGhostDevices gives ghosts their own devices from now on (nil: the bot's
// device encrypts for them, as in mautrix).
func (s *StatusMatrix) SetGhostDevices(d *ghostcrypto.Devices) { s.ghosts.Store(d) }

// GhostDevices returns what SetGhostDevices set, or nil.
func (s *StatusMatrix) GhostDevices() *ghostcrypto.Devices { return s.ghosts.Load() }

// idempotentIntent derives the Matrix transaction id of a bridged phone
// message from the message's own id. bridgev2 sends the event first and
// saves its row after; if rcsgate dies in between, the phone resends the
// message and bridgev2 (finding no row) sends it again — with the same
// transaction id the homeserver answers with the first event instead of
// creating a second one.
type idempotentIntent struct {
	*matrix.ASIntent
	s *StatusMatrix
}

func (i *idempotentIntent) SendMessage(ctx context.Context, roomID id.RoomID, eventType event.Type, content *event.Content, extra *bridgev2.MatrixSendExtra) (*mautrix.RespSendEvent, error) {
	if extra != nil && extra.TransactionID == "" && extra.MessageMeta != nil && extra.MessageMeta.ID != "" {
		e := *extra
		// The content is part of the key: an edit of the same message
		// (same id and part) must not be mistaken for a resend.
		body, _ := json.Marshal(content)
		e.TransactionID = txnIDFor(string(extra.MessageMeta.ID), string(extra.MessageMeta.PartID), eventType.Type, body)
		extra = &e
	}
	if extra != nil && extra.MessageMeta != nil {
		hoptrace.Mark(hoptrace.InSend, string(extra.MessageMeta.ID))
	}
	if i.s.quiet != nil {
		i.s.quiet(i.GetMXID())
	}
	sent, err, ok := i.sendAsGhostDevice(ctx, roomID, eventType, content, extra)
	if !ok {
		sent, err = i.ASIntent.SendMessage(ctx, roomID, eventType, content, extra)
	}
	if err == nil && extra != nil && extra.MessageMeta != nil {
		hoptrace.Mark(hoptrace.InMatrix, string(extra.MessageMeta.ID))
	}
	return sent, err
}

// sendAsGhostDevice does what ASIntent.SendMessage does in an encrypted
// room, but with the ghost's own device encrypting. ok is false when that
// does not apply (no ghost devices, not encrypted, an event type mautrix
// sends in the clear, or no trusted device for this ghost): then the caller
// sends as mautrix would.
func (i *idempotentIntent) sendAsGhostDevice(ctx context.Context, roomID id.RoomID, eventType event.Type, content *event.Content, extra *bridgev2.MatrixSendExtra) (*mautrix.RespSendEvent, error, bool) {
	devices := i.s.GhostDevices()
	if devices == nil || eventType == event.EventRedaction || (eventType == event.EventReaction && !i.Connector.Config.Encryption.MSC4392) {
		return nil, nil, false
	}
	if encrypted, err := i.Connector.StateStore.IsEncrypted(ctx, roomID); err != nil || !encrypted {
		return nil, nil, false
	}
	if extra == nil {
		extra = &bridgev2.MatrixSendExtra{}
	}
	if msg, ok := content.Parsed.(*event.MessageEventContent); ok && eventType == event.EventMessage {
		msg.AddPerMessageProfileFallback()
	}
	if err := devices.Encrypt(ctx, i.GetMXID(), roomID, eventType, content); err != nil {
		if errors.Is(err, ghostcrypto.ErrUnavailable) {
			return nil, nil, false
		}
		return nil, err, true
	}
	resp, err := i.Matrix.SendMessageEvent(ctx, roomID, event.EventEncrypted, content,
		mautrix.ReqSendEvent{Timestamp: extra.Timestamp.UnixMilli(), TransactionID: extra.TransactionID})
	return resp, err, true
}

func txnIDFor(msgID, partID, evtType string, content []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", msgID, partID, evtType)
	h.Write(content)
	return "rcsgate-" + hex.EncodeToString(h.Sum(nil)[:16])
}
