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
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// The protocol engine: the agent's side of docs/backends/exec.md over one
// io.Reader/io.Writer pair at a time (a peer). It knows nothing of
// processes: Exec feeds it the pipes of a program it supervises, Stdio the
// agent's own stdin and stdout.

// statusGap is the least time between two status lines: the queues change
// with every message, the program needs a person's view of them.
const statusGap = 250 * time.Millisecond

// Host is what the agent offers a program beyond messages: its status
// (sent as "status" lines) and what to do with "network" lines. Optional:
// without one neither line is used. *agent.Agent with a Resolver is one
// (see cmd/rcsgate-agent).
type Host interface {
	Status() agent.Status
	// WaitStatus returns once the status differs from last (or ctx ends).
	WaitStatus(ctx context.Context, last agent.Status) (agent.Status, error)
	// Network takes the phone's news that its network changed, with the
	// network's DNS servers (nil: not given).
	Network(dns []string) error
}

// engine is the protocol state shared by every peer of one backend.
type engine struct {
	log         zerolog.Logger
	stateDir    string // the program's, reported in welcome
	sendTimeout time.Duration
	seq         atomic.Uint64

	mu      sync.Mutex
	cur     *peer         // the welcomed peer; nil when none
	upCh    chan struct{} // closed when cur becomes non-nil
	caps    map[string]wire.Caps
	sims    []int
	pending map[string]*call
	sink    backend.Sink
	host    Host
	started bool
	cancel  context.CancelFunc

	closeOnce sync.Once
	closed    chan struct{}
	delivered chan struct{} // the delivery worker exited
	queue     chan inbound
}

type call struct {
	p  *peer
	ch chan Line // capacity 1
}

type inbound struct {
	p  *peer
	ev backend.Event
}

// peer is one connection to a program: its input w, its output read by
// readLoop.
type peer struct {
	w     io.Writer
	out   chan []byte   // lines to write, newline included
	ended chan struct{} // closed once the output ended (and reap returned)
	hello chan Line     // capacity 1: the first line
	log   zerolog.Logger
	// abort breaks the connection when the program broke the protocol
	// (kills a process); reap runs after its output ended (waits for a
	// process to exit). Either may be nil.
	abort, reap func()
}

func newEngine(log zerolog.Logger, stateDir string, sendTimeout time.Duration) engine {
	return engine{
		log:         log,
		stateDir:    stateDir,
		sendTimeout: sendTimeout,
		upCh:        make(chan struct{}),
		pending:     map[string]*call{},
		closed:      make(chan struct{}),
		delivered:   make(chan struct{}),
		queue:       make(chan inbound, deliverQueue),
	}
}

// Caps returns what the program announced in its latest hello.
func (e *engine) Caps() (map[string]wire.Caps, []int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.caps), slices.Clone(e.sims)
}

// SetHost gives the engine the agent's status and network handling; call
// it before Start.
func (e *engine) SetHost(h Host) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.host = h
}

// begin marks the engine started and runs the delivery worker; the
// returned context ends at Close.
func (e *engine) begin(ctx context.Context, sink backend.Sink) (context.Context, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return nil, errors.New("exec: already started")
	}
	select {
	case <-e.closed:
		return nil, ErrClosed
	default:
	}
	e.started, e.sink = true, sink
	ctx, e.cancel = context.WithCancel(ctx)
	go e.deliverLoop(ctx)
	return ctx, nil
}

// shut marks the engine closed; it reports whether Start ran, and then
// stops the delivery worker with stop (after the caller's own teardown).
func (e *engine) shut() (started bool, stop func()) {
	e.closeOnce.Do(func() { close(e.closed) })
	e.mu.Lock()
	started, cancel := e.started, e.cancel
	e.mu.Unlock()
	return started, func() {
		if started {
			cancel()
			<-e.delivered
		}
	}
}

func (e *engine) stopping(ctx context.Context) bool {
	select {
	case <-e.closed:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// connect runs the protocol over r and w: it waits for the program's
// hello (within helloTimeout), answers welcome and returns the peer. On an
// error the caller ends the connection.
func (e *engine) connect(ctx context.Context, p *peer, r io.Reader, helloTimeout time.Duration) error {
	go e.readLoop(p, r)
	go p.writeLoop()
	t := time.NewTimer(helloTimeout)
	defer t.Stop()
	var h Line
	select {
	case h = <-p.hello:
	case <-p.ended:
		return errors.New("exec: the program ended before its hello")
	case <-t.C:
		return fmt.Errorf("exec: no hello from the program within %v", helloTimeout)
	case <-ctx.Done():
		return ctx.Err()
	case <-e.closed:
		return ErrClosed
	}
	if h.Type != TypeHello || h.Protocol < 1 {
		return fmt.Errorf("exec: the program's first line is not a hello with a protocol version (type %q)", clip(h.Type, 32))
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
	e.mu.Lock()
	e.caps, e.sims = caps, sims
	host := e.host
	e.mu.Unlock()
	wl := welcomeLine{Type: TypeWelcome, Protocol: proto, Agent: "rcsgate-agent", StateDir: e.stateDir, MaxLine: MaxLine}
	if host != nil {
		wl.Features = []string{TypeStatus, TypeNetwork}
	}
	w, _ := json.Marshal(wl)
	if !p.write(ctx, append(w, '\n')) {
		return errors.New("exec: the program ended before the welcome")
	}
	p.log.Info().Str("program", clip(h.Name, 64)).Int("protocol", proto).Msg("phone program ready")
	if host != nil {
		go e.statusLoop(p, host)
	}
	return nil
}

func newPeer(w io.Writer, log zerolog.Logger, abort, reap func()) *peer {
	return &peer{w: w, out: make(chan []byte, 64), ended: make(chan struct{}), hello: make(chan Line, 1),
		log: log, abort: abort, reap: reap}
}

func (e *engine) setUp(p *peer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cur = p
	close(e.upCh)
}

// setDown forgets p and fails every command still waiting on it.
func (e *engine) setDown(p *peer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur == p {
		e.cur = nil
		e.upCh = make(chan struct{})
	}
	for req, c := range e.pending {
		if c.p == p {
			delete(e.pending, req)
			close(c.ch)
		}
	}
}

// write queues a line for the program; false if it ended or ctx ended.
func (p *peer) write(ctx context.Context, line []byte) bool {
	select {
	case p.out <- line:
		return true
	case <-p.ended:
		return false
	case <-ctx.Done():
		return false
	}
}

func (p *peer) writeLoop() {
	for {
		select {
		case line := <-p.out:
			if _, err := p.w.Write(line); err != nil {
				p.log.Debug().Err(err).Msg("cannot write to the phone program")
				return
			}
		case <-p.ended:
			return
		}
	}
}

// readLoop reads the program's lines until its output ends. A line over
// MaxLine breaks the connection (abort).
func (e *engine) readLoop(p *peer, r io.Reader) {
	sc := bufio.NewScanner(r)
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
		e.handle(p, l)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			p.log.Error().Int("max", MaxLine).Msg("phone program wrote a line over the limit; dropping the connection")
		} else {
			p.log.Warn().Err(err).Msg("reading the phone program's output failed; dropping the connection")
		}
		if p.abort != nil {
			p.abort()
		}
	}
	if p.reap != nil {
		p.reap()
	}
	close(p.ended)
}

// handle acts on one line after the hello.
func (e *engine) handle(p *peer, l Line) {
	switch l.Type {
	case TypeResult:
		e.mu.Lock()
		c, ok := e.pending[l.Req]
		if ok && c.p == p {
			delete(e.pending, l.Req)
		}
		e.mu.Unlock()
		if !ok || c.p != p {
			p.log.Debug().Str("req", clip(l.Req, 32)).Msg("result for no waiting command ignored")
			return
		}
		c.ch <- l
	case TypeEvent:
		ev := l.Event()
		if err := CheckEvent(ev); err != nil {
			p.log.Warn().Str("id", clip(ev.ID, 64)).Err(err).Msg("invalid event from the phone program refused")
			e.reply(p, ackLine{Type: TypeNack, ID: clip(ev.ID, wire.MaxIDLen), Permanent: true, Reason: clip("invalid event: "+err.Error(), 256)})
			return
		}
		select {
		case e.queue <- inbound{p: p, ev: ev}:
		default:
			e.reply(p, ackLine{Type: TypeNack, ID: ev.ID, Reason: "busy"})
		}
	case TypeTyping:
		if l.Chat == "" || len(l.Chat) > wire.MaxChatLen {
			p.log.Debug().Msg("typing line without a valid chat ignored")
			return
		}
		e.mu.Lock()
		sink := e.sink
		e.mu.Unlock()
		sink.Typing(l.Chat, l.Active)
	case TypeNetwork:
		e.mu.Lock()
		host := e.host
		e.mu.Unlock()
		if host == nil {
			p.log.Debug().Msg("network line ignored: nothing to apply it to")
			return
		}
		if err := host.Network(l.DNS); err != nil {
			p.log.Warn().Err(err).Msg("network line from the phone program not applied")
			return
		}
		p.log.Info().Int("dns_servers", len(l.DNS)).Msg("the phone's network changed")
	case TypeHello:
		p.log.Warn().Msg("second hello from the phone program ignored")
	default:
		p.log.Debug().Str("type", clip(l.Type, 32)).Msg("unknown line type from the phone program ignored")
	}
}

// reply writes an ack or nack without blocking the reader for long.
func (e *engine) reply(p *peer, a ackLine) {
	line, err := json.Marshal(a)
	if err != nil {
		return
	}
	select {
	case p.out <- append(line, '\n'):
	case <-p.ended:
	case <-e.closed:
	}
}

// statusLoop sends the agent's status to p now and at every change (at
// most one line per statusGap) until p ends.
func (e *engine) statusLoop(p *peer, host Host) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.ended:
		case <-e.closed:
		}
		cancel()
	}()
	s := host.Status()
	for {
		line, _ := json.Marshal(statusLineOf(s))
		if !p.write(ctx, append(line, '\n')) {
			return
		}
		t := time.NewTimer(statusGap)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		next, err := host.WaitStatus(ctx, s)
		if err != nil {
			return
		}
		s = next
	}
}

func statusLineOf(s agent.Status) statusLine {
	l := statusLine{Type: TypeStatus, Connected: s.Connected, Out: s.Out, In: s.In, Error: s.LastError, Unpaired: s.Unpaired}
	if !s.Since.IsZero() {
		l.Since = s.Since.UnixMilli()
	}
	return l
}

// deliverLoop hands events to the sink in the order they came, acking each
// once Deliver returned nil and nacking it otherwise.
func (e *engine) deliverLoop(ctx context.Context) {
	defer close(e.delivered)
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-e.queue:
			select {
			case <-in.p.ended:
				continue // the program offers it again after its restart
			default:
			}
			err := e.sink.Deliver(ctx, in.ev)
			if err != nil {
				e.log.Warn().Str("id", in.ev.ID).Str("chat", redact.Number(in.ev.Chat)).Err(err).Msg("agent did not take the event; nacked")
				e.reply(in.p, ackLine{Type: TypeNack, ID: in.ev.ID, Reason: "not stored; offer it again later"})
				continue
			}
			e.log.Debug().Str("id", in.ev.ID).Str("kind", in.ev.Kind).Str("chat", redact.Number(in.ev.Chat)).Int("len", len(in.ev.Text)).Msg("event from the phone delivered")
			e.reply(in.p, ackLine{Type: TypeAck, ID: in.ev.ID})
		}
	}
}

// waitUp returns the welcomed peer, waiting for a (re)start within ctx.
func (e *engine) waitUp(ctx context.Context) (*peer, error) {
	for {
		e.mu.Lock()
		p, up, started := e.cur, e.upCh, e.started
		e.mu.Unlock()
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
		case <-e.closed:
			return nil, ErrClosed
		}
	}
}

// do sends a command line to p and waits for its result.
func (e *engine) do(ctx context.Context, p *peer, req string, v any) (Line, error) {
	line, err := json.Marshal(v)
	if err != nil {
		return Line{}, fmt.Errorf("exec: encode command: %w", err)
	}
	if len(line) > MaxLine {
		return Line{}, backend.Permanent("event too large for the exec protocol")
	}
	c := &call{p: p, ch: make(chan Line, 1)}
	e.mu.Lock()
	e.pending[req] = c
	e.mu.Unlock()
	forget := func() {
		e.mu.Lock()
		if e.pending[req] == c {
			delete(e.pending, req)
		}
		e.mu.Unlock()
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
	case <-e.closed:
		forget()
		return Line{}, ErrClosed
	}
}

func (e *engine) nextReq() string { return strconv.FormatUint(e.seq.Add(1), 10) }

// Send hands the event to the program and waits (within ctx and the send
// timeout) for its result. Errors are transient unless the program said
// "permanent"; the program must treat ev.ID as an idempotency key since
// the same event is offered again after a transient error.
func (e *engine) Send(ctx context.Context, ev backend.Event) error {
	ctx, cancel := context.WithTimeout(ctx, e.sendTimeout)
	defer cancel()
	p, err := e.waitUp(ctx)
	if err != nil {
		return fmt.Errorf("exec: send %s: %w", ev.ID, err)
	}
	req := e.nextReq()
	res, err := e.do(ctx, p, req, sendLine{Type: TypeSend, Req: req, EventFields: fieldsOf(ev)})
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
func (e *engine) Typing(ctx context.Context, chat string, active bool) error {
	e.mu.Lock()
	p := e.cur
	e.mu.Unlock()
	if p == nil {
		return ErrNotRunning
	}
	ctx, cancel := context.WithTimeout(ctx, typingTimeout)
	defer cancel()
	req := e.nextReq()
	res, err := e.do(ctx, p, req, typingLine{Type: TypeTyping, Req: req, Chat: chat, Active: active})
	if err != nil {
		return fmt.Errorf("exec: typing: %w", err)
	}
	return resultErr(res)
}
