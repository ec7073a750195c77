package gateway

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func validConfig(t *testing.T) *Config {
	t.Helper()
	c, err := NewConfig(InitOptions{StateDir: t.TempDir(), HomeserverURL: "http://127.0.0.1:8008", Domain: "example.org", Admin: "@a:example.org"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; empty = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no state dir", func(c *Config) { c.StateDir = "" }, "state_dir"},
		{"bad homeserver url", func(c *Config) { c.Homeserver.URL = "localhost:8008" }, "homeserver.url"},
		{"bad domain", func(c *Config) { c.Homeserver.Domain = "a b" }, "homeserver.domain"},
		{"bad listen", func(c *Config) { c.Channel.Listen = "4443" }, "channel.listen"},
		{"short token", func(c *Config) { c.Appservice.ASToken = "x" }, "tokens"},
		{"bad id key", func(c *Config) { c.IDKey = "!!" }, "id_key"},
		{"no public addrs", func(c *Config) { c.Channel.PublicAddrs = nil }, "public_addrs"},
		{"bad permission", func(c *Config) { c.Permissions["*"] = "god" }, "permissions"},
		{"bad ttl", func(c *Config) { c.PairTTL = 0 }, "pair_ttl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			tc.mutate(c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	c := validConfig(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("config mode %v, want 0600: it holds tokens", st.Mode().Perm())
	}
	got, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Appservice.ASToken != c.Appservice.ASToken || got.PairTTL != 10*time.Minute {
		t.Fatalf("round trip changed the config: %+v", got)
	}
	// Unknown keys are refused: a typo must not silently fall back to a default.
	if err := os.WriteFile(path, []byte("state_dir: /x\nhomeserverr: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "homeserverr") {
		t.Fatalf("typo accepted: %v", err)
	}
}

func TestRegistration(t *testing.T) {
	c := validConfig(t)
	reg, err := c.Registration()
	if err != nil {
		t.Fatal(err)
	}
	if reg.AppToken != c.Appservice.ASToken || reg.ServerToken != c.Appservice.HSToken {
		t.Fatalf("registration does not match config: %+v", reg)
	}
	again, _ := c.Registration()
	if again.SenderLocalpart != reg.SenderLocalpart {
		t.Fatal("registration differs between two calls: re-installing it would change the sender")
	}
	if reg.URL != "http://127.0.0.1:29340" {
		t.Fatalf("registration URL %q", reg.URL)
	}
	var ghostNS string
	for _, ns := range reg.Namespaces.UserIDs {
		if ns.Exclusive && strings.Contains(ns.Regex, "rcs_") {
			ghostNS = ns.Regex
		}
	}
	re, err := regexp.Compile("^" + ghostNS + "$")
	if ghostNS == "" || err != nil || !re.MatchString("@rcs_abc:example.org") || re.MatchString("@alice:example.org") {
		t.Fatalf("ghost namespace %q wrong (%v)", ghostNS, err)
	}
}
