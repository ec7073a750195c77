package connector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/commands"
	"maunium.net/go/mautrix/bridgev2/networkid"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/ratelog"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Several people share one bridge, and every paired phone is a peer that
// may be hostile: a device acts only on messages that were sent to it, a
// portal's commands answer only its owner (or an admin), and what a phone
// says is shown as its words, never as the bridge's.

// refusals rate-limits the log lines for refused device frames, per device:
// a hostile phone can send them as fast as it likes.
var refusals = ratelog.New(time.Minute, 5, 1024)

// sentTo returns the record of a Matrix message sent to device devID. ok is
// false, and the frame must be dropped, when the message was sent to
// another device (refused and logged) or is not one we track (already
// forgotten, or never ours).
func (c *Connector) sentTo(ctx context.Context, log zerolog.Logger, devID, msgID, what string) (store.SentMsg, bool) {
	sent, err := c.store.GetSent(ctx, msgID)
	switch {
	case errors.Is(err, store.ErrNoSent):
		log.Debug().Str("frame", what).Msg("Phone reported on a message the bridge no longer tracks; ignored")
		return sent, false
	case err != nil:
		log.Err(err).Str("frame", what).Msg("Looking up the message a phone reported on failed; ignored")
		return sent, false
	case sent.DeviceID != devID:
		if ok, suppressed := refusals.Allow(devID); ok {
			log.Warn().Str("frame", what).Str("reason", "not_sent_to_device").Int("suppressed", suppressed).
				Msg("Refused a phone's frame about a message that was not sent to that phone")
		}
		return sent, false
	}
	return sent, true
}

// maxShownReason bounds a phone's failure reason in what Matrix users see.
const maxShownReason = 200

// phoneSaid quotes a phone's failure reason so it reads as the phone's
// words: control characters and bidi overrides stripped, cut to a line.
// "" stays "" (the caller then says something of its own).
func phoneSaid(reason string) string {
	r := wire.StripControl(reason, maxShownReason)
	if r == "" {
		return ""
	}
	return "the phone said “" + r + "”"
}

// portalOwner reports whether the command's sender owns the portal (its
// login belongs to them) or is a bridge admin. Portals are per login, and
// other people can be invited into one: they may talk there, but the
// phone's settings and the contact's number are the owner's.
func portalOwner(ce *commands.Event) bool {
	if ce.User.Permissions.Admin {
		return true
	}
	if ce.Portal == nil || ce.Portal.Receiver == "" {
		return false
	}
	ul := ce.Bridge.GetCachedUserLoginByID(ce.Portal.Receiver)
	return ul != nil && ul.UserMXID == ce.User.MXID
}

// ownerOnly wraps a portal command so it answers only the portal's owner
// or an admin.
func ownerOnly(fn func(*commands.Event)) func(*commands.Event) {
	return func(ce *commands.Event) {
		if !portalOwner(ce) {
			ce.Reply("Only the person whose phone this chat belongs to (or a bridge admin) can use that here.")
			return
		}
		fn(ce)
	}
}

// MayPair is asked before a device is paired for owner: the bridge's
// permissions must let owner log in (the `login` level: user or admin).
func (c *Connector) MayPair(ctx context.Context, owner string) error {
	if c.br == nil || c.br.Config == nil {
		return errors.New("bridge not ready")
	}
	uid := id.UserID(owner)
	if lp, _, err := uid.ParseAndValidateRelaxed(); err != nil || lp == "" {
		return fmt.Errorf("%q is not a Matrix user id", owner)
	}
	if !c.br.Config.Permissions.Get(uid).Login {
		return fmt.Errorf("%s may not use this bridge (permissions in config.yaml)", owner)
	}
	return nil
}

// forceLoginFlag makes `login` post the pairing link in a room that is not
// encrypted.
const forceLoginFlag = "--unencrypted"

// guardedLogin is bridgev2's login (or relogin) command, with a warning
// first when the room is not encrypted: the pairing link is a one-time
// credential, and in an unencrypted room the homeserver stores it readable
// (its admins, a backup of its database), so whoever uses it first pairs a
// phone as you.
func (c *Connector) guardedLogin(stockHandler *commands.FullHandler) *commands.FullHandler {
	h := *stockHandler
	stock := h.Func
	h.Func = func(ce *commands.Event) {
		force := false
		args := ce.Args[:0:0]
		for _, a := range ce.Args {
			if a == forceLoginFlag {
				force = true
				continue
			}
			args = append(args, a)
		}
		ce.Args = args
		if !force && !c.roomEncrypted(ce.Ctx, ce.RoomID) {
			ce.Reply("⚠️ This room is not encrypted. The pairing code is a one-time key to your account on this bridge: "+
				"here the homeserver would store it readable, and whoever uses it first pairs their phone as you. "+
				"Turn on encryption in this room and send `%s` again, or ask your admin for `rcsgate pair --user %s` on the server. "+
				"To show it here anyway, send the command again with `%s` (e.g. `login %s`).", ce.Command, ce.User.MXID, forceLoginFlag, forceLoginFlag)
			return
		}
		stock(ce)
	}
	return &h
}

// roomEncrypted asks the homeserver (the bridge's state cache may not have
// seen the room's state): unknown counts as not encrypted.
func (c *Connector) roomEncrypted(ctx context.Context, room id.RoomID) bool {
	if c.status == nil || c.status.Connector == nil || c.status.AS == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var enc event.EncryptionEventContent
	if err := c.status.AS.BotClient().StateEvent(ctx, room, event.StateEncryption, "", &enc); err != nil {
		return false
	}
	return enc.Algorithm != ""
}

// Ghosts are shared: one per number, whoever's phone talks to it. A name
// from one person's address book must not become what another person sees
// for their contact (a phone could name someone else's contact "Bank"), so
// contact names only apply to a ghost only one person has direct chats
// with.

// ghostOwners returns the Matrix users with a direct chat (DM portal) with
// ghost.
func (c *Connector) ghostOwners(ctx context.Context, ghost networkid.UserID) (map[id.UserID]bool, error) {
	portals, err := c.br.DB.Portal.GetAllDMsWith(ctx, ghost)
	if err != nil {
		return nil, fmt.Errorf("portals with %s: %w", ghost, err)
	}
	owners := map[id.UserID]bool{}
	for _, p := range portals {
		if ul := c.br.GetCachedUserLoginByID(p.Receiver); ul != nil {
			owners[ul.UserMXID] = true
		}
	}
	return owners, nil
}

// nameableBy reports whether user's phone may name ghost: nobody else has
// a direct chat with it.
func (c *Connector) nameableBy(ctx context.Context, ghost networkid.UserID, user id.UserID) (bool, error) {
	owners, err := c.ghostOwners(ctx, ghost)
	if err != nil {
		return false, err
	}
	for o := range owners {
		if o != user {
			return false, nil
		}
	}
	return true, nil
}

// chatKey names the chat of a portal: its owner's login and its id.
func chatKey(k networkid.PortalKey) store.ChatKey {
	return store.ChatKey{Login: string(k.Receiver), Contact: string(k.ID)}
}

// portalOf returns the portal a sent message lives in; nil when the room is
// gone (not an error: there is nothing left to mark).
func (c *Connector) portalOf(ctx context.Context, sent store.SentMsg) (*bridgev2.Portal, error) {
	portal, err := c.br.GetPortalByMXID(ctx, id.RoomID(sent.RoomID))
	if err != nil {
		return nil, fmt.Errorf("portal of %s: %w", sent.MsgID, err)
	}
	return portal, nil
}
