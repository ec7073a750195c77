package testpeer

import (
	"strings"
	"testing"
)

// StartDendriteT starts Dendrite for a test, using t.TempDir() when
// opts.Dir is empty, and stops it in t.Cleanup. It fails the test (never
// skips) when the binaries are missing, so a broken setup is not silently
// green. It lives outside a _test file so other packages' tests can use it.
func StartDendriteT(t testing.TB, opts Options) Homeserver {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	hs, err := StartDendrite(t.Context(), opts)
	if err != nil {
		t.Fatalf("start dendrite: %v", err)
	}
	t.Cleanup(func() {
		// Show the server's side of a failure without making readers dig
		// through a temp dir that is about to be deleted.
		if t.Failed() {
			t.Logf("tail of %s:\n%s", hs.LogPath(), strings.TrimRight(fileTail(hs.LogPath(), logTailBytes), "\n"))
		}
		if err := hs.Stop(); err != nil {
			t.Errorf("stop dendrite: %v", err)
		}
	})
	return hs
}
