// Package e2e runs the whole product as a user would: a real Dendrite, the
// rcsgate daemon and a paired rcsgate-agent over real QUIC, driven by a
// Matrix client.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/harness"
)

func nonce(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func TestChatThroughBridge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := startStack(t, ctx, harness.Options{})
	cli, err := harness.Login(ctx, st.Info.Homeserver, st.Info.UserID, st.Info.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	step := func(name string) (context.Context, context.CancelFunc) {
		t.Logf("step: %s", name)
		return context.WithTimeout(ctx, 30*time.Second)
	}

	sctx, done := step("DM the bridge bot")
	mgmt, err := cli.OpenDM(sctx, id.UserID(st.Info.BotUserID))
	done()
	if err != nil {
		t.Fatal(err)
	}

	sctx, done = step("start-chat with the echo contact")
	portal, ghost, err := cli.StartChat(sctx, mgmt, harness.EchoNumber)
	done()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ghost), "2025550100") {
		t.Fatalf("ghost id %s carries the phone number", ghost)
	}

	hello := "hello " + nonce(t)
	sctx, done = step("send text, get the echo from the ghost")
	from := cli.Now()
	if _, err := cli.SendText(sctx, portal, hello); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(sctx, from, cli.Message(portal, ghost, hello)); err != nil {
		seen, stop := context.WithCancel(ctx)
		stop()
		cli.WaitEvent(seen, 0, func(e *event.Event) bool {
			if e.RoomID == portal {
				t.Logf("seen in portal: %s from %s", e.Type.Type, e.Sender)
			}
			return false
		})
		t.Fatalf("no echo from %s in %s: %v", ghost, portal, err)
	}
	done()

	quiet := "+12025550123"
	inbound := "are you there " + nonce(t)
	sctx, done = step("a new number writes: a new portal appears with its message")
	from = cli.Now()
	if err := st.Inject(sctx, quiet, inbound); err != nil {
		t.Fatal(err)
	}
	evt, _, err := cli.WaitEvent(sctx, from, cli.Message("", "", inbound))
	done()
	if err != nil {
		t.Fatalf("injected message did not reach Matrix: %v", err)
	}
	if evt.RoomID == portal || evt.RoomID == mgmt {
		t.Fatalf("message from a new number landed in an existing room %s", evt.RoomID)
	}
	if evt.Sender == ghost || !strings.HasPrefix(evt.Sender.Localpart(), "rcs_") {
		t.Fatalf("message sent by %s, want a new ghost", evt.Sender)
	}

	sctx, done = step("the bot and the ghosts never notify; the person's own rules are untouched")
	waitMasterRules(t, sctx, st, id.UserID(st.Info.BotUserID), ghost, evt.Sender)
	done()
	if rule, err := cli.GetPushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.master"); err != nil || rule.Enabled {
		t.Fatalf("the person's own master rule: %+v, %v; want it left off", rule, err)
	}

	// No body and no full number at the default log level, on either side.
	st.Down()
	for name, log := range map[string][]byte{"rcsgate": st.GatewayLog(), "agent": st.AgentLog()} {
		if len(log) == 0 {
			t.Fatalf("%s wrote no log: the check below would prove nothing", name)
		}
		for _, secret := range []string{hello, inbound, "2025550100", "2025550123"} {
			if bytes.Contains(log, []byte(secret)) {
				t.Errorf("%s log contains %q", name, secret)
			}
		}
	}
}

// waitMasterRules waits until each of the bridge's users has its "never
// notify" push rule (.m.rule.master) enabled, reading the rules as the
// appservice (the bridge sets them in the background).
func waitMasterRules(t *testing.T, ctx context.Context, st *harness.Stack, users ...id.UserID) {
	t.Helper()
	cfg, err := gateway.LoadConfig(st.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	as, err := mautrix.NewClient(st.Info.Homeserver, "", cfg.Appservice.ASToken)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		wrong := ""
		for _, user := range users {
			as.UserID = user
			as.SetAppServiceUserID = true
			rule, err := as.GetPushRule(ctx, "global", pushrules.OverrideRule, ".m.rule.master")
			if err != nil || !rule.Enabled {
				wrong = fmt.Sprintf("%s: master rule %+v (%v), want it enabled", user, rule, err)
				break
			}
		}
		if wrong == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatal(wrong)
		case <-tick.C:
		}
	}
}

func tailOf(b []byte) string {
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// startStack brings up a stack in a temp dir and stops it at the end; on
// failure it shows (and with RCSGATE_KEEP_LOGS=DIR keeps) both logs.
func startStack(t *testing.T, ctx context.Context, o harness.Options) *harness.Stack {
	t.Helper()
	o.Dir = t.TempDir()
	// The tests watch every outcome, "sent" included; the default
	// (when_pending: no status for a message the phone takes at once) is
	// pinned by the connector's status tests and measured by make bench.
	configure := o.Configure
	o.Configure = func(c *gateway.Config) {
		c.Bridge.SentStatus = "always"
		if configure != nil {
			configure(c)
		}
	}
	st, err := harness.Up(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Down()
		if t.Failed() {
			if d := os.Getenv("RCSGATE_KEEP_LOGS"); d != "" {
				_ = os.WriteFile(filepath.Join(d, "rcsgate.log"), st.GatewayLog(), 0o644)
				_ = os.WriteFile(filepath.Join(d, "agent.log"), st.AgentLog(), 0o644)
				if hsLog, err := os.ReadFile(st.HS.LogPath()); err == nil {
					_ = os.WriteFile(filepath.Join(d, st.Opts.Homeserver+".log"), hsLog, 0o644)
				}
			}
			t.Logf("rcsgate log:\n%s", tailOf(st.GatewayLog()))
			t.Logf("agent log:\n%s", tailOf(st.AgentLog()))
		}
	})
	return st
}

// up starts a stack and a logged-in client with a management room.
func up(t *testing.T, ctx context.Context) (*harness.Stack, *harness.Client, id.RoomID) {
	t.Helper()
	return upWith(t, ctx, harness.Options{})
}

// upWith is up with the stack's options.
func upWith(t *testing.T, ctx context.Context, o harness.Options) (*harness.Stack, *harness.Client, id.RoomID) {
	t.Helper()
	st := startStack(t, ctx, o)
	cli, err := harness.Login(ctx, st.Info.Homeserver, st.Info.UserID, st.Info.Password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cli.Close)
	mgmt, err := cli.OpenDM(ctx, id.UserID(st.Info.BotUserID))
	if err != nil {
		t.Fatal(err)
	}
	return st, cli, mgmt
}

func botSays(cli *harness.Client, room id.RoomID, bot id.UserID, substr string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if !cli.Message(room, bot, "")(e) {
			return false
		}
		return strings.Contains(e.Content.AsMessage().Body, substr)
	}
}

func TestBotHelpAndLogin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, cli, mgmt := up(t, ctx)
	bot := id.UserID(st.Info.BotUserID)

	from := cli.Now()
	if _, err := cli.SendText(ctx, mgmt, "help"); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"start-chat", "login"} {
		if _, _, err := cli.WaitEvent(ctx, from, botSays(cli, mgmt, bot, cmd)); err != nil {
			t.Fatalf("help does not mention %s: %v", cmd, err)
		}
	}

	// In this unencrypted room, `login` first warns that the link would be
	// stored readable, and posts nothing.
	from = cli.Now()
	if _, err := cli.SendText(ctx, mgmt, "login"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, botSays(cli, mgmt, bot, "This room is not encrypted")); err != nil {
		t.Fatalf("no warning before a pairing link in an unencrypted room: %v", err)
	}
	for _, e := range cli.Events()[from:] {
		if e.RoomID == mgmt && e.Sender == bot && e.Type == event.EventMessage && strings.Contains(e.Content.AsMessage().Body, "rcsgate://pair") {
			t.Fatal("the bot posted a pairing link along with the warning")
		}
	}

	// `login --unencrypted` shows a QR code whose text is the pairing link;
	// a second phone pairs with it and the bot confirms.
	from = cli.Now()
	if _, err := cli.SendText(ctx, mgmt, "login --unencrypted"); err != nil {
		t.Fatal(err)
	}
	qr, _, err := cli.WaitEvent(ctx, from, func(e *event.Event) bool {
		return cli.Message(mgmt, bot, "")(e) && e.Content.AsMessage().MsgType == event.MsgImage
	})
	if err != nil {
		t.Fatalf("no QR code from the bot: %v", err)
	}
	link := qr.Content.AsMessage().Body
	if !strings.HasPrefix(link, "rcsgate://pair?") {
		t.Fatalf("QR code text is %q, want a pairing link", link)
	}
	second := filepath.Join(t.TempDir(), "phone2")
	if out, err := st.Run(ctx, "rcsgate-agent", "pair", "--state", second, "--name", "second-phone", link); err != nil {
		t.Fatalf("pairing with the bot's link: %v\n%s", err, out)
	}
	if _, _, err := cli.WaitEvent(ctx, from, botSays(cli, mgmt, bot, "Paired second-phone")); err != nil {
		t.Fatalf("bot did not confirm the login: %v", err)
	}
	// The link is single-use.
	third := filepath.Join(t.TempDir(), "phone3")
	out, err := st.Run(ctx, "rcsgate-agent", "pair", "--state", third, link)
	if err == nil || !strings.Contains(out, "already used") {
		t.Fatalf("reusing the link: err=%v, output %q; want a refusal saying it was already used", err, out)
	}
	if bytes.Contains(st.GatewayLog(), []byte(strings.SplitN(strings.SplitN(link, "token=", 2)[1], "&", 2)[0])) {
		t.Fatal("the pairing token reached rcsgate's log")
	}
}

func TestStartChatRefusesNonNumbers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, cli, mgmt := up(t, ctx)
	from := cli.Now()
	if _, err := cli.SendText(ctx, mgmt, "start-chat hello-world"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, botSays(cli, mgmt, id.UserID(st.Info.BotUserID), "international form")); err != nil {
		t.Fatalf("no clear refusal of a non-number: %v", err)
	}
}

// statusOf matches the bridge's send status for evtID.
func statusOf(room id.RoomID, evtID id.EventID, want event.MessageStatus) func(*event.Event) bool {
	return func(e *event.Event) bool {
		if e.Type != event.BeeperMessageStatus || e.RoomID != room {
			return false
		}
		_ = e.Content.ParseRaw(e.Type)
		mss, ok := e.Content.Parsed.(*event.BeeperMessageStatusEventContent)
		return ok && mss.RelatesTo.EventID == evtID && mss.Status == want
	}
}

// A message sent while the phone is away shows as pending, is delivered when
// the phone comes back, and then shows as sent.
func TestPendingThenSentWhenPhoneReturns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, cli, mgmt := up(t, ctx)
	portal, ghost, err := cli.StartChat(ctx, mgmt, harness.EchoNumber)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	text := "while you were away " + nonce(t)
	from := cli.Now()
	resp, err := cli.SendText(ctx, portal, text)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, statusOf(portal, resp.EventID, event.MessageStatusPending)); err != nil {
		t.Fatalf("no pending status while the phone is offline: %v", err)
	}
	if err := st.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, statusOf(portal, resp.EventID, event.MessageStatusSuccess)); err != nil {
		t.Fatalf("no success status after the phone came back: %v", err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, cli.Message(portal, ghost, text)); err != nil {
		t.Fatalf("queued message never reached the contact: %v", err)
	}
}

// Playing the homeserver: a transaction is handled once, whatever is
// replayed, including after rcsgate is killed with SIGKILL.
func TestTransactionReplayIsNoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, cli, mgmt := up(t, ctx)
	portal, _, err := cli.StartChat(ctx, mgmt, "+12025550177")
	if err != nil {
		t.Fatal(err)
	}
	asURL, hsToken, err := st.Appservice()
	if err != nil {
		t.Fatal(err)
	}
	evtID := "$replay-" + nonce(t)
	body := fmt.Sprintf(`{"events":[{"type":"m.room.message","room_id":%q,"sender":%q,"event_id":%q,"origin_server_ts":%d,"content":{"msgtype":"m.text","body":"once only"}}]}`,
		portal, cli.UserID, evtID, time.Now().UnixMilli())
	put := func(txnID string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, asURL+"/_matrix/app/v1/transactions/"+txnID, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+hsToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("transaction %s: HTTP %d", txnID, resp.StatusCode)
		}
	}
	countSent := func() int {
		sent, err := st.Sent(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range sent {
			if m.ID == evtID {
				n++
			}
		}
		return n
	}
	waitSentOnce := func(what string) {
		t.Helper()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(20 * time.Second)
		for countSent() == 0 {
			select {
			case <-deadline:
				t.Fatalf("%s: never reached the phone", what)
			case <-tick.C:
			}
		}
		if n := countSent(); n != 1 {
			t.Fatalf("%s: phone sent it %d times", what, n)
		}
	}
	put("txn-a")
	waitSentOnce("first delivery")
	put("txn-a") // the homeserver retries the same transaction
	put("txn-b") // or sends the event again in a new one
	if err := st.StopGateway(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := st.StartGateway(ctx); err != nil {
		t.Fatal(err)
	}
	put("txn-a")
	put("txn-c")
	// The agent reconnects to the new process; anything the bridge wrongly
	// re-queued would be delivered by then. A marker message sent after the
	// replays proves the channel is flowing before we count.
	marker := "marker " + nonce(t)
	if _, err := cli.SendText(ctx, portal, marker); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		sent, err := st.Sent(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(sent) > 0 && sent[len(sent)-1].Text == marker {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("marker never reached the phone after the restart")
		case <-tick.C:
		}
	}
	if n := countSent(); n != 1 {
		t.Fatalf("after replays and a SIGKILL restart the phone sent the message %d times", n)
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// Past the per-device queue limit a message is refused with a failed status
// and a notice in the room — never silence.
func TestQueueFullFailsLoudly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := startStack(t, ctx, harness.Options{Configure: func(c *gateway.Config) { c.Queue.Limit = 1 }})
	cli, err := harness.Login(ctx, st.Info.Homeserver, st.Info.UserID, st.Info.Password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cli.Close)
	bot := id.UserID(st.Info.BotUserID)
	mgmt, err := cli.OpenDM(ctx, bot)
	if err != nil {
		t.Fatal(err)
	}
	portal, _, err := cli.StartChat(ctx, mgmt, "+12025550188")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.StopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	from := cli.Now()
	first, err := cli.SendText(ctx, portal, "fits in the queue")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, statusOf(portal, first.EventID, event.MessageStatusPending)); err != nil {
		t.Fatalf("first message not pending: %v", err)
	}
	second, err := cli.SendText(ctx, portal, "one too many")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, statusOf(portal, second.EventID, event.MessageStatusFail)); err != nil {
		t.Fatalf("overflowing message got no failed status: %v", err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, botSays(cli, portal, bot, "wait for the phone")); err != nil {
		t.Fatalf("no notice explaining the failure: %v", err)
	}
}
