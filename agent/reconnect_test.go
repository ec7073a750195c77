package agent

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/internal/atomicfile"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// udpRelay forwards UDP between agents and a server; while cut, it drops
// everything the agent sends (the network is gone). Server packets still
// pass, so a close from the server reaches the agent at once.
type udpRelay struct {
	ln     *net.UDPConn
	server *net.UDPAddr
	cut    atomic.Bool
	// cutBoth also drops what the server sends: a partition.
	cutBoth atomic.Bool
	// forget drops both ways the traffic of the agent socket on this port,
	// as a NAT whose mapping expired during an outage.
	forget atomic.Int64
	// lostInitial is signalled when a QUIC v1 long-header packet (a dial
	// attempt) is dropped.
	lostInitial chan struct{}
	lostProbe   chan struct{} // likewise for a reachability probe
	lostInits   atomic.Int64

	mu  sync.Mutex
	ups map[string]*net.UDPConn
}

func newRelay(t *testing.T, server net.Addr) *udpRelay {
	t.Helper()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &udpRelay{ln: ln, server: server.(*net.UDPAddr), ups: map[string]*net.UDPConn{}, lostInitial: make(chan struct{}, 1), lostProbe: make(chan struct{}, 1)}
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, u := range r.ups {
			u.Close()
		}
		r.mu.Unlock()
	})
	go r.run()
	return r
}

func (r *udpRelay) addr() string { return r.ln.LocalAddr().String() }

func (r *udpRelay) run() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		b := buf[:n]
		if int64(from.Port) == r.forget.Load() {
			continue
		}
		if r.cut.Load() || r.cutBoth.Load() {
			if len(b) >= 5 && b[0]&0x80 != 0 {
				v := binary.BigEndian.Uint32(b[1:5])
				if v == 1 {
					r.lostInits.Add(1)
				}
				lost := map[uint32]chan struct{}{1: r.lostInitial, probeVersion: r.lostProbe}[v]
				select {
				case lost <- struct{}{}:
				default:
				}
			}
			continue
		}
		r.mu.Lock()
		up, ok := r.ups[from.String()]
		if !ok {
			up, err = net.DialUDP("udp", nil, r.server)
			if err != nil {
				r.mu.Unlock()
				continue
			}
			r.ups[from.String()] = up
			go func(up *net.UDPConn, client *net.UDPAddr) {
				b := make([]byte, 65536)
				for {
					n, err := up.Read(b)
					if err != nil {
						return
					}
					if r.cutBoth.Load() || int64(client.Port) == r.forget.Load() {
						continue
					}
					_, _ = r.ln.WriteToUDP(b[:n], client)
				}
			}(up, from)
		}
		r.mu.Unlock()
		_, _ = up.Write(b)
	}
}

// pointAt makes the paired agent in dir dial addr instead of the server.
func pointAt(t *testing.T, dir, addr string) {
	t.Helper()
	p := filepath.Join(dir, ServerFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var si ServerInfo
	if err := json.Unmarshal(b, &si); err != nil {
		t.Fatal(err)
	}
	si.Addrs = []string{addr}
	b, _ = json.Marshal(si)
	if err := atomicfile.Write(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestProbeAnsweredByQuicGo(t *testing.T) {
	srv := newFakeServer(t, nil)
	pr := startProber(t.Context(), []string{srv.ln.Addr().String()}, time.Hour, zerolog.Nop())
	defer pr.stop()
	select {
	case <-pr.answered():
	case <-time.After(waitFor):
		t.Fatal("quic-go did not answer the version-negotiation probe")
	}
	pkt, scid := newProbe()
	if len(pkt) != probeSize || pkt[0]&0xc0 != 0xc0 || binary.BigEndian.Uint32(pkt[1:5]) != probeVersion || pkt[6+probeCIDLen] != probeCIDLen {
		t.Fatalf("probe % x", pkt[:24])
	}
	vn := append([]byte{0x80, 0, 0, 0, 0, probeCIDLen}, scid[:]...)
	vn = append(vn, 0, 0, 0, 0, 1)
	if d, ok := versionNegotiationFor(vn); !ok || string(d) != string(scid[:]) {
		t.Fatal("own VN packet not recognised")
	}
	for _, bad := range [][]byte{nil, {0x80, 0, 0, 0, 1, 0, 0}, {0x40, 0, 0, 0, 0, 0, 0}, {0x80, 0, 0, 0, 0, 9, 1}} {
		if _, ok := versionNegotiationFor(bad); ok {
			t.Fatalf("% x taken for version negotiation", bad)
		}
	}
}

// The network goes away while connected and comes back while the agent is
// either waiting out an hour-long backoff or stuck in an hour-long dial: the
// probe notices and the agent is back at once.
func TestReconnectCutsBackoffShortWhenTheNetworkReturns(t *testing.T) {
	// "dialing, 0-RTT": with a session ticket DialEarly returns at once and
	// the wait is for the handshake to complete.
	for _, phase := range []string{"waiting", "dialing", "dialing, 0-RTT"} {
		t.Run(phase, func(t *testing.T) {
			srv := newFakeServerOpts(t, fakeOpts{early: phase == "dialing, 0-RTT"})
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
					c.ProbeInterval = 20 * time.Millisecond
					if phase == "waiting" {
						// The wait after the drop is an hour.
						c.Backoff = &Backoff{Schedule: []time.Duration{time.Hour}}
					} else {
						// Dial at once, and that dial would hang for an hour.
						c.Backoff = &Backoff{Schedule: []time.Duration{time.Millisecond, time.Hour}}
						c.HandshakeTimeout = time.Hour
					}
				}})
			p := srv.nextChannel(t)
			waitUntil(t, "connected", ra.Connected)
			if phase == "dialing, 0-RTT" {
				p.send(t, wire.Message{ID: "before", Chat: quietNumber, Text: "x"})
				collectAcks(t, p, "before") // the session ticket has arrived
			}
			relay.cut.Store(true)
			_ = p.conn.CloseWithError(0x10, "network goes away")
			<-retries               // the channel dropped; the agent waits (an hour, for "waiting")
			lost := relay.lostProbe // the agent probes into the void
			if phase != "waiting" {
				lost = relay.lostInitial // a redial is sending Initials into the void
			}
			select {
			case <-lost:
			case <-time.After(waitFor):
				t.Fatal("nothing sent during the outage")
			}
			if phase == "dialing, 0-RTT" {
				// quic-go retransmits with a doubling timer seeded by the
				// last connection's (tiny) RTT: let it grow past the probe
				// interval, as in any real outage.
				waitUntil(t, "handshake retransmitted a few times", func() bool { return relay.lostInits.Load() >= 8 })
			}
			start := time.Now()
			relay.cut.Store(false)
			p2 := srv.nextChannel(t) // fails after waitFor (10 s), far below the hour
			t.Logf("%s: back %v after the network returned (0-RTT: %v)", phase, time.Since(start), p2.conn.ConnectionState().Used0RTT)
			if phase == "dialing, 0-RTT" && !containsAll(ra.logs.String(), "dialing afresh") {
				t.Fatal("the 0-RTT handshake wait was not cut short")
			}
			p2.send(t, wire.Message{ID: "after", Chat: quietNumber, Text: "x"})
			collectAcks(t, p2, "after")
			if !ra.Connected() {
				t.Fatal("not connected")
			}
		})
	}
}

// TestReconnectLatency measures, with the default probe interval, backoff
// and handshake timeout, how long the agent takes to be back once the
// network returns after outages of random length. Opt in with
// RCSGATE_MEASURE=1 (it takes about half a minute).
func TestReconnectLatency(t *testing.T) {
	if os.Getenv("RCSGATE_MEASURE") == "" {
		t.Skip("set RCSGATE_MEASURE=1 to measure reconnect latency")
	}
	srv := newFakeServer(t, nil)
	relay := newRelay(t, srv.ln.Addr())
	dir := pairedDir(t, srv)
	pointAt(t, dir, relay.addr())
	ra := startAgentWith(t, srv, agentOpts{dir: dir, config: func(c *Config) {
		c.Backoff = NewBackoff()
		c.ProbeInterval = 0
		c.HandshakeTimeout = 0
	}})
	p := srv.nextChannel(t)
	var backs []time.Duration
	for range 16 {
		waitUntil(t, "connected", ra.Connected)
		relay.cut.Store(true)
		_ = p.conn.CloseWithError(0x10, "network goes away")
		outage := time.Duration(300+rand.IntN(4700)) * time.Millisecond
		time.Sleep(outage) // the outage itself, not synchronisation
		start := time.Now()
		relay.cut.Store(false)
		p = srv.nextChannel(t)
		backs = append(backs, time.Since(start))
	}
	slices.Sort(backs)
	t.Logf("back after the network returned (n=%d): p50 %v, max %v, all %v", len(backs), backs[len(backs)/2], backs[len(backs)-1], backs)
	if backs[len(backs)/2] > time.Second {
		t.Fatalf("p50 %v, want ≤ 1 s", backs[len(backs)/2])
	}
}

// A server that answers probes but never keeps the channel up must not turn
// probing into a reconnect storm: a wait cut short by a probe is followed by
// a full backoff wait unless the server goes silent and returns in between.
func TestProbingKeepsBackoffWhenTheServerAnswersButFails(t *testing.T) {
	srv := newFakeServer(t, nil)
	var attempts atomic.Int64
	go func() {
		for p := range srv.chans { // welcome, then drop at once, every time
			attempts.Add(1)
			_ = p.conn.CloseWithError(0x11, "try again later")
		}
	}()
	startAgentWith(t, srv, agentOpts{config: func(c *Config) {
		c.ProbeInterval = 2 * time.Millisecond
		c.Backoff = &Backoff{Schedule: ExponentialSchedule(50*time.Millisecond, 400*time.Millisecond)}
	}})
	<-time.After(1500 * time.Millisecond) // observing for a fixed span is the test
	// Backoff alone: 50+100+200+400+400+400 ms ≈ 6 attempts in 1.5 s; with
	// every other wait cut short about twice that. Probing every 2 ms
	// without the rule would make hundreds.
	if n := attempts.Load(); n > 20 {
		t.Fatalf("%d connection attempts in 1.5 s: probes defeat the backoff", n)
	} else {
		t.Logf("%d connection attempts in 1.5 s", n)
	}
}

// restartableServer is the fake server on a fixed port that can be killed
// as by SIGKILL (its socket vanishes; no CONNECTION_CLOSE reaches the
// agent) and started again on the same port with the same certificate,
// session-ticket keys and stateless-reset key, as the real server derives
// them from its channel key. Like the real server it pings every channel.
type restartableServer struct {
	*fakeServer
	t       *testing.T
	addr    *net.UDPAddr
	tlsConf *tls.Config
	key     quic.StatelessResetKey
	ping    time.Duration

	mu     sync.Mutex
	udp    *net.UDPConn
	cancel context.CancelFunc
}

func newRestartableServer(t *testing.T, ping time.Duration) *restartableServer {
	t.Helper()
	fs, tlsConf := newServerIdentity(t, fakeOpts{early: true})
	r := &restartableServer{t: t, tlsConf: tlsConf, ping: ping, fakeServer: fs}
	_, _ = crand.Read(r.key[:])
	r.start()
	t.Cleanup(r.kill)
	return r
}

// start listens (again) on the server's port.
func (r *restartableServer) start() {
	r.t.Helper()
	laddr := r.addr
	if laddr == nil {
		laddr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.addr = udp.LocalAddr().(*net.UDPAddr)
	key := r.key
	tr := &quic.Transport{Conn: udp, StatelessResetKey: &key}
	ln, err := tr.ListenEarly(r.tlsConf, &quic.Config{MaxIdleTimeout: 60 * time.Second, Allow0RTT: true})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.mu.Lock()
	r.udp, r.cancel = udp, cancel
	r.mu.Unlock()
	go func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go r.serve(ctx, conn)
		}
	}()
}

// kill drops the socket and everything on it without a word to the agent.
func (r *restartableServer) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.udp == nil {
		return
	}
	_ = r.udp.Close()
	r.cancel()
	r.udp = nil
}

func (r *restartableServer) link() wire.PairLink {
	return wire.PairLink{Addrs: []string{r.addr.String()}, Token: r.token, Pin: r.pin}
}

// liveChannel is one channel of a restartableServer as the test sees it.
type liveChannel struct {
	*peer
	acks  chan string  // ids the agent acked
	pongs atomic.Int64 // pongs the agent sent
}

// nextLive waits for the agent's next channel and then pings it every
// r.ping, as the real server does.
func (r *restartableServer) nextLive(t *testing.T) *liveChannel {
	t.Helper()
	return r.nextLiveWithin(t, waitFor)
}

func (r *restartableServer) nextLiveWithin(t *testing.T, limit time.Duration) *liveChannel {
	t.Helper()
	var p *peer
	select {
	case p = <-r.chans:
	case <-time.After(limit):
		t.Fatal("agent did not connect")
	}
	c := &liveChannel{peer: p, acks: make(chan string, 64)}
	go func() {
		for m := range c.msgs {
			switch m := m.(type) {
			case wire.Ack:
				for _, id := range m.IDs {
					c.acks <- id
				}
			case wire.Pong:
				c.pongs.Add(1)
			}
		}
	}()
	go func() {
		tk := time.NewTicker(r.ping)
		defer tk.Stop()
		for n := uint64(1); ; n++ {
			c.wmu.Lock()
			err := wire.WriteMsg(c.stream, wire.Ping{Nonce: n, TSMS: time.Now().UnixMilli()})
			c.wmu.Unlock()
			if err != nil {
				return
			}
			select {
			case <-c.conn.Context().Done():
				return
			case <-tk.C:
			}
		}
	}()
	return c
}

func waitAck(t *testing.T, acks <-chan string, id string) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case got := <-acks:
			if got == id {
				return
			}
		case <-timeout:
			t.Fatalf("no ack for %s", id)
		}
	}
}

// The server is killed (no close reaches the agent) and comes back on the
// same port, after a short or a long downtime: the agent notices by itself
// (its own ping draws a stateless reset from the restarted server, or its
// probe is answered) long before QUIC's idle timeout, and a message sent
// after the restart is acked. Intervals are 1/20 of the real ones (server
// ping 5 s, probe interval 1 s). The time from the restart to the first ack
// is logged, not asserted.
func TestReconnectAfterServerKillAndRestart(t *testing.T) {
	const ping, probe = 250 * time.Millisecond, 50 * time.Millisecond
	for _, down := range []struct {
		name string
		d    time.Duration
	}{{"quick restart", 0}, {"down 2 s", 2 * time.Second}} {
		t.Run(down.name, func(t *testing.T) {
			srv := newRestartableServer(t, ping)
			dir := t.TempDir()
			if _, err := Pair(t.Context(), srv.link(), dir, PairOptions{}); err != nil {
				t.Fatal(err)
			}
			ra := startAgentWith(t, srv.fakeServer, agentOpts{dir: dir, config: func(c *Config) {
				c.ProbeInterval = probe
				c.Backoff = NewBackoff()
			}})
			c := srv.nextLive(t)
			c.send(t, wire.Message{ID: "before", Chat: quietNumber, Text: "x"})
			waitAck(t, c.acks, "before") // also: the agent holds a session ticket
			waitUntil(t, "the agent learnt the ping interval", func() bool { return c.pongs.Load() >= 3 })
			srv.kill()
			<-time.After(down.d) // the downtime is the fault itself
			srv.start()
			back := time.Now()
			c2 := srv.nextLive(t)
			c2.send(t, wire.Message{ID: "after", Chat: quietNumber, Text: "x"})
			waitAck(t, c2.acks, "after")
			d := time.Since(back)
			logs := ra.logs.String()
			how := "probe answered"
			if strings.Contains(logs, "stateless reset") {
				how = "stateless reset"
			}
			t.Logf("%s: first message acked %v after the server was back (%s; 0-RTT %v; ping %v, probe %v)",
				down.name, d.Round(time.Millisecond), how, c2.conn.ConnectionState().Used0RTT, ping, probe)
		})
	}
}

// TestServerRestartLatency measures, with the real intervals (server ping
// 5 s, probe 1 s, default backoff), the time from a killed server being back
// to the first message acked, over restarts after random downtimes of 0–10 s.
// Opt in with RCSGATE_MEASURE=1 (about two minutes).
func TestServerRestartLatency(t *testing.T) {
	if os.Getenv("RCSGATE_MEASURE") == "" {
		t.Skip("set RCSGATE_MEASURE=1 to measure reconnect latency after server restarts")
	}
	srv := newRestartableServer(t, 5*time.Second)
	dir := t.TempDir()
	if _, err := Pair(t.Context(), srv.link(), dir, PairOptions{}); err != nil {
		t.Fatal(err)
	}
	startAgentWith(t, srv.fakeServer, agentOpts{dir: dir, config: func(c *Config) {
		c.ProbeInterval = 0
		c.Backoff = NewBackoff()
	}})
	c := srv.nextLive(t)
	var backs []time.Duration
	for i := range 10 {
		id := fmt.Sprintf("m%d", i)
		c.send(t, wire.Message{ID: id, Chat: quietNumber, Text: "x"})
		waitAck(t, c.acks, id)
		// Kill at a random point of the ping cycle, down for 0–10 s: the
		// fault itself, not synchronisation.
		<-time.After(time.Duration(rand.IntN(5000)) * time.Millisecond)
		srv.kill()
		<-time.After(time.Duration(rand.IntN(10000)) * time.Millisecond)
		srv.start()
		back := time.Now()
		c = srv.nextLiveWithin(t, time.Minute)
		c.send(t, wire.Message{ID: id + "-after", Chat: quietNumber, Text: "x"})
		waitAck(t, c.acks, id+"-after")
		backs = append(backs, time.Since(back))
	}
	slices.Sort(backs)
	t.Logf("first ack after the server was back (n=%d): p50 %v, max %v, all %v", len(backs),
		backs[len(backs)/2].Round(time.Millisecond), backs[len(backs)-1].Round(time.Millisecond), backs)
}
