package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

func TestCLI(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	cfg := filepath.Join(state, "config.yaml")
	tests := []struct {
		name      string
		args      []string
		wantErr   error  // errUsage, nil, or errAny
		wantOut   string // substring of stdout
		wantErrIn string // substring of stderr
	}{
		{"no args", nil, errUsage, "", "Usage:"},
		{"help", []string{"help"}, nil, "rcsgate pair", ""},
		{"unknown", []string{"frobnicate"}, errUsage, "", `unknown command "frobnicate"`},
		{"init needs homeserver", []string{"init", "--state", state}, errUsage, "", "--homeserver and --domain are required"},
		{"init", []string{"init", "--state", state, "--homeserver", "http://127.0.0.1:8008", "--domain", "example.org"}, nil, "registration.yaml", ""},
		{"init refuses overwrite", []string{"init", "--state", state, "--homeserver", "http://127.0.0.1:8008", "--domain", "example.org"}, errAny, "", ""},
		{"registration", []string{"registration", "--config", cfg}, nil, "as_token:", ""},
		{"registration for tuwunel", []string{"registration", "--config", cfg, "--format", "tuwunel"}, nil, "[global.appservice.rcsgate]", ""},
		{"registration bad format", []string{"registration", "--config", cfg, "--format", "toml"}, errUsage, "", "use yaml or tuwunel"},
		{"pair needs user", []string{"pair", "--config", cfg}, errUsage, "", "--user must be"},
		{"pair bad ttl", []string{"pair", "--config", cfg, "--user", "@a:example.org", "--ttl", "48h"}, errUsage, "", "--ttl"},
		{"pair", []string{"pair", "--config", cfg, "--user", "@a:example.org"}, nil, "rcsgate://pair?", ""},
		{"status without devices", []string{"status", "--config", cfg}, nil, "No paired devices", ""},
		{"stray argument", []string{"status", "--config", cfg, "extra"}, errUsage, "", "unexpected argument"},
		{"missing config", []string{"status", "--config", filepath.Join(state, "nope.yaml")}, errAny, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(ctx, tc.args, &out, &errOut)
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("unexpected error %v; stderr %s", err, errOut.String())
			case tc.wantErr == errAny && err == nil:
				t.Fatal("want an error")
			case tc.wantErr == errUsage && !errors.Is(err, errUsage):
				t.Fatalf("got %v, want a usage error", err)
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Fatalf("stdout %q lacks %q", out.String(), tc.wantOut)
			}
			if !strings.Contains(errOut.String(), tc.wantErrIn) {
				t.Fatalf("stderr %q lacks %q", errOut.String(), tc.wantErrIn)
			}
		})
	}
	// The link pair prints parses and points at the configured channel.
	var out bytes.Buffer
	if err := run(ctx, []string{"pair", "--config", cfg, "--user", "@a:example.org"}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	l, err := wire.ParsePairLink(strings.TrimSpace(out.String()))
	if err != nil || l.Addrs[0] != "127.0.0.1:4443" {
		t.Fatalf("pair printed %q: %v", out.String(), err)
	}
	if st, _ := os.Stat(filepath.Join(state, "registration.yaml")); st.Mode().Perm() != 0o600 {
		t.Fatal("registration.yaml holds tokens and must be 0600")
	}
}

var errAny = errors.New("any error")

func TestDeviceCommands(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	cfg := filepath.Join(state, "config.yaml")
	quiet := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, args, &out, &bytes.Buffer{})
		return out.String(), err
	}
	if _, err := quiet("init", "--state", state, "--homeserver", "http://127.0.0.1:8008", "--domain", "example.org"); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, filepath.Join(state, "rcsgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewDeviceKey()
	id, _ := pki.DeviceIDOf(key.Public())
	if err := st.AddDevice(ctx, store.Device{ID: id.String(), Name: "pixel", Owner: "@a:example.org", CertDER: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	if out, err := quiet("device", "list", "--config", cfg); err != nil || !strings.Contains(out, "pixel") || !strings.Contains(out, "offline") {
		t.Fatalf("list: %q %v", out, err)
	}
	if _, err := quiet("device", "rename", "--config", cfg, id.String()[:7], "work phone"); err != nil {
		t.Fatal(err)
	}
	if _, err := quiet("device", "revoke", "--config", cfg, "NOSUCH1"); err == nil {
		t.Fatal("revoking an unknown device succeeded")
	}
	if _, err := quiet("device", "revoke", "--config", cfg, "ABC"); err == nil {
		t.Fatal("a 3-character prefix was accepted")
	}
	if _, err := quiet("device", "frob", "--config", cfg); !errors.Is(err, errUsage) {
		t.Fatalf("unknown subcommand: %v", err)
	}
	if _, err := quiet("device", "revoke", "--config", cfg, strings.ToLower(id.String())); err != nil {
		t.Fatal(err)
	}
	out, err := quiet("status", "--config", cfg)
	if err != nil || !strings.Contains(out, "work phone") || !strings.Contains(out, "revoked") {
		t.Fatalf("status after rename and revoke: %q %v", out, err)
	}
}
