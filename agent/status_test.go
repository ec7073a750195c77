package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// waitStatus waits for the first status that satisfies ok.
func waitStatus(t *testing.T, a *Agent, what string, ok func(Status) bool) Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	s := a.Status()
	for !ok(s) {
		var err error
		if s, err = a.WaitStatus(ctx, s); err != nil {
			t.Fatalf("status never %s; last %+v", what, s)
		}
	}
	return s
}

func TestStatusFollowsTheChannel(t *testing.T) {
	srv := newFakeServer(t, nil)
	before := time.Now()
	ra := startAgent(t, srv, nil)
	p := srv.nextChannel(t)
	s := waitStatus(t, ra.Agent, "connected", func(s Status) bool { return s.Connected })
	if s.Since.Before(before) || s.LastError != "" || s.Unpaired {
		t.Fatalf("connected status %+v", s)
	}
	// A message from the phone waits for the server's ack: Out counts it.
	if err := ra.sim.Inject(quietNumber, "status?"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ra.Agent, "one waiting", func(s Status) bool { return s.Out == 1 })
	in := nextMessage(t, p)
	p.send(t, wire.Ack{IDs: []string{in.ID}})
	waitStatus(t, ra.Agent, "none waiting", func(s Status) bool { return s.Out == 0 })

	// The server goes away: not connected, with the reason.
	srv.ln.Close()
	_ = p.conn.CloseWithError(0x10, "gone")
	s = waitStatus(t, ra.Agent, "down with a reason", func(s Status) bool { return !s.Connected && s.LastError != "" })
	if s.Unpaired || strings.ContainsAny(s.LastError, "\n") {
		t.Fatalf("down status %+v", s)
	}
}

func TestStatusSaysUnpairedWhenRevoked(t *testing.T) {
	srv := newFakeServer(t, func(wire.Hello) wire.Msg {
		return wire.Error{Code: CodeRevoked, Message: "device revoked"}
	})
	// Run ends (ErrUnpaired) and the status says so for whoever shows it.
	ra := startAgentWith(t, srv, agentOpts{runErr: ErrUnpaired})
	s := waitStatus(t, ra.Agent, "unpaired", func(s Status) bool { return s.Unpaired })
	if s.Connected || !strings.Contains(s.LastError, "revoked") {
		t.Fatalf("status %+v", s)
	}
}

func TestNetworkChangedCutsTheWaitShort(t *testing.T) {
	srv := newFakeServer(t, nil)
	relay := newRelay(t, srv.ln.Addr())
	dir := pairedDir(t, srv)
	pointAt(t, dir, relay.addr())
	retries := make(chan error, 16)
	ra := startAgentWith(t, srv, agentOpts{dir: dir,
		onRetry: func(_ time.Duration, err error) {
			select {
			case retries <- err:
			default:
			}
		},
		config: func(c *Config) {
			c.ProbeInterval = -1 // only the phone's word can end the wait
			c.Backoff = &Backoff{Schedule: []time.Duration{time.Hour}}
		}})
	p := srv.nextChannel(t)
	waitUntil(t, "connected", ra.Connected)
	relay.cut.Store(true)
	_ = p.conn.CloseWithError(0x10, "network goes away")
	<-retries // waiting an hour now
	relay.cut.Store(false)
	ra.NetworkChanged()
	srv.nextChannel(t) // within waitFor, far below the hour
	waitUntil(t, "connected again", ra.Connected)
}
