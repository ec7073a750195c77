// Package sim is a simulated phone for tests and demos: an echo contact that
// answers every message with the same text, quiet contacts that never answer,
// a record of everything "sent to the phone network", and a loopback-only
// HTTP control API to inject inbound messages.
package sim

import (
	"context"
	"errors"
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
	queue   []backend.Inbound // inbound messages waiting to reach the sink, in order
	wake    chan struct{}     // capacity 1: something was queued
	started bool
	closed  chan struct{}
	done    chan struct{} // closed when the delivery goroutine exits
}

var _ backend.Backend = (*Sim)(nil)

// New returns a simulated phone that logs to log.
func New(log zerolog.Logger) *Sim {
	return &Sim{
		log:    log.With().Str("backend", Name).Logger(),
		now:    time.Now,
		wake:   make(chan struct{}, 1),
		closed: make(chan struct{}),
		done:   make(chan struct{}),
	}
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
	s.sent = append(s.sent, Sent{ID: id, Chat: chat, Text: text, TS: now})
	s.log.Debug().Str("id", id).Str("chat", redact.Number(chat)).Int("len", len(text)).Msg("sent to phone network")
	if chat == EchoNumber {
		s.enqueueLocked(backend.Inbound{Chat: EchoNumber, From: EchoNumber, Text: text, TS: now})
	}
	return nil
}

// Inject makes the phone receive text from the number from, as if over the
// network. It returns once the message is queued for the agent.
func (s *Sim) Inject(from, text string) error {
	if !ValidNumber(from) {
		return errors.New("from must be + followed by 7 to 15 digits")
	}
	if text == "" {
		return errors.New("text must not be empty")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return ErrNotStarted
	}
	s.enqueueLocked(backend.Inbound{Chat: from, From: from, Text: text, TS: s.now()})
	return nil
}

// SentMessages returns a copy of everything sent so far, oldest first.
func (s *Sim) SentMessages() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

func (s *Sim) enqueueLocked(in backend.Inbound) {
	s.queue = append(s.queue, in)
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
		var in backend.Inbound
		have := len(s.queue) > 0
		if have {
			in = s.queue[0]
		}
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
