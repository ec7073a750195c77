package connector

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/database"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/bridgev2/status"
	"maunium.net/go/mautrix/event"

	"github.com/rcsgate/rcsgate/internal/ctxutil"
	"github.com/rcsgate/rcsgate/internal/phone"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// deviceClient is one paired device as a bridgev2 login.
type deviceClient struct {
	c        *Connector
	login    *bridgev2.UserLogin
	deviceID string
	sim      int // ≥ 2 for the login of a dual-SIM phone's other SIM; 0 for the device's own
	meReady  atomic.Bool
}

var (
	_ bridgev2.NetworkAPI                    = (*deviceClient)(nil)
	_ bridgev2.IdentifierResolvingNetworkAPI = (*deviceClient)(nil)
)

// ensureMe makes sure the owner's ghost exists: reactions and messages sent
// from the phone itself name it as their sender, and bridgev2's tables refer
// to it. Not from LoadUserLogin, which runs under the bridge's cache lock.
func (d *deviceClient) ensureMe(ctx context.Context) error {
	if d.meReady.Load() {
		return nil
	}
	if _, err := d.c.br.GetGhostByID(ctx, d.meID()); err != nil {
		return fmt.Errorf("owner ghost: %w", err)
	}
	d.meReady.Store(true)
	return nil
}

// meID stands for the device owner's own messages.
func (d *deviceClient) meID() networkid.UserID { return networkid.UserID("me." + d.deviceID[:7]) }

func (d *deviceClient) Connect(ctx context.Context) { d.sendState(d.c.ch.Connected(d.deviceID)) }

func (d *deviceClient) sendState(connected bool) {
	if connected {
		d.login.BridgeState.Send(status.BridgeState{StateEvent: status.StateConnected})
		return
	}
	d.login.BridgeState.Send(status.BridgeState{
		StateEvent: status.StateTransientDisconnect,
		Error:      "rcs-phone-offline",
		Message:    "The phone is not connected; messages wait for it",
	})
}

func (d *deviceClient) Disconnect() {}

func (d *deviceClient) IsLoggedIn() bool { return true }

// LogoutRemote unpairs: the device is revoked and its live connection closed.
func (d *deviceClient) LogoutRemote(ctx context.Context) {
	if d.sim >= 2 {
		return // logging out one SIM leaves the device paired
	}
	if err := d.c.store.RevokeDevice(ctx, d.deviceID); err != nil {
		d.login.Log.Err(err).Msg("Revoking device on logout failed")
	}
	d.c.ch.Kick(d.deviceID, "logged out")
}

func (d *deviceClient) IsThisUser(ctx context.Context, userID networkid.UserID) bool {
	return userID == d.meID()
}

func (d *deviceClient) GetChatInfo(ctx context.Context, portal *bridgev2.Portal) (*bridgev2.ChatInfo, error) {
	chat, st, err := d.chatOf(ctx, portal)
	if err != nil {
		return nil, fmt.Errorf("chat info: %w", err)
	}
	me := bridgev2.ChatMember{EventSender: bridgev2.EventSender{IsFromMe: true, SenderLogin: d.login.ID}, Membership: event.MembershipJoin}
	if wire.IsGroupChat(chat) {
		var g wire.Group
		if st.GroupJSON != "" {
			if err := json.Unmarshal([]byte(st.GroupJSON), &g); err != nil {
				return nil, fmt.Errorf("chat info: stored group: %w", err)
			}
		}
		return d.c.groupInfo(ctx, g, me)
	}
	ghost := networkid.UserID(portal.ID)
	roomType := database.RoomTypeDM
	// The invite says it is a direct chat, so clients list it with DMs.
	me.MemberEventExtra = map[string]any{"is_direct": true}
	info, err := d.c.userInfo(ctx, string(ghost), chat)
	if err != nil {
		return nil, err
	}
	return &bridgev2.ChatInfo{
		Type: &roomType,
		Members: &bridgev2.ChatMemberList{
			IsFull:      true,
			OtherUserID: ghost,
			MemberMap: bridgev2.ChatMemberMap{}.
				Set(bridgev2.ChatMember{EventSender: bridgev2.EventSender{Sender: ghost}, UserInfo: info, Membership: event.MembershipJoin}).
				Set(me),
		},
	}, nil
}

// groupInfo renders a group: its name and topic and every member's ghost.
func (c *Connector) groupInfo(ctx context.Context, g wire.Group, me bridgev2.ChatMember) (*bridgev2.ChatInfo, error) {
	roomType := database.RoomTypeDefault
	members := bridgev2.ChatMemberMap{}.Set(me)
	var names []string
	for _, mem := range g.Members {
		number, err := c.party(mem.Number)
		if err != nil || wire.IsGroupChat(number) {
			continue // a member we can't name is left out, not the whole group
		}
		uid, err := c.contact(ctx, number)
		if err != nil {
			return nil, err
		}
		if mem.Name != "" && c.cfg.ContactSync && me.SenderLogin != "" {
			ul := c.br.GetCachedUserLoginByID(me.SenderLogin)
			ok, err := false, error(nil)
			if ul != nil {
				ok, err = c.nameableBy(ctx, uid, ul.UserMXID)
			}
			if err != nil {
				return nil, err
			}
			if ok {
				if err := c.store.SetContactName(ctx, string(uid), mem.Name); err != nil {
					return nil, err
				}
			}
		}
		info, err := c.userInfo(ctx, string(uid), number)
		if err != nil {
			return nil, err
		}
		names = append(names, *info.Name)
		members.Set(bridgev2.ChatMember{EventSender: bridgev2.EventSender{Sender: uid}, UserInfo: info, Membership: event.MembershipJoin})
	}
	ci := &bridgev2.ChatInfo{Type: &roomType, Members: &bridgev2.ChatMemberList{IsFull: true, MemberMap: members}}
	name := g.Name
	if name == "" {
		name = groupName(names)
	}
	ci.Name = &name
	if g.Topic != "" {
		ci.Topic = &g.Topic
	}
	return ci, nil
}

// groupName names a group that has no name by its members, so groups can
// be told apart in a room list.
func groupName(members []string) string {
	switch n := len(members); {
	case n == 0:
		return "Group chat"
	case n <= 3:
		return "Group with " + strings.Join(members, ", ")
	default:
		return fmt.Sprintf("Group with %s and %d more", strings.Join(members[:2], ", "), n-2)
	}
}

// userInfo is a ghost's profile: the phone's name for the contact when
// contact sync is on, else the number — masked unless numbers are shown,
// with a stable "(2)", "(3)" for contacts whose masked numbers look alike.
func (c *Connector) userInfo(ctx context.Context, opaqueID, number string) (*bridgev2.UserInfo, error) {
	name := redact.Number(number)
	var ids []string
	switch {
	case wire.IsConversationChat(number):
		// No number to show: the phone's name for the contact (contact sync)
		// or this placeholder, told apart by the key's tail.
		name = "Phone contact " + number[len(number)-min(4, len(number)-len(wire.ConversationPrefix)):]
	case c.cfg.ShowNumbers:
		name, ids = phone.Format(number), []string{"tel:" + number}
	default:
		// Masked numbers that look alike get a stable (2), (3).
		if seq, err := c.store.ContactSeq(ctx, opaqueID); err != nil {
			return nil, err
		} else if seq > 1 {
			name = fmt.Sprintf("%s (%d)", name, seq)
		}
	}
	if c.cfg.ContactSync {
		n, err := c.store.ContactName(ctx, opaqueID)
		if err != nil {
			return nil, err
		}
		if n != "" {
			// A name from one person's phone is not shown to another who
			// chats with the same number: they see the masked number.
			owners, err := c.ghostOwners(ctx, networkid.UserID(opaqueID))
			if err != nil {
				return nil, err
			}
			if len(owners) <= 1 {
				name = wire.StripControl(n, wire.MaxNameLen)
			}
		}
	}
	return &bridgev2.UserInfo{Name: &name, Identifiers: ids}, nil
}

func (d *deviceClient) GetUserInfo(ctx context.Context, ghost *bridgev2.Ghost) (*bridgev2.UserInfo, error) {
	if ghost.ID == d.meID() {
		name := "Me (from my phone)"
		return &bridgev2.UserInfo{Name: &name}, nil
	}
	number, err := d.c.store.Contact(ctx, string(ghost.ID))
	if err != nil {
		return nil, fmt.Errorf("user info: %w", err)
	}
	return d.c.userInfo(ctx, string(ghost.ID), number)
}

// GetCapabilities tells Matrix clients what the chat carries: what the
// phone's backend said for the transport the chat uses.
func (d *deviceClient) GetCapabilities(ctx context.Context, portal *bridgev2.Portal) *event.RoomFeatures {
	rf := &event.RoomFeatures{ID: "net.rcsgate.capabilities.v2", MaxTextLength: wire.MaxTextLen}
	st, _ := d.c.store.GetChat(ctx, chatKey(portal.PortalKey))
	caps, known := d.caps(st.Carrier())
	if !known { // offline: assume RCS, the phone refuses what it can't carry
		caps = wire.Caps{MaxFileSize: wire.MaxMediaSize, Replies: true, Reactions: true, Edits: true, Deletes: true, ReadReceipts: true, Typing: true}
	}
	level := func(ok bool) event.CapabilitySupportLevel {
		if ok {
			return event.CapLevelFullySupported
		}
		return event.CapLevelRejected
	}
	rf.Reply, rf.Edit, rf.Delete, rf.Reaction = level(caps.Replies), level(caps.Edits), level(caps.Deletes), level(caps.Reactions)
	if caps.Reactions {
		rf.ReactionCount = 1
	}
	rf.ReadReceipts, rf.TypingNotifications = caps.ReadReceipts, caps.Typing
	if caps.MaxFileSize > 0 {
		ff := &event.FileFeatures{MimeTypes: map[string]event.CapabilitySupportLevel{"*/*": event.CapLevelFullySupported},
			Caption: event.CapLevelFullySupported, MaxSize: caps.MaxFileSize}
		rf.File = event.FileFeatureMap{event.MsgImage: ff, event.MsgVideo: ff, event.MsgAudio: ff, event.MsgFile: ff, event.CapMsgVoice: ff}
	}
	return rf
}

// ResolveIdentifier backs `start-chat +12025550100`.
func (d *deviceClient) ResolveIdentifier(ctx context.Context, identifier string, createChat bool) (*bridgev2.ResolveIdentifierResponse, error) {
	number, err := phone.NormalizeIn(identifier, d.c.cfg.DefaultRegion)
	if err != nil {
		return nil, bridgev2.WrapRespErrManual(err, "M_INVALID_PARAM", 400)
	}
	uid, err := d.c.contact(ctx, number)
	if err != nil {
		return nil, err
	}
	ghost, err := d.c.br.GetGhostByID(ctx, uid)
	if err != nil {
		return nil, fmt.Errorf("get ghost: %w", err)
	}
	info, err := d.c.userInfo(ctx, string(uid), number)
	if err != nil {
		return nil, err
	}
	resp := &bridgev2.ResolveIdentifierResponse{Ghost: ghost, UserID: uid, UserInfo: info}
	if createChat {
		resp.Chat = &bridgev2.CreateChatResponse{PortalKey: networkid.PortalKey{ID: networkid.PortalID(uid), Receiver: d.login.ID}}
	}
	return resp, nil
}

// crashSettle is how long after a restart a message whose Matrix send was
// cut short waits before it is sent again. The resend carries the same
// transaction id (idempotentIntent), which the homeserver deduplicates — but
// only once it has finished the first request, which may still be running
// when a crashed bridge is back within milliseconds.
const crashSettle = 5 * time.Second

// settleCrashedSend waits out crashSettle after start for a message whose
// send a previous process began.
func (c *Connector) settleCrashedSend(ctx context.Context, msgID string) error {
	wait := time.Until(c.started.Add(crashSettle))
	if wait <= 0 {
		return nil
	}
	zerolog.Ctx(ctx).Info().Str("msg_id", msgID).Dur("wait", wait).
		Msg("Message was being sent when the bridge stopped; letting the homeserver finish first")
	if !ctxutil.Sleep(ctx, wait) {
		return ctx.Err()
	}
	return nil
}

// HandleStatus turns the phone's delivery states into Matrix send statuses,
// for messages sent to that phone only.
func (c *Connector) HandleStatus(ctx context.Context, devID string, st wire.Status) {
	log := c.br.Log.With().Str("device", devID[:7]).Str("msg_id", st.ID).Logger()
	if _, ok := c.sentTo(ctx, log, devID, st.ID, "status"); !ok {
		return
	}
	ev := log.Debug()
	if st.State == wire.StateFailed {
		ev = log.Warn().Str("reason", st.Reason)
	}
	ev.Str("state", st.State).Msg("Delivery status from phone")
	c.report(log.WithContext(ctx), st.ID, st.State, phoneSaid(st.Reason))
}

// DeviceState turns channel connects and disconnects into bridge states.
func (c *Connector) DeviceState(ctx context.Context, devID string, connected bool) {
	if connected {
		if err := c.ensureSIMLogins(ctx, devID); err != nil {
			c.br.Log.Err(err).Str("device", devID[:7]).Msg("Creating logins for the phone's SIMs failed")
		}
	}
	for _, ul := range c.deviceLogins(devID) {
		if dc, ok := ul.Client.(*deviceClient); ok {
			dc.sendState(connected)
		}
	}
}
