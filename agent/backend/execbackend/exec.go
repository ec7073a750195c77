// Package execbackend is the "exec" phone backend: it runs an external
// program that reaches the phone network by any means and speaks a
// versioned JSON-lines protocol with it on stdin/stdout (stderr goes to the
// debug log). It restarts the program with backoff when it exits. The
// protocol is specified in docs/backends/exec.md.
package execbackend

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Name is the backend name reported in Hello.
const Name = "exec"

// Defaults for Config.
const (
	DefaultSendTimeout  = 60 * time.Second
	DefaultHelloTimeout = 30 * time.Second
	DefaultStopGrace    = 5 * time.Second
	// typingTimeout bounds the wait for a typing command's result.
	typingTimeout = 5 * time.Second
	// healthyRun: a program that ran this long restarts from the start of
	// the backoff schedule.
	healthyRun = time.Minute
	// deliverQueue bounds events read but not yet handed to the sink; when
	// it is full further events are nacked ("busy") and offered again.
	deliverQueue = 64
	// maxStderrLine is how much of a stderr line reaches the log.
	maxStderrLine = 512
	// StateSubdir is the program's own directory in the agent's state.
	StateSubdir = "exec"
)

// DefaultRestartBackoff is the restart schedule: 500 ms doubling to 1 min.
var DefaultRestartBackoff = agent.ExponentialSchedule(500*time.Millisecond, time.Minute)

// Duration is the config duration shared by every backend.
type Duration = backend.Duration

// Config is the backend's --backend-config object.
type Config struct {
	Command string            `json:"command"`        // program path (or a name looked up in PATH)
	Args    []string          `json:"args,omitempty"` // its arguments
	Env     map[string]string `json:"env,omitempty"`  // added to the agent's environment
	Dir     string            `json:"dir,omitempty"`  // working directory ("" = the agent's)
	// SendTimeout bounds a send: waiting for the program to be up, and for
	// its result (default 60s). A send that times out is retried (same id).
	SendTimeout Duration `json:"send_timeout,omitempty"`
	// HelloTimeout bounds the wait for the program's hello (default 30s).
	HelloTimeout Duration `json:"hello_timeout,omitempty"`
	// StopGrace is the wait between SIGTERM and SIGKILL (default 5s).
	StopGrace Duration `json:"stop_grace,omitempty"`
	// RestartBackoff is the schedule of pauses before restarting the
	// program; the last entry repeats (default 500ms doubling to 1m).
	RestartBackoff []Duration `json:"restart_backoff,omitempty"`
}

func (c *Config) defaults() error {
	if c.Command == "" {
		return errors.New("exec: config needs \"command\"")
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = Duration(DefaultSendTimeout)
	}
	if c.HelloTimeout == 0 {
		c.HelloTimeout = Duration(DefaultHelloTimeout)
	}
	if c.StopGrace == 0 {
		c.StopGrace = Duration(DefaultStopGrace)
	}
	for _, d := range []Duration{c.SendTimeout, c.HelloTimeout, c.StopGrace} {
		if d < 0 {
			return errors.New("exec: negative timeout in config")
		}
	}
	for _, d := range c.RestartBackoff {
		if d <= 0 {
			return errors.New("exec: restart_backoff entries must be positive")
		}
	}
	return nil
}

func (c *Config) schedule() []time.Duration {
	if len(c.RestartBackoff) == 0 {
		return slices.Clone(DefaultRestartBackoff)
	}
	s := make([]time.Duration, len(c.RestartBackoff))
	for i, d := range c.RestartBackoff {
		s[i] = time.Duration(d)
	}
	return s
}

// ErrProgramExited is wrapped by the (transient) error of a command the
// program did not answer before it exited.
var ErrProgramExited = errors.New("exec: program exited before answering")

// ErrNotRunning is wrapped by errors of commands given while the program is
// not running.
var ErrNotRunning = errors.New("exec: program is not running")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("exec: backend closed")

// Exec is the backend. Use Open.
type Exec struct {
	log      zerolog.Logger
	cfg      Config
	stateDir string // the program's
	seq      atomic.Uint64

	mu      sync.Mutex
	cur     *proc         // the running, welcomed program; nil when none
	upCh    chan struct{} // closed when cur becomes non-nil
	caps    map[string]wire.Caps
	sims    []int
	pending map[string]*call
	sink    backend.Sink
	started bool
	cancel  context.CancelFunc

	closeOnce sync.Once
	closed    chan struct{}
	done      chan struct{} // the supervisor exited
	delivered chan struct{} // the delivery worker exited
	queue     chan inbound
	restarts  atomic.Int64 // launches after the first (tests)
}

var _ backend.Backend = (*Exec)(nil)

type call struct {
	p  *proc
	ch chan Line // capacity 1
}

type inbound struct {
	p  *proc
	ev backend.Event
}

// proc is one run of the program.
type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    chan []byte   // lines to write, newline included
	exited chan struct{} // closed once the program is gone and stdout drained
	hello  chan Line     // capacity 1: the first line
	log    zerolog.Logger
}

// Open checks cfg and prepares the program's state directory; the program
// starts with Start.
func Open(log zerolog.Logger, stateDir string, cfg Config) (*Exec, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	dir := filepath.Join(stateDir, StateSubdir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("exec: state directory: %w", err)
	}
	return &Exec{
		log:       log.With().Str("backend", Name).Logger(),
		cfg:       cfg,
		stateDir:  dir,
		upCh:      make(chan struct{}),
		pending:   map[string]*call{},
		closed:    make(chan struct{}),
		done:      make(chan struct{}),
		delivered: make(chan struct{}),
		queue:     make(chan inbound, deliverQueue),
	}, nil
}

func (b *Exec) Name() string { return Name }

// Caps returns what the program announced in its latest hello.
func (b *Exec) Caps() (map[string]wire.Caps, []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.caps), slices.Clone(b.sims)
}

// Start runs the program and returns once it has said hello (or failed to
// within the hello timeout: then the error says why and nothing keeps
// running). Afterwards the program is restarted with backoff whenever it
// exits, until Close or ctx ends.
func (b *Exec) Start(ctx context.Context, sink backend.Sink) error {
	b.mu.Lock()
	if b.started {
		b.mu.Unlock()
		return errors.New("exec: already started")
	}
	select {
	case <-b.closed:
		b.mu.Unlock()
		return ErrClosed
	default:
	}
	b.started, b.sink = true, sink
	ctx, b.cancel = context.WithCancel(ctx)
	b.mu.Unlock()
	go b.deliverLoop(ctx)
	first := make(chan error, 1)
	go b.supervise(ctx, first)
	if err := <-first; err != nil {
		b.cancel()
		<-b.done
		return err
	}
	return nil
}

// Close stops the program (stdin closed and SIGTERM, then SIGKILL after the
// grace period) and waits for it to exit.
func (b *Exec) Close() error {
	b.closeOnce.Do(func() { close(b.closed) })
	b.mu.Lock()
	started, cancel := b.started, b.cancel
	b.mu.Unlock()
	if started {
		<-b.done
		cancel()
		<-b.delivered
	}
	return nil
}

func (b *Exec) supervise(ctx context.Context, first chan<- error) {
	defer close(b.done)
	bo := &agent.Backoff{Schedule: b.cfg.schedule(), Jitter: agent.DefaultJitter}
	for launches := 0; ; launches++ {
		if launches > 0 {
			b.restarts.Add(1)
		}
		began := time.Now()
		p, err := b.launch(ctx)
		if first != nil {
			first <- err
			first = nil
			if err != nil {
				return
			}
		}
		if err == nil {
			b.setUp(p)
			select {
			case <-p.exited:
			case <-ctx.Done():
			case <-b.closed:
			}
			b.setDown(p)
			b.stop(p)
			if time.Since(began) >= healthyRun {
				bo.Reset()
			}
		}
		if b.stopping(ctx) {
			return
		}
		wait := bo.Next()
		if err != nil {
			b.log.Warn().Err(err).Dur("retry_in", wait).Msg("phone program did not start")
		} else {
			b.log.Warn().Str("exit", exitString(p.cmd)).Dur("restart_in", wait).Msg("phone program exited; restarting")
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		case <-b.closed:
			t.Stop()
			return
		}
	}
}

func (b *Exec) stopping(ctx context.Context) bool {
	select {
	case <-b.closed:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

func exitString(cmd *exec.Cmd) string {
	if cmd.ProcessState == nil {
		return "unknown"
	}
	return cmd.ProcessState.String()
}

func (b *Exec) setUp(p *proc) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cur = p
	close(b.upCh)
}

// setDown forgets p and fails every command still waiting on it.
func (b *Exec) setDown(p *proc) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == p {
		b.cur = nil
		b.upCh = make(chan struct{})
	}
	for req, c := range b.pending {
		if c.p == p {
			delete(b.pending, req)
			close(c.ch)
		}
	}
}

// stop ends p: stdin closed and SIGTERM, SIGKILL after the grace period.
func (b *Exec) stop(p *proc) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.stdin.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(time.Duration(b.cfg.StopGrace))
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		p.log.Warn().Msg("phone program ignored SIGTERM; killing it")
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// launch starts the program, waits for its hello and answers welcome.
func (b *Exec) launch(ctx context.Context) (*proc, error) {
	cmd := exec.Command(b.cfg.Command, b.cfg.Args...)
	cmd.Dir = b.cfg.Dir
	env := os.Environ()
	keys := slices.Collect(maps.Keys(b.cfg.Env))
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+b.cfg.Env[k])
	}
	cmd.Env = append(env, "RCSGATE_STATE_DIR="+b.stateDir, "RCSGATE_EXEC_PROTOCOL="+strconv.Itoa(Protocol))
	p := &proc{
		cmd:    cmd,
		out:    make(chan []byte, 64),
		exited: make(chan struct{}),
		hello:  make(chan Line, 1),
	}
	cmd.Stderr = &stderrLog{log: b.log}
	cmd.WaitDelay = time.Duration(b.cfg.StopGrace)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("exec: %w", err)
	}
	p.stdin = stdin
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("exec: start %s: %w", filepath.Base(b.cfg.Command), err)
	}
	p.log = b.log.With().Int("pid", cmd.Process.Pid).Logger()
	go b.readLoop(p, stdout)
	go p.writeLoop()

	t := time.NewTimer(time.Duration(b.cfg.HelloTimeout))
	defer t.Stop()
	var h Line
	select {
	case h = <-p.hello:
	case <-p.exited:
		return nil, fmt.Errorf("exec: program exited before its hello (%s)", exitString(cmd))
	case <-t.C:
		b.stop(p)
		return nil, fmt.Errorf("exec: no hello from the program within %v", time.Duration(b.cfg.HelloTimeout))
	case <-ctx.Done():
		b.stop(p)
		return nil, ctx.Err()
	case <-b.closed:
		b.stop(p)
		return nil, ErrClosed
	}
	if h.Type != TypeHello || h.Protocol < 1 {
		b.stop(p)
		return nil, fmt.Errorf("exec: the program's first line is not a hello with a protocol version (type %q)", clip(h.Type, 32))
	}
	proto := min(h.Protocol, Protocol)
	caps := map[string]wire.Caps{}
	for tr, c := range h.Caps {
		switch tr {
		case wire.TransportRCS, wire.TransportSMS, wire.TransportMMS:
			caps[tr] = c
		default:
			p.log.Warn().Str("transport", clip(tr, 16)).Msg("hello names an unknown transport; ignored")
		}
	}
	var sims []int
	for _, s := range h.SIMs {
		if s >= 1 && s <= 8 && !slices.Contains(sims, s) {
			sims = append(sims, s)
		}
	}
	b.mu.Lock()
	b.caps, b.sims = caps, sims
	b.mu.Unlock()
	w, _ := json.Marshal(welcomeLine{Type: TypeWelcome, Protocol: proto, Agent: "rcsgate-agent", StateDir: b.stateDir, MaxLine: MaxLine})
	if !p.write(ctx, append(w, '\n')) {
		b.stop(p)
		return nil, fmt.Errorf("exec: program exited before the welcome (%s)", exitString(cmd))
	}
	p.log.Info().Str("program", clip(h.Name, 64)).Int("protocol", proto).Msg("phone program ready")
	return p, nil
}

// write queues a line for the program; false if it exited or ctx ended.
func (p *proc) write(ctx context.Context, line []byte) bool {
	select {
	case p.out <- line:
		return true
	case <-p.exited:
		return false
	case <-ctx.Done():
		return false
	}
}

func (p *proc) writeLoop() {
	for {
		select {
		case line := <-p.out:
			if _, err := p.stdin.Write(line); err != nil {
				p.log.Debug().Err(err).Msg("cannot write to the phone program")
				return
			}
		case <-p.exited:
			return
		}
	}
}

// readLoop reads the program's stdout until it ends, then reaps the
// program. A line over MaxLine kills the program (it is restarted).
func (b *Exec) readLoop(p *proc, stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine+1)
	helloSeen := false
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		l, err := DecodeLine(line)
		if err != nil {
			p.log.Warn().Int("len", len(line)).Msg("malformed line from the phone program skipped")
			continue
		}
		if !helloSeen {
			helloSeen = true
			p.hello <- l
			continue
		}
		b.handle(p, l)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			p.log.Error().Int("max", MaxLine).Msg("phone program wrote a line over the limit; restarting it")
		} else {
			p.log.Warn().Err(err).Msg("reading the phone program's output failed; restarting it")
		}
		_ = p.cmd.Process.Kill()
	}
	// stdout ended: the program is exiting (or broke the protocol).
	kill := time.AfterFunc(time.Duration(b.cfg.StopGrace), func() { _ = p.cmd.Process.Kill() })
	_ = p.cmd.Wait()
	kill.Stop()
	close(p.exited)
}

// handle acts on one line after the hello.
func (b *Exec) handle(p *proc, l Line) {
	switch l.Type {
	case TypeResult:
		b.mu.Lock()
		c, ok := b.pending[l.Req]
		if ok && c.p == p {
			delete(b.pending, l.Req)
		}
		b.mu.Unlock()
		if !ok || c.p != p {
			p.log.Debug().Str("req", clip(l.Req, 32)).Msg("result for no waiting command ignored")
			return
		}
		c.ch <- l
	case TypeEvent:
		ev := l.Event()
		if err := CheckEvent(ev); err != nil {
			p.log.Warn().Str("id", clip(ev.ID, 64)).Err(err).Msg("invalid event from the phone program refused")
			b.reply(p, ackLine{Type: TypeNack, ID: clip(ev.ID, wire.MaxIDLen), Permanent: true, Reason: clip("invalid event: "+err.Error(), 256)})
			return
		}
		select {
		case b.queue <- inbound{p: p, ev: ev}:
		default:
			b.reply(p, ackLine{Type: TypeNack, ID: ev.ID, Reason: "busy"})
		}
	case TypeTyping:
		if l.Chat == "" || len(l.Chat) > wire.MaxChatLen {
			p.log.Debug().Msg("typing line without a valid chat ignored")
			return
		}
		b.mu.Lock()
		sink := b.sink
		b.mu.Unlock()
		sink.Typing(l.Chat, l.Active)
	case TypeHello:
		p.log.Warn().Msg("second hello from the phone program ignored")
	default:
		p.log.Debug().Str("type", clip(l.Type, 32)).Msg("unknown line type from the phone program ignored")
	}
}

// reply writes an ack or nack without blocking the reader for long.
func (b *Exec) reply(p *proc, a ackLine) {
	line, err := json.Marshal(a)
	if err != nil {
		return
	}
	select {
	case p.out <- append(line, '\n'):
	case <-p.exited:
	case <-b.closed:
	}
}

// deliverLoop hands events to the sink in the order they came, acking each
// once Deliver returned nil and nacking it otherwise.
func (b *Exec) deliverLoop(ctx context.Context) {
	defer close(b.delivered)
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-b.queue:
			select {
			case <-in.p.exited:
				continue // the program offers it again after its restart
			default:
			}
			err := b.sink.Deliver(ctx, in.ev)
			if err != nil {
				b.log.Warn().Str("id", in.ev.ID).Str("chat", redact.Number(in.ev.Chat)).Err(err).Msg("agent did not take the event; nacked")
				b.reply(in.p, ackLine{Type: TypeNack, ID: in.ev.ID, Reason: "not stored; offer it again later"})
				continue
			}
			b.log.Debug().Str("id", in.ev.ID).Str("kind", in.ev.Kind).Str("chat", redact.Number(in.ev.Chat)).Int("len", len(in.ev.Text)).Msg("event from the phone delivered")
			b.reply(in.p, ackLine{Type: TypeAck, ID: in.ev.ID})
		}
	}
}

// waitUp returns the running program, waiting for a (re)start within ctx.
func (b *Exec) waitUp(ctx context.Context) (*proc, error) {
	for {
		b.mu.Lock()
		p, up, started := b.cur, b.upCh, b.started
		b.mu.Unlock()
		if !started {
			return nil, fmt.Errorf("%w: backend not started", ErrNotRunning)
		}
		if p != nil {
			return p, nil
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNotRunning, ctx.Err())
		case <-b.closed:
			return nil, ErrClosed
		}
	}
}

// do sends a command line to p and waits for its result.
func (b *Exec) do(ctx context.Context, p *proc, req string, v any) (Line, error) {
	line, err := json.Marshal(v)
	if err != nil {
		return Line{}, fmt.Errorf("exec: encode command: %w", err)
	}
	if len(line) > MaxLine {
		return Line{}, backend.Permanent("event too large for the exec protocol")
	}
	c := &call{p: p, ch: make(chan Line, 1)}
	b.mu.Lock()
	b.pending[req] = c
	b.mu.Unlock()
	forget := func() {
		b.mu.Lock()
		if b.pending[req] == c {
			delete(b.pending, req)
		}
		b.mu.Unlock()
	}
	if !p.write(ctx, append(line, '\n')) {
		forget()
		if err := ctx.Err(); err != nil {
			return Line{}, fmt.Errorf("exec: command not written: %w", err)
		}
		return Line{}, ErrProgramExited
	}
	select {
	case res, ok := <-c.ch:
		if !ok {
			return Line{}, ErrProgramExited
		}
		return res, nil
	case <-ctx.Done():
		forget()
		return Line{}, fmt.Errorf("exec: no result from the phone program: %w", ctx.Err())
	case <-b.closed:
		forget()
		return Line{}, ErrClosed
	}
}

func (b *Exec) nextReq() string { return strconv.FormatUint(b.seq.Add(1), 10) }

// Send hands the event to the program and waits (within ctx and the send
// timeout) for its result. Errors are transient unless the program said
// "permanent"; the program must treat ev.ID as an idempotency key since
// the same event is offered again after a transient error.
func (b *Exec) Send(ctx context.Context, ev backend.Event) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(b.cfg.SendTimeout))
	defer cancel()
	p, err := b.waitUp(ctx)
	if err != nil {
		return fmt.Errorf("exec: send %s: %w", ev.ID, err)
	}
	req := b.nextReq()
	res, err := b.do(ctx, p, req, sendLine{Type: TypeSend, Req: req, EventFields: fieldsOf(ev)})
	if err != nil {
		return fmt.Errorf("exec: send %s: %w", ev.ID, err)
	}
	return resultErr(res)
}

func resultErr(res Line) error {
	if res.OK {
		return nil
	}
	reason := clip(res.Reason, 256)
	if reason == "" {
		reason = "the phone program refused it"
	}
	if res.Permanent {
		return backend.Permanent(reason)
	}
	return fmt.Errorf("exec: phone program failed: %s", reason)
}

// Typing passes the Matrix user's typing to the program. Best effort: it
// does not wait for a program that is not running.
func (b *Exec) Typing(ctx context.Context, chat string, active bool) error {
	b.mu.Lock()
	p := b.cur
	b.mu.Unlock()
	if p == nil {
		return ErrNotRunning
	}
	ctx, cancel := context.WithTimeout(ctx, typingTimeout)
	defer cancel()
	req := b.nextReq()
	res, err := b.do(ctx, p, req, typingLine{Type: TypeTyping, Req: req, Chat: chat, Active: active})
	if err != nil {
		return fmt.Errorf("exec: typing: %w", err)
	}
	return resultErr(res)
}

// stderrLog logs the program's stderr at debug, one entry per line, cut at
// maxStderrLine bytes and with number-like runs masked. Never parsed.
type stderrLog struct {
	log  zerolog.Logger
	buf  []byte
	skip bool // the current line was cut; drop the rest of it
}

func (s *stderrLog) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if !s.skip {
			room := maxStderrLine - len(s.buf)
			if len(chunk) > room {
				s.buf = append(s.buf, chunk[:room]...)
				s.flush(true)
				s.skip = true
			} else {
				s.buf = append(s.buf, chunk...)
			}
		}
		if i < 0 {
			break
		}
		if !s.skip {
			s.flush(false)
		}
		s.skip = false
		p = p[i+1:]
	}
	return n, nil
}

func (s *stderrLog) flush(cut bool) {
	var m bytes.Buffer
	_, _ = redact.Writer{W: &m}.Write(s.buf)
	s.buf = s.buf[:0]
	s.log.Debug().Bool("cut", cut).Str("line", strings.ToValidUTF8(m.String(), "?")).Msg("phone program stderr")
}
