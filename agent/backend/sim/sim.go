// Package sim is a simulated phone for tests and demos: an echo contact that
// answers every message with the same text, quiet contacts that never answer,
// a record of everything "sent to the phone network", and a loopback-only
// HTTP control API to inject inbound messages.
package sim

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// EchoNumber is the contact that answers every message with the same text.
const EchoNumber = "+12025550100"

// Name is the backend name reported in Hello.
const Name = "sim"

// deliverRetry is the pause before offering a refused message again.
const deliverRetry = 100 * time.Millisecond

// ErrNotStarted is returned by Inject before Start.
var ErrNotStarted = errors.New("sim: backend not started")

// Contacts with a behaviour; every other valid number is a quiet contact
// that never answers.
const (
	// ReceiptsNumber reports "delivered" and then "read" for everything sent
	// to it, and answers nothing.
	ReceiptsNumber = "+12025550101"
	// SMSNumber has no RCS: text goes as SMS, and kinds SMS cannot carry
	// (files, reactions, edits, deletes, replies) are refused.
	SMSNumber = "+12025550199"
	// StuckNumber never goes out: the phone's messaging app keeps failing
	// (a transient error), as a phone without signal would.
	StuckNumber = "+12025550198"
)

// Sent is one event the simulated phone sent to the network.
type Sent struct {
	ID        string      `json:"id"`
	Chat      string      `json:"chat"`
	Text      string      `json:"text"`
	TS        time.Time   `json:"ts"`
	Kind      string      `json:"kind,omitempty"`
	Target    string      `json:"target,omitempty"`
	ReplyTo   string      `json:"reply_to,omitempty"`
	Emoji     string      `json:"emoji,omitempty"`
	Transport string      `json:"transport,omitempty"`
	SIM       int         `json:"sim,omitempty"`
	Media     *wire.Media `json:"media,omitempty"` // Size and SHA256 are of the bytes the phone got
	Group     *wire.Group `json:"group,omitempty"`
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
	sentLog *os.File // <state>/sim-sent.jsonl, nil for an in-memory sim
	typing  map[string]bool
	// mediaDir keeps the bytes of files sent to the network.
	mediaDir string
	dupes    int           // sends of an id already sent (dropped)
	wake     chan struct{} // capacity 1: something was queued
	started  bool
	closed   chan struct{}
	done     chan struct{} // closed when the delivery goroutine exits
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
		log:      log.With().Str("backend", Name).Logger(),
		now:      time.Now,
		wake:     make(chan struct{}, 1),
		closed:   make(chan struct{}),
		done:     make(chan struct{}),
		sentIDs:  map[string]bool{},
		typing:   map[string]bool{},
		mediaDir: filepath.Join(os.TempDir(), fmt.Sprintf("rcsgate-sim-%d-%p", os.Getpid(), new(int))),
	}
}

// Open returns a simulated phone whose record of sent messages is durable:
// each send is appended to stateDir/sim-sent.jsonl and fsync'd before Send
// returns, and the record is loaded again here, so it survives a SIGKILL.
func Open(log zerolog.Logger, stateDir string) (*Sim, error) {
	s := New(log)
	s.mediaDir = filepath.Join(stateDir, "sim-media")
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

// Send records the event as sent to the phone network (a file's bytes are
// kept under <state>/sim-media). The echo contact answers text with the same
// text and a file with the same file; ReceiptsNumber reports delivered and
// read; SMSNumber refuses what SMS cannot carry.
func (s *Sim) Send(ctx context.Context, ev backend.Event) error {
	if !ValidNumber(ev.Chat) && !wire.IsGroupChat(ev.Chat) {
		return backend.Permanent("invalid phone number")
	}
	if ev.Chat == StuckNumber {
		return errors.New("sim: the messaging app did not take the message (no signal)")
	}
	transport := wire.TransportRCS
	if ev.Chat == SMSNumber {
		transport = wire.TransportSMS
		switch ev.Kind {
		case "", wire.KindText:
			if ev.ReplyTo != "" {
				return backend.Unsupported("reply", transport)
			}
		default:
			return backend.Unsupported(ev.Kind, transport)
		}
	}
	if ev.Transport == wire.TransportSMS && transport == wire.TransportRCS && (ev.Kind == "" || ev.Kind == wire.KindText) {
		transport = wire.TransportSMS // the chat prefers SMS
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	dup := ev.ID != "" && s.sentIDs[ev.ID]
	s.mu.Unlock()
	if dup {
		// The agent hands an event again after a crash between our return
		// and its own record: the phone sends it once.
		s.mu.Lock()
		s.dupes++
		s.mu.Unlock()
		s.log.Info().Str("id", ev.ID).Msg("duplicate send dropped")
		return nil
	}
	m := Sent{ID: ev.ID, Chat: ev.Chat, Text: ev.Text, TS: s.now(), Kind: ev.Kind, Target: ev.Target,
		ReplyTo: ev.ReplyTo, Emoji: ev.Emoji, Transport: transport, SIM: ev.SIM, Group: ev.Group}
	var kept string
	if ev.Kind == wire.KindMedia {
		if ev.Media == nil || ev.File == "" {
			return backend.Permanent("file without its bytes")
		}
		var err error
		md := *ev.Media
		kept, md.Size, md.SHA256, err = s.keep(ev.ID, ev.File)
		if err != nil {
			return err
		}
		m.Media = &md
	}
	s.mu.Lock()
	defer s.mu.Unlock()
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
	if ev.ID != "" {
		s.sentIDs[ev.ID] = true
	}
	s.sent = append(s.sent, m)
	s.log.Debug().Str("id", ev.ID).Str("kind", ev.Kind).Str("chat", redact.Number(ev.Chat)).Int("len", len(ev.Text)).Msg("sent to phone network")
	now := s.now()
	switch ev.Chat {
	case EchoNumber:
		switch ev.Kind {
		case "", wire.KindText:
			s.enqueueLocked(queued{in: backend.Inbound{Chat: EchoNumber, From: EchoNumber, Text: ev.Text, TS: now}})
		case wire.KindMedia:
			md := *m.Media
			s.enqueueLocked(queued{in: backend.Inbound{Kind: wire.KindMedia, Chat: EchoNumber, From: EchoNumber,
				Text: ev.Text, TS: now, Media: &md, File: kept}})
		}
	case ReceiptsNumber:
		switch ev.Kind {
		case "", wire.KindText, wire.KindMedia:
			for _, st := range []string{wire.StateDelivered, wire.StateRead} {
				s.enqueueLocked(queued{in: backend.Inbound{ID: "rcpt." + st + "." + shortHash(ev.ID), Kind: wire.KindReceipt,
					Chat: ev.Chat, From: ev.Chat, Target: ev.ID, State: st, TS: now}})
			}
		}
	}
	return nil
}

// keep takes a file the agent handed us under <state>/sim-media (or a
// temporary directory for an in-memory sim) and hashes what it kept, as a
// messaging app reads a file it sends. The agent never changes a file it
// handed over (it only removes it afterwards), so a hard link is a copy;
// across filesystems the bytes are copied.
func (s *Sim) keep(id, src string) (path string, size int64, sum string, err error) {
	if err := os.MkdirAll(s.mediaDir, 0o700); err != nil {
		return "", 0, "", fmt.Errorf("sim: %w", err)
	}
	path = filepath.Join(s.mediaDir, shortHash(id))
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		if err := copyFile(src, tmp); err != nil {
			_ = os.Remove(tmp)
			return "", 0, "", fmt.Errorf("sim: keep file: %w", err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return "", 0, "", fmt.Errorf("sim: keep file: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", 0, "", fmt.Errorf("sim: read kept file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if size, err = io.CopyBuffer(h, f, make([]byte, 256<<10)); err != nil {
		return "", 0, "", fmt.Errorf("sim: read kept file: %w", err)
	}
	return path, size, hex.EncodeToString(h.Sum(nil)), nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// MediaPath returns where the sim kept the bytes of sent event id.
func (s *Sim) MediaPath(id string) string { return filepath.Join(s.mediaDir, shortHash(id)) }

func shortHash(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:12])
}

// Caps: RCS carries everything; SMS only text.
func (s *Sim) Caps() (map[string]wire.Caps, []int) {
	return map[string]wire.Caps{
		wire.TransportRCS: {MaxFileSize: wire.MaxMediaSize, Replies: true, Reactions: true, Edits: true, Deletes: true,
			ReadReceipts: true, DeliveryReports: true, Typing: true, Groups: true},
		wire.TransportSMS: {DeliveryReports: true},
	}, []int{1, 2}
}

// Typing records that the Matrix user is (or stopped) typing in chat.
func (s *Sim) Typing(ctx context.Context, chat string, active bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.typing[chat] = active
	return nil
}

// TypingState reports the last typing notice the phone got for chat.
func (s *Sim) TypingState(chat string) (active, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	active, known = s.typing[chat]
	return
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
	return s.InjectEvent(ctx, backend.Inbound{Chat: from, From: from, Text: text})
}

// InjectEvent makes the phone receive any event (see backend.Event); Chat
// defaults to From. It returns once the agent has stored it.
func (s *Sim) InjectEvent(ctx context.Context, in backend.Inbound) error {
	if in.Chat == "" {
		in.Chat = in.From
	}
	if !ValidNumber(in.From) && !(in.FromMe && in.From == "") {
		return errors.New("from must be + followed by 7 to 15 digits")
	}
	if !ValidNumber(in.Chat) && !wire.IsGroupChat(in.Chat) {
		return errors.New("chat must be a number or " + wire.GroupChatPrefix + "<group id>")
	}
	if (in.Kind == "" || in.Kind == wire.KindText) && in.Text == "" {
		return errors.New("text must not be empty")
	}
	if in.TS.IsZero() {
		in.TS = s.now()
	}
	if in.Transport == "" {
		in.Transport = wire.TransportRCS
		if in.Chat == SMSNumber {
			in.Transport = wire.TransportSMS
		}
	}
	w := in.ToWire()
	w.ID = backend.WireID("check") // the agent picks the real one
	if err := w.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	if !s.started {
		s.mu.Unlock()
		return ErrNotStarted
	}
	done := make(chan error, 1)
	s.enqueueLocked(queued{in: in, done: done})
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

// InjectTyping makes a contact type (or stop) in chat.
func (s *Sim) InjectTyping(chat string, active bool) error {
	s.mu.Lock()
	sink := s.sink
	s.mu.Unlock()
	if sink == nil {
		return ErrNotStarted
	}
	sink.Typing(chat, active)
	return nil
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
