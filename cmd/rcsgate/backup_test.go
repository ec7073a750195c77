package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/rcsgate/rcsgate/internal/backup"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/store"
)

// The CLI round trip: init, pair a device, back up, restore elsewhere, and
// the restored state lists the device with the same CA and channel key.
func TestBackupRestoreCLI(t *testing.T) {
	ctx := context.Background()
	const pass = "correct horse battery staple"
	t.Setenv(backup.PassphraseEnv, "")
	state := filepath.Join(t.TempDir(), "state")
	cfg := filepath.Join(state, "config.yaml")
	runOut := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, args, &out, &errOut)
		if strings.Contains(out.String()+errOut.String(), pass) {
			t.Fatalf("%v printed the passphrase", args)
		}
		return out.String(), errOut.String(), err
	}
	if _, _, err := runOut("init", "--state", state, "--homeserver", "http://127.0.0.1:8008", "--domain", "example.org"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runOut("pair", "--config", cfg, "--user", "@a:example.org", "--no-qr"); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreateCA(state) // what `serve` does on its first start
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)
	der, id, err := ca.SignCSR(csr, "pixel")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(state, "rcsgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddDevice(ctx, store.Device{ID: id.String(), Name: "pixel", Owner: "@a:example.org", CertDER: der}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	backups := filepath.Join(t.TempDir(), "backups")
	if _, _, err := runOut("backup", "--config", cfg, "--to", backups); err == nil || !strings.Contains(err.Error(), backup.PassphraseEnv) {
		t.Fatalf("backup without a key: %v", err)
	}
	if _, _, err := runOut("backup", "--config", cfg); !errors.Is(err, errUsage) {
		t.Fatalf("backup without --to: %v", err)
	}
	// A weak passphrase is refused before anything is written.
	t.Setenv(backup.PassphraseEnv, "tr0ub4dor&3")
	if _, _, err := runOut("backup", "--config", cfg, "--to", backups); !errors.Is(err, backup.ErrWeakPassphrase) {
		t.Fatalf("backup with a weak passphrase: %v", err)
	}
	if des, _ := os.ReadDir(backups); len(des) != 0 {
		t.Fatalf("a refused backup left %d files", len(des))
	}
	t.Setenv(backup.PassphraseEnv, pass)
	out, _, err := runOut("backup", "--config", cfg, "--to", backups)
	if err != nil || !strings.Contains(out, "Wrote "+backups) {
		t.Fatalf("backup: %q %v", out, err)
	}

	restored := filepath.Join(t.TempDir(), "restored")
	out, _, err = runOut("restore", "--from", backups, "--state", restored)
	if err != nil || !strings.Contains(out, "Restored") {
		t.Fatalf("restore: %q %v", out, err)
	}
	out, _, err = runOut("status", "--config", filepath.Join(restored, "config.yaml"))
	if err != nil || !strings.Contains(out, id.String()) || !strings.Contains(out, "pixel") {
		t.Fatalf("status after restore: %q %v", out, err)
	}
	for _, f := range []string{pki.CAKeyFile, pki.CACertFile, pki.ChannelKeyFile, pki.ChannelCertFile} {
		a, _ := os.ReadFile(filepath.Join(state, f))
		b, _ := os.ReadFile(filepath.Join(restored, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s differs after restore", f)
		}
	}
	if _, _, err := runOut("restore", "--from", backups, "--state", restored); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over existing state: %v", err)
	}
	if _, _, err := runOut("restore", "--from", backups, "--state", restored, "--force"); err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(wrong, []byte("not it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runOut("restore", "--from", backups, "--state", filepath.Join(t.TempDir(), "x"), "--passphrase-file", wrong); err == nil || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Fatalf("wrong passphrase: %v", err)
	}

	// To an age recipient; the passphrase in the environment would be ambiguous.
	ident, _ := age.GenerateX25519Identity()
	if _, _, err := runOut("backup", "--config", cfg, "--to", backups, "--recipient", ident.Recipient().String()); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("recipient and passphrase: %v", err)
	}
	t.Setenv(backup.PassphraseEnv, "")
	only := filepath.Join(t.TempDir(), "one")
	if _, _, err := runOut("backup", "--config", cfg, "--to", only, "--recipient", ident.Recipient().String()); err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(idFile, []byte(ident.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(only, "rcsgate-backup-*.tar.age"))
	if len(names) != 1 {
		t.Fatalf("archives %v", names)
	}
	again := filepath.Join(t.TempDir(), "again")
	if _, _, err := runOut("restore", "--from", names[0], "--state", again, "--identity-file", idFile); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runOut("restore", "--from", names[0], "--state", filepath.Join(t.TempDir(), "y")); err == nil || !strings.Contains(err.Error(), "nothing to decrypt with") {
		t.Fatalf("restore without a key: %v", err)
	}
}
