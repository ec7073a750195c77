package connector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/matrix"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// GhostIntent hands bridgev2 ghost intents whose sends are idempotent.
func (s *StatusMatrix) GhostIntent(userID networkid.UserID) bridgev2.MatrixAPI {
	in := s.Connector.GhostIntent(userID)
	if as, ok := in.(*matrix.ASIntent); ok {
		return &idempotentIntent{ASIntent: as}
	}
	return in
}

// idempotentIntent derives the Matrix transaction id of a bridged phone
// message from the message's own id. bridgev2 sends the event first and
// saves its row after; if rcsgate dies in between, the phone resends the
// message and bridgev2 (finding no row) sends it again — with the same
// transaction id the homeserver answers with the first event instead of
// creating a second one.
type idempotentIntent struct {
	*matrix.ASIntent
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
	return i.ASIntent.SendMessage(ctx, roomID, eventType, content, extra)
}

func txnIDFor(msgID, partID, evtType string, content []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", msgID, partID, evtType)
	h.Write(content)
	return "rcsgate-" + hex.EncodeToString(h.Sum(nil)[:16])
}
