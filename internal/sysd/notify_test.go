package sysd_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/internal/sysd"
)

// fakeSystemd is a NOTIFY_SOCKET: every datagram sd_notify sends arrives on Msgs.
type fakeSystemd struct {
	Path string
	Msgs chan string
}

func listenNotify(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeSystemd{Path: path, Msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(f.Msgs)
				return
			}
			f.Msgs <- string(buf[:n])
		}
	}()
	return f
}

// next waits for the next datagram.
func (f *fakeSystemd) next(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case m, ok := <-f.Msgs:
		if !ok {
			t.Fatal("notify socket closed")
		}
		return m
	case <-time.After(within):
		t.Fatalf("no sd_notify message within %s", within)
	}
	return ""
}

// waitFor reads datagrams until one satisfies ok, and returns those before it.
func (f *fakeSystemd) waitFor(t *testing.T, within time.Duration, what string, ok func(string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	var before []string
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no %s within %s; got %q", what, within, before)
		}
		select {
		case m, open := <-f.Msgs:
			if !open {
				t.Fatalf("notify socket closed waiting for %s", what)
			}
			if ok(m) {
				return before
			}
			before = append(before, m)
		case <-time.After(left):
		}
	}
}

func TestNotifierSequence(t *testing.T) {
	sd := listenNotify(t)
	t.Setenv("NOTIFY_SOCKET", sd.Path)
	t.Setenv("WATCHDOG_USEC", "100000") // WatchdogSec=100ms: pings every 50ms
	t.Setenv("WATCHDOG_PID", "")
	n := sysd.NewNotifier(zerolog.Nop())
	n.StatusEvery = 20 * time.Millisecond
	if !n.Enabled() || n.Watchdog() != 100*time.Millisecond {
		t.Fatalf("enabled=%v watchdog=%s", n.Enabled(), n.Watchdog())
	}

	n.Starting("Starting: waiting for the homeserver")
	if m := sd.next(t, 5*time.Second); m != "STATUS=Starting: waiting for the homeserver" {
		t.Fatalf("first message %q", m)
	}
	// Nothing else before the ready point: in particular no READY=1.
	select {
	case m := <-sd.Msgs:
		t.Fatalf("message before Ready: %q", m)
	default:
	}

	n.Ready("0 devices paired, 0 connected")
	if m := sd.next(t, 5*time.Second); m != "READY=1\nSTATUS=0 devices paired, 0 connected" {
		t.Fatalf("ready message %q", m)
	}

	var paired, failing atomic.Int32
	var failedProbes atomic.Int32
	check := func(ctx context.Context) (string, error) {
		if failing.Load() != 0 {
			failedProbes.Add(1)
			return "", errors.New("database is locked")
		}
		return fmt.Sprintf("%d devices paired, 0 connected", paired.Load()), nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); n.Run(ctx, check) }()

	// Watchdog pings come while the check passes.
	pings := 0
	sd.waitFor(t, 10*time.Second, "three WATCHDOG=1", func(m string) bool {
		if m == "WATCHDOG=1" {
			pings++
		}
		return pings == 3
	})
	// The status follows the counts (sent only when it changed).
	paired.Store(2)
	before := sd.waitFor(t, 10*time.Second, "the new status", func(m string) bool { return m == "STATUS=2 devices paired, 0 connected" })
	for _, m := range before {
		if strings.HasPrefix(m, "STATUS=") {
			t.Fatalf("unchanged status resent: %q", m)
		}
	}
	// A failing health check stops the pings and says so in the status.
	failing.Store(1)
	sd.waitFor(t, 10*time.Second, "the degraded status", func(m string) bool { return m == "STATUS=Degraded: database is locked" })
	start := failedProbes.Load()
	var after []string
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	deadline := time.After(10 * time.Second)
	for failedProbes.Load() < start+4 { // several watchdog periods of failed checks
		select {
		case m := <-sd.Msgs:
			after = append(after, m)
		case <-poll.C:
		case <-deadline:
			t.Fatalf("health check not retried: %d failed probes", failedProbes.Load()-start)
		}
	}
	if got := strings.Count(strings.Join(after, "\n"), "WATCHDOG=1"); got > 1 { // one may have been in flight
		t.Fatalf("%d watchdog pings while the health check failed: %q", got, after)
	}
	failing.Store(0)
	sd.waitFor(t, 10*time.Second, "pings again", func(m string) bool { return m == "WATCHDOG=1" })

	cancel()
	<-done
	n.Stopping()
	sd.waitFor(t, 5*time.Second, "STOPPING=1", func(m string) bool { return strings.HasPrefix(m, "STOPPING=1\n") })
}

func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := sysd.NewNotifier(zerolog.Nop())
	if n.Enabled() {
		t.Fatal("enabled without NOTIFY_SOCKET")
	}
	n.Starting("x")
	n.Ready("x")
	n.Stopping()
	// Run returns at once instead of ticking for nobody.
	n.Run(context.Background(), func(context.Context) (string, error) { t.Error("check called"); return "", nil })
}
