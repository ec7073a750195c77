package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/harness"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// e2eePython finds a Python with matrix-nio and python-olm (Debian:
// python3-matrix-nio python3-olm). $RCSGATE_PYTHON wins; Debian's own
// interpreter comes before whatever python3 is first on PATH (pyenv and
// venvs do not see Debian's packages). Missing, the test skips, or fails
// under CI=true.
func e2eePython(t *testing.T) string {
	t.Helper()
	cands := []string{os.Getenv("RCSGATE_PYTHON"), "/usr/bin/python3", "python3"}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if err := exec.Command(c, "-I", "-c", "import nio, olm").Run(); err == nil {
			return c
		}
	}
	msg := "no python3 with matrix-nio and olm (apt-get install python3-matrix-nio python3-olm, or set RCSGATE_PYTHON)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// startLines starts a client program with its stderr kept (for failure
// messages) and returns its stdout line by line.
func startLines(t *testing.T, cmd *exec.Cmd) (*bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return bufio.NewScanner(stdout), stderr
}

// e2eeResult is one JSON line from testdata/e2ee_client.py.
type e2eeResult struct {
	Stage          string `json:"stage"`
	Error          string `json:"error"`
	Sent, Echoes   int
	Text           bool   `json:"text"`
	ImageSHA256    string `json:"image_sha256"`
	ImageEncrypted bool   `json:"image_encrypted"`
}

// TestEncryptedPortal: a user with an ordinary E2EE client (matrix-nio, a
// fresh device, nothing verified) talks with the echo contact in an
// encrypted portal — texts both ways and an image from the contact — and
// afterwards none of those bodies or image bytes is anywhere in plaintext in
// the homeserver's files or the bridge's state.
func TestEncryptedPortal(t *testing.T) {
	py := e2eePython(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st := startStack(t, ctx, harness.Options{Encryption: true})
	cli, err := harness.Login(ctx, st.Info.Homeserver, st.Info.UserID, st.Info.Password)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	mgmt, err := cli.OpenDM(ctx, id.UserID(st.Info.BotUserID))
	if err != nil {
		t.Fatal(err)
	}
	portal, ghost, err := cli.StartChat(ctx, mgmt, harness.EchoNumber)
	if err != nil {
		t.Fatal(err)
	}
	var enc event.EncryptionEventContent
	if err := cli.StateEvent(ctx, portal, event.StateEncryption, "", &enc); err != nil || enc.Algorithm != id.AlgorithmMegolmV1 {
		t.Fatalf("portal %s is not encrypted (m.room.encryption %+v, %v)", portal, enc, err)
	}
	checkBotCrossSigned(t, ctx, cli, id.UserID(st.Info.BotUserID), st.Opts.Homeserver)

	n := nonce(t)
	var msgs []string
	for i := range 5 {
		msgs = append(msgs, fmt.Sprintf("e2ee secret %s number %d", n, i))
	}
	inbound := "e2ee reply " + n + " from the contact"
	caption := "e2ee caption " + n
	img := make([]byte, 64<<10)
	if _, err := rand.Read(img); err != nil {
		t.Fatal(err)
	}
	copy(img, []byte{0xff, 0xd8, 0xff, 0xe0}) // JPEG SOI
	// A file the client encrypts for the contact: larger than mautrix's
	// in-memory threshold, so the bridge streams it (decrypting on the way).
	doc := make([]byte, 3<<20)
	if _, err := rand.Read(doc); err != nil {
		t.Fatal(err)
	}

	job, _ := json.Marshal(map[string]any{
		"homeserver": st.Info.Homeserver, "user_id": st.Info.UserID, "password": st.Info.Password,
		"room_id": portal, "ghost": ghost, "store": t.TempDir(), "messages": msgs,
		"inbound_text": inbound, "image_sha256": sum(img), "timeout": 90, "bot": st.Info.BotUserID,
		"file_b64": base64.StdEncoding.EncodeToString(doc),
	})
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer pcancel()
	cmd := exec.CommandContext(pctx, py, "-I", filepath.Join("testdata", "e2ee_client.py"))
	cmd.Stdin = bytes.NewReader(job)
	lines, stderr := startLines(t, cmd)
	defer func() { _ = cmd.Wait() }()
	next := func(want string) e2eeResult {
		t.Helper()
		for lines.Scan() {
			var r e2eeResult
			if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
				continue // not ours
			}
			if r.Error != "" {
				t.Fatalf("nio client: %s\nstderr:\n%s", r.Error, tailOf(stderr.Bytes()))
			}
			if r.Stage == want {
				return r
			}
		}
		_ = cmd.Wait()
		t.Fatalf("nio client ended before %q\nstderr:\n%s", want, tailOf(stderr.Bytes()))
		return e2eeResult{}
	}

	// Matrix → phone: the contact got every text the client encrypted.
	r := next("echoed")
	if r.Echoes != len(msgs) {
		t.Fatalf("client read %d of %d echoes", r.Echoes, len(msgs))
	}
	for i, m := range msgs {
		if _, err := st.WaitSent(ctx, func(s sim.Sent) bool { return s.Text == m && strings.HasSuffix(s.Chat, "0100") }); err != nil {
			t.Fatalf("the contact did not get message %d: %v", i, err)
		}
	}
	// Phone → Matrix: a text and an image into the encrypted portal.
	if err := st.Inject(ctx, harness.EchoNumber, inbound); err != nil {
		t.Fatal(err)
	}
	if err := st.InjectEvent(ctx, sim.InjectRequest{From: harness.EchoNumber, Kind: wire.KindMedia, Text: caption,
		Media: &wire.Media{Name: "photo-" + n + ".jpg", Mime: "image/jpeg", Width: 64, Height: 64}, Data: img}); err != nil {
		t.Fatal(err)
	}
	r = next("done")
	if !r.Text || !r.ImageEncrypted || r.ImageSHA256 != sum(img) {
		t.Fatalf("client got text=%v encrypted image=%v sha256 %s, want %s", r.Text, r.ImageEncrypted, r.ImageSHA256, sum(img))
	}
	// Matrix → phone: an encrypted file reaches the phone as its plaintext.
	next("file_sent")
	got, err := st.WaitSent(ctx, func(s sim.Sent) bool { return s.Media != nil && s.Media.Name == "doc.pdf" })
	if err != nil {
		t.Fatalf("the contact did not get the encrypted file: %v", err)
	}
	if got.Media.Size != int64(len(doc)) || got.Media.SHA256 != sum(doc) {
		t.Fatalf("the phone sent %d bytes with sha256 %s, want %d bytes with %s", got.Media.Size, got.Media.SHA256, len(doc), sum(doc))
	}
	// The admin command that resets the portal's Megolm session works
	// behind StatusMatrix (bridgev2's own would panic on the wrapper).
	next("reset")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nio client: %v\nstderr:\n%s", err, tailOf(stderr.Bytes()))
	}

	// At rest: stop everything (SQLite files and WALs as they stay on disk),
	// then look for every body and for pieces of the image in every file of
	// the homeserver and of the bridge. The agent's state is the phone's
	// side and out of scope.
	st.Down()
	secrets := map[string][]byte{"contact's text": []byte(inbound), "image caption": []byte(caption)}
	for i, m := range msgs {
		secrets[fmt.Sprintf("message %d", i)] = []byte(m)
	}
	for off := 4096; off+48 <= len(img); off += len(img) / 4 {
		secrets[fmt.Sprintf("image bytes at %d", off)] = img[off : off+48]
	}
	for off := 4096; off+48 <= len(doc); off += len(doc) / 4 {
		secrets[fmt.Sprintf("file bytes at %d", off)] = doc[off : off+48]
	}
	// The management room is not encrypted: its "start-chat" command must
	// be found, or the scan could not see plaintext at all.
	control := []byte("start-chat " + harness.EchoNumber)
	dirs := []string{filepath.Join(st.Opts.Dir, st.Opts.Homeserver), filepath.Join(st.Opts.Dir, "rcsgate")}
	files := []string{filepath.Join(st.Opts.Dir, "rcsgate.log")}
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				files = append(files, p)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var controlSeen bool
	var scanned int64
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		scanned += int64(len(b))
		controlSeen = controlSeen || bytes.Contains(b, control)
		for what, s := range secrets {
			if bytes.Contains(b, s) {
				rel, _ := filepath.Rel(st.Opts.Dir, p)
				t.Errorf("%s is stored in plaintext in %s", what, rel)
			}
		}
	}
	if !controlSeen {
		t.Fatalf("the unencrypted management room's command was not found in %d files (%d bytes): the scan proves nothing", len(files), scanned)
	}
	t.Logf("%d files (%d bytes) of %s and rcsgate scanned: no body, caption or image bytes in plaintext", len(files), scanned, st.Opts.Homeserver)
}

// checkBotCrossSigned: the bridge bot has one device with keys, and (except
// on Dendrite, which wants a password to upload cross-signing keys) a master
// key that signs its self-signing key, which signs that device: the chain a
// client follows once its user has verified the bot.
func checkBotCrossSigned(t *testing.T, ctx context.Context, cli *harness.Client, bot id.UserID, hs string) {
	t.Helper()
	resp, err := cli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{bot: {}}})
	if err != nil {
		t.Fatal(err)
	}
	devs := resp.DeviceKeys[bot]
	if len(devs) != 1 {
		t.Fatalf("bridge bot has %d devices with keys, want 1", len(devs))
	}
	if hs == "dendrite" {
		t.Log("dendrite: the bot is not cross-signed (encryption.self_sign is off there)")
		return
	}
	pub := func(k mautrix.CrossSigningKeys) id.KeyID {
		for kid := range k.Keys {
			return kid
		}
		return ""
	}
	mk, ssk := pub(resp.MasterKeys[bot]), pub(resp.SelfSigningKeys[bot])
	if mk == "" || ssk == "" {
		t.Fatalf("bridge bot has no cross-signing keys (master %q, self-signing %q)", mk, ssk)
	}
	if resp.SelfSigningKeys[bot].Signatures[bot][mk] == "" {
		t.Fatalf("bot's self-signing key is not signed by its master key")
	}
	for _, d := range devs {
		if d.Signatures[bot][ssk] == "" {
			t.Fatalf("bot device %s is not signed by its self-signing key", d.DeviceID)
		}
	}
}
