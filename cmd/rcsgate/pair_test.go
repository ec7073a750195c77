package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/store"
)

// TestPairRefusesUsersThePermissionsDoNotAllow: `rcsgate pair --user`
// makes links only for people the bridge lets log in, and no token is
// stored for anyone else.
func TestPairRefusesUsersThePermissionsDoNotAllow(t *testing.T) {
	ctx := context.Background()
	state := t.TempDir()
	cfgPath := filepath.Join(state, "config.yaml")
	if err := run(ctx, []string{"init", "--state", state, "--homeserver", "http://127.0.0.1:8008", "--domain", "example.org"},
		&bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Permissions["@relayonly:example.org"] = "relay"
	if err := cfg.Save(cfgPath); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"@mallory:elsewhere.net", "@relayonly:example.org"} {
		var out, errOut bytes.Buffer
		err := run(ctx, []string{"pair", "--config", cfgPath, "--user", user, "--no-qr"}, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "may not use this bridge") || strings.Contains(out.String(), "rcsgate://") {
			t.Fatalf("pair --user %s: err %v, stdout %q; want a refusal and no link", user, err, out.String())
		}
	}
	st, err := store.Open(ctx, filepath.Join(state, gateway.StoreFile))
	if err != nil {
		t.Fatal(err)
	}
	open, err := st.PairingOpen(ctx)
	st.Close()
	if err != nil || open {
		t.Fatalf("a pairing token was stored for a refused user (open=%v, %v)", open, err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"pair", "--config", cfgPath, "--user", "@alice:example.org", "--no-qr"}, &out, &bytes.Buffer{}); err != nil || !strings.Contains(out.String(), "rcsgate://pair?") {
		t.Fatalf("pair for an allowed user: %v, %q", err, out.String())
	}
}
