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
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/hoptrace"
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
		// A send of ours was cut by a stop. If bridgev2 recorded it before
		// the stop, it is done; else let the homeserver finish it, then
		// look for it in the room before sending again.
		if done, err := in.c.br.DB.Message.GetFirstPartByID(ctx, in.portal.Receiver, networkid.MessageID(in.msg.ID)); err != nil {
			return err
		} else if done != nil {
			return in.c.store.ClearInflight(context.WithoutCancel(ctx), key)
		}
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
// media repository (see streamUpload: never whole in memory or on disk). A
// file the device no longer has, or the homeserver refuses as too large,
// becomes a notice saying so: resending could never succeed.
func (in *inbound) uploadMedia(ctx context.Context, portal *bridgev2.Portal, intent bridgev2.MatrixAPI, msg wire.Message) (*event.MessageEventContent, error) {
	md := *msg.Media
	name := md.Name
	if name == "" {
		name = "file" + extFor(md.Mime)
	}
	hoptrace.Mark(hoptrace.MediaUpStart, msg.ID)
	url, file, err := in.streamUpload(ctx, portal, intent, msg.ID, md, name)
	if err == nil {
		hoptrace.Mark(hoptrace.MediaUpDone, msg.ID)
	}
	if err != nil {
		var lost bool
		switch {
		case errors.Is(err, wire.ErrMediaUnavailable), errors.Is(err, wire.ErrMalformed):
			lost = true
		case errors.Is(err, mautrix.MTooLarge), errors.Is(err, bridgev2.ErrMediaTooLarge):
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

// uploadHoldback is how many bytes of a phone file wait until the whole
// file checked out against its hash: the homeserver cannot complete an
// upload of bytes that turn out wrong, because it never gets the last ones.
const uploadHoldback = 64 << 10

// streamUpload pipes the phone's file from the device into the
// homeserver's media repository as it arrives: the phone's message carries
// the size, so the upload goes out with a Content-Length and nothing is
// spooled (bridgev2's UploadMediaStream writes a temporary file first). In
// an encrypted room the bytes are encrypted on the way (AES-CTR keeps the
// size; the ciphertext's hash is known once the last byte went out). The
// fallback, for an unknown size or an intent that is not ours, is
// bridgev2's way.
func (in *inbound) streamUpload(ctx context.Context, portal *bridgev2.Portal, intent bridgev2.MatrixAPI, msgID string, md wire.Media, name string) (id.ContentURIString, *event.EncryptedFileInfo, error) {
	ghost, ok := intent.(*idempotentIntent)
	mx := in.c.status
	if !ok || md.Size <= 0 || mx == nil || mx.Connector == nil {
		return intent.UploadMediaStream(ctx, portal.MXID, md.Size, false, func(w io.Writer) (*bridgev2.FileStreamResult, error) {
			if _, err := in.c.ch.FetchMedia(ctx, in.devID, msgID, md.SHA256, w, nil); err != nil {
				return nil, err
			}
			return &bridgev2.FileStreamResult{FileName: name, MimeType: md.Mime}, nil
		})
	}
	if limit := mx.MediaConfig.UploadSize; limit > 0 && md.Size > limit {
		return "", nil, fmt.Errorf("%w (%d bytes, the homeserver takes %d)", bridgev2.ErrMediaTooLarge, md.Size, limit)
	}
	ctx, cancel := context.WithTimeout(ctx, transferDeadline(md.Size))
	defer cancel()
	encrypted := mx.Config.Encryption.Require
	if !encrypted {
		var err error
		if encrypted, err = mx.StateStore.IsEncrypted(ctx, portal.MXID); err != nil {
			return "", nil, fmt.Errorf("is the room encrypted: %w", err)
		}
	}
	// The upload reads straight from the device's stream: no pipe, no
	// goroutine between QUIC and the homeserver's connection.
	ms, err := in.c.ch.StreamMedia(ctx, in.devID, msgID, md.SHA256, uploadHoldback)
	if err != nil {
		return "", nil, err
	}
	defer ms.Close()
	if total := ms.Header().Total; total != md.Size {
		return "", nil, fmt.Errorf("%w: the phone announced %d bytes and serves %d", wire.ErrMalformed, md.Size, total)
	}
	body := &readErr{r: ms}
	req := mautrix.ReqUploadMedia{Content: body, ContentLength: md.Size, ContentType: md.Mime, FileName: name}
	var file *event.EncryptedFileInfo
	var enc io.ReadCloser
	if encrypted {
		file = &event.EncryptedFileInfo{EncryptedFile: *attachment.NewEncryptedFile()}
		enc = file.EncryptStream(body)
		req.Content, req.ContentType, req.FileName = enc, "application/octet-stream", ""
	}
	resp, uerr := in.c.uploadStreamed(ctx, ghost.ASIntent.Matrix.Client, req)
	if body.err != nil { // the device's bytes failed: that, not the upload's echo of it, is the error
		return "", nil, body.err
	}
	if uerr != nil {
		return "", nil, uerr
	}
	if !ms.Checked() {
		return "", nil, fmt.Errorf("%w: the upload finished before the file checked out", wire.ErrMalformed)
	}
	if file != nil {
		_ = enc.Close() // fills in the ciphertext's hash
		file.URL = resp.ContentURI.CUString()
		return "", file, nil
	}
	return resp.ContentURI.CUString(), nil, nil
}

// readErr remembers the first error other than io.EOF that r returned, so
// the caller can tell a failed source from a failed destination.
type readErr struct {
	r   io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
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

// OpenMedia serves a Matrix file to the device: streamed from the
// homeserver as it downloads (see streamDownload), or, for an agent that
// wants the hash before the bytes, downloaded (and decrypted for encrypted
// rooms) into a temporary file first and streamed from there.
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
	if wire.PeerHas(ctx, wire.FeatureMediaTrailer) && c.status != nil && c.status.Bot != nil {
		mf, err := c.streamDownload(ctx, mo.URL, file)
		if !errors.Is(err, errSizeUnknown) {
			return mf, err
		}
	}
	// An agent that needs the hash before the bytes: mautrix downloads (and decrypts) into a temporary file and hands it to
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

// errSizeUnknown: the homeserver did not say how large the file is, so it
// cannot be streamed to the phone with its size up front.
var errSizeUnknown = errors.New("the homeserver sent no Content-Length")

// streamDownload serves a Matrix file to the device straight from the
// homeserver's download, decrypted on the way in an encrypted room: no copy
// on disk, the transfer to the phone runs while the download does. The size
// is the homeserver's Content-Length (AES-CTR keeps it); the hash follows
// the bytes (wire.FeatureMediaTrailer), and an encrypted file's own hash is
// checked before it is sent.
func (c *Connector) streamDownload(ctx context.Context, url string, file *event.EncryptedFileInfo) (wire.MediaFile, error) {
	if file != nil {
		url = string(file.URL)
		if err := file.PrepareForDecryption(); err != nil {
			return wire.MediaFile{}, fmt.Errorf("%w: encrypted file: %w", wire.ErrMediaUnavailable, err)
		}
	}
	mxc, err := id.ContentURIString(url).Parse()
	if err != nil {
		return wire.MediaFile{}, fmt.Errorf("%w: media URL: %w", wire.ErrMediaUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, transferDeadline(wire.MaxMediaSize))
	resp, err := c.downloadStreamed(ctx, c.status.Bot.Client, mxc)
	if err != nil {
		cancel()
		if errors.Is(err, mautrix.MNotFound) {
			return wire.MediaFile{}, fmt.Errorf("%w: %w", wire.ErrMediaUnavailable, err)
		}
		return wire.MediaFile{}, fmt.Errorf("download from homeserver: %w", err)
	}
	size := resp.ContentLength
	closeBody := func() error { defer cancel(); return resp.Body.Close() }
	switch {
	case size < 0:
		closeBody()
		return wire.MediaFile{}, errSizeUnknown
	case size > wire.MaxMediaSize:
		closeBody()
		return wire.MediaFile{}, fmt.Errorf("%w: the homeserver serves %d bytes, over the phone's limit", wire.ErrMediaUnavailable, size)
	}
	mf := wire.MediaFile{R: resp.Body, Total: size, Close: closeBody}
	if file != nil {
		dec := file.DecryptStream(resp.Body)
		mf.R = dec
		mf.Verify = dec.Close // checks the ciphertext's hash
	}
	return mf, nil
}
