package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/hoptrace"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Matrix → phone. Every Matrix event becomes a wire.Message in the device's
// durable outbox, keyed by its Matrix event id, so a transaction the
// homeserver retries after a crash can't reach the phone twice.

var (
	_ bridgev2.EditHandlingNetworkAPI        = (*deviceClient)(nil)
	_ bridgev2.ReactionHandlingNetworkAPI    = (*deviceClient)(nil)
	_ bridgev2.RedactionHandlingNetworkAPI   = (*deviceClient)(nil)
	_ bridgev2.ReadReceiptHandlingNetworkAPI = (*deviceClient)(nil)
	_ bridgev2.TypingHandlingNetworkAPI      = (*deviceClient)(nil)
)

// chatOf returns the phone chat of a portal and what the bridge knows of it.
func (d *deviceClient) chatOf(ctx context.Context, portal *bridgev2.Portal) (string, store.Chat, error) {
	chat, err := d.c.store.Contact(ctx, string(portal.ID))
	if err != nil {
		return "", store.Chat{}, fmt.Errorf("portal has no phone chat: %w", err)
	}
	st, err := d.c.store.GetChat(ctx, chatKey(portal.PortalKey))
	return chat, st, err
}

// outgoing fills what every event to the phone carries: the chat, the
// transport the user prefers and the SIM the chat lives on (never the wrong
// SIM on a dual-SIM phone: replies go out on the SIM the contact wrote to).
// It also returns what the bridge knows of the chat.
func (d *deviceClient) outgoing(ctx context.Context, portal *bridgev2.Portal, evt *event.Event, kind string) (wire.Message, store.Chat, error) {
	chat, st, err := d.chatOf(ctx, portal)
	if err != nil {
		return wire.Message{}, st, err
	}
	sim := st.SIM
	if d.sim >= 2 || (d.sim == 0 && d.multiSIM()) {
		sim = max(d.sim, 1) // this login is one SIM of a dual-SIM phone
	}
	return wire.Message{ID: string(evt.ID), Kind: kind, Chat: chat, TSMS: evt.Timestamp, Transport: st.Prefer, SIM: sim}, st, nil
}

// multiSIM reports whether the phone announced several SIMs.
func (d *deviceClient) multiSIM() bool {
	_, sims, ok := d.c.ch.Caps(d.deviceID)
	return ok && len(sims) > 1
}

// queue stores m in the device's outbox and wakes its sender. tracked
// events get send statuses (pending until the phone takes them).
func (d *deviceClient) queue(ctx context.Context, m wire.Message, evt *event.Event, msgType string, tracked bool) error {
	if err := m.Validate(); err != nil {
		return bridgev2.WrapErrorInStatus(err).WithStatus(event.MessageStatusFail).
			WithErrorReason(event.MessageStatusUnsupported).WithIsCertain(true).WithSendNotice(true).
			WithMessage("Not sent: the phone cannot carry this (" + err.Error() + ")")
	}
	payload, err := wire.Encode(m)
	if err != nil {
		return err
	}
	sent := store.SentMsg{MsgID: m.ID, DeviceID: d.deviceID}
	if tracked {
		sent.RoomID, sent.Sender, sent.MsgType = string(evt.RoomID), string(evt.Sender), msgType
	}
	err = d.c.store.EnqueueSent(ctx, sent, payload, d.c.cfg.QueueLimit)
	if errors.Is(err, store.ErrQueueFull) {
		return bridgev2.WrapErrorInStatus(err).WithStatus(event.MessageStatusFail).
			WithErrorReason(event.MessageStatusNetworkError).WithIsCertain(true).WithSendNotice(true).
			WithMessage(fmt.Sprintf("Not sent: %d messages already wait for the phone; it has been offline too long", d.c.cfg.QueueLimit))
	} else if err != nil {
		return fmt.Errorf("queue for phone: %w", err)
	}
	hoptrace.Mark(hoptrace.Queued, m.ID)
	d.c.ch.Notify(d.deviceID)
	return nil
}

// refuse is a clear, certain failure shown in the room.
func refuse(msg string) error {
	return bridgev2.WrapErrorInStatus(errors.New(msg)).WithStatus(event.MessageStatusFail).
		WithErrorReason(event.MessageStatusUnsupported).WithIsCertain(true).WithSendNotice(true).
		WithMessage(msg)
}

// caps is what the chat's transport carries, from the device's last Hello
// (unknown while it is offline: then nothing is refused early, and the
// phone refuses with a reason if it must).
func (d *deviceClient) caps(transport string) (wire.Caps, bool) {
	all, _, ok := d.c.ch.Caps(d.deviceID)
	if !ok || len(all) == 0 {
		return wire.Caps{}, false
	}
	if transport == "" {
		transport = wire.TransportRCS
	}
	if c, ok := all[transport]; ok {
		return c, true
	}
	if len(all) == 1 { // a single-transport phone (SMS only) carries every chat that way
		for _, c := range all {
			return c, true
		}
	}
	return wire.Caps{}, false // a transport the phone did not describe: it decides
}

// HandleMatrixMessage queues text, notices, emotes and files (with replies).
func (d *deviceClient) HandleMatrixMessage(ctx context.Context, msg *bridgev2.MatrixMessage) (*bridgev2.MatrixMessageResponse, error) {
	c := msg.Content
	m, st, err := d.outgoing(ctx, msg.Portal, msg.Event, wire.KindText)
	if err != nil {
		return nil, err
	}
	if msg.ReplyTo != nil {
		m.ReplyTo = string(msg.ReplyTo.ID)
	}
	switch c.MsgType {
	case event.MsgText, event.MsgNotice:
		m.Text = c.Body
	case event.MsgEmote:
		m.Text = "* " + c.Body
	case event.MsgImage, event.MsgVideo, event.MsgAudio, event.MsgFile:
		if err := d.mediaFrom(ctx, msg, st.Carrier(), &m); err != nil {
			return nil, err
		}
	default:
		return nil, bridgev2.ErrUnsupportedMessageType
	}
	if len(m.Text) > wire.MaxTextLen {
		return nil, refuse(fmt.Sprintf("Not sent: message longer than %d bytes", wire.MaxTextLen))
	}
	if err := d.queue(ctx, m, msg.Event, string(c.MsgType), true); err != nil {
		return nil, err
	}
	return &bridgev2.MatrixMessageResponse{DB: &database.Message{
		ID:        networkid.MessageID(m.ID),
		SenderID:  d.meID(),
		Timestamp: time.UnixMilli(msg.Event.Timestamp),
	}}, nil
}

// mediaFrom turns a Matrix file into a media message. The bytes stay in the
// homeserver's media repository until the agent pulls them.
func (d *deviceClient) mediaFrom(ctx context.Context, msg *bridgev2.MatrixMessage, transport string, m *wire.Message) error {
	c := msg.Content
	url, fileJSON := c.URL, ""
	if c.File != nil {
		url = c.File.URL
		b, err := json.Marshal(c.File)
		if err != nil {
			return err
		}
		fileJSON = string(b)
	}
	if url == "" {
		return refuse("Not sent: the file has no media URL")
	}
	md := wire.Media{Name: c.FileName, Mime: "application/octet-stream"}
	if md.Name == "" {
		md.Name = c.Body
	} else if c.Body != "" && c.Body != c.FileName {
		m.Text = c.Body // a caption
	}
	if c.Info != nil {
		if c.Info.MimeType != "" {
			md.Mime = c.Info.MimeType
		}
		md.Size = int64(c.Info.Size)
		md.Width, md.Height, md.DurationMS = c.Info.Width, c.Info.Height, c.Info.Duration
	}
	md.Voice = c.MSC3245Voice != nil
	if len(md.Name) > wire.MaxMediaName {
		md.Name = md.Name[:wire.MaxMediaName]
	}
	if md.Size > wire.MaxMediaSize {
		return refuse(fmt.Sprintf("Not sent: the file is %s; phones take files up to %s", humanBytes(md.Size), humanBytes(wire.MaxMediaSize)))
	}
	if caps, known := d.caps(transport); known {
		switch {
		case caps.MaxFileSize == 0:
			return refuse("Not sent: this chat cannot carry files (it goes over SMS)")
		case md.Size > caps.MaxFileSize:
			return refuse(fmt.Sprintf("Not sent: the file is %s; this chat takes files up to %s", humanBytes(md.Size), humanBytes(caps.MaxFileSize)))
		}
	}
	m.Kind, m.Media = wire.KindMedia, &md
	return d.c.store.PutMediaOut(ctx, store.MediaOut{MsgID: string(msg.Event.ID), URL: string(url), FileJSON: fileJSON})
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// HandleMatrixEdit sends the new text; phones without edits get a refusal
// from the backend, which the sender sees.
func (d *deviceClient) HandleMatrixEdit(ctx context.Context, msg *bridgev2.MatrixEdit) error {
	m, _, err := d.outgoing(ctx, msg.Portal, msg.Event, wire.KindEdit)
	if err != nil {
		return err
	}
	m.Target, m.Text = string(msg.EditTarget.ID), msg.Content.Body
	return d.queue(ctx, m, msg.Event, string(event.EventMessage.Type), true)
}

// PreHandleMatrixReaction: RCS keeps one reaction per person per message, so
// a new one replaces the old.
func (d *deviceClient) PreHandleMatrixReaction(ctx context.Context, msg *bridgev2.MatrixReaction) (bridgev2.MatrixReactionPreResponse, error) {
	if err := d.ensureMe(ctx); err != nil {
		return bridgev2.MatrixReactionPreResponse{}, err
	}
	emoji := msg.Content.RelatesTo.Key
	if emoji == "" || len(emoji) > wire.MaxEmojiLen {
		return bridgev2.MatrixReactionPreResponse{}, refuse("Not sent: the phone takes emoji reactions only")
	}
	return bridgev2.MatrixReactionPreResponse{SenderID: d.meID(), EmojiID: "", Emoji: emoji, MaxReactions: 1}, nil
}

func (d *deviceClient) HandleMatrixReaction(ctx context.Context, msg *bridgev2.MatrixReaction) (*database.Reaction, error) {
	m, _, err := d.outgoing(ctx, msg.Portal, msg.Event, wire.KindReaction)
	if err != nil {
		return nil, err
	}
	m.Target, m.Emoji = string(msg.TargetMessage.ID), msg.PreHandleResp.Emoji
	return nil, d.queue(ctx, m, msg.Event, event.EventReaction.Type, false)
}

func (d *deviceClient) HandleMatrixReactionRemove(ctx context.Context, msg *bridgev2.MatrixReactionRemove) error {
	m, _, err := d.outgoing(ctx, msg.Portal, msg.Event, wire.KindUnreact)
	if err != nil {
		return err
	}
	m.Target, m.Emoji = string(msg.TargetReaction.MessageID), msg.TargetReaction.Emoji
	if m.Emoji == "" {
		m.Emoji = string(msg.TargetReaction.EmojiID)
	}
	return d.queue(ctx, m, msg.Event, event.EventRedaction.Type, false)
}

// HandleMatrixMessageRemove unsends the message on the phone where the
// transport allows it.
func (d *deviceClient) HandleMatrixMessageRemove(ctx context.Context, msg *bridgev2.MatrixMessageRemove) error {
	m, _, err := d.outgoing(ctx, msg.Portal, msg.Event, wire.KindDelete)
	if err != nil {
		return err
	}
	m.Target = string(msg.TargetMessage.ID)
	return d.queue(ctx, m, msg.Event, event.EventRedaction.Type, false)
}

// HandleMatrixReadReceipt marks the chat read on the phone up to a message
// from the contact (the contact sees "read" if the phone shares receipts).
func (d *deviceClient) HandleMatrixReadReceipt(ctx context.Context, msg *bridgev2.MatrixReadReceipt) error {
	if msg.ExactMessage == nil || msg.Implicit {
		return nil
	}
	chat, _, err := d.chatOf(ctx, msg.Portal)
	if err != nil {
		return err
	}
	m := wire.Message{ID: readID(msg.EventID), Kind: wire.KindRead, Chat: chat, Target: string(msg.ExactMessage.ID),
		TSMS: msg.ReadUpTo.UnixMilli()}
	return d.queue(ctx, m, nil, "", false)
}

// readID keys a read marker by the event read, so a receipt bridged twice
// reaches the phone once.
func readID(evt id.EventID) string {
	s := "read:" + string(evt)
	if len(s) > wire.MaxIDLen {
		s = s[:wire.MaxIDLen]
	}
	return s
}

// HandleMatrixTyping passes typing on at once; it is dropped while the phone
// is offline (stale by the time it is back).
func (d *deviceClient) HandleMatrixTyping(ctx context.Context, msg *bridgev2.MatrixTyping) error {
	chat, _, err := d.chatOf(ctx, msg.Portal)
	if err != nil {
		return err
	}
	return d.c.ch.SendTyping(d.deviceID, chat, msg.IsTyping)
}
