package gateway

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestPrivateStateDir(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	fresh := filepath.Join(t.TempDir(), "state")
	loose := filepath.Join(t.TempDir(), "loose")
	if err := os.Mkdir(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{fresh, loose} {
		if err := PrivateStateDir(dir); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(dir)
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Fatalf("%s: mode %v (%v), want 0700", dir, st.Mode().Perm(), err)
		}
	}
}

func TestMayPair(t *testing.T) {
	c := &Config{Permissions: map[string]string{"example.org": "user", "@boss:other.net": "admin", "@guest:example.org": "relay", "*": "relay"}}
	tests := []struct {
		user string
		ok   bool
	}{
		{"@alice:example.org", true},
		{"@boss:other.net", true},
		{"@guest:example.org", false},
		{"@mallory:evil.net", false},
		{"not-a-user", false},
		{"@:example.org", false},
	}
	for _, tc := range tests {
		if err := c.MayPair(tc.user); (err == nil) != tc.ok {
			t.Errorf("MayPair(%q) = %v, want ok=%v", tc.user, err, tc.ok)
		}
	}
}
