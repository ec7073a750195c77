package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/harness"
)

// TestNothingReadableAtRest: once messages are delivered both ways, their
// text is in no file of the bridge's state directory or of the agent's —
// while both still run (databases open, WALs live, the agent's journal
// compacted by age), and again after they stopped. State directories are
// 0700 and database and journal files 0600. The simulated phone's own
// record of what it sent (sim-sent.jsonl, sim-media/) stands for the
// phone's messaging app and is left out.
func TestNothingReadableAtRest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, cli, mgmt := upWith(t, ctx, harness.Options{AgentArgs: []string{"--wipe-after", "1s"}})
	portal, ghost, err := cli.StartChat(ctx, mgmt, harness.EchoNumber)
	if err != nil {
		t.Fatal(err)
	}
	n := nonce(t)
	var bodies []string
	for i := range 3 {
		body := fmt.Sprintf("at rest %s out %d", n, i)
		bodies = append(bodies, body)
		from := cli.Now()
		if _, err := cli.SendText(ctx, portal, body); err != nil {
			t.Fatal(err)
		}
		// The echo contact answers with the same text: it came back through
		// the agent's journal and the bridge the other way.
		if _, _, err := cli.WaitEvent(ctx, from, cli.Message(portal, ghost, body)); err != nil {
			t.Fatalf("no echo of message %d: %v", i, err)
		}
	}
	inbound := "at rest " + n + " from a new number"
	bodies = append(bodies, inbound)
	from := cli.Now()
	if err := st.Inject(ctx, "+12025550123", inbound); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cli.WaitEvent(ctx, from, cli.Message("", "", inbound)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.WaitSent(ctx, func(s sim.Sent) bool { return s.Text == bodies[2] }); err != nil {
		t.Fatal(err)
	}

	dirs := []string{filepath.Join(st.Opts.Dir, "rcsgate"), st.AgentState}
	scan := func() (hits []string, scanned int) {
		for _, dir := range dirs {
			err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					if os.IsNotExist(err) {
						return nil // removed while we walked (a compaction)
					}
					return err
				}
				if d.IsDir() && d.Name() == "sim-media" {
					return fs.SkipDir
				}
				if d.Name() == sim.SentFile {
					return nil
				}
				if !d.Type().IsRegular() {
					return nil
				}
				b, err := os.ReadFile(p)
				if os.IsNotExist(err) {
					return nil
				} else if err != nil {
					return err
				}
				scanned++
				for _, body := range bodies {
					if bytes.Contains(b, []byte(body)) {
						rel, _ := filepath.Rel(st.Opts.Dir, p)
						hits = append(hits, fmt.Sprintf("%q in %s", body, rel))
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		return hits, scanned
	}
	// Running: the bridge wipes its WAL half a second after the acks, the
	// agent compacts its journal a second after the last delivery.
	deadline := time.Now().Add(30 * time.Second)
	for {
		hits, scanned := scan()
		if len(hits) == 0 {
			t.Logf("running: %d files scanned, no body", scanned)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered text still on disk while running:\n%s", strings.Join(hits, "\n"))
		}
		time.Sleep(100 * time.Millisecond) // polling the disk, not synchronising
	}
	checkModes(t, dirs)

	st.Down()
	if hits, scanned := scan(); len(hits) > 0 {
		t.Fatalf("delivered text on disk after stopping:\n%s", strings.Join(hits, "\n"))
	} else if scanned < 5 {
		t.Fatalf("only %d files scanned: the scan proves nothing", scanned)
	}
	for name, log := range map[string][]byte{"rcsgate": st.GatewayLog(), "agent": st.AgentLog()} {
		for _, body := range bodies {
			if bytes.Contains(log, []byte(body)) {
				t.Errorf("%s log holds %q", name, body)
			}
		}
	}
}

// checkModes: directories 0700; databases, WALs, keys and journal
// segments 0600 (certificates may be 0644).
func checkModes(t *testing.T, dirs []string) {
	t.Helper()
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			info, err := d.Info()
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			mode := info.Mode().Perm()
			switch name := d.Name(); {
			case p == dir && mode != 0o700:
				t.Errorf("%s is %v, want 0700", p, mode)
			case d.IsDir() && mode&0o077 != 0:
				t.Errorf("directory %s is %v, open to others", p, mode)
			case strings.HasSuffix(name, ".crt") || strings.HasSuffix(name, ".pem") && !strings.Contains(name, "key"):
			case !d.IsDir() && mode&0o077 != 0:
				t.Errorf("%s is %v, want 0600", p, mode)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
