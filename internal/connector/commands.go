package connector

import (
	"strings"

	"maunium.net/go/mautrix/bridgev2/commands"

	"github.com/rcsgate/rcsgate/internal/phone"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// registerCommands adds rcsgate's own bot commands to bridgev2's (and puts
// a warning in front of its login command, see guardedLogin).
func (c *Connector) registerCommands() {
	proc, ok := c.br.Commands.(*commands.Processor)
	if !ok {
		return
	}
	proc.AddHandlers(
		c.guardedLogin(commands.CommandLogin),
		c.guardedLogin(commands.CommandRelogin),
		&commands.FullHandler{
			Func: ownerOnly(c.cmdTransport),
			Name: "transport",
			Help: commands.HelpMeta{Section: commands.HelpSectionChats,
				Description: "Show or choose how this chat goes out: `auto` (RCS when the contact has it, else SMS) or `sms` (always SMS).",
				Args:        "[auto|sms]"},
			RequiresPortal: true, RequiresLogin: true,
		},
		&commands.FullHandler{
			Func: ownerOnly(c.cmdWhois),
			Name: "whois",
			Help: commands.HelpMeta{Section: commands.HelpSectionChats,
				Description: "Show the phone number of this chat (as a message, never in room state)."},
			RequiresPortal: true, RequiresLogin: true,
		},
	)
}

func (c *Connector) cmdTransport(ce *commands.Event) {
	pid := string(ce.Portal.ID)
	chat, err := c.store.Contact(ce.Ctx, pid)
	if err != nil {
		ce.Reply("This room is not a phone chat.")
		return
	}
	st, err := c.store.GetChat(ce.Ctx, chatKey(ce.Portal.PortalKey))
	if err != nil {
		ce.Reply("Could not read this chat's settings: %v", err)
		return
	}
	if len(ce.Args) == 0 {
		pref := "auto (RCS when the contact has it, else SMS)"
		if st.Prefer == wire.TransportSMS {
			pref = "sms (always SMS)"
		}
		last := st.Transport
		if last == "" {
			last = "unknown yet"
		}
		ce.Reply("Outgoing: %s. The phone last used: %s.", pref, strings.ToUpper(last))
		return
	}
	var prefer string
	switch strings.ToLower(ce.Args[0]) {
	case "auto", "rcs":
		prefer = ""
	case "sms":
		prefer = wire.TransportSMS
	default:
		ce.Reply("Usage: `transport [auto|sms]`")
		return
	}
	if wire.IsGroupChat(chat) && prefer == wire.TransportSMS {
		ce.Reply("Group chats keep the transport the group was made with.")
		return
	}
	if wire.IsConversationChat(chat) && prefer == wire.TransportSMS {
		ce.Reply("The phone knows this chat by name only, without a number: it can only answer in the messaging app's conversation.")
		return
	}
	if err := c.store.SetPrefer(ce.Ctx, chatKey(ce.Portal.PortalKey), prefer); err != nil {
		ce.Reply("Could not save that: %v", err)
		return
	}
	if prefer == "" {
		ce.Reply("Messages in this chat go over RCS when the contact has it, else SMS.")
	} else {
		ce.Reply("Messages in this chat now always go as SMS (no files, reactions or edits).")
	}
}

func (c *Connector) cmdWhois(ce *commands.Event) {
	chat, err := c.store.Contact(ce.Ctx, string(ce.Portal.ID))
	if err != nil {
		ce.Reply("This room is not a phone chat.")
		return
	}
	if wire.IsGroupChat(chat) {
		ce.Reply("This is a group chat.")
		return
	}
	if wire.IsConversationChat(chat) {
		ce.Reply("The phone's messaging app shows this chat by name only, without a number (allow rcsgate to read contacts on the phone to match names to numbers).")
		return
	}
	ce.Reply("This chat is with %s.", phone.Format(chat))
}
