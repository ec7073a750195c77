package testpeer

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
)

// HomeserverEnv picks the homeserver the harness and tests start by default:
// "dendrite" (the default when unset), "synapse" or "tuwunel". `make test`
// also accepts "all" (and "both": Dendrite and Synapse), which it turns into
// one pass per homeserver.
const HomeserverEnv = "RCSGATE_HOMESERVER"

// Kinds lists the homeservers Start knows, default first.
var Kinds = []string{"dendrite", "synapse", "tuwunel"}

// KindFromEnv returns the homeserver named by $RCSGATE_HOMESERVER.
func KindFromEnv() (string, error) {
	v := strings.TrimSpace(os.Getenv(HomeserverEnv))
	switch v {
	case "":
		return Kinds[0], nil
	case "dendrite", "synapse", "tuwunel":
		return v, nil
	case "both", "all":
		// A process runs one stack against one server; the passes are
		// `make test`'s job.
		return "", fmt.Errorf("testpeer: %s=%s means one `make test` pass per homeserver; a single go test run needs dendrite, synapse or tuwunel", HomeserverEnv, v)
	default:
		return "", fmt.Errorf("testpeer: %s=%q: want dendrite, synapse, tuwunel, both or all", HomeserverEnv, v)
	}
}

// Start starts the homeserver named kind ("" means KindFromEnv).
func Start(ctx context.Context, kind string, opts Options) (Homeserver, error) {
	if kind == "" {
		var err error
		if kind, err = KindFromEnv(); err != nil {
			return nil, err
		}
	}
	switch kind {
	case "dendrite":
		return StartDendrite(ctx, opts)
	case "synapse":
		return StartSynapse(ctx, opts)
	case "tuwunel":
		return StartTuwunel(ctx, opts)
	default:
		return nil, fmt.Errorf("testpeer: unknown homeserver %q (want one of %v)", kind, Kinds)
	}
}

// StartT is Start for a test, as StartDendriteT: t.TempDir() when opts.Dir
// is empty, the log tail on failure, Stop in t.Cleanup, and a failure (never
// a skip) when the homeserver is not installed — except tuwunel, whose test
// build exists only next to this team's checkouts: without it the test
// skips, in one line.
func StartT(t testing.TB, kind string, opts Options) Homeserver {
	t.Helper()
	SkipUnlessAvailable(t, kind)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	hs, err := Start(t.Context(), kind, opts)
	if err != nil {
		t.Fatalf("start homeserver: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tail of %s:\n%s", hs.LogPath(), strings.TrimRight(fileTail(hs.LogPath(), logTailBytes), "\n"))
		}
		if err := hs.Stop(); err != nil {
			t.Errorf("stop %s: %v", hs.Kind(), err)
		}
	})
	return hs
}

// StartSynapseT is StartT for Synapse.
func StartSynapseT(t testing.TB, opts Options) Homeserver {
	t.Helper()
	return StartT(t, "synapse", opts)
}

// SkipUnlessAvailable skips t (one line) when kind is tuwunel and its test
// build is not on this machine; kind "" means KindFromEnv.
func SkipUnlessAvailable(t testing.TB, kind string) {
	t.Helper()
	if kind == "" {
		kind, _ = KindFromEnv()
	}
	if kind != "tuwunel" {
		return
	}
	if ok, why := TuwunelAvailable(); !ok {
		t.Skip("tuwunel: " + why)
	}
}

// StartTuwunelT is StartT for tuwunel.
func StartTuwunelT(t testing.TB, opts Options) Homeserver {
	t.Helper()
	return StartT(t, "tuwunel", opts)
}
