package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/internal/harness"
)

// TestRestoreOnFreshMachineKeepsPairing: back up a running bridge, stop it,
// restore the archive into an empty directory, run the restored bridge, and
// the paired phone comes back over QUIC without re-pairing (same device CA,
// same channel certificate it pinned), and chatting goes on in the same room.
func TestRestoreOnFreshMachineKeepsPairing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	st, cli, mgmt := up(t, ctx)
	portal, ghost, err := cli.StartChat(ctx, mgmt, harness.EchoNumber)
	if err != nil {
		t.Fatal(err)
	}
	say := func(text string) {
		t.Helper()
		from := cli.Now()
		if _, err := cli.SendText(ctx, portal, text); err != nil {
			t.Fatal(err)
		}
		if _, _, err := cli.WaitEvent(ctx, from, cli.Message(portal, ghost, text)); err != nil {
			t.Fatalf("no echo of %q: %v", text, err)
		}
	}
	say("before the backup " + nonce(t))

	backups := t.TempDir()
	t.Setenv("RCSGATE_BACKUP_PASSPHRASE", "correct horse battery staple")
	if out, err := st.Run(ctx, "rcsgate", "backup", "--config", st.ConfigPath, "--to", backups); err != nil {
		t.Fatalf("backup: %v: %s", err, out)
	}
	if err := st.StopGateway(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(t.TempDir(), "restored")
	out, err := st.Run(ctx, "rcsgate", "restore", "--from", backups, "--state", fresh)
	if err != nil {
		t.Fatalf("restore: %v: %s", err, out)
	}
	m := regexp.MustCompile(`rcsgate serve --config (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("restore did not say how to start: %s", out)
	}
	if _, err := os.Stat(m[1]); err != nil {
		t.Fatal(err)
	}
	// The old state must play no part: move it away before starting.
	old := filepath.Dir(st.ConfigPath)
	if err := os.Rename(old, old+".gone"); err != nil {
		t.Fatal(err)
	}
	st.ConfigPath = m[1]
	if err := st.StartGateway(ctx); err != nil {
		t.Fatal(err)
	}
	say("after the restore " + nonce(t))
	if bytes.Contains(st.AgentLog(), []byte("pair it again")) {
		t.Fatal("the agent was refused by the restored bridge")
	}
}
