// Package agent is the phone side of rcsgate: it pairs with the server,
// keeps a QUIC channel (mutual TLS, pinned server certificate) up for ever,
// and relays messages between the server and a phone backend. It imports
// neither Matrix nor cgo so it cross-builds for Android with CGO_ENABLED=0.
//
// Both directions go through an fsync'd on-disk journal (package journal) in
// the state directory, so no message is lost or doubled across disconnects,
// restarts or kill -9:
//
//   - phone → server: Deliver stores the message before returning; it is
//     sent after every (re)connect, in order, with the same id, until the
//     server acks it.
//   - server → phone: a server message is stored first, then acked (an ack
//     means "persisted"), then handed to the phone from the journal by a loop
//     of its own (a slow phone never holds up the channel), in order per
//     chat, each chat in a lane of its own (one the phone cannot send to
//     holds up no other), then its Status is sent, and sent again after
//     reconnects until the server acks it (when the server announces
//     wire.FeatureStatusAck). A message id seen before is acked again and
//     never handed to the phone twice.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/agent/journal"
	"github.com/rcsgate/rcsgate/internal/hoptrace"
	"github.com/rcsgate/rcsgate/internal/redact"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Error codes a server may refuse a Hello with when it will not talk to
// this device until a human re-pairs it (rcsgate refuses the certificate in
// the handshake instead); either way the agent stops with ErrUnpaired.
const (
	CodeRevoked       = "revoked"
	CodeUnknownDevice = "unknown_device"
)

// Defaults for Config fields left zero.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultHealthyAfter     = 10 * time.Second
	DefaultProbeInterval    = time.Second
	DefaultNetCheckInterval = 5 * time.Second
	DefaultOutboxLimit      = journal.DefaultMaxPending
	DefaultInboxLimit       = journal.DefaultMaxPending
	DefaultSeenLimit        = journal.DefaultRetain
	DefaultSeenMaxAge       = journal.DefaultRetainAge
	DefaultWipeAfter        = journal.DefaultBodyMaxAge
	DefaultSendConcurrency  = 4

	persistDepth = 256 // server messages read but not yet stored
	maxRedials   = 3   // fresh dials per attempt when probes say the server is back
	sendBatch    = 64  // journal entries read per pass of the sender
	// earlyBatch and earlyBytes bound the phone messages sent with the Hello
	// in 0-RTT: a burst the first flight carries without waiting.
	earlyBatch = 8
	earlyBytes = 16 << 10
)

// ErrOutboxFull is returned by Deliver when too many phone messages wait
// for the server's ack; the backend keeps the message and offers it later.
var ErrOutboxFull = journal.ErrFull

// errServerClosed is the cause when the server ends the control stream.
var errServerClosed = errors.New("server closed the channel")

// Config configures an Agent.
type Config struct {
	StateDir string          // holds the identity written by Pair and the journal
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
	// ProbeInterval: while the server is unreachable, the agent sends it a
	// tiny QUIC version-negotiation probe this often, and dials at once when
	// it answers instead of sleeping out the backoff. 0 means
	// DefaultProbeInterval; negative disables probing.
	ProbeInterval time.Duration
	// NetCheckInterval: how often the agent checks whether the local address
	// it would use to reach the server changed (the phone moved from Wi-Fi to
	// mobile data), and then migrates the QUIC connection to a new socket
	// without a new handshake. 0 means DefaultNetCheckInterval; negative
	// disables it (quic-go still follows NAT rebinding by itself).
	NetCheckInterval time.Duration
	// Liveness: once the server has pinged us, silence this long on the
	// connection makes the agent probe the server and redial as soon as it
	// answers (see liveness.go); the agent pings the server itself from
	// 5/12 of it on. 0 means 3 × the server's ping interval as learnt from
	// its pings; negative disables it (QUIC's idle timeout still applies).
	Liveness time.Duration

	// SendConcurrency bounds backend sends under way at once, each for
	// another chat (0: DefaultSendConcurrency). Backends that can only do
	// one at a time serialise them themselves.
	SendConcurrency int

	OutboxLimit int           // max phone→server messages awaiting the server's ack (0: 10,000)
	InboxLimit  int           // max server→phone messages not finished (0: 10,000)
	SeenLimit   int           // finished message ids remembered each way (0: 10,000)
	SeenMaxAge  time.Duration // and for how long at most (0: 7 days)
	// WipeAfter: a delivered message's text leaves the journal file within
	// this long (0: 30 s; see journal.Options.BodyMaxAge).
	WipeAfter time.Duration

	// OnRetry, if set, is called before each reconnect wait with the delay
	// and the reason the last attempt ended.
	OnRetry func(delay time.Duration, err error)
}

// Agent relays between the server and a backend. Create it with New and
// start it with Run (once).
type Agent struct {
	cfg       Config
	log       zerolog.Logger
	j         *journal.Journal
	connected atomic.Bool
	tickets   tls.ClientSessionCache // TLS session tickets for 0-RTT resumption
	closeOnce sync.Once
	closeErr  error

	// Test hooks.
	migrateNow chan struct{}            // forces a connection migration
	curConn    atomic.Pointer[chanConn] // the live connection
	curSession atomic.Pointer[session]  // the live session, for Typing

	connMu sync.Mutex
	connCh chan struct{} // closed at the next connect or disconnect

	st         statusState   // see Status
	netChanged chan struct{} // NetworkChanged: check the route / redial now

	sendSlots chan struct{} // one token per backend send under way
	fetched   sync.Map      // paths of server files fetched in this run (see fetchServerMedia)
}

// setConnected records the channel state and wakes connChanged waiters.
func (a *Agent) setConnected(up bool) {
	a.connected.Store(up)
	a.st.noteConnected(up, time.Now())
	a.connMu.Lock()
	if a.connCh != nil {
		close(a.connCh)
		a.connCh = nil
	}
	a.connMu.Unlock()
}

// connChanged returns a channel closed at the next connect or disconnect.
func (a *Agent) connChanged() <-chan struct{} {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	if a.connCh == nil {
		a.connCh = make(chan struct{})
	}
	return a.connCh
}

// New checks cfg, fills in defaults and opens the journal in the state
// directory (creating it; a torn tail from a crash is repaired, corruption
// is an error).
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
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.NetCheckInterval == 0 {
		cfg.NetCheckInterval = DefaultNetCheckInterval
	}
	if cfg.SendConcurrency <= 0 {
		cfg.SendConcurrency = DefaultSendConcurrency
	}
	j, err := journal.Open(cfg.StateDir, journal.Options{
		MaxOut: cfg.OutboxLimit, MaxIn: cfg.InboxLimit, Retain: cfg.SeenLimit, RetainAge: cfg.SeenMaxAge, BodyMaxAge: cfg.WipeAfter,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: open journal: %w", err)
	}
	a := &Agent{
		cfg: cfg, log: cfg.Log, j: j,
		tickets:    tls.NewLRUClientSessionCache(8),
		migrateNow: make(chan struct{}, 1),
		netChanged: make(chan struct{}, 1),
		sendSlots:  make(chan struct{}, cfg.SendConcurrency),
	}
	st, d := j.Stats(), j.Depth()
	ev := a.log.Info()
	if st.TornBytes > 0 {
		ev = a.log.Warn().Int("torn_bytes_dropped", st.TornBytes)
	}
	ev.Str("segment", st.Segment).Int("out", d.Out).Int("in", d.In).Int("status", d.Status).Msg("journal opened")
	return a, nil
}

// Close closes the journal; Run does it when it returns. Afterwards Deliver
// refuses messages (the backend keeps them).
func (a *Agent) Close() error {
	a.closeOnce.Do(func() { a.closeErr = a.j.Close() })
	return a.closeErr
}

// Connected reports whether the channel is up (welcomed and not yet dropped).
func (a *Agent) Connected() bool { return a.connected.Load() }

// Pending is how many phone messages wait for the server's ack.
func (a *Agent) Pending() int { return a.j.Depth().Out }

// Depth reports the queues both ways (also sent to the server in Pong).
func (a *Agent) Depth() journal.Depth { return a.j.Depth() }

// Deliver implements backend.Sink: it stores the event in the journal
// (fsync'd; a file's bytes in the media directory first) and returns nil only
// then. It is sent at once when the channel is up and again after every
// reconnect until acked. An event the backend hands again with the same ID
// is not queued twice.
func (a *Agent) Deliver(ctx context.Context, in backend.Inbound) error {
	if in.TS.IsZero() {
		in.TS = time.Now()
	}
	id := newMessageID()
	if in.ID != "" {
		if !backend.ValidKey(in.ID) {
			return fmt.Errorf("agent: inbound event refused: backend key %q is not a valid id (see backend.ValidKey)", redact.Number(in.ID))
		}
		id = backend.WireID(in.ID)
	}
	ev := in
	ev.ID = id
	ev.Reason = wire.StripControl(in.Reason, wire.MaxReasonLen) // a receipt's reason: the phone's words, bounded
	ev.Target = targetToWire(in.Target)
	ev.ReplyTo = targetToWire(in.ReplyTo)
	m := ev.ToWire()
	if err := m.Validate(); err != nil {
		return fmt.Errorf("agent: inbound event refused: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Only a file with the backend's own stable ID may be moved: a retry
	// must find it again under the same message id.
	given := in.FileGiven && in.ID != "" && in.File != ""
	if _, done, known := a.j.LookupOut(m.ID); known {
		if done {
			a.log.Info().Str("id", m.ID).Msg("phone handed an event again; already delivered")
		}
		if given && a.mayTake(in.File) {
			// Given again with an event the agent has: the file is the
			// agent's, and it needs no second copy.
			_ = os.Remove(in.File)
		}
		return nil
	}
	kept := keptMedia{done: func() {}, undo: func() {}}
	if in.File != "" && (m.Media != nil || m.Contact != nil) {
		var err error
		kept, err = a.keepPhoneMedia(in.File, m.ID, wire.MaxMediaSize, given)
		if err != nil {
			return fmt.Errorf("agent: inbound file not stored (the phone keeps it): %w", err)
		}
		if m.Media != nil {
			md := *m.Media
			md.Size, md.SHA256 = kept.n, kept.sum
			m.Media = &md
		} else {
			c := *m.Contact
			c.AvatarSize = kept.n
			m.Contact = &c
		}
	}
	added, err := a.j.QueueOut(m)
	if err != nil {
		kept.undo()
		return fmt.Errorf("agent: inbound event not stored (the phone keeps it): %w", err)
	}
	kept.done()
	if added {
		hoptrace.Mark(hoptrace.Delivered, m.ID)
		a.log.Debug().Str("id", m.ID).Str("kind", m.Kind).Str("chat", redact.Number(m.Chat)).Int("len", len(m.Text)).Msg("queued inbound event")
	} else {
		a.log.Info().Str("id", m.ID).Msg("phone handed an event again; already queued or delivered")
	}
	return nil
}

// targetToWire maps a backend's reference to an event into a wire id: ids
// the bridge gave in Send are Matrix event ids ("$..."), everything else is
// one of the backend's own keys.
func targetToWire(k string) string {
	if k == "" || strings.HasPrefix(k, "$") || !backend.ValidKey(k) {
		return k
	}
	return backend.WireID(k)
}

// Typing implements backend.Sink: a contact's typing goes to the server at
// once when the channel is up and is dropped otherwise (it is stale by the
// time the channel is back).
func (a *Agent) Typing(chat string, active bool) {
	s := a.curSession.Load()
	if s == nil || !a.connected.Load() {
		return
	}
	t := wire.Typing{Chat: chat, Active: active}
	if t.Validate() != nil {
		return
	}
	if err := s.write(t); err != nil {
		a.log.Debug().Err(err).Msg("typing notice not sent")
	}
}

func newMessageID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "ph-" + hex.EncodeToString(b[:])
}

// Run starts the backend and keeps the channel up until ctx is cancelled,
// reconnecting with backoff. Messages received from the server are handed
// to the phone even while the channel is down. It returns nil on
// cancellation, and an error wrapping ErrUnpaired, without dialling again,
// once the server has refused this device's certificate (see
// UnpairedFile). It closes the journal but not the backend.
func (a *Agent) Run(ctx context.Context) error {
	defer a.Close()
	if u, ok := LoadUnpaired(a.cfg.StateDir); ok {
		a.st.noteDown(u.error())
		return u.error()
	}
	if err := a.cfg.Backend.Start(ctx, a); err != nil {
		return fmt.Errorf("agent: start backend %s: %w", a.cfg.Backend.Name(), err)
	}
	hctx, stopHandover := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.handoverLoop(hctx) })
	defer func() { stopHandover(); wg.Wait() }()

	bo := a.cfg.Backoff
	var pr *prober
	defer func() { pr.stop() }()
	cutShort := false // the last wait ended early on a probe answer
	for {
		welcomedAt, addrs, err := a.connectOnce(ctx, pr)
		if !welcomedAt.IsZero() {
			pr.stop() // that outage is over; the next one gets a fresh prober
			pr = nil
		}
		if ctx.Err() != nil {
			a.log.Info().Msg("agent stopped")
			return nil
		}
		var delay time.Duration
		var refused wire.Error
		reachable := false
		if why, final := refusedForGood(err); final {
			// Final: dialling again cannot work and would only fill the
			// server's log. Remember it, so a restart does not dial either.
			u := Unpaired{At: time.Now().UTC().Truncate(time.Second), Reason: why}
			if err := markUnpaired(a.cfg.StateDir, u); err != nil {
				a.log.Error().Err(err).Msg("could not record that this device is unpaired")
			}
			a.log.Error().Err(err).Str("state", "unpaired").
				Msg("unpaired — pair again: the server refused this device's certificate; not dialling again until `rcsgate-agent pair --force LINK`")
			a.st.noteDown(err)
			return u.error()
		}
		switch {
		case errors.Is(err, errServerSilent):
			// The server answered a probe just now: redial without waiting,
			// and without probing again first.
			if time.Since(welcomedAt) >= a.cfg.HealthyAfter {
				bo.Reset()
			}
			reachable = true
			a.log.Info().Msg("server answers again after going silent; reconnecting now")
		default:
			if !welcomedAt.IsZero() && time.Since(welcomedAt) >= a.cfg.HealthyAfter {
				bo.Reset()
			}
			delay = bo.Next()
			ev := a.log.Warn()
			if errors.As(err, &refused) || errors.Is(err, ErrPinMismatch) || errors.Is(err, ErrNotPaired) {
				ev, reachable = a.log.Error(), true
			}
			ev.Err(err).Bool("was_connected", !welcomedAt.IsZero()).Dur("retry_in", delay).Msg("channel down; reconnecting")
		}
		// Probe only while the server may be unreachable: when it answers but
		// refuses us, waking early would only defeat the backoff.
		if reachable || a.cfg.ProbeInterval < 0 || len(addrs) == 0 {
			pr.stop()
			pr = nil
		} else {
			if pr == nil {
				pr = startProber(ctx, addrs, a.cfg.ProbeInterval, a.log)
			}
			// The next answer ends the wait, unless the last wait already
			// ended that way and the dial still failed: the server answers
			// probes but the channel does not come up, so only a fresh
			// outage-and-return may cut this wait short.
			if !cutShort {
				pr.arm()
			}
		}
		a.st.noteDown(err)
		if a.cfg.OnRetry != nil {
			a.cfg.OnRetry(delay, err)
		}
		t := time.NewTimer(delay)
		cutShort = false
		select {
		case <-ctx.Done():
			t.Stop()
			a.log.Info().Msg("agent stopped")
			return nil
		case <-t.C:
		case <-pr.answered():
			t.Stop()
			cutShort = true
			a.log.Info().Msg("server answers again; reconnecting now")
		case <-a.netChanged:
			t.Stop()
			a.log.Info().Msg("the phone's network changed; reconnecting now")
		}
	}
}

// connectOnce dials, says Hello, and serves the channel until it ends. It
// returns when the server welcomed us (zero if it never did), the addresses
// it tried, and why the channel ended. pr, if not nil, is the prober of the
// current outage: connectOnce stops it once welcomed.
func (a *Agent) connectOnce(ctx context.Context, pr *prober) (welcomedAt time.Time, addrs []string, err error) {
	// Re-read the identity each time: the user may re-pair while we run.
	id, err := LoadIdentity(a.cfg.StateDir)
	if err != nil {
		return time.Time{}, nil, err
	}
	addrs = id.Server.Addrs
	var mismatch atomic.Bool
	tlsConf := pinnedTLS(wire.ALPNChannel, id.Pin, &mismatch)
	clientCert := &tls.Certificate{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key, Leaf: id.Cert}
	tlsConf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return clientCert, nil }
	tlsConf.ClientSessionCache = a.tickets

	caps, sims := a.cfg.Backend.Caps()
	hello := wire.Hello{Proto: wire.ProtocolVersion, Agent: "rcsgate-agent/" + a.cfg.Version,
		Backend: a.cfg.Backend.Name(), Features: []string{wire.FeatureStatusAck, wire.FeatureMediaTrailer}, Caps: caps, SIMs: sims}
	// The oldest phone messages ride with the Hello in 0-RTT when the
	// session resumes (see chanConn.hello).
	first := a.j.OutAfter(0, earlyBatch)
	for size, i := 0, 0; i < len(first); i++ {
		if size += len(first[i].Msg.Text) + 512; size > earlyBytes {
			first = first[:i]
			break
		}
	}
	firstMsgs := make([]wire.Message, len(first))
	for i, e := range first {
		firstMsgs[i] = e.Msg
	}
	var cc *chanConn
	var stream *quic.Stream
	var sentEarly int
	var helloIn0RTT bool
	for redials := 0; ; redials++ {
		cc, err = dialChannel(ctx, addrs, tlsConf, &mismatch, a.cfg.HandshakeTimeout, pr)
		if err != nil {
			return time.Time{}, addrs, err
		}
		hctx, cancel := context.WithTimeout(ctx, a.cfg.HandshakeTimeout)
		stream, sentEarly, helloIn0RTT, err = cc.hello(hctx, hello, firstMsgs, &mismatch, pr)
		cancel()
		if err == nil {
			break
		}
		cc.close()
		if !errors.Is(err, errRedial) || redials == maxRedials {
			return time.Time{}, addrs, err
		}
		a.log.Info().Msg("server answers again while our handshake waited on lost packets; dialing afresh")
	}
	defer cc.close()
	log := a.log.With().Str("device", id.DeviceID.Short()).Str("server", cc.addr).Logger()
	_ = stream.SetDeadline(time.Now().Add(a.cfg.HandshakeTimeout))
	m, err := wire.ReadMsg(stream)
	if err != nil {
		return time.Time{}, addrs, fmt.Errorf("read welcome: %w", err)
	}
	var statusAcks bool
	switch m := m.(type) {
	case wire.Welcome:
		if m.Proto != wire.ProtocolVersion {
			log.Warn().Int("server_proto", m.Proto).Int("our_proto", wire.ProtocolVersion).Msg("server speaks another protocol version")
		}
		statusAcks = wire.HasFeature(m.Features, wire.FeatureStatusAck)
	case wire.Error:
		return time.Time{}, addrs, m
	default:
		return time.Time{}, addrs, fmt.Errorf("server answered hello with %s", m.FrameType())
	}
	_ = stream.SetDeadline(time.Time{})
	welcomedAt = time.Now()
	pr.stop()
	d := a.j.Depth()
	log.Info().Int("out", d.Out).Int("in", d.In).Int("status", d.Status).
		Bool("resumed_0rtt", cc.conn.ConnectionState().Used0RTT).Bool("hello_in_0rtt", helloIn0RTT).Int("sent_in_0rtt", sentEarly).
		Bool("status_acks", statusAcks).Msg("connected")

	a.curConn.Store(cc)
	a.setConnected(true)
	defer a.setConnected(false)
	s := &session{a: a, cc: cc, conn: cc.conn, stream: stream, log: log, statusAcks: statusAcks,
		persist: make(chan wire.Message, persistDepth), live: newLiveness(welcomedAt)}
	if sentEarly > 0 {
		s.outStart = first[sentEarly-1].Seq // already on this connection
	}
	a.curSession.Store(s)
	defer a.curSession.CompareAndSwap(s, nil)
	return welcomedAt, addrs, s.run(ctx)
}

// session is one live channel: a reader, a persister that stores server
// messages and acks them, a sender that pushes the journal's phone messages
// and statuses, and a network watcher. Every frame goes through write, so
// frames never interleave.
type session struct {
	a          *Agent
	cc         *chanConn
	conn       *quic.Conn
	stream     *quic.Stream
	log        zerolog.Logger
	statusAcks bool // the server acks statuses; keep them until it does
	persist    chan wire.Message
	live       *liveness // silence of the server, for watchLiveness
	outStart   uint64    // journal seq of the last phone message sent with the Hello

	wmu sync.Mutex
}

func (s *session) run(ctx context.Context) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	loops := []func(context.Context) error{s.readLoop, s.persistLoop, s.sendLoop, s.serveMedia, s.watchLiveness}
	if s.a.cfg.NetCheckInterval > 0 {
		loops = append(loops, s.watchNetwork)
	}
	var wg sync.WaitGroup
	for _, loop := range loops {
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
	j := s.a.j
	for {
		m, err := wire.ReadMsg(s.stream)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errServerClosed
			}
			return fmt.Errorf("read: %w", err)
		}
		s.live.frame(time.Now())
		switch m := m.(type) {
		case wire.Message:
			select {
			case s.persist <- m:
			default:
				// The journal is behind: while we wait, the server's
				// silence is our own doing.
				s.live.busy.Store(true)
				select {
				case s.persist <- m:
				case <-ctx.Done():
					s.live.busy.Store(false)
					return context.Cause(ctx)
				}
				s.live.frame(time.Now())
				s.live.busy.Store(false)
			}
		case wire.Ack:
			if len(m.IDs) > 0 {
				n, err := j.AckOut(m.IDs...)
				if err != nil {
					return fmt.Errorf("journal: record acks: %w", err)
				}
				s.log.Debug().Int("ids", len(m.IDs)).Int("removed", n).Int("pending", j.Depth().Out).Msg("server acked inbound messages")
				s.a.dropPhoneMedia(m.IDs)
			}
			if len(m.Statuses) > 0 {
				if _, err := j.AckStatus(m.Statuses...); err != nil {
					return fmt.Errorf("journal: record status acks: %w", err)
				}
			}
		case wire.Ping:
			s.live.ping(time.Now(), m.TSMS)
			d := j.Depth()
			out, in := d.Out, d.In
			if err := s.write(wire.Pong{Nonce: m.Nonce, TSMS: m.TSMS, Out: &out, In: &in}); err != nil {
				return err
			}
		case wire.Pong:
		case wire.Typing:
			go func() { // best effort; never hold up the control stream
				tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if err := s.a.cfg.Backend.Typing(tctx, m.Chat, m.Active); err != nil {
					s.log.Debug().Err(err).Msg("phone did not take a typing notice")
				}
			}()
		case wire.Error:
			return m
		default:
			s.log.Warn().Stringer("type", m.FrameType()).Msg("ignoring unexpected frame from server")
		}
	}
}

// persistLoop stores server messages in the journal (several per fsync when
// they arrive together) and only then acks them: an ack means persisted.
func (s *session) persistLoop(ctx context.Context) error {
	batch := make([]wire.Message, 0, persistDepth)
	for {
		batch = batch[:0]
		select {
		case m := <-s.persist:
			batch = append(batch, m)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	more:
		for len(batch) < persistDepth {
			select {
			case m := <-s.persist:
				batch = append(batch, m)
			default:
				break more
			}
		}
		res, err := s.a.j.ReceiveIn(batch)
		if err != nil {
			return fmt.Errorf("journal: store server messages: %w", err)
		}
		var ack []string
		var again []wire.Status
		for i, r := range res {
			m := batch[i]
			switch r {
			case journal.InNew:
				ack = append(ack, m.ID)
				hoptrace.Mark(hoptrace.AgentStored, m.ID)
				s.log.Debug().Str("id", m.ID).Str("chat", redact.Number(m.Chat)).Msg("stored message from server")
			case journal.InPending, journal.InHanded:
				ack = append(ack, m.ID)
				s.log.Info().Str("id", m.ID).Str("state", r.String()).Msg("duplicate message from server: acking again, not sending to the phone twice")
			case journal.InDone:
				ack = append(ack, m.ID)
				s.log.Info().Str("id", m.ID).Msg("duplicate message from server: acking again, not sending to the phone twice")
				if st, _, ok := s.a.j.LookupIn(m.ID); ok && !s.statusAcks {
					again = append(again, st) // without status acks, repeat the outcome as protocol 1 did
				}
			case journal.InFull:
				s.log.Error().Str("id", m.ID).
					Msg("too many messages wait for the phone: not acking this one, the server keeps it")
			case journal.InInvalid:
				ack = append(ack, m.ID)
				again = append(again, wire.Status{ID: m.ID, State: wire.StateFailed, Reason: "message id, chat or sender is not UTF-8", TSMS: time.Now().UnixMilli()})
				s.log.Warn().Msg("server message with a non-UTF-8 id, chat or sender: refused")
			}
		}
		if len(ack) > 0 {
			if err := s.write(wire.Ack{IDs: ack}); err != nil {
				return err
			}
		}
		for _, st := range again {
			if err := s.write(st); err != nil {
				return err
			}
		}
	}
}

// sendLoop sends every phone message the server has not acked, oldest
// first, then each new one as it is queued; and every status the server has
// not acked, in the order the messages were handed to the phone. It starts
// from the beginning on every connection, so what the server never acked is
// sent again with the same ids.
func (s *session) sendLoop(ctx context.Context) error {
	j := s.a.j
	outSeq, stSeq := s.outStart, uint64(0)
	for {
		changed := j.Changed()
		outs := j.OutAfter(outSeq, sendBatch)
		for _, e := range outs {
			if err := s.write(e.Msg); err != nil {
				return err
			}
			outSeq = e.Seq
			s.log.Debug().Str("id", e.Msg.ID).Str("chat", redact.Number(e.Msg.Chat)).Msg("sent inbound message to server")
		}
		sts := j.StatusAfter(stSeq, sendBatch)
		for _, e := range sts {
			if err := s.write(e.Status); err != nil {
				return err
			}
			stSeq = e.Seq
			if !s.statusAcks {
				// The server will not ack statuses: written is as good as it gets.
				if _, err := j.AckStatus(wire.StatusRef{ID: e.Status.ID, State: e.Status.State}); err != nil {
					return fmt.Errorf("journal: %w", err)
				}
			}
		}
		if len(outs) == sendBatch || len(sts) == sendBatch {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// handoverLoop hands server messages from the journal to the phone in
// lanes, one per chat, whether or not the channel is up: a chat's messages
// go one at a time in the order they were received, and chats do not wait
// for each other, so a message the phone keeps failing to send (no signal
// for that contact, an app stuck on one conversation) holds up only its own
// chat. The outcome is journaled and its Status queued for the server. At
// most Config.SendConcurrency backend sends run at once.
func (a *Agent) handoverLoop(ctx context.Context) {
	type laneDone struct {
		chat string
		stop bool // the journal is closed or ctx ended: hand nothing more
	}
	busy := map[string]bool{}
	done := make(chan laneDone)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		changed := a.j.Changed()
		for _, e := range a.j.HandoverHeads(func(chat string) bool { return busy[chat] }) {
			busy[e.Msg.Chat] = true
			wg.Go(func() {
				ok := a.handOver(ctx, e.Msg)
				select {
				case done <- laneDone{chat: e.Msg.Chat, stop: !ok}:
				case <-ctx.Done():
				}
			})
		}
		select {
		case d := <-done:
			if d.stop {
				// Not recorded as handed: it is handed again (same id)
				// after a restart, never twice in this run.
				return
			}
			delete(busy, d.chat)
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// handOver sends one message to the phone and records the outcome; false
// when it could not finish (ctx ended, journal closed).
func (a *Agent) handOver(ctx context.Context, m wire.Message) bool {
	log := a.log.With().Str("id", m.ID).Str("chat", redact.Number(m.Chat)).Logger()
	st, ok := a.sendToPhone(ctx, log, m)
	if !ok {
		return false
	}
	hoptrace.Mark(hoptrace.Handed, m.ID)
	return a.recordHanded(ctx, log, st)
}

// recordHanded journals the outcome, retrying a failed write (never handing
// the message to the phone again meanwhile).
func (a *Agent) recordHanded(ctx context.Context, log zerolog.Logger, st wire.Status) bool {
	bo := *a.cfg.SendRetry
	bo.Reset()
	for {
		err := a.j.Handed(st)
		if err == nil {
			return true
		}
		if errors.Is(err, journal.ErrClosed) {
			return false
		}
		d := bo.Next()
		log.Error().Err(err).Dur("retry_in", d).Msg("could not record that the phone took the message")
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// sendToPhone calls the backend until it accepts or refuses for good,
// retrying transient errors with backoff. ok is false if ctx ended first.
func (a *Agent) sendToPhone(ctx context.Context, log zerolog.Logger, m wire.Message) (st wire.Status, ok bool) {
	bo := *a.cfg.SendRetry
	bo.Reset()
	ev := backend.FromWire(m)
	ev.Target, ev.ReplyTo = backend.NativeID(m.Target), backend.NativeID(m.ReplyTo)
	defer func() {
		if ok && m.Kind == wire.KindMedia {
			a.fetched.Delete(a.mediaPath("in-", m.ID))
			if err := os.Remove(a.mediaPath("in-", m.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
				log.Warn().Err(err).Msg("could not remove a handed media file")
			}
		}
	}()
	for {
		err := a.handOneSlot(ctx, m, ev)
		if err == nil {
			log.Info().Str("kind", m.Kind).Int("len", len(m.Text)).Msg("event handed to the phone")
			return wire.Status{ID: m.ID, State: wire.StateSent, TSMS: time.Now().UnixMilli()}, true
		}
		if pe, perm := backend.IsPermanent(err); perm {
			log.Warn().Str("kind", m.Kind).Str("reason", pe.Reason).Msg("phone refused event for good")
			// The phone's words, cut to what the protocol carries.
			return wire.Status{ID: m.ID, State: wire.StateFailed, Reason: wire.StripControl(pe.Reason, wire.MaxReasonLen), TSMS: time.Now().UnixMilli()}, true
		}
		if ctx.Err() != nil {
			return wire.Status{}, false
		}
		d := bo.Next()
		log.Warn().Err(err).Dur("retry_in", d).Msg("phone did not take event; retrying")
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return wire.Status{}, false
		case <-t.C:
		}
	}
}

// handOneSlot is handOne within one of SendConcurrency slots; a lane
// waiting to retry holds none.
func (a *Agent) handOneSlot(ctx context.Context, m wire.Message, ev backend.Event) error {
	select {
	case a.sendSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-a.sendSlots }()
	return a.handOne(ctx, m, ev)
}

// handOne gives one event to the backend, fetching its file first.
func (a *Agent) handOne(ctx context.Context, m wire.Message, ev backend.Event) error {
	if !m.KnownKind() {
		return backend.Permanent("this phone agent is too old for " + m.Kind + " events; update rcsgate-agent")
	}
	if m.Kind == wire.KindMedia {
		path, err := a.fetchServerMedia(ctx, m)
		if err != nil {
			return err
		}
		ev.File = path // removed by sendToPhone once the outcome is final
	}
	return a.cfg.Backend.Send(ctx, ev)
}
