package agent

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/internal/wire"
)

func TestLivenessLearnsThePingInterval(t *testing.T) {
	t0 := time.Now()
	l := newLiveness(t0)
	select {
	case <-l.armed:
		t.Fatal("armed before any ping")
	default:
	}
	l.ping(t0, 1_000)
	<-l.armed
	_, suspect, dead := l.bounds(t0, 0)
	if dead != 3*pingGuess {
		t.Fatalf("dead bound before a second ping: %v, want %v", dead, 3*pingGuess)
	}
	l.ping(t0.Add(2*time.Second), 3_000) // the server's clock says 2 s apart
	silence, suspect, dead := l.bounds(t0.Add(4*time.Second), 0)
	if silence != 2*time.Second || dead != 6*time.Second || suspect != 2500*time.Millisecond {
		t.Fatalf("silence %v, suspect %v, dead %v; want 2s, 2.5s, 6s", silence, suspect, dead)
	}
	if _, _, dead := l.bounds(t0, 9*time.Second); dead != 9*time.Second {
		t.Fatalf("fixed bound ignored: %v", dead)
	}
	l.busy.Store(true) // our own reader stalls: not the server's silence
	if silence, _, _ := l.bounds(t0.Add(time.Minute), 0); silence != 0 {
		t.Fatalf("silence %v counted while our reader was stalled", silence)
	}
}

// A partition (both ways) while the server pings every 250 ms, after which
// the old connection's NAT mapping is gone (so it cannot recover by itself,
// which would make the test race the server's retransmissions): the agent
// notices the silence, probes, and once the network is back abandons the
// stuck connection and redials, instead of waiting for QUIC's idle timeout
// (60 s here). The time from healing to the first ack is logged.
func TestLivenessRedialsAfterPartition(t *testing.T) {
	const ping, probe = 250 * time.Millisecond, 50 * time.Millisecond
	srv := newRestartableServer(t, ping)
	relay := newRelay(t, srv.addr)
	dir := t.TempDir()
	if _, err := Pair(t.Context(), srv.link(), dir, PairOptions{}); err != nil {
		t.Fatal(err)
	}
	pointAt(t, dir, relay.addr())
	ra := startAgentWith(t, srv.fakeServer, agentOpts{dir: dir, config: func(c *Config) {
		c.ProbeInterval = probe
		c.Backoff = NewBackoff()
	}})
	c := srv.nextLive(t)
	c.send(t, wire.Message{ID: "before", Chat: quietNumber, Text: "x"})
	waitAck(t, c.acks, "before")
	waitUntil(t, "the agent learnt the ping interval", func() bool { return c.pongs.Load() >= 3 })
	relay.cutBoth.Store(true)
	relay.forget.Store(int64(ra.curConn.Load().localAddr().(*net.UDPAddr).Port))
	select { // the agent found the server silent and probes it
	case <-relay.lostProbe:
	case <-time.After(waitFor):
		t.Fatal("no probe during the partition")
	}
	healed := time.Now()
	relay.cutBoth.Store(false)
	c2 := srv.nextLive(t)
	c2.send(t, wire.Message{ID: "after", Chat: quietNumber, Text: "x"})
	waitAck(t, c2.acks, "after")
	t.Logf("first message acked %v after the partition healed (ping %v, probe %v; 0-RTT %v)",
		time.Since(healed).Round(time.Millisecond), ping, probe, c2.conn.ConnectionState().Used0RTT)
	if !strings.Contains(ra.logs.String(), "answering probes: redialing") {
		t.Fatal("the agent did not abandon the silent connection")
	}
}
