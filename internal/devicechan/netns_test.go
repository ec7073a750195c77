package devicechan

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend/sim"
	"github.com/rcsgate/rcsgate/internal/netns"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Real-kernel faults: the server runs in namespace A (its socket is made
// there), the agent in namespace B (a child copy of this test binary, since
// the agent opens its own sockets), joined by a veth. nftables drops
// packets; a relay in A adds delay.

var (
	netnsPartition = flag.Duration("netns.partition", 30*time.Second, "length of the partition in TestNetnsPartition")
	netnsRounds    = flag.Int("netns.rounds", 1, "partitions in TestNetnsPartition")
	netnsDelay     = flag.Duration("netns.delay", 200*time.Millisecond, "one-way delay added by the relay")
)

const (
	nsContact = "+12025550123" // a quiet contact: the phone only sends
	nsEnvLink = "RCSGATE_NETNS_CHILD_LINK"
	nsEnvDir  = "RCSGATE_NETNS_CHILD_DIR"
)

// TestNetnsAgentChild is the agent side, run by nsPeer inside namespace B.
// It speaks a line protocol: stdin "inject FROM N" makes the phone receive
// N messages p-FROM…; stdout "PAIRED id", "UP 0|1", "SENT id" report what happens.
// Closing stdin ends it.
func TestNetnsAgentChild(t *testing.T) {
	linkStr := os.Getenv(nsEnvLink)
	if linkStr == "" {
		t.Skip("helper for the netns tests; runs only as their child")
	}
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(os.Stdout, "NS "+format+"\n", args...)
	}
	link, err := wire.ParsePairLink(linkStr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := os.Getenv(nsEnvDir)
	pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
	id, err := agent.Pair(pctx, link, dir, agent.PairOptions{})
	pcancel()
	if err != nil {
		t.Fatalf("pair: %v", err)
	}
	say("PAIRED %s", id.String())
	phone := sim.New(zerolog.Nop())
	a, err := agent.New(agent.Config{StateDir: dir, Backend: phone, Log: zerolog.Nop(), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "inject" {
				from, _ := strconv.Atoi(f[1])
				n, _ := strconv.Atoi(f[2])
				for i := from; i < from+n; i++ {
					for phone.Inject(nsContact, fmt.Sprintf("p-%04d", i)) != nil { // not started yet
						time.Sleep(10 * time.Millisecond)
					}
				}
			}
		}
		cancel()
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	reported, up := 0, false
	for {
		select {
		case err := <-runDone:
			if err != nil && ctx.Err() == nil {
				t.Fatalf("agent: %v", err)
			}
			return
		case <-tick.C:
		}
		if c := a.Connected(); c != up {
			up = c
			say("UP %t", up)
		}
		sent := phone.SentMessages()
		for ; reported < len(sent); reported++ {
			say("SENT %s", sent[reported].ID)
		}
	}
}

// nsPeer is the parent's view of the agent child.
type nsPeer struct {
	stdin io.WriteCloser

	mu     sync.Mutex
	id     string
	up     bool
	sent   []string
	sentAt []time.Time
	exited bool
	nDown  int // times the agent reported its channel down
}

func (p *nsPeer) downs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nDown
}

func (p *nsPeer) state() (id string, up bool, sent []string, at []time.Time, exited bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id, p.up, append([]string(nil), p.sent...), append([]time.Time(nil), p.sentAt...), p.exited
}

// startNsAgent runs the agent child in namespace ns, paired through link.
func startNsAgent(t *testing.T, ns string, link wire.PairLink) *nsPeer {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := netns.Command(ns, exe, "-test.run=^TestNetnsAgentChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), nsEnvLink+"="+link.String(), nsEnvDir+"="+t.TempDir())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &nsPeer{}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			f := strings.Fields(line)
			if len(f) != 3 || f[0] != "NS" {
				if line != "" && line != "PASS" {
					t.Logf("agent child: %s", line)
				}
				continue
			}
			p.mu.Lock()
			switch f[1] {
			case "PAIRED":
				p.id = f[2]
			case "UP":
				p.up = f[2] == "true"
				if !p.up {
					p.nDown++
				}
			case "SENT":
				p.sent = append(p.sent, f[2])
				p.sentAt = append(p.sentAt, time.Now())
			}
			p.mu.Unlock()
		}
		p.mu.Lock()
		p.exited = true
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		_ = p.stdin.Close()
		done := make(chan error, 1)
		go func() { <-readDone; done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent child: %v", err)
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("agent child did not stop within 15 s of its stdin closing")
		}
	})
	return p
}

func (p *nsPeer) inject(t *testing.T, from, n int) {
	t.Helper()
	if _, err := fmt.Fprintf(p.stdin, "inject %d %d\n", from, n); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		case <-tick.C:
		}
	}
}

// nsSetup builds the topology: server in A behind a delay relay, agent in B.
func nsSetup(t *testing.T) (*fixture, *netns.Pair, *nsPeer, string) {
	t.Helper()
	p := netns.New(t)
	f := newFixture(t)
	var pc net.PacketConn
	if err := netns.Do(p.A, func() (err error) { pc, err = net.ListenPacket("udp", p.AddrA+":0"); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.Listen(f.ctx, pc); err != nil {
		t.Fatal(err)
	}
	relay, err := netns.NewDelayRelay(f.ctx, p.A, p.AddrA+":0", pc.LocalAddr().String(), *netnsDelay)
	if err != nil {
		t.Fatal(err)
	}
	f.addr = relay.Addr()
	peer := startNsAgent(t, p.B, f.link(t, time.Minute))
	var dev string
	waitFor(t, 30*time.Second, "agent in namespace B connected", func() bool {
		id, up, _, _, exited := peer.state()
		if exited {
			t.Fatal("agent child exited")
		}
		dev = id
		return up && id != "" && f.srv.Connected(id)
	})
	return f, p, peer, dev
}

// enqueueN queues n server→phone messages mx-0000… to the quiet contact.
func enqueueN(t *testing.T, f *fixture, dev string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		m := wire.Message{ID: fmt.Sprintf("mx-%04d", i), Chat: nsContact, Text: fmt.Sprintf("m-%04d", i)}
		if err := f.srv.Enqueue(f.ctx, dev, m); err != nil {
			t.Fatal(err)
		}
	}
}

// phoneTexts is what reached the server from the phone, in order of first
// arrival, one entry per message id: the server may hand the Handler a
// message again after a lost ack (at-least-once), and the Handler drops
// repeats by id (internal/connector: HandleExistingFunc), so a repeated id
// is a resend, not a duplicate. resends counts them.
func phoneTexts(f *fixture) (texts []string) {
	texts, _ = phoneTextsResends(f)
	return texts
}

func phoneTextsResends(f *fixture) (texts []string, resends int) {
	seen := map[string]bool{}
	for _, m := range f.rec.snapshot().inbound {
		if m.From != nsContact {
			continue
		}
		if seen[m.ID] {
			resends++
			continue
		}
		seen[m.ID] = true
		texts = append(texts, m.Text)
	}
	return texts, resends
}

// checkExactlyOnce waits for both directions to be complete and drained,
// then checks every message arrived exactly once, in order.
func checkExactlyOnce(t *testing.T, f *fixture, peer *nsPeer, dev string, n int, limit time.Duration) {
	t.Helper()
	waitFor(t, limit, fmt.Sprintf("%d messages each way", n), func() bool {
		_, _, sent, _, _ := peer.state()
		return len(sent) >= n && len(phoneTexts(f)) >= n
	})
	waitFor(t, limit, "server outbox drained", func() bool { d, _ := f.st.QueueDepth(f.ctx, dev); return d == 0 })
	_, _, sent, _, _ := peer.state()
	got, resends := phoneTextsResends(f)
	t.Logf("phone→server: %d handler calls repeated an id already handled (resends after a lost ack, dropped by id)", resends)
	if len(sent) != n || len(got) != n {
		t.Errorf("phone sent %d, server received %d; want %d each", len(sent), len(got), n)
		reportDuplicates(t, f, sent)
		t.FailNow()
	}
	for i := 0; i < n; i++ {
		if want := fmt.Sprintf("mx-%04d", i); sent[i] != want {
			t.Fatalf("server→phone #%d is %s, want %s (lost, doubled or reordered)", i, sent[i], want)
		}
		if want := fmt.Sprintf("p-%04d", i); got[i] != want {
			t.Fatalf("phone→server #%d is %s, want %s (lost, doubled or reordered)", i, got[i], want)
		}
	}
}

// 20% loss each way and a 200 ms one-way delay: 300 messages each way
// arrive exactly once, in order.
func TestNetnsLossAndDelay(t *testing.T) {
	const n = 300
	f, p, peer, dev := nsSetup(t)
	if err := p.SetLoss(20); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	enqueueN(t, f, dev, 0, n)
	peer.inject(t, 0, n)
	checkExactlyOnce(t, f, peer, dev, n, 3*time.Minute)
	dropped, err := p.Dropped()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages each way through 20%% loss and %s one-way delay in %s; nft dropped %d packets",
		n, *netnsDelay, time.Since(start).Round(time.Millisecond), dropped)
	if dropped == 0 {
		t.Fatal("nftables dropped nothing: the loss rule is not in the path")
	}
}

// A partition (30 s by default, -netns.partition) in the middle of a flow,
// repeated -netns.rounds times: after healing, everything arrives exactly
// once, in order, and the time from healing to the first message through
// is logged (p50 over the rounds).
func TestNetnsPartition(t *testing.T) {
	const first, perRound = 150, 100
	f, p, peer, dev := nsSetup(t)
	enqueueN(t, f, dev, 0, first)
	peer.inject(t, 0, first)
	waitFor(t, time.Minute, "first messages through", func() bool {
		_, _, sent, _, _ := peer.state()
		return len(sent) >= first/3 && len(phoneTexts(f)) >= first/3
	})
	n := first
	var backs []time.Duration
	for round := 0; round < *netnsRounds; round++ {
		if err := p.Partition(true); err != nil {
			t.Fatal(err)
		}
		cutAt := time.Now()
		downsBefore := peer.downs()
		// More traffic queued on both ends during the partition.
		enqueueN(t, f, dev, n, perRound)
		peer.inject(t, n, perRound)
		n += perRound
		// The partition lasts its full length: this is the fault itself,
		// not a wait for something to happen.
		<-time.After(time.Until(cutAt.Add(*netnsPartition)))
		dropped, err := p.Dropped()
		if err != nil {
			t.Fatal(err)
		}
		_, _, sentCut, _, _ := peer.state()
		inCut := len(phoneTexts(f))
		serverUp := f.srv.Connected(dev)
		agentDropped := peer.downs() > downsBefore
		if err := p.Partition(false); err != nil {
			t.Fatal(err)
		}
		healAt := time.Now()
		waitFor(t, 2*time.Minute, "first message after healing", func() bool {
			_, _, sent, _, _ := peer.state()
			return len(sent) > len(sentCut) || len(phoneTexts(f)) > inCut
		})
		back := time.Since(healAt)
		backs = append(backs, back)
		t.Logf("round %d: partition %s, nft dropped %d packets; at healing: server connected=%t, agent dropped the connection during the cut=%t; first message %s after healing",
			round+1, *netnsPartition, dropped, serverUp, agentDropped, back.Round(time.Millisecond))
		waitFor(t, 3*time.Minute, "the round's messages through", func() bool {
			_, _, sent, _, _ := peer.state()
			return len(sent) >= n && len(phoneTexts(f)) >= n
		})
	}
	checkExactlyOnce(t, f, peer, dev, n, 3*time.Minute)
	slices.Sort(backs)
	p50 := backs[(len(backs)-1)/2]
	t.Logf("back after healing over %d round(s): p50 %s, max %s (aim p50 <= 1 s)", len(backs),
		p50.Round(time.Millisecond), backs[len(backs)-1].Round(time.Millisecond))
}

// reportDuplicates logs every message that arrived more than once, with
// the ids it carried.
func reportDuplicates(t *testing.T, f *fixture, sent []string) {
	t.Helper()
	seen := map[string]int{}
	for _, id := range sent {
		seen[id]++
	}
	for id, c := range seen {
		if c > 1 {
			t.Logf("server→phone %s sent by the phone %d times", id, c)
		}
	}
	ids := map[string][]string{}
	var order []string
	for _, m := range f.rec.snapshot().inbound {
		if m.From == nsContact {
			if ids[m.Text] == nil {
				order = append(order, m.Text)
			}
			ids[m.Text] = append(ids[m.Text], m.ID)
		}
	}
	shown := 0
	for _, text := range order {
		if len(ids[text]) > 1 && shown < 20 {
			shown++
			t.Logf("phone→server %s handed to the server's handler %d times, ids %v", text, len(ids[text]), ids[text])
		}
	}
}
