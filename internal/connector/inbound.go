package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/bridgev2/simplevent"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/phone"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Phone → Matrix. HandleInbound returns only after bridgev2 has sent the
// event to the homeserver (portal event buffer 0), so the ack the device gets
// means the event is in Matrix.

// maxAvatar bounds a contact photo, fetched whole (it is small).
const maxAvatar = 2 << 20

// inbound is one phone event with what was resolved for it.
type inbound struct {
	c      *Connector
	ul     *bridgev2.UserLogin
	devID  string
	msg    wire.Message
	portal networkid.PortalKey
	sender bridgev2.EventSender
	log    zerolog.Logger
	// prevTransport is the chat's transport before this event ("" unknown).
	prevTransport string
}

// HandleInbound bridges one phone event of any kind.
func (c *Connector) HandleInbound(ctx context.Context, devID string, msg wire.Message) error {
	ul := c.loginFor(devID, msg.SIM)
	if ul == nil {
		return fmt.Errorf("device %s has no login", devID[:7])
	}
	log := ul.Log.With().Str("msg_id", msg.ID).Str("kind", msg.Kind).Logger()
	ctx = log.WithContext(ctx)
	if !msg.KnownKind() {
		log.Warn().Msg("Phone sent an event kind this bridge does not know; skipping it (update rcsgate)")
		return nil
	}
	if msg.Kind == wire.KindReceipt { // about a Matrix message: no portal needed
		return c.handleReceipt(ctx, devID, msg)
	}
	if msg.Backfill && (c.cfg.BackfillMaxAge < 0 || time.Since(time.UnixMilli(msg.TSMS)) > c.cfg.BackfillMaxAge) {
		log.Debug().Msg("History older than the backfill bound; not bridged")
		return nil
	}
	if msg.Kind == wire.KindRead && strings.HasPrefix(msg.Target, "$") {
		// Read up to a Matrix message: only one this phone was sent.
		if _, ok := c.sentTo(ctx, log, devID, msg.Target, "read"); !ok {
			return nil
		}
	}
	in, ok, err := c.resolve(ctx, ul, devID, msg, nil)
	if err != nil || !ok {
		return err
	}
	switch msg.Kind {
	case "", wire.KindText, wire.KindMedia:
		return in.message()
	case wire.KindEdit:
		return in.queue(&simplevent.Message[wire.Message]{
			EventMeta: in.meta(bridgev2.RemoteEventEdit), Data: msg, ID: networkid.MessageID(msg.ID),
			TargetMessage: networkid.MessageID(msg.Target), ConvertEditFunc: in.convertEdit,
		})
	case wire.KindReaction, wire.KindUnreact:
		t := bridgev2.RemoteEventReaction
		if msg.Kind == wire.KindUnreact {
			t = bridgev2.RemoteEventReactionRemove
		}
		return in.queue(&simplevent.Reaction{EventMeta: in.meta(t), TargetMessage: networkid.MessageID(msg.Target),
			EmojiID: "", Emoji: msg.Emoji})
	case wire.KindDelete:
		return in.queue(&simplevent.MessageRemove{EventMeta: in.meta(bridgev2.RemoteEventMessageRemove),
			TargetMessage: networkid.MessageID(msg.Target)})
	case wire.KindRead:
		return in.queue(&simplevent.Receipt{EventMeta: in.receiptMeta(), LastTarget: networkid.MessageID(msg.Target)})
	case wire.KindGroup:
		return in.group()
	case wire.KindContact:
		return in.contactCard(ctx)
	}
	return nil
}

// resolve finds the portal and sender of a phone event. ok is false for an
// event that can never be placed (acked and dropped, loudly). want, if set,
// is the portal the event must be about (a receipt's message's): an event
// naming another chat is refused.
func (c *Connector) resolve(ctx context.Context, ul *bridgev2.UserLogin, devID string, msg wire.Message, want *networkid.PortalKey) (*inbound, bool, error) {
	log := zerolog.Ctx(ctx)
	in := &inbound{c: c, ul: ul, devID: devID, msg: msg, log: *log}
	chat, err := c.party(msg.Chat)
	if err != nil {
		log.Error().Str("chat", redact.Number(msg.Chat)).Msg("Dropping phone event with an invalid chat number")
		return nil, false, nil
	}
	pid, err := c.contact(ctx, chat)
	if err != nil {
		return nil, false, err
	}
	in.portal = networkid.PortalKey{ID: networkid.PortalID(pid), Receiver: ul.ID}
	if want != nil && *want != in.portal {
		if ok, suppressed := refusals.Allow(devID); ok {
			log.Warn().Str("reason", "other_chat").Int("suppressed", suppressed).
				Msg("Refused a phone's receipt that names another chat than the message's")
		}
		return nil, false, nil
	}
	switch {
	case msg.FromMe:
		dc := ul.Client.(*deviceClient)
		if err := dc.ensureMe(ctx); err != nil {
			return nil, false, err
		}
		in.sender = bridgev2.EventSender{IsFromMe: true, SenderLogin: ul.ID, Sender: dc.meID()}
	default:
		from := msg.From
		if from == "" {
			from = msg.Chat
		}
		n, err := c.party(from)
		if err != nil || wire.IsGroupChat(n) {
			log.Error().Str("from", redact.Number(from)).Msg("Dropping phone event with an invalid sender number")
			return nil, false, nil
		}
		uid, err := c.contact(ctx, n)
		if err != nil {
			return nil, false, err
		}
		in.sender = bridgev2.EventSender{Sender: uid}
	}
	if msg.Transport != "" && !msg.Backfill {
		prev, err := c.store.NoteTransport(ctx, chatKey(in.portal), msg.Transport, msg.SIM)
		if err != nil {
			return nil, false, err
		}
		in.prevTransport = prev
	}
	return in, true, nil
}

// party is the bridge's key for a chat or sender the phone named: a group
// id or a conversation key ("c:…", a party the phone knows by name only) as
// it is, a number normalised to E.164.
func (c *Connector) party(s string) (string, error) {
	if wire.IsGroupChat(s) || wire.IsConversationChat(s) {
		return s, nil
	}
	return phone.NormalizeSender(s, c.cfg.DefaultRegion)
}

func (in *inbound) meta(t bridgev2.RemoteEventType) simplevent.EventMeta {
	return simplevent.EventMeta{Type: t, PortalKey: in.portal, Sender: in.sender, CreatePortal: true,
		Timestamp: time.UnixMilli(in.msg.TSMS)}
}

// receiptMeta: receipts mark what is in a room; they never make one.
func (in *inbound) receiptMeta() simplevent.EventMeta {
	meta := in.meta(bridgev2.RemoteEventReadReceipt)
	meta.CreatePortal = false
	return meta
}

// queue hands an event to bridgev2 and waits for the outcome.
func (in *inbound) queue(ev bridgev2.RemoteEvent) error {
	res := in.ul.QueueRemoteEvent(ev)
	if !res.Success && !res.Ignored {
		if res.Error != nil {
			return res.Error
		}
		return errors.New("bridge did not handle the event")
	}
	return nil
}

// message bridges text and files, guarding the crash window (see
// settleCrashedSend): the Matrix send is marked in flight until it is done.
func (in *inbound) message() error {
	ctx := in.log.WithContext(context.Background())
	key := in.inflightKey()
	since, inflight, err := in.c.store.InflightSince(ctx, key)
	if err != nil {
		return err
	}
	if inflight && since.UnixMilli() < in.c.started.UnixMilli() {
		// A send of ours was cut by a stop: let the homeserver finish it,
		// then look for it in the room before sending again.
		if err := in.c.settleCrashedSend(ctx, in.msg.ID); err != nil {
			return err
		}
		if found, err := in.alreadyInRoom(ctx, since); err != nil {
			return err
		} else if found {
			return in.c.store.ClearInflight(context.WithoutCancel(ctx), key)
		}
	}
	if err := in.c.store.MarkInflight(ctx, key); err != nil {
		return err
	}
	err = in.queue(&simplevent.Message[wire.Message]{
		EventMeta:          in.meta(bridgev2.RemoteEventMessage),
		Data:               in.msg,
		ID:                 networkid.MessageID(in.msg.ID),
		ConvertMessageFunc: in.convert,
		HandleExistingFunc: func(context.Context, *bridgev2.Portal, bridgev2.MatrixAPI, []*database.Message, wire.Message) (bridgev2.UpsertResult, error) {
			return bridgev2.UpsertResult{}, nil // already bridged: a resend after a lost ack
		},
	})
	if err != nil {
		return err
	}
	// The event is in Matrix: record that even if the session is ending
	// (a cancelled context here would make the phone resend it).
	return in.c.store.ClearInflight(context.WithoutCancel(ctx), key)
}

// inflightKey names a phone message's in-flight mark by device as well as
// id: message ids are the phone's choice, and one phone must not clear
// (or set) another's mark.
func (in *inbound) inflightKey() string { return in.devID + "/" + in.msg.ID }

// transportNote marks where the chat fell back to SMS (or came back to RCS),
// once per change, so people know what the other side sees.
func (in *inbound) transportNote() *bridgev2.ConvertedMessagePart {
	t, prev := in.msg.Transport, in.prevTransport
	if t == "" || prev == "" || t == prev {
		return nil
	}
	var body string
	switch t {
	case wire.TransportSMS, wire.TransportMMS:
		body = "This chat now goes over " + strings.ToUpper(t) + " (no RCS): no typing, receipts or reactions."
	case wire.TransportRCS:
		body = "This chat is back on RCS."
	default:
		return nil
	}
	return &bridgev2.ConvertedMessagePart{ID: "transport", Type: event.EventMessage,
		Content: &event.MessageEventContent{MsgType: event.MsgNotice, Body: body}}
}

func (in *inbound) convert(ctx context.Context, portal *bridgev2.Portal, intent bridgev2.MatrixAPI, msg wire.Message) (*bridgev2.ConvertedMessage, error) {
	cm := &bridgev2.ConvertedMessage{}
	if note := in.transportNote(); note != nil {
		cm.Parts = append(cm.Parts, note)
	}
	if msg.ReplyTo != "" {
		cm.ReplyTo = &networkid.MessageOptionalPartID{MessageID: networkid.MessageID(msg.ReplyTo)}
	}
	extra := map[string]any{msgIDKey: msg.ID}
	if msg.Transport != "" {
		extra["net.rcsgate.transport"] = msg.Transport
	}
	if msg.Kind != wire.KindMedia {
		cm.Parts = append(cm.Parts, &bridgev2.ConvertedMessagePart{Type: event.EventMessage,
			Content: &event.MessageEventContent{MsgType: event.MsgText, Body: msg.Text}, Extra: extra})
		return cm, nil
	}
	content, err := in.uploadMedia(ctx, portal, intent, msg)
	if err != nil {
		return nil, err
	}
	cm.Parts = append(cm.Parts, &bridgev2.ConvertedMessagePart{Type: event.EventMessage, Content: content, Extra: extra})
	return cm, nil
}

// uploadMedia streams a phone file from the device into the homeserver's
// media repository (via a temporary file, never whole in memory). A file
// the device no longer has, or the homeserver refuses as too large, becomes
// a notice saying so: resending could never succeed.
func (in *inbound) uploadMedia(ctx context.Context, portal *bridgev2.Portal, intent bridgev2.MatrixAPI, msg wire.Message) (*event.MessageEventContent, error) {
	md := *msg.Media
	name := md.Name
	if name == "" {
		name = "file" + extFor(md.Mime)
	}
	url, file, err := intent.UploadMediaStream(ctx, portal.MXID, md.Size, false, func(w io.Writer) (*bridgev2.FileStreamResult, error) {
		_, err := in.c.ch.FetchMedia(ctx, in.devID, msg.ID, md.SHA256, w, nil)
		if err != nil {
			return nil, err
		}
		return &bridgev2.FileStreamResult{FileName: name, MimeType: md.Mime}, nil
	})
	if err != nil {
		var lost bool
		switch {
		case errors.Is(err, wire.ErrMediaUnavailable), errors.Is(err, wire.ErrMalformed):
			lost = true
		case errors.Is(err, mautrix.MTooLarge):
			return &event.MessageEventContent{MsgType: event.MsgNotice,
				Body: fmt.Sprintf("The contact sent a file (%s, %s) larger than this homeserver accepts.", name, humanBytes(md.Size))}, nil
		}
		if lost {
			in.log.Error().Err(err).Msg("Phone file could not be fetched; bridging a notice instead")
			return &event.MessageEventContent{MsgType: event.MsgNotice,
				Body: "The contact sent a file (" + name + ") that the phone could not pass on."}, nil
		}
		return nil, fmt.Errorf("upload phone file: %w", err)
	}
	content := &event.MessageEventContent{MsgType: msgTypeFor(md), Body: name, FileName: name, URL: url, File: file,
		Info: &event.FileInfo{MimeType: md.Mime, Size: int(md.Size), Width: md.Width, Height: md.Height, Duration: md.DurationMS}}
	if msg.Text != "" {
		content.Body = msg.Text // a caption; FileName keeps the name
	}
	if md.Voice {
		content.MSC3245Voice = &event.MSC3245Voice{}
		content.MSC1767Audio = &event.MSC1767Audio{Duration: md.DurationMS}
	}
	return content, nil
}

func msgTypeFor(md wire.Media) event.MessageType {
	switch {
	case strings.HasPrefix(md.Mime, "image/"):
		return event.MsgImage
	case strings.HasPrefix(md.Mime, "video/"):
		return event.MsgVideo
	case strings.HasPrefix(md.Mime, "audio/"), md.Voice:
		return event.MsgAudio
	}
	return event.MsgFile
}

func extFor(mime string) string {
	switch mime {
	case "image/jpeg":
		return ".jpg"
	case "image/png":
		return ".png"
	case "image/gif":
		return ".gif"
	case "video/mp4":
		return ".mp4"
	case "audio/mpeg":
		return ".mp3"
	case "audio/ogg":
		return ".ogg"
	}
	return ""
}

func (in *inbound) convertEdit(ctx context.Context, portal *bridgev2.Portal, intent bridgev2.MatrixAPI, existing []*database.Message, msg wire.Message) (*bridgev2.ConvertedEdit, error) {
	if len(existing) == 0 {
		return nil, errors.New("edit of an unknown message")
	}
	return &bridgev2.ConvertedEdit{ModifiedParts: []*bridgev2.ConvertedEditPart{{
		Part: existing[len(existing)-1], Type: event.EventMessage,
		Content: &event.MessageEventContent{MsgType: event.MsgText, Body: msg.Text},
	}}}, nil
}

// group bridges a group's new description (name, topic, members).
func (in *inbound) group() error {
	ctx := in.log.WithContext(context.Background())
	g := *in.msg.Group
	raw, err := json.Marshal(g)
	if err != nil {
		return err
	}
	if err := in.c.store.PutGroup(ctx, chatKey(in.portal), string(raw)); err != nil {
		return err
	}
	me := bridgev2.ChatMember{EventSender: bridgev2.EventSender{IsFromMe: true, SenderLogin: in.ul.ID}, Membership: event.MembershipJoin}
	info, err := in.c.groupInfo(ctx, g, me)
	if err != nil {
		return err
	}
	return in.queue(&simplevent.ChatInfoChange{EventMeta: in.meta(bridgev2.RemoteEventChatInfoChange),
		ChatInfoChange: &bridgev2.ChatInfoChange{ChatInfo: info}})
}

// contactCard applies the phone's name and photo for a contact, only when
// the admin allowed contact sync.
func (in *inbound) contactCard(ctx context.Context) error {
	if !in.c.cfg.ContactSync || in.sender.IsFromMe {
		return nil
	}
	ghost, err := in.c.br.GetGhostByID(ctx, in.sender.Sender)
	if err != nil {
		return fmt.Errorf("get ghost: %w", err)
	}
	card := in.msg.Contact
	if ok, err := in.c.nameableBy(ctx, in.sender.Sender, in.ul.UserMXID); err != nil {
		return err
	} else if !ok {
		in.log.Info().Msg("Contact card not applied: someone else on this bridge chats with that number too")
		return nil
	}
	if err := in.c.store.SetContactName(ctx, string(in.sender.Sender), card.Name); err != nil {
		return err
	}
	number, err := in.c.store.Contact(ctx, string(in.sender.Sender))
	if err != nil {
		return err
	}
	info, err := in.c.userInfo(ctx, string(in.sender.Sender), number)
	if err != nil {
		return err
	}
	if card.AvatarSize > 0 && card.AvatarSize <= maxAvatar {
		var buf strings.Builder
		hdr, err := in.c.ch.FetchMedia(ctx, in.devID, in.msg.ID, "", &buf, nil)
		if err != nil && !errors.Is(err, wire.ErrMediaUnavailable) {
			return fmt.Errorf("fetch contact photo: %w", err)
		}
		if err == nil {
			data := []byte(buf.String())
			info.Avatar = &bridgev2.Avatar{ID: networkid.AvatarID(hdr.SHA256), Get: func(context.Context) ([]byte, error) { return data, nil }}
		}
	}
	ghost.UpdateInfo(ctx, info)
	return nil
}

// handleReceipt: the phone's delivery reports become send statuses for the
// Matrix sender, and "read" also a read receipt from the contact's ghost.
// Only for a message sent to this device, in the room it was sent from:
// anything else is refused, and a receipt never creates a room.
func (c *Connector) handleReceipt(ctx context.Context, devID string, msg wire.Message) error {
	log := *zerolog.Ctx(ctx)
	sent, ok := c.sentTo(ctx, log, devID, msg.Target, "receipt")
	if !ok {
		return nil
	}
	c.report(ctx, msg.Target, msg.State, phoneSaid(msg.Reason))
	if msg.State != wire.StateRead {
		return nil
	}
	portal, err := c.portalOf(ctx, sent)
	if err != nil || portal == nil {
		return err
	}
	// The receipt belongs in the room the message was sent from (on a
	// dual-SIM phone, that room's login is the SIM it went out on).
	owner := c.br.GetCachedUserLoginByID(portal.Receiver)
	if owner == nil {
		return nil
	}
	if d, _ := parseLoginID(owner.ID); d != devID {
		log.Error().Msg("A message's room belongs to another device than the one it was sent to; receipt dropped")
		return nil
	}
	in, ok, err := c.resolve(ctx, owner, devID, msg, &portal.PortalKey)
	if err != nil || !ok {
		return err
	}
	return in.queue(&simplevent.Receipt{EventMeta: in.receiptMeta(), LastTarget: networkid.MessageID(msg.Target)})
}

// HandleTyping shows a contact typing, from their ghost.
func (c *Connector) HandleTyping(ctx context.Context, devID string, t wire.Typing) {
	ul := c.loginFor(devID, 0)
	if ul == nil {
		return
	}
	msg := wire.Message{ID: "typing", Chat: t.Chat, From: t.Chat}
	in, ok, err := c.resolve(ctx, ul, devID, msg, nil)
	if err != nil || !ok {
		return
	}
	timeout := 30 * time.Second
	if !t.Active {
		timeout = 0
	}
	// Typing needs an existing room; it never creates a portal.
	meta := in.meta(bridgev2.RemoteEventTyping)
	meta.CreatePortal = false
	ul.QueueRemoteEvent(&simplevent.Typing{EventMeta: meta, Timeout: timeout, Type: bridgev2.TypingTypeText})
}

// OpenMedia serves a Matrix file to the device: downloaded (and decrypted
// for encrypted rooms) into a temporary file, streamed from there.
func (c *Connector) OpenMedia(ctx context.Context, devID, msgID string) (wire.MediaFile, error) {
	mo, err := c.store.GetMediaOut(ctx, msgID)
	if err != nil {
		return wire.MediaFile{}, fmt.Errorf("%w: %w", wire.ErrMediaUnavailable, err)
	}
	sent, err := c.store.GetSent(ctx, msgID)
	if err != nil || sent.DeviceID != devID {
		return wire.MediaFile{}, wire.ErrMediaUnavailable // only the device it was sent to may pull it
	}
	var file *event.EncryptedFileInfo
	if mo.FileJSON != "" {
		file = &event.EncryptedFileInfo{}
		if err := json.Unmarshal([]byte(mo.FileJSON), file); err != nil {
			return wire.MediaFile{}, fmt.Errorf("stored file info: %w", err)
		}
	}
	// mautrix downloads (and decrypts) into a temporary file and hands it to
	// a callback; keep the callback open while the device reads, so the
	// bytes are on disk once and never in memory.
	files := make(chan *os.File, 1)
	release := make(chan struct{})
	finished := make(chan error, 1)
	go func() {
		finished <- c.br.Bot.DownloadMediaToFile(ctx, id.ContentURIString(mo.URL), file, false, func(f *os.File) error {
			files <- f
			<-release
			return nil
		})
	}()
	var f *os.File
	select {
	case f = <-files:
	case err := <-finished:
		if err == nil {
			err = errors.New("no file from the homeserver")
		}
		if errors.Is(err, mautrix.MNotFound) {
			return wire.MediaFile{}, fmt.Errorf("%w: %w", wire.ErrMediaUnavailable, err)
		}
		return wire.MediaFile{}, fmt.Errorf("download from homeserver: %w", err)
	}
	var once sync.Once
	done := func() error {
		once.Do(func() { close(release) })
		return <-finished
	}
	n, sum, err := wire.HashFile(f)
	if err != nil {
		done()
		return wire.MediaFile{}, err
	}
	return wire.MediaFile{R: f, Total: n, SHA256: sum, Close: done}, nil
}
