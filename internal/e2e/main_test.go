package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// TestMain skips the whole suite, in one line, when it is asked to run on
// tuwunel and the tuwunel test build is not on this machine (it exists only
// next to this team's checkouts, never on CI machines).
func TestMain(m *testing.M) {
	if kind, err := testpeer.KindFromEnv(); err == nil && kind == "tuwunel" {
		if ok, why := testpeer.TuwunelAvailable(); !ok {
			fmt.Println("tuwunel pass skipped:", why)
			os.Exit(0)
		}
	}
	os.Exit(m.Run())
}
