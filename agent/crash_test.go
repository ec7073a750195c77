package agent

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/agent/journal"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// The crash test runs the agent in a child process (this test binary, run
// again with crashChildEnv set), kills it with SIGKILL at random points
// while messages flow both ways, restarts it, and checks that every message
// arrives exactly once and in order, both ways (server → phone: in order
// within each chat, as chats are lanes of their own).

const (
	crashChildEnv = "RCSGATE_AGENT_CRASH_CHILD" // state dir of the child agent
	crashPhoneEnv = "RCSGATE_AGENT_CRASH_PHONE" // the child's phone directory
	crashNEnv     = "RCSGATE_AGENT_CRASH_N"     // messages the phone receives
	crashProcEnv  = "RCSGATE_AGENT_CRASH_PROC"  // process number, in Hello
	crashN        = 2000                        // messages each way
	crashPace     = 300 * time.Microsecond      // between messages, each way, so kills land mid-flow
	crashKills    = 10
)

var crashChats = []string{"+15550000001", "+15550000002", "+15550000003"}

// filePhone is the child's phone. What it has sent and which incoming
// messages the agent has taken are kept in files, as a real phone keeps
// them in its own database, so they survive the kill. Like a real backend
// it drops a message id it has already sent; every call is also recorded
// raw so the test can see how often the agent handed a message again.
type filePhone struct {
	dir string
	n   int

	mu   sync.Mutex
	sent map[string]bool
	raw  *os.File // every Send call
	out  *os.File // each id sent once
	took *os.File // keys of incoming messages the agent stored
}

func openFilePhone(dir string, n int) (*filePhone, error) {
	p := &filePhone{dir: dir, n: n, sent: map[string]bool{}}
	for _, id := range readLines(filepath.Join(dir, "sent")) {
		p.sent[id] = true
	}
	var err error
	open := func(name string) *os.File {
		if err != nil {
			return nil
		}
		var f *os.File
		f, err = os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		return f
	}
	p.raw, p.out, p.took = open("sent-raw"), open("sent"), open("took")
	return p, err
}

func readLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func (p *filePhone) Name() string                               { return "file" }
func (p *filePhone) Caps() (map[string]wire.Caps, []int)        { return nil, nil }
func (p *filePhone) Typing(context.Context, string, bool) error { return nil }
func (p *filePhone) Close() error                               { return nil }

func (p *filePhone) Send(_ context.Context, ev backend.Event) error {
	id := ev.ID
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.raw, id); err != nil {
		return err
	}
	if p.sent[id] {
		return nil
	}
	p.sent[id] = true
	_, err := fmt.Fprintln(p.out, id)
	return err
}

// Start hands the agent incoming messages k00000, k00001, ... from the first
// one the agent has not taken yet; a kill between Deliver and the record
// means the agent gets that one again (same key), as a real phone would do.
func (p *filePhone) Start(ctx context.Context, sink backend.Sink) error {
	from := len(readLines(filepath.Join(p.dir, "took")))
	go func() {
		for i := from; i < p.n; i++ {
			key := fmt.Sprintf("k%05d", i)
			chat := crashChats[i%len(crashChats)]
			in := backend.Inbound{ID: key, Chat: chat, From: chat, Text: fmt.Sprintf("phone message %d", i), TS: time.Now()}
			for {
				err := sink.Deliver(ctx, in)
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return
				}
				time.Sleep(10 * time.Millisecond) // a retry pause, as sim does
			}
			p.mu.Lock()
			_, _ = fmt.Fprintln(p.took, key)
			p.mu.Unlock()
			time.Sleep(crashPace) // pacing the phone, not synchronising
		}
	}()
	return nil
}

// TestCrashChild is the child process; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestCrashKill9")
	}
	n, _ := strconv.Atoi(os.Getenv(crashNEnv))
	phone, err := openFilePhone(os.Getenv(crashPhoneEnv), n)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	a, err := New(Config{
		StateDir: dir, Backend: phone, Version: "crash-" + os.Getenv(crashProcEnv),
		Log:              zerolog.New(os.Stderr).Level(zerolog.InfoLevel).With().Timestamp().Logger(),
		Backoff:          &Backoff{Schedule: []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond}},
		HandshakeTimeout: 2 * time.Second,
		NetCheckInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// crashServer is the server side of the crash test: an outbox of server
// messages sent in order and resent from the first unacked one on every
// connection, and an inbox that drops duplicates by id, as rcsgate does.
type crashServer struct {
	mu       sync.Mutex
	outbox   []wire.Message
	acked    map[string]bool
	inOrder  []string          // first receipt of each inbound id
	inFirst  map[string]int    // inbound id → process that delivered it first
	resent   map[int][]string  // process → inbound ids it sent that the server already had
	statuses map[string]string // server message id → state reported
	pongs    chan wire.Pong
	conns    map[int]int   // process → connections seen
	peers    map[int]*peer // process → its latest connection
}

func (cs *crashServer) serve(t *testing.T, p *peer) {
	proc, _ := strconv.Atoi(strings.TrimPrefix(p.hello.Agent, "rcsgate-agent/crash-"))
	cs.mu.Lock()
	cs.conns[proc]++
	cs.peers[proc] = p
	cs.mu.Unlock()
	write := func(m wire.Msg) bool {
		p.wmu.Lock()
		defer p.wmu.Unlock()
		return wire.WriteMsg(p.stream, m) == nil
	}
	// Sender: everything unacked, in order, at most window in flight.
	const window = 32
	acks := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		cs.mu.Lock()
		var todo []wire.Message
		for _, m := range cs.outbox {
			if !cs.acked[m.ID] {
				todo = append(todo, m)
			}
		}
		cs.mu.Unlock()
		for len(todo) > 0 {
			n := min(window, len(todo))
			for _, m := range todo[:n] {
				if !write(m) {
					return
				}
				time.Sleep(crashPace) // pacing the server, not synchronising
			}
			sent := todo[:n]
			todo = todo[n:]
			for { // wait until this window is acked
				cs.mu.Lock()
				all := true
				for _, m := range sent {
					all = all && cs.acked[m.ID]
				}
				cs.mu.Unlock()
				if all {
					break
				}
				select {
				case <-acks:
				case <-done:
					return
				}
			}
		}
	}()
	defer close(done)
	for m := range p.msgs {
		switch m := m.(type) {
		case wire.Message:
			cs.mu.Lock()
			if _, dup := cs.inFirst[m.ID]; dup {
				cs.resent[proc] = append(cs.resent[proc], m.ID)
			} else {
				cs.inFirst[m.ID] = proc
				cs.inOrder = append(cs.inOrder, m.ID)
			}
			cs.mu.Unlock()
			if !write(wire.Ack{IDs: []string{m.ID}}) {
				return
			}
		case wire.Ack:
			cs.mu.Lock()
			for _, id := range m.IDs {
				cs.acked[id] = true
			}
			cs.mu.Unlock()
			select {
			case acks <- struct{}{}:
			default:
			}
		case wire.Status:
			cs.mu.Lock()
			cs.statuses[m.ID] = m.State
			cs.mu.Unlock()
			if !write(wire.Ack{Statuses: []wire.StatusRef{{ID: m.ID, State: m.State}}}) {
				return
			}
		case wire.Pong:
			select {
			case cs.pongs <- m:
			default:
			}
		}
	}
}

func (cs *crashServer) progress() (in, acked, statuses int) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.inOrder), len(cs.acked), len(cs.statuses)
}

func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	srv := newFakeServerOpts(t, fakeOpts{features: []string{wire.FeatureStatusAck}})
	dir := pairedDir(t, srv)
	phoneDir := t.TempDir()
	logPath := filepath.Join(t.TempDir(), "child.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			t.Logf("child logs (last 60 lines):\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})

	cs := &crashServer{acked: map[string]bool{}, inFirst: map[string]int{}, resent: map[int][]string{},
		statuses: map[string]string{}, pongs: make(chan wire.Pong, 1), conns: map[int]int{}, peers: map[int]*peer{}}
	for i := range crashN {
		chat := crashChats[i%len(crashChats)]
		cs.outbox = append(cs.outbox, wire.Message{ID: fmt.Sprintf("mx-%05d", i), Chat: chat, Text: fmt.Sprintf("matrix message %d", i), TSMS: int64(i)})
	}
	go func() {
		for p := range srv.chans {
			go cs.serve(t, p)
		}
	}()

	start := func(proc int) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashPhoneEnv+"="+phoneDir,
			crashNEnv+"="+strconv.Itoa(crashN), crashProcEnv+"="+strconv.Itoa(proc))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	pendingAtKill := map[int][]string{} // process → phone messages its journal still held unacked
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 9))
	deadline := time.Now().Add(2 * time.Minute)
	proc := 0
	for ; proc < crashKills; proc++ {
		cmd := start(proc)
		// Half the kills land anywhere from start-up on, half once the
		// process is connected and messages flow.
		if proc%2 == 1 {
			waitUntil(t, "child connected", func() bool {
				cs.mu.Lock()
				defer cs.mu.Unlock()
				return cs.conns[proc] > 0
			})
		}
		timer := time.NewTimer(time.Duration(rng.IntN(150)) * time.Millisecond)
		<-timer.C // the random kill point: this wait is the experiment, not synchronisation
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		// What the journal (as the next process will find it) still holds.
		j, err := journal.Open(dir, journal.Options{})
		if err != nil {
			t.Fatalf("after kill %d: %v", proc, err)
		}
		for _, e := range j.OutAfter(0, 0) {
			pendingAtKill[proc] = append(pendingAtKill[proc], e.Msg.ID)
		}
		j.Close()
		in, acked, sts := cs.progress()
		t.Logf("kill %d: server has %d/%d phone messages; acked %d/%d, statuses %d; journal holds %d unacked", proc, in, crashN, acked, crashN, sts, len(pendingAtKill[proc]))
		if time.Now().After(deadline) {
			t.Fatal("crash test ran out of time")
		}
	}

	// The last process runs until everything is through.
	cmd := start(proc)
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	finish := time.Now().Add(time.Minute)
	for {
		in, acked, sts := cs.progress()
		if in == crashN && acked == crashN && sts == crashN && len(readLines(filepath.Join(phoneDir, "sent"))) == crashN {
			break
		}
		if time.Now().After(finish) {
			t.Fatalf("not through after a minute: server has %d/%d phone messages, %d/%d acked, %d statuses", in, crashN, acked, crashN, sts)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
	// A ping answered after the last acks: the agent has recorded them all.
	var p *peer
	waitUntil(t, "last child connected", func() bool {
		cs.mu.Lock()
		defer cs.mu.Unlock()
		p = cs.peers[proc]
		return p != nil
	})
	var pong wire.Pong
	waitUntil(t, "agent reports empty queues", func() bool {
		p.wmu.Lock()
		_ = wire.WriteMsg(p.stream, wire.Ping{Nonce: 1})
		p.wmu.Unlock()
		select {
		case pong = <-cs.pongs:
			return pong.Out != nil && *pong.Out == 0 && pong.In != nil && *pong.In == 0
		case <-time.After(time.Second):
			return false
		}
	})
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("last child did not stop cleanly: %v", err)
	}

	// Phone → server: each message once, in the phone's order.
	var want []string
	for i := range crashN {
		want = append(want, backend.WireID(fmt.Sprintf("k%05d", i)))
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !slices.Equal(cs.inOrder, want) {
		t.Fatalf("server got %d phone messages, not each once in order (first difference at %d)", len(cs.inOrder), firstDiff(cs.inOrder, want))
	}
	// The agent resent after a restart only what its journal held unacked.
	resent := 0
	for proc, ids := range cs.resent {
		allowed := map[string]bool{}
		for _, id := range pendingAtKill[proc-1] {
			allowed[id] = true
		}
		for _, id := range ids {
			if !allowed[id] && cs.inFirst[id] != proc { // a reconnect within one process may resend its own
				t.Fatalf("process %d resent %s, which its journal did not hold as unacked", proc, id)
			}
		}
		resent += len(ids)
	}
	// Server → phone: each message once, in order within its chat (chats
	// are lanes of their own); handed again (caught by the phone's own
	// dedupe) at most once per kill and chat under way.
	chatOf := map[string]string{}
	wantOut := map[string][]string{}
	for _, m := range cs.outbox {
		chatOf[m.ID] = m.Chat
		wantOut[m.Chat] = append(wantOut[m.Chat], m.ID)
	}
	sent := readLines(filepath.Join(phoneDir, "sent"))
	gotOut := map[string][]string{}
	for _, id := range sent {
		gotOut[chatOf[id]] = append(gotOut[chatOf[id]], id)
	}
	for _, chat := range crashChats {
		if !slices.Equal(gotOut[chat], wantOut[chat]) {
			t.Fatalf("phone sent %d messages of chat %s, not each once in order (first difference at %d)", len(gotOut[chat]), chat, firstDiff(gotOut[chat], wantOut[chat]))
		}
	}
	if len(sent) != len(cs.outbox) {
		t.Fatalf("phone sent %d messages, want %d", len(sent), len(cs.outbox))
	}
	raw := readLines(filepath.Join(phoneDir, "sent-raw"))
	if extra := len(raw) - len(sent); extra > crashKills*len(crashChats) {
		t.Fatalf("the agent handed %d messages to the phone again after %d kills; at most one per kill and chat is allowed", extra, crashKills)
	}
	for _, m := range cs.outbox {
		if cs.statuses[m.ID] != wire.StateSent {
			t.Fatalf("status of %s: %q", m.ID, cs.statuses[m.ID])
		}
	}
	j, err := journal.Open(dir, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if d := j.Depth(); d != (journal.Depth{}) {
		t.Fatalf("journal not empty at the end: %+v", d)
	}
	t.Logf("%d kills; %d phone messages and %d server messages each arrived once, in order; %d resent after restarts (server dropped them), %d handed again (phone dropped them); journal %+v",
		crashKills, len(cs.inOrder), len(sent), resent, len(raw)-len(sent), j.Stats())
}

func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
