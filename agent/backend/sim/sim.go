// Package sim is a simulated phone for tests and demos: an echo contact that
// answers every message with the same text, quiet contacts that never answer,
// a record of everything "sent to the phone network", and a loopback-only
// HTTP control API to inject inbound messages.
package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/redact"
)

// EchoNumber is the contact that answers every message with the same text.
const EchoNumber = "+12025550100"

// Name is the backend name reported in Hello.
const Name = "sim"

// deliverRetry is the pause before offering a refused message again.
const deliverRetry = 100 * time.Millisecond

// ErrNotStarted is returned by Inject before Start.
var ErrNotStarted = errors.New("sim: backend not started")

// Sent is one message the simulated phone sent to the network.
type Sent struct {
	ID   string    `json:"id"`
	Chat string    `json:"chat"`
	Text string    `json:"text"`
	TS   time.Time `json:"ts"`
}

// Sim is the simulated phone. The zero value is not usable; use New.
type Sim struct {
	log zerolog.Logger
	now func() time.Time

	mu      sync.Mutex
	sink    backend.Sink
	sent    []Sent
	queue   []queued // inbound messages waiting to reach the sink, in order
	sentIDs map[string]bool
	sentLog *os.File      // <state>/sim-sent.jsonl, nil for an in-memory sim
	dupes   int           // sends of an id already sent (dropped)
	wake    chan struct{} // capacity 1: something was queued
	started bool
	closed  chan struct{}
	done    chan struct{} // closed when the delivery goroutine exits
}

var _ backend.Backend = (*Sim)(nil)

// SentFile is the file in the state directory where Open records sends.
const SentFile = "sim-sent.jsonl"

type queued struct {
	in   backend.Inbound
	done chan error // nil for echo answers; gets nil once the sink took it
}

// New returns a simulated phone that logs to log and keeps its record of
// sent messages in memory only.
func New(log zerolog.Logger) *Sim {
	return &Sim{
		log:     log.With().Str("backend", Name).Logger(),
		now:     time.Now,
		wake:    make(chan struct{}, 1),
		closed:  make(chan struct{}),
		done:    make(chan struct{}),
		sentIDs: map[string]bool{},
	}
}

// Open returns a simulated phone whose record of sent messages is durable:
// each send is appended to stateDir/sim-sent.jsonl and fsync'd before Send
// returns, and the record is loaded again here, so it survives a SIGKILL.
func Open(log zerolog.Logger, stateDir string) (*Sim, error) {
	s := New(log)
	path := filepath.Join(stateDir, SentFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var good int64
	for sc.Scan() {
		line := sc.Bytes()
		var m Sent
		if err := json.Unmarshal(line, &m); err != nil {
			break // a torn last line from a crash mid-write: cut it off
		}
		good += int64(len(line)) + 1
		if !s.sentIDs[m.ID] {
			s.sentIDs[m.ID] = true
			s.sent = append(s.sent, m)
		}
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("sim: %w", err)
	}
	if _, err := f.Seek(good, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("sim: %w", err)
	}
	s.sentLog = f
	return s, nil
}

func (s *Sim) Name() string { return Name }

// Start records the sink and starts delivering queued inbound messages to it.
func (s *Sim) Start(ctx context.Context, sink backend.Sink) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("sim: already started")
	}
	s.started, s.sink = true, sink
	go s.deliverLoop(ctx)
	return nil
}

// Close stops delivery. Queued inbound messages that did not reach the sink
// are dropped (the simulated phone "loses" them).
func (s *Sim) Close() error {
	s.mu.Lock()
	started := s.started
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
	s.mu.Unlock()
	if started {
		<-s.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sentLog != nil {
		err := s.sentLog.Close()
		s.sentLog = nil
		return err
	}
	return nil
}

// Send records the message as sent to the phone network. Messages to the
// echo contact are answered with the same text once Send has returned.
func (s *Sim) Send(ctx context.Context, id, chat, text string) error {
	if !ValidNumber(chat) {
		return backend.Permanent("invalid phone number")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if id != "" && s.sentIDs[id] {
		// The agent hands a message again after a crash between our
		// return and its own record: the phone sends it once.
		s.dupes++
		s.log.Info().Str("id", id).Msg("duplicate send dropped")
		return nil
	}
	m := Sent{ID: id, Chat: chat, Text: text, TS: now}
	if s.sentLog != nil {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if _, err := s.sentLog.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("sim: record send: %w", err)
		}
		if err := s.sentLog.Sync(); err != nil {
			return fmt.Errorf("sim: record send: %w", err)
		}
	}
	if id != "" {
		s.sentIDs[id] = true
	}
	s.sent = append(s.sent, m)
	s.log.Debug().Str("id", id).Str("chat", redact.Number(chat)).Int("len", len(text)).Msg("sent to phone network")
	if chat == EchoNumber {
		s.enqueueLocked(queued{in: backend.Inbound{Chat: EchoNumber, From: EchoNumber, Text: text, TS: now}})
	}
	return nil
}

// Duplicates reports how many sends of an already-sent id were dropped.
func (s *Sim) Duplicates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dupes
}

// Inject makes the phone receive text from the number from, as if over the
// network. It returns once the agent's sink has accepted it (the agent
// stores it durably before accepting), so a nil error means the agent has it.
func (s *Sim) Inject(from, text string) error {
	return s.InjectContext(context.Background(), from, text)
}

// InjectContext is Inject with a context bounding the wait for the sink.
func (s *Sim) InjectContext(ctx context.Context, from, text string) error {
	return s.injectID(ctx, "", from, text)
}

func (s *Sim) injectID(ctx context.Context, id, from, text string) error {
	if !ValidNumber(from) {
		return errors.New("from must be + followed by 7 to 15 digits")
	}
	if text == "" {
		return errors.New("text must not be empty")
	}
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return ErrNotStarted
	}
	done := make(chan error, 1)
	s.enqueueLocked(queued{in: backend.Inbound{ID: id, Chat: from, From: from, Text: text, TS: s.now()}, done: done})
	s.mu.Unlock()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closed:
		return ErrClosed
	}
}

// ErrClosed is returned by Inject when the sim closes before the agent took
// the message.
var ErrClosed = errors.New("sim: closed before the agent took the message")

// SentMessages returns a copy of everything sent so far, oldest first.
func (s *Sim) SentMessages() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

func (s *Sim) enqueueLocked(q queued) {
	s.queue = append(s.queue, q)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// deliverLoop hands queued inbound messages to the sink one at a time, in
// order; a message the sink refuses is retried after a short pause so a
// temporarily full agent does not lose it.
func (s *Sim) deliverLoop(ctx context.Context) {
	defer close(s.done)
	retry := time.NewTimer(0)
	if !retry.Stop() {
		<-retry.C
	}
	defer retry.Stop()
	for {
		s.mu.Lock()
		var q queued
		have := len(s.queue) > 0
		if have {
			q = s.queue[0]
		}
		in := q.in
		sink := s.sink
		s.mu.Unlock()
		if !have {
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return
			case <-s.closed:
				return
			}
		}
		if err := sink.Deliver(ctx, in); err != nil {
			s.log.Warn().Err(err).Str("from", redact.Number(in.From)).Msg("agent refused inbound message; retrying")
			retry.Reset(deliverRetry)
			select {
			case <-retry.C:
				continue
			case <-ctx.Done():
				return
			case <-s.closed:
				return
			}
		}
		s.mu.Lock()
		s.queue = s.queue[1:]
		s.mu.Unlock()
		if q.done != nil {
			q.done <- nil
		}
	}
}

// ValidNumber reports whether n is "+" followed by 7 to 15 digits.
func ValidNumber(n string) bool {
	if len(n) < 8 || len(n) > 16 || n[0] != '+' {
		return false
	}
	for i := 1; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}
