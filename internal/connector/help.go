package connector

import (
	"strings"

	"maunium.net/go/mautrix/bridgev2/commands"
)

// helpText is what `help` shows: the commands a person of this bridge uses,
// in the words of the README's "Talking to the bridge bot". bridgev2's own
// list is long and mostly about other networks' features; its commands
// still work when typed.
const helpText = `I connect your Matrix account with your phone's RCS and SMS conversations.

**Your phone**
- ` + "`login`" + ` — pair your phone: I show a QR code (and its link) for the rcsgate app or rcsgate-agent.
- ` + "`list-logins`" + ` — your paired phones and SIMs, and whether they are connected.
- ` + "`logout <phone>`" + ` — unpair a phone (the id ` + "`list-logins`" + ` shows); it is revoked at once.
- ` + "`cancel`" + ` — stop a pairing that is waiting.

**Chats**
- ` + "`start-chat +12025550100`" + ` — open a chat with a number (country code first). ` + "`start-chat sim2 +1…`" + ` writes from your phone's second SIM.
- ` + "`resolve-identifier +12025550100`" + ` — check that a number is one I can use.
- Messages from numbers you have no chat with open a new chat by themselves.

**Inside a chat with a contact** (always with ` + "`!rcs`" + ` there)
- ` + "`!rcs whois`" + ` — the contact's number (shown only to you, never stored in the room).
- ` + "`!rcs transport`" + ` — how this chat goes out; ` + "`!rcs transport sms`" + ` always SMS, ` + "`!rcs transport auto`" + ` RCS when the contact has it.
`

const helpAdmin = `
**Bridge admins**
- ` + "`!rcs delete-portal`" + ` (in a chat) — delete the chat's room; ` + "`delete-all-portals`" + ` — all of them.
- ` + "`!rcs discard-megolm-session`" + ` (in a chat) — start a new encryption session there.
`

func (c *Connector) cmdHelp(ce *commands.Event) {
	var b strings.Builder
	switch {
	case ce.Portal != nil:
		b.WriteString("This is a chat with a contact: commands here start with `!rcs` (what you write without it goes to the contact).\n\n")
	case ce.RoomID == ce.User.ManagementRoom:
		b.WriteString("In our direct chats, send commands as they are, like `start-chat +12025550100`. In other rooms, start them with `!rcs`.\n\n")
	default:
		if _, dm := c.botDM(ce.Ctx, ce.RoomID, ce.User.MXID); dm {
			b.WriteString("In our direct chats, send commands as they are, like `start-chat +12025550100`. In other rooms, start them with `!rcs`.\n\n")
		} else {
			b.WriteString("In this room, start commands with `!rcs`, like `!rcs start-chat +12025550100`; in a direct chat with me, no prefix is needed.\n\n")
		}
	}
	b.WriteString(helpText)
	if ce.User.Permissions.Admin {
		b.WriteString(helpAdmin)
	}
	ce.Reply("%s", b.String())
}
