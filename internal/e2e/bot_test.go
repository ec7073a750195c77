package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/internal/harness"
)

// failedStatus matches a failure status the bridge sent about evtID.
func failedStatus(room id.RoomID, evtID id.EventID) func(*event.Event) bool {
	return func(e *event.Event) bool {
		return statusOf(room, evtID, event.MessageStatusFail)(e) || statusOf(room, evtID, event.MessageStatusRetriable)(e)
	}
}

// opaqueIDs are what the bot must never show a person: ghost localparts and
// the opaque ids inside them (26 base32 characters).
var opaqueIDs = regexp.MustCompile(`rcs_[a-z2-7]{8,}|\b[a-z2-7]{26}\b`)

// TestBotAsAPersonUsesIt walks the bot as someone who has not read the
// code: bare commands in any DM with it, a command sent before it joined,
// answers without internal ids, portal invites marked as direct chats, no
// failure for joining one, a visible notice for what the phone cannot do,
// and contacts whose masked numbers look alike told apart.
func TestBotAsAPersonUsesIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, cli, _ := up(t, ctx)
	bot := id.UserID(st.Info.BotUserID)
	step := func(name string) { t.Logf("step: %s", name) }
	ctx, stepCancel := context.WithTimeout(ctx, 3*time.Minute)
	defer stepCancel()

	step("a second DM with the bot takes bare commands")
	dm2, err := cli.OpenDM(ctx, bot)
	if err != nil {
		t.Fatal(err)
	}
	from := cli.Now()
	if _, err := cli.SendText(ctx, dm2, "help"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, botSays(cli, dm2, bot, "start-chat")); err != nil {
		t.Fatalf("no help in the second DM: %v", err)
	}

	step("start-chat there answers with the number, not internal ids")
	from = cli.Now()
	if _, err := cli.SendText(ctx, dm2, "start-chat "+harness.EchoNumber); err != nil {
		t.Fatal(err)
	}
	reply, _, err := cli.WaitEvent(ctx, from, botSays(cli, dm2, bot, "chat with"))
	if err != nil {
		t.Fatalf("no answer to start-chat in the second DM: %v", err)
	}
	body := reply.Content.AsMessage().Body + reply.Content.AsMessage().FormattedBody
	if !strings.Contains(body, "202-555-0100") || opaqueIDs.MatchString(body) {
		t.Fatalf("start-chat answered %q: want the number and no internal id", body)
	}
	invite, _, err := cli.WaitEvent(ctx, from, func(e *event.Event) bool {
		if e.Type != event.StateMember || e.GetStateKey() != string(cli.UserID) || e.RoomID == dm2 {
			return false
		}
		_ = e.Content.ParseRaw(e.Type)
		return e.Content.AsMember().Membership == event.MembershipInvite
	})
	if err != nil {
		t.Fatalf("no portal invite: %v", err)
	}
	portal := invite.RoomID
	if !invite.Content.AsMember().IsDirect {
		t.Fatalf("the portal invite does not say is_direct: %s", invite.Content.VeryRaw)
	}
	join, _, err := cli.WaitEvent(ctx, from, harness.Joined(portal, cli.UserID))
	if err != nil {
		t.Fatalf("did not join the portal: %v", err)
	}
	hello := "hello " + nonce(t)
	if _, err := cli.SendText(ctx, portal, hello); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, cli.Message(portal, "", hello)); err != nil {
		t.Fatalf("no echo in the portal: %v", err)
	}

	step("inviting someone else to the portal gets a notice saying what happens")
	other := "other" + nonce(t)[:6]
	otherID, err := st.HS.RegisterUser(ctx, other, "pw-"+nonce(t), false)
	if err != nil {
		t.Fatal(err)
	}
	from = cli.Now()
	if _, err := cli.InviteUser(ctx, portal, &mautrix.ReqInviteUser{UserID: id.UserID(otherID)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, botSays(cli, portal, bot, "can read along")); err != nil {
		t.Fatalf("no notice about the invite: %v", err)
	}
	// By now the bridge has long handled the user's own join: no failure.
	for _, e := range cli.Events() {
		if failedStatus(portal, join.ID)(e) {
			t.Fatalf("the user's own join drew a failure status: %s", e.Content.VeryRaw)
		}
	}

	step("a command sent before the bot joined is answered")
	from = cli.Now()
	resp, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bot}, IsDirect: true, Preset: "trusted_private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.SendText(ctx, resp.RoomID, "start-chat +12025550111"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, botSays(cli, resp.RoomID, bot, "202-555-0111")); err != nil {
		t.Fatalf("the command sent before the bot joined was not answered: %v", err)
	}

	step("contacts whose masked numbers look alike have names a person can tell apart")
	from = cli.Now()
	names := map[id.UserID]string{}
	for _, n := range []string{"+12025550177", "+13105550177"} {
		if err := st.Inject(ctx, n, "hi from "+n[len(n)-4:]); err != nil {
			t.Fatal(err)
		}
	}
	for len(names) < 2 {
		e, next, err := cli.WaitEvent(ctx, from, func(e *event.Event) bool {
			if e.Type != event.StateMember || !strings.HasPrefix(id.UserID(e.GetStateKey()).Localpart(), "rcs_") {
				return false
			}
			_ = e.Content.ParseRaw(e.Type)
			m := e.Content.AsMember()
			return m.Membership == event.MembershipJoin && strings.Contains(m.Displayname, "77")
		})
		if err != nil {
			t.Fatalf("the two contacts did not both appear: %v (names so far %v)", err, names)
		}
		names[id.UserID(e.GetStateKey())] = e.Content.AsMember().Displayname
		from = next
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Fatalf("two contacts share the name %q: %v", n, names)
		}
		seen[n] = true
	}
	t.Logf("contacts ending in the same digits: %v", names)
}
