package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/harness"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// features is one stack shared by the per-row conversation tests: bringing
// up a homeserver per row would cost more than all the rows together.
type features struct {
	t    *testing.T
	st   *harness.Stack
	cli  *harness.Client
	mgmt id.RoomID
	bot  id.UserID
}

// TestConversationFeatures checks every row of the RCS ⇄ Matrix table, both
// ways, against the simulator: text with SMS fallback, files, replies,
// reactions, edits, deletes, receipts, typing, groups, contacts, backfill.
func TestConversationFeatures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	st := startStack(t, ctx, harness.Options{Configure: func(c *gateway.Config) {
		c.Bridge.ContactSync = true
		c.Bridge.BackfillMaxAge = 7 * 24 * time.Hour
		c.Queue.ConfirmAfter, c.Queue.UnresponsiveAfter = 2*time.Second, 3*time.Second
	}})
	cli, err := harness.Login(ctx, st.Info.Homeserver, st.Info.UserID, st.Info.Password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cli.Close)
	mgmt, err := cli.OpenDM(ctx, id.UserID(st.Info.BotUserID))
	if err != nil {
		t.Fatal(err)
	}
	f := &features{t: t, st: st, cli: cli, mgmt: mgmt, bot: id.UserID(st.Info.BotUserID)}
	for _, row := range []struct {
		name string
		run  func(*features, *testing.T, context.Context)
	}{
		{"TextAndSMSFallback", (*features).textAndSMS},
		{"Files", (*features).files},
		{"Replies", (*features).replies},
		{"Reactions", (*features).reactions},
		{"EditsAndDeletes", (*features).editsAndDeletes},
		{"Receipts", (*features).receipts},
		{"Typing", (*features).typing},
		{"Groups", (*features).groups},
		{"Contacts", (*features).contacts},
		{"Backfill", (*features).backfill},
		{"DualSIM", (*features).dualSIM},
		// Last: its stuck message stays pending for good.
		{"PhoneNotResponding", (*features).notResponding},
	} {
		t.Run(row.name, func(t *testing.T) {
			rctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			defer cancel()
			row.run(f, t, rctx)
		})
	}
}

// fromPhone injects an event and returns the Matrix event it became.
func (f *features) fromPhone(t *testing.T, ctx context.Context, req sim.InjectRequest, match func(*event.Event) bool) *event.Event {
	t.Helper()
	from := f.cli.Now()
	if err := f.st.InjectEvent(ctx, req); err != nil {
		t.Fatal(err)
	}
	evt, _, err := f.cli.WaitEvent(ctx, from, match)
	if err != nil {
		t.Fatalf("phone event %s (%s) did not reach Matrix: %v", req.Kind, req.ID, err)
	}
	return evt
}

// text injects a text from number and returns its Matrix event.
func (f *features) text(t *testing.T, ctx context.Context, number, phoneID, body string) *event.Event {
	t.Helper()
	return f.fromPhone(t, ctx, sim.InjectRequest{ID: phoneID, From: number, Text: body}, f.cli.Message("", "", body))
}

func (f *features) send(t *testing.T, ctx context.Context, room id.RoomID, content *event.MessageEventContent) id.EventID {
	t.Helper()
	resp, err := f.cli.SendMessageEvent(ctx, room, event.EventMessage, content)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

func (f *features) sent(t *testing.T, ctx context.Context, what string, match func(sim.Sent) bool) sim.Sent {
	t.Helper()
	s, err := f.st.WaitSent(ctx, match)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return s
}

func content(e *event.Event) *event.MessageEventContent {
	_ = e.Content.ParseRaw(e.Type)
	if m := e.Content.AsMessage(); m != nil {
		return m
	}
	return &event.MessageEventContent{}
}

func (f *features) textAndSMS(t *testing.T, ctx context.Context) {
	n := nonce(t)
	// Phone → Matrix over SMS carries the transport; the switch back to RCS
	// is marked once with a notice.
	evt := f.text(t, ctx, sim.SMSNumber, "sms-"+n, "over sms "+n)
	if tr, _ := evt.Content.Raw["net.rcsgate.transport"].(string); tr != wire.TransportSMS {
		t.Fatalf("SMS message not marked as SMS: transport %q", tr)
	}
	from := f.cli.Now()
	if err := f.st.InjectEvent(ctx, sim.InjectRequest{From: sim.SMSNumber, Text: "rcs again " + n, Transport: wire.TransportRCS}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.cli.WaitEvent(ctx, from, func(e *event.Event) bool {
		return e.RoomID == evt.RoomID && e.Type == event.EventMessage && strings.Contains(content(e).Body, "back on RCS")
	}); err != nil {
		t.Fatalf("no notice when the chat went back to RCS: %v", err)
	}
	// Matrix → phone: text to an SMS-only contact goes as SMS.
	eid := f.send(t, ctx, evt.RoomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "reply " + n})
	s := f.sent(t, ctx, "text to SMS contact", func(s sim.Sent) bool { return s.ID == string(eid) })
	if s.Transport != wire.TransportSMS || s.Text != "reply "+n {
		t.Fatalf("phone sent %+v, want the text over SMS", s)
	}
	// Per-chat preference: `!rcs transport sms` makes an RCS chat go as SMS;
	// `!rcs whois` tells the number as a message, not as room state.
	rcs := f.text(t, ctx, "+12025550149", "pref-"+n, "rcs chat "+n)
	cmd := f.cli.Now()
	f.send(t, ctx, rcs.RoomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "!rcs transport sms"})
	if _, _, err := f.cli.WaitEvent(ctx, cmd, func(e *event.Event) bool {
		return e.RoomID == rcs.RoomID && e.Sender == f.bot && strings.Contains(content(e).Body, "always go as SMS")
	}); err != nil {
		t.Fatalf("transport command not confirmed: %v", err)
	}
	pref := f.send(t, ctx, rcs.RoomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "as sms " + n})
	if s := f.sent(t, ctx, "text after `transport sms`", func(s sim.Sent) bool { return s.ID == string(pref) }); s.Transport != wire.TransportSMS {
		t.Fatalf("chat preferring SMS sent over %q", s.Transport)
	}
	cmd = f.cli.Now()
	f.send(t, ctx, rcs.RoomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "!rcs whois"})
	if _, _, err := f.cli.WaitEvent(ctx, cmd, func(e *event.Event) bool {
		return e.RoomID == rcs.RoomID && e.Sender == f.bot && strings.Contains(content(e).Body, "+1 202-555-0149")
	}); err != nil {
		t.Fatalf("whois did not tell the number: %v", err)
	}
	// A file to an SMS-only chat is refused with a reason in the room.
	fail := f.cli.Now()
	f.send(t, ctx, evt.RoomID, f.fileContent(t, ctx, []byte("x"), "a.txt", "text/plain", event.MsgFile))
	if _, _, err := f.cli.WaitEvent(ctx, fail, func(e *event.Event) bool {
		return e.RoomID == evt.RoomID && e.Sender == f.bot && strings.Contains(strings.ToLower(content(e).Body), "sms")
	}); err != nil {
		t.Fatalf("no clear refusal of a file to an SMS chat: %v", err)
	}
}

func (f *features) fileContent(t *testing.T, ctx context.Context, data []byte, name, mime string, mt event.MessageType) *event.MessageEventContent {
	t.Helper()
	up, err := f.cli.UploadBytesWithName(ctx, data, mime, name)
	if err != nil {
		t.Fatal(err)
	}
	return &event.MessageEventContent{MsgType: mt, Body: name, FileName: name, URL: up.ContentURI.CUString(),
		Info: &event.FileInfo{MimeType: mime, Size: len(data)}}
}

func (f *features) download(t *testing.T, ctx context.Context, c *event.MessageEventContent) []byte {
	t.Helper()
	uri, err := c.URL.Parse()
	if err != nil {
		t.Fatalf("bad media URL %q: %v", c.URL, err)
	}
	rc, err := f.cli.Download(ctx, uri)
	if err != nil {
		t.Fatalf("download %s: %v", c.URL, err)
	}
	defer rc.Body.Close()
	b, err := io.ReadAll(rc.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pattern(n int) []byte {
	b := make([]byte, n)
	_, _ = io.ReadFull(sim.Pattern(), b)
	return b
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func (f *features) files(t *testing.T, ctx context.Context) {
	n := nonce(t)
	// Phone → Matrix: an image with its size, type and dimensions; bytes
	// checked through the media repository.
	img := pattern(300 << 10)
	evt := f.fromPhone(t, ctx, sim.InjectRequest{From: "+12025550143", Kind: wire.KindMedia, Text: "look " + n,
		Media: &wire.Media{Name: "photo-" + n + ".jpg", Mime: "image/jpeg", Width: 640, Height: 480}, Data: img},
		func(e *event.Event) bool {
			return e.Type == event.EventMessage && content(e).FileName == "photo-"+n+".jpg"
		})
	c := content(evt)
	if c.MsgType != event.MsgImage || c.Body != "look "+n || c.Info == nil || c.Info.MimeType != "image/jpeg" ||
		c.Info.Size != len(img) || c.Info.Width != 640 || c.Info.Height != 480 {
		t.Fatalf("image arrived as %+v (info %+v)", c, c.Info)
	}
	if got := f.download(t, ctx, c); !bytes.Equal(got, img) {
		t.Fatalf("image bytes differ: got %d bytes, want %d", len(got), len(img))
	}
	room := evt.RoomID

	// Matrix → phone: a file and a 0-byte file reach the phone intact.
	doc := pattern(70 << 10)
	eid := f.send(t, ctx, room, f.fileContent(t, ctx, doc, "doc-"+n+".pdf", "application/pdf", event.MsgFile))
	s := f.sent(t, ctx, "file to phone", func(s sim.Sent) bool { return s.ID == string(eid) })
	if s.Kind != wire.KindMedia || s.Media == nil || s.Media.Name != "doc-"+n+".pdf" || s.Media.Mime != "application/pdf" ||
		s.Media.Size != int64(len(doc)) || s.Media.SHA256 != sum(doc) {
		t.Fatalf("phone sent %+v (media %+v)", s, s.Media)
	}
	if got, err := f.st.SentFile(ctx, string(eid)); err != nil || !bytes.Equal(got, doc) {
		t.Fatalf("phone got other bytes: %d vs %d, %v", len(got), len(doc), err)
	}
	eid = f.send(t, ctx, room, f.fileContent(t, ctx, []byte{}, "empty.txt", "text/plain", event.MsgFile))
	if s := f.sent(t, ctx, "0-byte file", func(s sim.Sent) bool { return s.ID == string(eid) }); s.Media == nil || s.Media.Size != 0 {
		t.Fatalf("0-byte file sent as %+v", s)
	}

	// Over the limit: refused with a clear message, nothing sent.
	big := f.fileContent(t, ctx, []byte("small really"), "huge.bin", "application/octet-stream", event.MsgFile)
	big.Info.Size = 200 << 20
	from := f.cli.Now()
	eid = f.send(t, ctx, room, big)
	if _, _, err := f.cli.WaitEvent(ctx, from, func(e *event.Event) bool {
		return e.RoomID == room && e.Sender == f.bot && strings.Contains(content(e).Body, "200.0 MiB")
	}); err != nil {
		t.Fatalf("no clear refusal of a file over the limit: %v", err)
	}

	// The echo contact sends a file back: the round trip keeps the bytes.
	portal, ghost, err := f.cli.StartChat(ctx, f.mgmt, harness.EchoNumber)
	if err != nil {
		t.Fatal(err)
	}
	from = f.cli.Now()
	snd := pattern(5 << 10)
	f.send(t, ctx, portal, f.fileContent(t, ctx, snd, "voice-"+n+".ogg", "audio/ogg", event.MsgAudio))
	echo, _, err := f.cli.WaitEvent(ctx, from, func(e *event.Event) bool {
		return e.Sender == ghost && e.Type == event.EventMessage && content(e).FileName == "voice-"+n+".ogg"
	})
	if err != nil {
		t.Fatalf("echo of a file: %v", err)
	}
	if c := content(echo); c.MsgType != event.MsgAudio || !bytes.Equal(f.download(t, ctx, c), snd) {
		t.Fatalf("echoed file differs: %+v", c)
	}
}

func (f *features) replies(t *testing.T, ctx context.Context) {
	n := nonce(t)
	num := "+12025550144"
	orig := f.text(t, ctx, num, "orig-"+n, "question "+n)
	// Phone → Matrix: a reply points at the Matrix event of its target.
	reply := f.fromPhone(t, ctx, sim.InjectRequest{ID: "re-" + n, From: num, Text: "answer " + n, ReplyTo: "orig-" + n},
		f.cli.Message(orig.RoomID, "", "answer "+n))
	if c := content(reply); c.RelatesTo == nil || c.RelatesTo.GetReplyTo() != orig.ID {
		t.Fatalf("reply from the phone not threaded: relates_to %+v", c.RelatesTo)
	}
	// A reply to a message the bridge never saw still arrives, unthreaded.
	lone := f.fromPhone(t, ctx, sim.InjectRequest{From: num, Text: "lone " + n, ReplyTo: "never-seen-" + n},
		f.cli.Message(orig.RoomID, "", "lone "+n))
	if c := content(lone); c.RelatesTo != nil && c.RelatesTo.GetReplyTo() != "" {
		t.Fatalf("reply to an unknown message points somewhere: %+v", c.RelatesTo)
	}
	// Matrix → phone: the phone gets its own id for the target.
	mc := &event.MessageEventContent{MsgType: event.MsgText, Body: "matrix reply " + n}
	mc.SetReply(orig)
	eid := f.send(t, ctx, orig.RoomID, mc)
	if s := f.sent(t, ctx, "reply to phone", func(s sim.Sent) bool { return s.ID == string(eid) }); s.ReplyTo != "orig-"+n {
		t.Fatalf("phone got reply_to %q, want orig-%s", s.ReplyTo, n)
	}
}

func (f *features) reactions(t *testing.T, ctx context.Context) {
	n := nonce(t)
	num := "+12025550145"
	orig := f.text(t, ctx, num, "r-"+n, "react to me "+n)
	// Matrix → phone, and its removal.
	resp, err := f.cli.SendReaction(ctx, orig.RoomID, orig.ID, "👍")
	if err != nil {
		t.Fatal(err)
	}
	if s := f.sent(t, ctx, "reaction to phone", func(s sim.Sent) bool { return s.ID == string(resp.EventID) }); s.Kind != wire.KindReaction || s.Target != "r-"+n || s.Emoji != "👍" {
		t.Fatalf("phone got %+v", s)
	}
	red, err := f.cli.RedactEvent(ctx, orig.RoomID, resp.EventID)
	if err != nil {
		t.Fatal(err)
	}
	if f.st.Opts.Homeserver == "dendrite" {
		// Dendrite 0.13.8 hands the redaction of a reaction neither to the
		// appservice nor to the bot's /sync (a message's redaction it does);
		// the Synapse pass checks this step.
		t.Log("skipping reaction removal Matrix → phone on Dendrite (not delivered to appservices)")
	} else if s := f.sent(t, ctx, "reaction removal", func(s sim.Sent) bool { return s.ID == string(red.EventID) }); s.Kind != wire.KindUnreact || s.Target != "r-"+n || s.Emoji != "👍" {
		t.Fatalf("phone got %+v for the removal", s)
	}
	// Phone → Matrix: a reaction to the user's message, and its removal as a redaction.
	mine := f.send(t, ctx, orig.RoomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "mine " + n})
	f.sent(t, ctx, "message before reaction", func(s sim.Sent) bool { return s.ID == string(mine) })
	re := f.fromPhone(t, ctx, sim.InjectRequest{ID: "rx-" + n, From: num, Kind: wire.KindReaction, Target: string(mine), Emoji: "❤️"},
		func(e *event.Event) bool { return e.Type == event.EventReaction && e.RoomID == orig.RoomID })
	_ = re.Content.ParseRaw(re.Type)
	if rc := re.Content.AsReaction(); rc.RelatesTo.EventID != mine || rc.RelatesTo.Key != "❤️" {
		t.Fatalf("reaction from the phone: %+v", rc.RelatesTo)
	}
	f.fromPhone(t, ctx, sim.InjectRequest{ID: "ru-" + n, From: num, Kind: wire.KindUnreact, Target: string(mine), Emoji: "❤️"},
		func(e *event.Event) bool { return e.Type == event.EventRedaction && e.Redacts == re.ID })
	// A reaction to a deleted message is dropped, and the chat goes on.
	gone := f.text(t, ctx, num, "gone-"+n, "to delete "+n)
	f.fromPhone(t, ctx, sim.InjectRequest{ID: "del-" + n, From: num, Kind: wire.KindDelete, Target: "gone-" + n},
		func(e *event.Event) bool { return e.Type == event.EventRedaction && e.Redacts == gone.ID })
	if err := f.st.InjectEvent(ctx, sim.InjectRequest{ID: "rg-" + n, From: num, Kind: wire.KindReaction, Target: "gone-" + n, Emoji: "😮"}); err != nil {
		t.Fatal(err)
	}
	f.text(t, ctx, num, "after-"+n, "still talking "+n)
}

func (f *features) editsAndDeletes(t *testing.T, ctx context.Context) {
	n := nonce(t)
	num := "+12025550146"
	orig := f.text(t, ctx, num, "e-"+n, "tpyo "+n)
	// Phone → Matrix edit.
	ed := f.fromPhone(t, ctx, sim.InjectRequest{ID: "e2-" + n, From: num, Kind: wire.KindEdit, Target: "e-" + n, Text: "typo " + n},
		func(e *event.Event) bool {
			c := content(e)
			return e.RoomID == orig.RoomID && c.RelatesTo != nil && c.RelatesTo.GetReplaceID() == orig.ID
		})
	if c := content(ed); c.NewContent == nil || c.NewContent.Body != "typo "+n {
		t.Fatalf("edit from the phone: %+v", c)
	}
	// Matrix → phone edit and delete.
	mine := f.send(t, ctx, orig.RoomID, &event.MessageEventContent{MsgType: event.MsgText, Body: "helo " + n})
	f.sent(t, ctx, "message before edit", func(s sim.Sent) bool { return s.ID == string(mine) })
	ec := &event.MessageEventContent{MsgType: event.MsgText, Body: "* hello " + n}
	ec.SetEdit(mine)
	ec.NewContent = &event.MessageEventContent{MsgType: event.MsgText, Body: "hello " + n}
	eid := f.send(t, ctx, orig.RoomID, ec)
	if s := f.sent(t, ctx, "edit to phone", func(s sim.Sent) bool { return s.ID == string(eid) }); s.Kind != wire.KindEdit || s.Target != string(mine) || s.Text != "hello "+n {
		t.Fatalf("phone got %+v for the edit", s)
	}
	red, err := f.cli.RedactEvent(ctx, orig.RoomID, mine)
	if err != nil {
		t.Fatal(err)
	}
	if f.st.Opts.Homeserver == "dendrite" {
		// Dendrite 0.13.8 hands redactions to appservices only sometimes
		// (neither its push nor the bot's /sync carries them reliably); the
		// Synapse pass checks this step.
		t.Log("skipping delete Matrix → phone on Dendrite (redactions not reliably delivered to appservices)")
	} else if s := f.sent(t, ctx, "delete to phone", func(s sim.Sent) bool { return s.ID == string(red.EventID) }); s.Kind != wire.KindDelete || s.Target != string(mine) {
		t.Fatalf("phone got %+v for the delete", s)
	}
	// Phone → Matrix delete (unsend).
	f.fromPhone(t, ctx, sim.InjectRequest{ID: "ed-" + n, From: num, Kind: wire.KindDelete, Target: "e-" + n},
		func(e *event.Event) bool { return e.Type == event.EventRedaction && e.Redacts == orig.ID })
}

func (f *features) receipts(t *testing.T, ctx context.Context) {
	n := nonce(t)
	portal, ghost, err := f.cli.StartChat(ctx, f.mgmt, sim.ReceiptsNumber)
	if err != nil {
		t.Fatal(err)
	}
	from := f.cli.Now()
	eid := f.send(t, ctx, portal, &event.MessageEventContent{MsgType: event.MsgText, Body: "did you read this " + n})
	// Delivered: the sender's status is success; read: the contact's
	// ghost sends a read receipt for the message.
	if _, _, err := f.cli.WaitEvent(ctx, from, statusOf(portal, eid, event.MessageStatusSuccess)); err != nil {
		t.Fatalf("no success status: %v", err)
	}
	if _, _, err := f.cli.WaitEvent(ctx, from, func(e *event.Event) bool {
		if e.Type != event.EphemeralEventReceipt || e.RoomID != portal {
			return false
		}
		_ = e.Content.ParseRaw(e.Type)
		rc := e.Content.AsReceipt()
		_, ok := (*rc)[eid][event.ReceiptTypeRead][ghost]
		return ok
	}); err != nil {
		t.Fatalf("no read receipt from the contact: %v", err)
	}
	// Matrix → phone: the user reading a contact's message marks it read.
	msg := f.text(t, ctx, "+12025550147", "rd-"+n, "read me "+n)
	if err := f.cli.MarkRead(ctx, msg.RoomID, msg.ID); err != nil {
		t.Fatal(err)
	}
	if s := f.sent(t, ctx, "read marker to phone", func(s sim.Sent) bool { return s.Kind == wire.KindRead && s.Target == "rd-"+n }); s.Chat != "+12025550147" {
		t.Fatalf("read marker for chat %q", s.Chat)
	}
}

func (f *features) typing(t *testing.T, ctx context.Context) {
	n := nonce(t)
	num := "+12025550148"
	msg := f.text(t, ctx, num, "ty-"+n, "typing soon "+n)
	from := f.cli.Now()
	if err := f.st.ContactTyping(ctx, num, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.cli.WaitEvent(ctx, from, func(e *event.Event) bool {
		if e.Type != event.EphemeralEventTyping || e.RoomID != msg.RoomID {
			return false
		}
		_ = e.Content.ParseRaw(e.Type)
		return len(e.Content.AsTyping().UserIDs) == 1 && e.Content.AsTyping().UserIDs[0] == msg.Sender
	}); err != nil {
		t.Fatalf("contact typing not shown: %v", err)
	}
	if _, err := f.cli.UserTyping(ctx, msg.RoomID, true, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t2 := time.NewTicker(50 * time.Millisecond)
	defer t2.Stop()
	for {
		active, known, err := f.st.PhoneTyping(ctx, num)
		if err == nil && known && active {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the phone never learnt the Matrix user types (last: known=%v active=%v err=%v)", known, active, err)
		case <-t2.C:
		}
	}
}

func (f *features) groups(t *testing.T, ctx context.Context) {
	n := nonce(t)
	chat := wire.GroupChatPrefix + "grp" + n
	grp := &wire.Group{Name: "Climbing " + n, Members: []wire.Member{{Number: "+12025550150", Name: "Ann"}, {Number: "+12025550151"}}}
	create := f.fromPhone(t, ctx, sim.InjectRequest{ID: "g1-" + n, Chat: chat, From: "+12025550150", Kind: wire.KindGroup, Group: grp},
		func(e *event.Event) bool {
			return e.Type == event.StateRoomName && e.Content.AsRoomName().Name == "Climbing "+n
		})
	room := create.RoomID
	hello := f.fromPhone(t, ctx, sim.InjectRequest{ID: "g2-" + n, Chat: chat, From: "+12025550151", Text: "hi all " + n},
		f.cli.Message(room, "", "hi all "+n))
	// The member with no name shows as a masked number: full numbers stay
	// out of room state unless privacy.show_numbers is on.
	f.waitMember(t, ctx, room, hello.Sender, "+1…51")
	f.noNumbersInState(t, room, "+12025550151", "+1 202-555-0151", "tel:")
	// Matrix → group goes to the group chat.
	eid := f.send(t, ctx, room, &event.MessageEventContent{MsgType: event.MsgText, Body: "to the group " + n})
	if s := f.sent(t, ctx, "group message", func(s sim.Sent) bool { return s.ID == string(eid) }); s.Chat != chat {
		t.Fatalf("group message went to %q", s.Chat)
	}
	// Rename and a member leaving.
	grp2 := &wire.Group{Name: "Bouldering " + n, Members: []wire.Member{{Number: "+12025550150", Name: "Ann"}}}
	f.fromPhone(t, ctx, sim.InjectRequest{ID: "g3-" + n, Chat: chat, From: "+12025550150", Kind: wire.KindGroup, Group: grp2},
		func(e *event.Event) bool {
			return e.RoomID == room && e.Type == event.StateRoomName && e.Content.AsRoomName().Name == "Bouldering "+n
		})
	from := f.cli.Now()
	_ = from
	f.waitMembership(t, ctx, room, hello.Sender, event.MembershipLeave)
}

// noNumbersInState fails if any state event of room the client saw carries
// one of the given strings.
func (f *features) noNumbersInState(t *testing.T, room id.RoomID, needles ...string) {
	t.Helper()
	for _, e := range f.cli.Events() {
		if e.RoomID != room || e.StateKey == nil {
			continue
		}
		raw, _ := json.Marshal(e.Content.Raw)
		for _, n := range needles {
			if bytes.Contains(raw, []byte(n)) {
				t.Fatalf("room state %s carries %q: %s", e.Type.Type, n, raw)
			}
		}
	}
}

func (f *features) waitMember(t *testing.T, ctx context.Context, room id.RoomID, user id.UserID, name string) {
	t.Helper()
	if _, _, err := f.cli.WaitEvent(ctx, 0, func(e *event.Event) bool {
		return e.RoomID == room && e.Type == event.StateMember && e.GetStateKey() == string(user) &&
			e.Content.AsMember().Displayname == name
	}); err != nil {
		t.Fatalf("member %s never shown as %q: %v", user, name, err)
	}
}

func (f *features) waitMembership(t *testing.T, ctx context.Context, room id.RoomID, user id.UserID, ms event.Membership) {
	t.Helper()
	if _, _, err := f.cli.WaitEvent(ctx, 0, func(e *event.Event) bool {
		return e.RoomID == room && e.Type == event.StateMember && e.GetStateKey() == string(user) && e.Content.AsMember().Membership == ms
	}); err != nil {
		t.Fatalf("member %s never %s: %v", user, ms, err)
	}
}

func (f *features) contacts(t *testing.T, ctx context.Context) {
	n := nonce(t)
	num := "+12025550152"
	msg := f.text(t, ctx, num, "c-"+n, "who am i "+n)
	if err := f.st.InjectEvent(ctx, sim.InjectRequest{ID: "card-" + n, From: num, Kind: wire.KindContact,
		Contact: &wire.Contact{Name: "Zoe " + n}}); err != nil {
		t.Fatal(err)
	}
	f.waitMember(t, ctx, msg.RoomID, msg.Sender, "Zoe "+n)
}

func (f *features) backfill(t *testing.T, ctx context.Context) {
	n := nonce(t)
	num := "+12025550153"
	old := time.Now().Add(-48 * time.Hour)
	tooOld := time.Now().Add(-30 * 24 * time.Hour)
	if err := f.st.InjectEvent(ctx, sim.InjectRequest{ID: "bf0-" + n, From: num, Text: "ancient " + n, Backfill: true, TSMS: tooOld.UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	evt := f.fromPhone(t, ctx, sim.InjectRequest{ID: "bf1-" + n, From: num, Text: "history " + n, Backfill: true, TSMS: old.UnixMilli()},
		f.cli.Message("", "", "history "+n))
	if d := time.Duration(evt.Timestamp-old.UnixMilli()) * time.Millisecond; d < -time.Second || d > time.Second {
		t.Logf("note: homeserver kept its own timestamp for backfilled history (off by %s)", d)
	}
	f.text(t, ctx, num, "bf2-"+n, "now "+n)
	for _, m := range f.cli.Messages(evt.RoomID, evt.Sender) {
		if m.Body == "ancient "+n {
			t.Fatal("history older than backfill_max_age was bridged")
		}
	}
}

func (f *features) dualSIM(t *testing.T, ctx context.Context) {
	n := nonce(t)
	num := "+12025550154"
	// The same contact writing to each SIM lands in two rooms, and each
	// room answers on its own SIM.
	one := f.fromPhone(t, ctx, sim.InjectRequest{From: num, Text: "to sim 1 " + n, SIM: 1}, f.cli.Message("", "", "to sim 1 "+n))
	two := f.fromPhone(t, ctx, sim.InjectRequest{From: num, Text: "to sim 2 " + n, SIM: 2}, f.cli.Message("", "", "to sim 2 "+n))
	if one.RoomID == two.RoomID {
		t.Fatal("messages to different SIMs share a room")
	}
	for room, want := range map[id.RoomID]int{one.RoomID: 1, two.RoomID: 2} {
		eid := f.send(t, ctx, room, &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("answer on %d %s", want, n)})
		if s := f.sent(t, ctx, "answer", func(s sim.Sent) bool { return s.ID == string(eid) }); s.SIM != want {
			t.Fatalf("answer from the SIM %d room went out on SIM %d", want, s.SIM)
		}
	}
}

func (f *features) notResponding(t *testing.T, ctx context.Context) {
	n := nonce(t)
	first := f.text(t, ctx, sim.StuckNumber, "stuck-"+n, "can you hear me "+n)
	portal := first.RoomID
	from := f.cli.Now()
	eid := f.send(t, ctx, portal, &event.MessageEventContent{MsgType: event.MsgText, Body: "into the void " + n})
	// The sender learns the connected phone has not sent it; the bridge
	// reports the phone as not responding.
	if _, _, err := f.cli.WaitEvent(ctx, from, func(e *event.Event) bool {
		if !statusOf(portal, eid, event.MessageStatusPending)(e) {
			return false
		}
		msg, _ := e.Content.Raw["message"].(string)
		return strings.Contains(msg, "not confirmed")
	}); err != nil {
		t.Fatalf("no 'not confirmed' status for a message the phone keeps: %v", err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !bytes.Contains(f.st.GatewayLog(), []byte("Phone not responding")) {
		select {
		case <-ctx.Done():
			t.Fatal("the bridge never reported the phone as not responding")
		case <-tick.C:
		}
	}
}
