package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/rcsgate/rcsgate/internal/harness"
)

// phoneApp wraps harness.PhoneApp (the app's Java side with a fake SmsManager, running the real
// agent) for a test: failures end the test.
type phoneApp struct {
	*harness.PhoneApp
	t   *testing.T
	ctx context.Context
}

func startPhoneApp(t *testing.T, ctx context.Context, st *harness.Stack) *phoneApp {
	t.Helper()
	return startPhoneAppWith(t, ctx, st, harness.PhoneAppOptions{})
}

func startPhoneAppWith(t *testing.T, ctx context.Context, st *harness.Stack, o harness.PhoneAppOptions) *phoneApp {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := harness.AndroidClasspath(root, t.TempDir())
	if errors.Is(err, harness.ErrNoJava) && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	o.Classpath = cp
	p, err := st.StartPhoneApp(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(p.Dir, "agent.log"))
			t.Logf("phone app's agent log:\n%s", tailOf(b))
			b, _ = os.ReadFile(filepath.Join(st.Opts.Dir, "phone-app.log"))
			t.Logf("phone app's stderr:\n%s", tailOf(b))
		}
	})
	return &phoneApp{PhoneApp: p, t: t, ctx: ctx}
}

func (p *phoneApp) cmd(v map[string]any) {
	p.t.Helper()
	if err := p.Send(v); err != nil {
		p.t.Fatal(err)
	}
}

// wait returns the first report from index from on that matches, and its index.
func (p *phoneApp) wait(ctx context.Context, what string, from int, match func(map[string]any) bool) (map[string]any, int) {
	p.t.Helper()
	m, i, err := p.Wait(ctx, from, match)
	if err != nil {
		p.t.Fatalf("phone app: no %s: %v", what, err)
	}
	return m, i
}

func smsTo(text string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["ev"] == "sms" && m["text"] == text }
}

// TestAndroidAppSMS: an SMS the platform hands to the app becomes a Matrix message; a Matrix
// message becomes an SmsManager send whose sent and delivered intents become statuses in
// Matrix; and both directions stay exactly once across SIGKILLs of the agent.
func TestAndroidAppSMS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, cli, mgmt := upWith(t, ctx, harness.Options{NoAgent: true})
	app := startPhoneApp(t, ctx, st)
	app.wait(ctx, "connected status from the agent", 0, harness.Connected)

	const number = "+12025550142"
	portal, ghost, err := cli.StartChat(ctx, mgmt, number)
	if err != nil {
		t.Fatal(err)
	}

	t.Log("step: the platform hands the app an SMS; it reaches Matrix")
	in := "sms to matrix " + nonce(t)
	from := cli.Now()
	app.cmd(map[string]any{"cmd": "receive", "from": number, "text": in})
	if _, _, err := cli.WaitEvent(ctx, from, cli.Message(portal, ghost, in)); err != nil {
		t.Fatalf("SMS did not reach Matrix: %v", err)
	}

	t.Log("step: a Matrix message becomes an SmsManager send; sent, then delivered, show in Matrix")
	out := "matrix to sms " + nonce(t)
	from = cli.Now()
	resp, err := cli.SendText(ctx, portal, out)
	if err != nil {
		t.Fatal(err)
	}
	sms, _ := app.wait(ctx, "SmsManager send", 0, smsTo(out))
	if sms["to"] != number || sms["sub"] != float64(11) { // SIM 1 of the fake phone
		t.Fatalf("sent as %v", sms)
	}
	_, cur, err := cli.WaitEvent(ctx, from, statusOf(portal, resp.EventID, event.MessageStatusSuccess))
	if err != nil {
		t.Fatalf("no success status after the sent intent: %v", err)
	}
	app.cmd(map[string]any{"cmd": "deliver", "id": sms["id"], "ok": true})
	if _, _, err := cli.WaitEvent(ctx, cur, statusOf(portal, resp.EventID, event.MessageStatusSuccess)); err != nil {
		t.Fatalf("the delivery report did not reach Matrix: %v", err)
	}

	t.Log("step: exactly once across SIGKILLs of the agent, both ways")
	const n = 6
	var outs, ins []string
	tag := nonce(t)
	for i := range n {
		outs = append(outs, fmt.Sprintf("out %s %d", tag, i))
		ins = append(ins, fmt.Sprintf("in %s %d", tag, i))
	}
	var kills int
	for i := range n {
		if _, err := cli.SendText(ctx, portal, outs[i]); err != nil {
			t.Fatal(err)
		}
		app.cmd(map[string]any{"cmd": "receive", "from": number, "text": ins[i]})
		if i == 1 || i == 4 {
			_, at := app.wait(ctx, "SmsManager send before the kill", 0, smsTo(outs[i-1]))
			app.cmd(map[string]any{"cmd": "kill"})
			app.wait(ctx, "the kill", at, func(m map[string]any) bool { return m["ev"] == "killed" })
			kills++
		}
	}
	for _, o := range outs {
		app.wait(ctx, "SmsManager send of "+o, 0, smsTo(o))
	}
	marker := "marker " + tag
	from = cli.Now()
	app.cmd(map[string]any{"cmd": "receive", "from": number, "text": marker})
	if _, _, err := cli.WaitEvent(ctx, from, cli.Message(portal, ghost, marker)); err != nil {
		t.Fatalf("marker SMS did not reach Matrix: %v", err)
	}
	for _, want := range ins {
		if _, _, err := cli.WaitEvent(ctx, 0, cli.Message(portal, ghost, want)); err != nil {
			t.Fatalf("SMS %q lost across the kills", want)
		}
	}
	got := map[string]int{}
	for _, m := range cli.Messages(portal, ghost) {
		got[m.Body]++
	}
	for _, want := range ins {
		if got[want] != 1 {
			t.Errorf("SMS %q reached Matrix %d times, want once", want, got[want])
		}
	}
	for _, o := range outs {
		if c := app.Count(smsTo(o)); c != 1 {
			t.Errorf("%q went out as SMS %d times, want once", o, c)
		}
	}
	if runs := app.Count(func(m map[string]any) bool { return m["ev"] == "state" && m["state"] == "RESTARTING" }); runs < kills {
		t.Errorf("agent restarted %d times after %d kills", runs, kills)
	}

	// The agent's log (kept by the app) carries no message text and no full number.
	logb, err := os.ReadFile(filepath.Join(app.Dir, "agent.log"))
	if err != nil || len(logb) == 0 {
		t.Fatalf("no agent log in the app's files: %v", err)
	}
	for _, secret := range []string{in, out, ins[0], "2025550142"} {
		if bytes.Contains(logb, []byte(secret)) {
			t.Errorf("the agent's log holds %q", secret)
		}
	}
}
