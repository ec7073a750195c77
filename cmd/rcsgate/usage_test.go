package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rcsgate/rcsgate/internal/backup"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/store"
)

// fill turns a usage line into arguments: brackets around optional parts
// go, and every word that vals names is replaced by its value.
func fill(line string, vals map[string]string) []string {
	var args []string
	for _, w := range strings.Fields(line) {
		w = strings.Trim(w, "[]")
		if v, ok := vals[w]; ok {
			w = v
		}
		args = append(args, w)
	}
	return args
}

// TestEveryVerbAsItsUsageLineShows runs each verb exactly as rcsgate's
// usage text shows it — flags after positional arguments where the line
// puts them there, every optional part included — with the placeholders
// filled in. The device verbs also run with the flags first.
func TestEveryVerbAsItsUsageLineShows(t *testing.T) {
	ctx := context.Background()
	t.Setenv(backup.PassphraseEnv, "correct horse battery staple")
	tmp := t.TempDir()
	state, backups, restored := filepath.Join(tmp, "state"), filepath.Join(tmp, "backups"), filepath.Join(tmp, "restored")
	cfg := filepath.Join(state, "config.yaml")
	var devID string
	addDevice := func(t *testing.T) {
		st, err := store.Open(ctx, filepath.Join(state, "rcsgate.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		key, _ := pki.NewDeviceKey()
		id, _ := pki.DeviceIDOf(key.Public())
		devID = id.String()[:7]
		if err := st.AddDevice(ctx, store.Device{ID: id.String(), Name: "pixel", Owner: "@a:example.org", CertDER: []byte{1}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(backups, 0o700); err != nil {
		t.Fatal(err)
	}
	usageText := strings.Join(strings.Fields(usage), " ")
	steps := []struct {
		line    string // as in the usage text, without "rcsgate "
		inUsage string // the usage line it comes from, if line is one of its variants
		vals    func() map[string]string
		before  func(*testing.T)
		wantOut string
		wantErr string // the verb ran and failed past its flags with this
	}{
		{line: "init --state DIR --homeserver URL --domain NAME [--admin @you:NAME]",
			vals: func() map[string]string {
				return map[string]string{"DIR": state, "URL": "http://127.0.0.1:8008", "NAME": "example.org", "@you:NAME": "@admin:example.org"}
			},
			wantOut: "Wrote"},
		{line: "serve [--config FILE]",
			vals:    func() map[string]string { return map[string]string{"FILE": filepath.Join(tmp, "missing.yaml")} },
			wantErr: "read config"},
		{line: "registration [--format yaml] [--config FILE]", inUsage: "registration [--format yaml|tuwunel] [--config FILE]",
			vals:    func() map[string]string { return map[string]string{"FILE": cfg} },
			wantOut: "as_token:"},
		{line: "registration [--format tuwunel] [--config FILE]", inUsage: "registration [--format yaml|tuwunel] [--config FILE]",
			vals:    func() map[string]string { return map[string]string{"FILE": cfg} },
			wantOut: "[global.appservice.rcsgate]"},
		{line: "pair --user @you:NAME [--name NAME] [--ttl 10m] [--config FILE]",
			vals: func() map[string]string {
				return map[string]string{"@you:NAME": "@a:example.org", "NAME": "pixel", "FILE": cfg}
			},
			wantOut: "rcsgate://pair?"},
		{line: "status [--config FILE]",
			vals:    func() map[string]string { return map[string]string{"FILE": cfg} },
			wantOut: "No paired devices"},
		{line: "device list [--config FILE]", inUsage: "device list|revoke ID|rename ID NAME [--config FILE]",
			vals:   func() map[string]string { return map[string]string{"FILE": cfg} },
			before: addDevice, wantOut: "pixel"},
		{line: "device --config FILE list", inUsage: "device list|revoke ID|rename ID NAME [--config FILE]",
			vals:    func() map[string]string { return map[string]string{"FILE": cfg} },
			wantOut: "pixel"},
		{line: "device rename ID NAME [--config FILE]", inUsage: "device list|revoke ID|rename ID NAME [--config FILE]",
			vals:    func() map[string]string { return map[string]string{"ID": devID, "NAME": "work", "FILE": cfg} },
			wantOut: `to "work"`},
		{line: "backup --to DIR|s3://BUCKET/PREFIX [--keep N] [--config FILE]",
			vals: func() map[string]string {
				return map[string]string{"DIR|s3://BUCKET/PREFIX": backups, "N": "2", "FILE": cfg}
			},
			wantOut: "Wrote"},
		{line: "restore --from FILE|DIR|s3://… --state DIR [--force]",
			vals:    func() map[string]string { return map[string]string{"FILE|DIR|s3://…": backups, "DIR": restored} },
			wantOut: "Restored"},
		{line: "device revoke ID [--config FILE]", inUsage: "device list|revoke ID|rename ID NAME [--config FILE]",
			vals:    func() map[string]string { return map[string]string{"ID": devID, "FILE": cfg} },
			wantOut: "Revoked"},
		{line: "device --config FILE revoke ID", inUsage: "device list|revoke ID|rename ID NAME [--config FILE]",
			vals:    func() map[string]string { return map[string]string{"ID": devID, "FILE": cfg} },
			wantOut: "Revoked"},
	}
	for _, s := range steps {
		src := s.inUsage
		if src == "" {
			src = s.line
		}
		if !strings.Contains(usageText, "rcsgate "+src) {
			t.Fatalf("the usage text has no line %q: update this test with it", "rcsgate "+src)
		}
		if s.before != nil {
			s.before(t)
		}
		args := fill(s.line, s.vals())
		var out, errOut bytes.Buffer
		err := run(ctx, args, &out, &errOut)
		switch {
		case errors.Is(err, errUsage):
			t.Fatalf("rcsgate %s: refused as a usage error:\n%s", strings.Join(args, " "), errOut.String())
		case s.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Fatalf("rcsgate %s: error %v, want one about %q", strings.Join(args, " "), err, s.wantErr)
			}
		case err != nil:
			t.Fatalf("rcsgate %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		case !strings.Contains(out.String(), s.wantOut):
			t.Fatalf("rcsgate %s: printed %q, want %q in it", strings.Join(args, " "), out.String(), s.wantOut)
		}
	}
}
