package connector

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"maunium.net/go/mautrix/bridgev2"
	"maunium.net/go/mautrix/bridgev2/commands"
	"maunium.net/go/mautrix/bridgev2/provisionutil"

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
			Func: c.cmdHelp,
			Name: "help",
			Help: commands.HelpMeta{Section: commands.HelpSectionGeneral, Description: "Show what I can do."},
		},
		// bridgev2's "id" shows the portal's internal id; the number is
		// what a person wants to know (and, like whois, only its owner).
		&commands.FullHandler{
			Func: ownerOnly(c.cmdWhois),
			Name: "id",
			Help: commands.HelpMeta{Section: commands.HelpSectionChats,
				Description: "Show the phone number of this chat (same as whois)."},
			RequiresPortal: true, RequiresLogin: true,
		},
		// bridgev2's own start-chat and resolve-identifier answer with
		// internal ids; these answer with the number the person typed.
		&commands.FullHandler{
			Func:    c.cmdStartChat,
			Name:    "start-chat",
			Aliases: []string{"pm"},
			Help: commands.HelpMeta{Section: commands.HelpSectionChats,
				Description: "Open a chat with a phone number (with its country code, like +12025550100). " +
					"With a dual-SIM phone, `sim2` first sends from the second SIM.",
				Args: "[sim2] <number>"},
			RequiresLogin: true,
		},
		&commands.FullHandler{
			Func: c.cmdCheckNumber,
			Name: "resolve-identifier",
			Help: commands.HelpMeta{Section: commands.HelpSectionChats,
				Description: "Check that a phone number is one the bridge can open a chat with.",
				Args:        "<number>"},
			RequiresLogin: true,
		},
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

var simArg = regexp.MustCompile(`^(?i)sim([1-9])$`)

// loginForCommand picks the login a chat command uses: the default phone,
// or its SIM n with a leading "simN".
func loginForCommand(ce *commands.Event) (*bridgev2.UserLogin, []string) {
	args := ce.Args
	login := ce.User.GetDefaultLogin()
	if login == nil || len(args) < 2 {
		return login, args
	}
	m := simArg.FindStringSubmatch(args[0])
	if m == nil {
		return login, args
	}
	sim, _ := strconv.Atoi(m[1])
	devID, _ := parseLoginID(login.ID)
	if other := ce.Bridge.GetCachedUserLoginByID(simLoginID(devID, sim)); other != nil && other.UserMXID == ce.User.MXID {
		login = other
	}
	return login, args[1:]
}

func (c *Connector) cmdStartChat(ce *commands.Event) {
	login, args := loginForCommand(ce)
	if len(args) == 0 {
		ce.Reply("Usage: `start-chat +12025550100` (a phone number with its country code).")
		return
	}
	if login == nil {
		ce.Reply("You have no paired phone yet: send `login` to pair one.")
		return
	}
	number, err := phone.NormalizeIn(strings.Join(args, ""), c.cfg.DefaultRegion)
	if err != nil {
		ce.Reply("That is not a number I can use: %v.", trimNotANumber(err))
		return
	}
	resp, err := provisionutil.ResolveIdentifier(ce.Ctx, login, number, true)
	if err != nil || resp == nil || resp.Portal == nil || resp.Portal.MXID == "" {
		ce.Log.Err(err).Msg("start-chat failed")
		ce.Reply("I could not open a chat with %s: %v. Please try again.", phone.Format(number), errOrUnknown(err))
		return
	}
	room := fmt.Sprintf("[%s](%s)", roomLabel(resp), resp.Portal.MXID.URI().MatrixToURL())
	if resp.JustCreated {
		ce.Reply("Opened a chat with %s: %s. Accept the invitation to it and write there.", phone.Format(number), room)
	} else {
		ce.Reply("You already have a chat with %s: %s.", phone.Format(number), room)
	}
}

func (c *Connector) cmdCheckNumber(ce *commands.Event) {
	if len(ce.Args) == 0 {
		ce.Reply("Usage: `resolve-identifier +12025550100`")
		return
	}
	number, err := phone.NormalizeIn(strings.Join(ce.Args, ""), c.cfg.DefaultRegion)
	if err != nil {
		ce.Reply("That is not a number I can use: %v.", trimNotANumber(err))
		return
	}
	ce.Reply("%s is a number I can open a chat with: `start-chat %s`.", phone.Format(number), number)
}

// roomLabel is what the chat's room is called for a person: its name, else
// the contact's name as the ghost shows it.
func roomLabel(resp *provisionutil.RespResolveIdentifier) string {
	if resp.Portal.Name != "" {
		return resp.Portal.Name
	}
	if resp.Name != "" {
		return resp.Name
	}
	return "the chat"
}

// trimNotANumber drops the sentinel's "not a phone number: " prefix, which
// the sentence around it already says.
func trimNotANumber(err error) string {
	return strings.TrimPrefix(err.Error(), phone.ErrNotANumber.Error()+": ")
}

func errOrUnknown(err error) error {
	if err == nil {
		return fmt.Errorf("the bridge did not create the room")
	}
	return err
}
