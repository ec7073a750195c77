package connector

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// A direct chat with the bridge bot is where people talk to it, and any of
// them takes bare commands (bridgev2 takes them only in the user's first,
// its "management room"; elsewhere they need the !rcs prefix). Clients
// also open a DM with its first message, sent before the bot has joined —
// some homeservers (tuwunel) never pass such a message to the bridge — so
// when the bot joins a room it was invited to, it reads what its inviter
// said just before and answers the commands there.

const (
	// earlyWindow: after an invite of the bot, messages pushed in that
	// room are claimed, so reading the history does not handle them twice.
	earlyWindow = 2 * time.Minute
	// earlyMaxAge and earlyMaxCommands bound what is answered from before
	// the bot's join: only recent messages, only the last few.
	earlyMaxAge      = 10 * time.Minute
	earlyMaxCommands = 3
	earlyHistory     = 20 // events read back
	maxEarlyRooms    = 64
	maxClaimsPerRoom = 64
	// keyWait: how long to wait for the room key of an encrypted early
	// message (the client shared it with the bot's device when it sent).
	keyWait = 15 * time.Second
)

// earlyRooms tracks rooms the bot was just invited to, and the message
// events already handled there by either path; and when people were last
// told something once per interval.
type earlyRooms struct {
	mu    sync.Mutex
	rooms map[id.RoomID]*earlyRoom
	told  map[string]time.Time
}

// once reports whether who in room has not been told within every; it
// remembers a bounded number of them.
func (e *earlyRooms) once(room id.RoomID, who id.UserID, every time.Duration) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	key := string(room) + "\x00" + string(who)
	now := time.Now()
	if t, ok := e.told[key]; ok && now.Sub(t) < every {
		return false
	}
	if e.told == nil || len(e.told) >= 1024 {
		e.told = map[string]time.Time{}
	}
	e.told[key] = now
	return true
}

type earlyRoom struct {
	until  time.Time
	claims map[id.EventID]struct{}
}

// open starts the window for room (bounded: the oldest window gives way).
func (e *earlyRooms) open(room id.RoomID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rooms == nil {
		e.rooms = map[id.RoomID]*earlyRoom{}
	}
	now := time.Now()
	for r, w := range e.rooms {
		if now.After(w.until) {
			delete(e.rooms, r)
		}
	}
	if len(e.rooms) >= maxEarlyRooms {
		var oldest id.RoomID
		for r, w := range e.rooms {
			if oldest == "" || w.until.Before(e.rooms[oldest].until) {
				oldest = r
			}
		}
		delete(e.rooms, oldest)
	}
	if e.rooms[room] == nil {
		e.rooms[room] = &earlyRoom{until: now.Add(earlyWindow), claims: map[id.EventID]struct{}{}}
	}
}

// claim reports whether evt in room is handled by this caller: the first
// to claim it. Outside a window there is nothing to race with: true.
func (e *earlyRooms) claim(room id.RoomID, evt id.EventID) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := e.rooms[room]
	if w == nil || time.Now().After(w.until) {
		return true
	}
	if _, done := w.claims[evt]; done {
		return false
	}
	if len(w.claims) < maxClaimsPerRoom {
		w.claims[evt] = struct{}{}
	}
	return true
}

// ClaimPushed is for the appservice transaction handler: false means the
// event was already handled (read from the room's history) and must not be
// dispatched again.
func (c *Connector) ClaimPushed(_ context.Context, evt *event.Event) bool {
	if evt.Type.Type != event.EventMessage.Type && evt.Type.Type != event.EventEncrypted.Type {
		return true
	}
	return c.early.claim(evt.RoomID, evt.ID)
}

// hookDMs installs the handlers: the first (prepended) sees every message
// before bridgev2 does; the member handler runs after bridgev2's, which
// joins the bot on an invite.
func (c *Connector) hookDMs() {
	if c.status == nil || c.status.EventProcessor == nil {
		return
	}
	c.status.EventProcessor.PrependHandler(event.EventMessage, c.bareCommandInDM)
	c.status.EventProcessor.PrependHandler(event.EventMessage, c.noPermissionNotice)
	c.status.EventProcessor.PrependHandler(event.EventEncrypted, c.noPermissionNotice)
	c.status.EventProcessor.PrependHandler(event.StateMember, func(ctx context.Context, evt *event.Event) {
		if c.isBotInvite(ctx, evt) {
			c.early.open(evt.RoomID)
		}
		c.inviteNotice(ctx, evt)
	})
	c.status.EventProcessor.On(event.StateMember, func(ctx context.Context, evt *event.Event) {
		if c.isBotInvite(ctx, evt) {
			go c.answerEarlyCommands(context.WithoutCancel(ctx), evt.RoomID, evt.Sender, evt.Timestamp)
		}
	})
}

// isBotInvite: evt invites the bridge bot, from someone allowed commands.
func (c *Connector) isBotInvite(ctx context.Context, evt *event.Event) bool {
	if evt.GetStateKey() != c.br.Bot.GetMXID().String() || evt.Content.AsMember().Membership != event.MembershipInvite {
		return false
	}
	return c.br.Config.Permissions.Get(evt.Sender).Commands
}

// inviteNotice: when the owner of a phone chat invites another Matrix user
// into it, say what that person can do (bridgev2 only sends a failure status
// for an invite it cannot bridge).
func (c *Connector) inviteNotice(ctx context.Context, evt *event.Event) {
	target := id.UserID(evt.GetStateKey())
	bot := c.br.Bot.GetMXID()
	if evt.Content.AsMember().Membership != event.MembershipInvite || target == evt.Sender || target == bot ||
		evt.Sender == bot || c.br.IsGhostMXID(target) || c.br.IsGhostMXID(evt.Sender) {
		return
	}
	if portal, err := c.br.GetPortalByMXID(ctx, evt.RoomID); err != nil || portal == nil {
		return
	}
	c.notice(ctx, evt.RoomID, fmt.Sprintf("%s can read along in this chat, but only you can write to the contact "+
		"(from your phone): what they write here is not sent.", target))
}

// noPermissionNotice tells someone who may not use the bridge why nothing
// happens (mautrix drops their messages with only a status event), at most
// once an hour per room.
func (c *Connector) noPermissionNotice(ctx context.Context, evt *event.Event) {
	if evt.Sender == c.br.Bot.GetMXID() || c.br.IsGhostMXID(evt.Sender) || c.br.Config.Permissions.Get(evt.Sender).SendEvents {
		return
	}
	if !c.early.once(evt.RoomID, evt.Sender, time.Hour) {
		return
	}
	c.notice(ctx, evt.RoomID, fmt.Sprintf("%s, you are not allowed to use this bridge, so your messages are not sent anywhere. "+
		"Ask the bridge's admin to give you access (permissions in rcsgate's config).", evt.Sender))
}

// bareCommandInDM makes a message without the command prefix a command when
// it is in a direct chat with the bot other than the management room
// (bridgev2 handles that one itself): bridgev2 then answers it as one.
func (c *Connector) bareCommandInDM(ctx context.Context, evt *event.Event) {
	msg, ok := evt.Content.Parsed.(*event.MessageEventContent)
	if !ok || evt.Sender == c.br.Bot.GetMXID() || c.br.IsGhostMXID(evt.Sender) || strings.HasPrefix(msg.Body, c.br.Config.CommandPrefix) {
		return
	}
	if msg.MsgType != event.MsgText && msg.MsgType != "" {
		return
	}
	if _, isDM := c.botDM(ctx, evt.RoomID, evt.Sender); isDM {
		msg.Body = c.br.Config.CommandPrefix + " " + msg.Body
	}
}

// botDM reports whether room is a direct chat between user and the bot
// (only those two joined or invited, not a portal) other than the user's
// management room, and returns the user.
func (c *Connector) botDM(ctx context.Context, room id.RoomID, userID id.UserID) (*bridgev2.User, bool) {
	if !c.br.Config.Permissions.Get(userID).Commands {
		return nil, false
	}
	user, err := c.br.GetUserByMXID(ctx, userID)
	if err != nil || user == nil || user.ManagementRoom == room {
		return user, false
	}
	if portal, err := c.br.GetPortalByMXID(ctx, room); err != nil || portal != nil {
		return user, false
	}
	members, err := c.status.GetMembers(ctx, room)
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("room_id", room).Msg("Could not read the members of a room with the bot")
		return user, false
	}
	n := 0
	for uid, m := range members {
		if m.Membership != event.MembershipJoin && m.Membership != event.MembershipInvite {
			continue
		}
		if uid != userID && uid != c.br.Bot.GetMXID() {
			return user, false
		}
		n++
	}
	return user, n == 2
}

// answerEarlyCommands reads what the inviter wrote in room since inviting the
// bot (invitedAt, ms) and answers the commands among it (the last few,
// recent ones). What was said before the invite was not meant for the bot
// (a bot invited back into an old room must not replay old commands).
func (c *Connector) answerEarlyCommands(ctx context.Context, room id.RoomID, inviter id.UserID, invitedAt int64) {
	log := c.br.Log.With().Str("action", "answer early commands").Stringer("room_id", room).Logger()
	ctx = log.WithContext(ctx)
	ctx, cancel := context.WithTimeout(ctx, keyWait+30*time.Second)
	defer cancel()
	user, err := c.br.GetUserByMXID(ctx, inviter)
	if err != nil || user == nil {
		return
	}
	filter := &mautrix.FilterPart{Types: []event.Type{event.EventMessage, event.EventEncrypted}, Senders: []id.UserID{inviter}}
	resp, err := c.status.Bot.Messages(ctx, room, "", "", mautrix.DirectionBackward, filter, earlyHistory)
	if err != nil {
		log.Warn().Err(err).Msg("Reading what was said before the bot joined failed")
		return
	}
	oldest := max(time.Now().Add(-earlyMaxAge).UnixMilli(), invitedAt)
	var evts []*event.Event // oldest first
	for _, evt := range resp.Chunk {
		if evt.Sender != inviter || evt.Timestamp < oldest {
			continue
		}
		evt.RoomID = room
		evts = append([]*event.Event{evt}, evts...)
		if len(evts) == earlyMaxCommands {
			break
		}
	}
	for _, evt := range evts {
		if !c.early.claim(room, evt.ID) {
			continue // it came by transaction and is handled there
		}
		if evt.Type == event.EventEncrypted {
			dec := c.decryptEarly(ctx, evt)
			if dec == nil {
				continue
			}
			evt = dec
		}
		if err := evt.Content.ParseRaw(evt.Type); err != nil && evt.Content.Parsed == nil {
			continue
		}
		msg, ok := evt.Content.Parsed.(*event.MessageEventContent)
		if !ok || (msg.MsgType != event.MsgText && msg.MsgType != "") {
			continue
		}
		msg.RemoveReplyFallback()
		body := strings.TrimSpace(msg.Body)
		prefixed := strings.HasPrefix(body, c.br.Config.CommandPrefix)
		_, dm := c.botDM(ctx, room, inviter)
		if !prefixed && !dm && user.ManagementRoom != room {
			continue // a room with others: only !rcs commands are ours
		}
		body = strings.TrimSpace(strings.TrimPrefix(body, c.br.Config.CommandPrefix))
		log.Info().Stringer("event_id", evt.ID).Msg("Answering a command sent before the bot joined")
		c.br.Commands.Handle(ctx, room, evt.ID, user, body, msg.RelatesTo.GetReplyTo())
	}
}

// decryptEarly decrypts an early message with the bot's device, waiting a
// little for its key; nil if it cannot (then the bot says so in the room,
// since the client may have refused the bot its keys).
func (c *Connector) decryptEarly(ctx context.Context, evt *event.Event) *event.Event {
	cr := c.status.Crypto
	if cr == nil {
		return nil
	}
	if err := evt.Content.ParseRaw(evt.Type); err != nil {
		return nil
	}
	content := evt.Content.AsEncrypted()
	dec, err := cr.Decrypt(ctx, evt)
	if err != nil && cr.WaitForSession(ctx, evt.RoomID, content.SenderKey, content.SessionID, keyWait) {
		dec, err = cr.Decrypt(ctx, evt)
	}
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Stringer("event_id", evt.ID).Msg("Could not decrypt a command sent before the bot joined")
		c.notice(ctx, evt.RoomID, "I could not read what you wrote before I joined: your client did not share its keys with me. "+
			"Please send it again. If your client is set to encrypt only for cross-signed devices (\"exclude insecure devices\"), "+
			"it may be excluding me.")
		return nil
	}
	return dec
}

// notice sends the bot's notice to room, in the clear: it is for the case
// where the user's client may not read what the bot encrypts.
func (c *Connector) notice(ctx context.Context, room id.RoomID, text string) {
	content := &event.MessageEventContent{MsgType: event.MsgNotice, Body: text}
	if _, err := c.status.Bot.SendMessageEvent(ctx, room, event.EventMessage, content); err != nil {
		zerolog.Ctx(ctx).Err(err).Stringer("room_id", room).Msg("Sending a notice failed")
	}
}
