// Package agent is the phone side of rcsgate: it pairs with the server,
// keeps a QUIC channel (mutual TLS, pinned server certificate) up for ever,
// and relays messages between the server and a phone backend. It imports
// neither Matrix nor cgo so it cross-builds for Android with CGO_ENABLED=0.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Error codes the server uses when it will not talk to this device until a
// human re-pairs it; the agent then retries only at the backoff cap.
const (
	CodeRevoked       = "revoked"
	CodeUnknownDevice = "unknown_device"
)

// Defaults for Config fields left zero.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultHealthyAfter     = 10 * time.Second
	inboxDepth              = 256
)

// errServerClosed is the cause when the server ends the control stream.
var errServerClosed = errors.New("server closed the channel")

// Config configures an Agent.
type Config struct {
	StateDir string          // holds the identity written by Pair
	Backend  backend.Backend // the phone
	Log      zerolog.Logger
	Version  string // sent in Hello as "rcsgate-agent/<Version>"

	// Backoff paces reconnects; nil means NewBackoff() (200 ms → 30 s, jittered).
	Backoff *Backoff
	// SendRetry paces retries of transient backend send failures; nil means
	// 1 s → 30 s, jittered.
	SendRetry *Backoff
	// HealthyAfter is how long a welcomed connection must last for the
	// reconnect backoff to start over.
	HealthyAfter     time.Duration
	HandshakeTimeout time.Duration // per address dial + Hello/Welcome
	WriteTimeout     time.Duration // per frame written
	OutboxLimit      int           // max inbound messages awaiting ack
	SeenLimit        int           // how many handled server ids to remember

	// OnRetry, if set, is called before each reconnect wait with the delay
	// and the reason the last attempt ended.
	OnRetry func(delay time.Duration, err error)
}

// Agent relays between the server and a backend. Create it with New and
// start it with Run.
type Agent struct {
	cfg       Config
	log       zerolog.Logger
	outbox    *Outbox
	seen      *seenSet
	connected atomic.Bool
}

// New checks cfg and fills in defaults.
func New(cfg Config) (*Agent, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("agent: no state directory")
	}
	if cfg.Backend == nil {
		return nil, errors.New("agent: no backend")
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Backoff == nil {
		cfg.Backoff = NewBackoff()
	}
	if cfg.SendRetry == nil {
		cfg.SendRetry = &Backoff{Schedule: ExponentialSchedule(time.Second, 30*time.Second), Jitter: DefaultJitter}
	}
	if cfg.HealthyAfter <= 0 {
		cfg.HealthyAfter = DefaultHealthyAfter
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	return &Agent{
		cfg:    cfg,
		log:    cfg.Log,
		outbox: NewOutbox(cfg.OutboxLimit),
		seen:   newSeenSet(cfg.SeenLimit),
	}, nil
}

// Connected reports whether the channel is up (welcomed and not yet dropped).
func (a *Agent) Connected() bool { return a.connected.Load() }

// Pending is how many received messages wait for the server's ack.
func (a *Agent) Pending() int { return a.outbox.Len() }

// Deliver implements backend.Sink: it gives the message an ID and queues it
// until the server acks it. It is sent at once when the channel is up and
// again after every reconnect until acked.
func (a *Agent) Deliver(ctx context.Context, in backend.Inbound) error {
	ts := in.TS
	if ts.IsZero() {
		ts = time.Now()
	}
	m := wire.Message{ID: newMessageID(), Chat: in.Chat, From: in.From, Text: in.Text, TSMS: ts.UnixMilli()}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("agent: inbound message refused: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := a.outbox.Add(m); err != nil {
		return err
	}
	a.log.Debug().Str("id", m.ID).Str("chat", redact.Number(m.Chat)).Int("len", len(m.Text)).Msg("queued inbound message")
	return nil
}

func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "ph-" + hex.EncodeToString(b[:])
}

// Run starts the backend and keeps the channel up until ctx is cancelled,
// reconnecting with backoff. It returns nil on cancellation; it does not
// close the backend.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.cfg.Backend.Start(ctx, a); err != nil {
		return fmt.Errorf("agent: start backend %s: %w", a.cfg.Backend.Name(), err)
	}
	bo := a.cfg.Backoff
	for {
		welcomedAt, err := a.connectOnce(ctx)
		if ctx.Err() != nil {
			a.log.Info().Msg("agent stopped")
			return nil
		}
		var delay time.Duration
		var refused wire.Error
		switch {
		case errors.As(err, &refused) && (refused.Code == CodeRevoked || refused.Code == CodeUnknownDevice):
			delay = bo.Cap()
			a.log.Error().Str("code", refused.Code).Str("server_message", refused.Message).Dur("retry_in", delay).
				Msg("server refuses this device (revoked or unknown): pair it again with `rcsgate-agent pair LINK`; retrying slowly meanwhile")
		default:
			if !welcomedAt.IsZero() && time.Since(welcomedAt) >= a.cfg.HealthyAfter {
				bo.Reset()
			}
			delay = bo.Next()
			ev := a.log.Warn()
			if errors.Is(err, ErrPinMismatch) || errors.Is(err, ErrNotPaired) {
				ev = a.log.Error()
			}
			ev.Err(err).Bool("was_connected", !welcomedAt.IsZero()).Dur("retry_in", delay).Msg("channel down; reconnecting")
		}
		if a.cfg.OnRetry != nil {
			a.cfg.OnRetry(delay, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			a.log.Info().Msg("agent stopped")
			return nil
		case <-t.C:
		}
	}
}

// connectOnce dials, says Hello, and serves the channel until it ends. It
// returns when the server welcomed us (zero if it never did) and why the
// channel ended.
func (a *Agent) connectOnce(ctx context.Context) (welcomedAt time.Time, err error) {
	// Re-read the identity each time: the user may re-pair while we run.
	id, err := LoadIdentity(a.cfg.StateDir)
	if err != nil {
		return time.Time{}, err
	}
	var mismatch atomic.Bool
	tlsConf := pinnedTLS(wire.ALPNChannel, id.Pin, &mismatch)
	clientCert := &tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
	tlsConf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return clientCert, nil }

	conn, addr, err := dialFirst(ctx, id.Server.Addrs, tlsConf, &mismatch, a.cfg.HandshakeTimeout)
	if err != nil {
		return time.Time{}, err
	}
	defer conn.CloseWithError(0, "agent closing")
	log := a.log.With().Str("device", id.DeviceID.Short()).Str("server", addr).Logger()

	hctx, cancel := context.WithTimeout(ctx, a.cfg.HandshakeTimeout)
	defer cancel()
	stream, err := conn.OpenStreamSync(hctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("open control stream: %w", err)
	}
	_ = stream.SetDeadline(time.Now().Add(a.cfg.HandshakeTimeout))
	hello := wire.Hello{Proto: wire.ProtocolVersion, Agent: "rcsgate-agent/" + a.cfg.Version, Backend: a.cfg.Backend.Name()}
	if err := wire.WriteMsg(stream, hello); err != nil {
		return time.Time{}, fmt.Errorf("send hello: %w", err)
	}
	m, err := wire.ReadMsg(stream)
	if err != nil {
		return time.Time{}, fmt.Errorf("read welcome: %w", err)
	}
	switch m := m.(type) {
	case wire.Welcome:
		if m.Proto != wire.ProtocolVersion {
			log.Warn().Int("server_proto", m.Proto).Int("our_proto", wire.ProtocolVersion).Msg("server speaks another protocol version")
		}
	case wire.Error:
		return time.Time{}, m
	default:
		return time.Time{}, fmt.Errorf("server answered hello with %s", m.FrameType())
	}
	_ = stream.SetDeadline(time.Time{})
	welcomedAt = time.Now()
	log.Info().Int("pending", a.outbox.Len()).Msg("connected")

	a.connected.Store(true)
	defer a.connected.Store(false)
	s := &session{a: a, conn: conn, stream: stream, log: log, inbox: make(chan wire.Message, inboxDepth)}
	return welcomedAt, s.run(ctx)
}

// session is one live channel: a reader goroutine, a goroutine that pushes
// the outbox, and one that hands server messages to the backend in order.
// Every frame goes through write, so frames never interleave.
type session struct {
	a      *Agent
	conn   *quic.Conn
	stream *quic.Stream
	log    zerolog.Logger
	inbox  chan wire.Message

	wmu sync.Mutex
}

func (s *session) run(ctx context.Context) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context) error{s.readLoop, s.pushOutbox, s.handleServerMessages} {
		wg.Go(func() { cancel(loop(sctx)) })
	}
	<-sctx.Done()
	_ = s.conn.CloseWithError(0, "channel ended") // unblocks reads and writes
	wg.Wait()
	return context.Cause(sctx)
}

func (s *session) write(m wire.Msg) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.stream.SetWriteDeadline(time.Now().Add(s.a.cfg.WriteTimeout))
	if err := wire.WriteMsg(s.stream, m); err != nil {
		return fmt.Errorf("write %s: %w", m.FrameType(), err)
	}
	return nil
}

func (s *session) readLoop(ctx context.Context) error {
	for {
		m, err := wire.ReadMsg(s.stream)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errServerClosed
			}
			return fmt.Errorf("read: %w", err)
		}
		switch m := m.(type) {
		case wire.Message:
			select {
			case s.inbox <- m:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		case wire.Ack:
			n := s.a.outbox.Ack(m.IDs...)
			s.log.Debug().Int("ids", len(m.IDs)).Int("removed", n).Int("pending", s.a.outbox.Len()).Msg("server acked inbound messages")
		case wire.Ping:
			if err := s.write(wire.Pong(m)); err != nil {
				return err
			}
		case wire.Pong:
		case wire.Error:
			return m
		default:
			s.log.Warn().Stringer("type", m.FrameType()).Msg("ignoring unexpected frame from server")
		}
	}
}

// pushOutbox sends every unacked inbound message, oldest first, then each
// new one as it is queued. It starts from the beginning on every connection,
// so messages the server never acked are sent again with the same IDs.
func (s *session) pushOutbox(ctx context.Context) error {
	var last uint64
	for {
		entries, changed := s.a.outbox.After(last)
		for _, e := range entries {
			if err := s.write(e.Msg); err != nil {
				return err
			}
			last = e.Seq
			s.log.Debug().Str("id", e.Msg.ID).Str("chat", redact.Number(e.Msg.Chat)).Msg("sent inbound message to server")
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

func (s *session) handleServerMessages(ctx context.Context) error {
	for {
		select {
		case m := <-s.inbox:
			if err := s.handle(ctx, m); err != nil {
				return err
			}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// handle gives one server message to the backend (unless it was handled
// before) and answers Ack{id} then Status{id, sent|failed}. A duplicate gets
// the same two frames again, with the remembered outcome.
func (s *session) handle(ctx context.Context, m wire.Message) error {
	log := s.log.With().Str("id", m.ID).Str("chat", redact.Number(m.Chat)).Logger()
	o, dup := s.a.seen.get(m.ID)
	if dup {
		log.Info().Msg("duplicate message from server: acking again, not sending to the phone twice")
	} else {
		var ok bool
		o, ok = s.sendToPhone(ctx, log, m)
		if !ok {
			return context.Cause(ctx)
		}
		s.a.seen.add(m.ID, o)
	}
	if err := s.write(wire.Ack{IDs: []string{m.ID}}); err != nil {
		return err
	}
	return s.write(wire.Status{ID: m.ID, State: o.State, Reason: o.Reason, TSMS: o.TSMS})
}

// sendToPhone calls the backend until it accepts or refuses for good,
// retrying transient errors with backoff. ok is false if ctx ended first;
// the message is then not acked and the server will send it again.
func (s *session) sendToPhone(ctx context.Context, log zerolog.Logger, m wire.Message) (o outcome, ok bool) {
	bo := *s.a.cfg.SendRetry
	bo.Reset()
	for {
		err := s.a.cfg.Backend.Send(ctx, m.ID, m.Chat, m.Text)
		if err == nil {
			log.Info().Int("len", len(m.Text)).Msg("message handed to the phone")
			return outcome{State: wire.StateSent, TSMS: time.Now().UnixMilli()}, true
		}
		if pe, perm := backend.IsPermanent(err); perm {
			log.Warn().Str("reason", pe.Reason).Msg("phone refused message for good")
			return outcome{State: wire.StateFailed, Reason: pe.Reason, TSMS: time.Now().UnixMilli()}, true
		}
		if ctx.Err() != nil {
			return outcome{}, false
		}
		d := bo.Next()
		log.Warn().Err(err).Dur("retry_in", d).Msg("phone did not take message; retrying")
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return outcome{}, false
		case <-t.C:
		}
	}
}
