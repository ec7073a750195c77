package devicechan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/internal/hoptrace"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// session is one live device connection: a single control stream carrying
// frames both ways, one reader goroutine and one sender goroutine.
type session struct {
	srv   *Server
	conn  *quic.Conn
	str   *quic.Stream
	devID string
	log   zerolog.Logger
	since time.Time

	writeMu sync.Mutex
	wakeCh  chan struct{}

	mu       sync.Mutex
	lastSeen time.Time
	rtt      time.Duration
	inFlight int
	pings    map[uint64]time.Time // nonce → when sent, for precise RTT

	statusAcks bool // the agent keeps statuses until we ack them
	hello      wire.Hello
	inbound    chan wire.Message // to the inbound worker, in order
	statuses   chan wire.Status  // to the status worker, in order
	// early: the connection resumed with 0-RTT data and its handshake had
	// not completed when it was accepted (see serveEarly); live is closed
	// once the session is registered as the device's.
	early bool
	live  chan struct{}
}

func (s *session) wake() {
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

func (s *session) info(id string) SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SessionInfo{DeviceID: id, Since: s.since, LastSeen: s.lastSeen, RTT: s.rtt, Remote: s.conn.RemoteAddr().String()}
}

func (s *session) write(m wire.Msg) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return wire.WriteMsg(s.str, m)
}

// handleChannel serves one device connection. early: it was accepted before
// its handshake completed, because the device resumed a session with 0-RTT
// data (see handleConn and earlyOK).
func (s *Server) handleChannel(ctx context.Context, conn *quic.Conn, early bool) {
	certs := conn.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 { // VerifyConnection already refused this; belt and braces
		_ = conn.CloseWithError(codeProtocol, "no certificate")
		return
	}
	devID := pki.DeviceIDOfCert(certs[0])
	log := s.log.With().Str("device", devID.Short()).Logger()
	// The handshake checked the device (for a 0-RTT connection: the resumed
	// session's certificate); look again in case that lookup failed (the
	// handshake then let it through) or it was revoked since.
	if !s.deviceAllowed(ctx, conn, log, devID.String()) {
		return
	}
	hctx, cancel := context.WithTimeout(ctx, helloDeadline)
	str, err := conn.AcceptStream(hctx)
	cancel()
	if err != nil {
		log.Warn().Err(err).Msg("Device opened no control stream")
		_ = conn.CloseWithError(codeProtocol, "no control stream")
		return
	}
	_ = str.SetReadDeadline(time.Now().Add(helloDeadline))
	m, err := wire.ReadMsg(str)
	hello, ok := m.(wire.Hello)
	if err != nil || !ok {
		why := "expected hello"
		if err != nil {
			why = "expected hello: " + err.Error()
		}
		log.Warn().AnErr("error", err).Msg("Device sent no hello")
		_ = str.SetWriteDeadline(time.Now().Add(refuseLinger))
		why = wire.StripControl(why, wire.MaxErrorLen)
		_ = wire.WriteMsg(str, wire.Error{Code: "protocol", Message: why})
		_ = str.Close()
		lingerClose(conn, codeProtocol, why) // the device reads why, then closes
		return
	}
	_ = str.SetReadDeadline(time.Time{})
	sess := &session{srv: s, conn: conn, str: str, devID: devID.String(), log: log,
		since: time.Now(), lastSeen: time.Now(), wakeCh: make(chan struct{}, 1), pings: map[uint64]time.Time{},
		early: early, live: make(chan struct{})}
	sess.statusAcks = wire.HasFeature(hello.Features, wire.FeatureStatusAck)
	sess.hello = hello
	sess.inbound = make(chan wire.Message, inboundDepth)
	sess.statuses = make(chan wire.Status, statusDepth)
	welcome := wire.Welcome{Proto: wire.ProtocolVersion, DeviceID: sess.devID, ServerMS: time.Now().UnixMilli()}
	if sess.statusAcks {
		welcome.Features = []string{wire.FeatureStatusAck}
	}
	if err := sess.write(welcome); err != nil {
		_ = conn.CloseWithError(codeProtocol, "welcome failed")
		return
	}

	sctx, stop := context.WithCancel(conn.Context())
	var wg sync.WaitGroup
	readErr := make(chan error, 1)
	startReading := func() {
		wg.Add(3)
		go func() { defer wg.Done(); defer stop(); readErr <- sess.readLoop(sctx) }()
		go func() { defer wg.Done(); defer stop(); sess.inboundLoop(sctx) }()
		go func() { defer wg.Done(); defer stop(); sess.statusLoop(sctx) }()
	}
	if early {
		startReading()
	}
	if early && !sess.serveEarly(sctx) {
		// The handshake never completed (a device that went away at once,
		// or a first flight replayed by someone without its keys): nothing
		// was registered, and all that was done was idempotent.
		stop()
		_ = conn.CloseWithError(codeOK, "")
		wg.Wait()
		log.Info().Msg("Resumed connection ended before its handshake completed")
		return
	}

	// Revoked while the connection was being set up? The revocation watcher
	// only sees registered sessions.
	if !s.deviceAllowed(ctx, conn, log, sess.devID) {
		stop()
		wg.Wait()
		return
	}
	// One session per device: a reconnect replaces a half-dead old one.
	s.mu.Lock()
	old := s.sessions[sess.devID]
	s.sessions[sess.devID] = sess
	s.mu.Unlock()
	if old != nil {
		_ = old.conn.CloseWithError(codeReplaced, "replaced by a new connection")
	}
	log.Info().Str("agent", hello.Agent).Str("backend", hello.Backend).Str("remote", conn.RemoteAddr().String()).Msg("Device connected")
	if err := s.store.SetConnected(ctx, sess.devID, true); err != nil {
		log.Warn().Err(err).Msg("Recording connection failed")
	}
	s.handler.DeviceState(ctx, sess.devID, true)
	close(sess.live)

	if !early {
		startReading()
	}
	wg.Add(3)
	go func() { defer wg.Done(); defer stop(); sess.sendLoop(sctx) }()
	go func() { defer wg.Done(); defer stop(); sess.pingLoop(sctx) }()
	go func() { defer wg.Done(); sess.serveMedia(sctx) }()
	err = <-readErr
	stop()
	_ = conn.CloseWithError(codeOK, "")
	wg.Wait()

	// Record the disconnect before the session leaves the map, so whoever
	// sees it gone also sees it disconnected in the store.
	s.mu.Lock()
	current := s.sessions[sess.devID] == sess
	s.mu.Unlock()
	if current {
		_ = s.store.SetConnected(context.WithoutCancel(ctx), sess.devID, false)
	}
	s.mu.Lock()
	if s.sessions[sess.devID] == sess {
		delete(s.sessions, sess.devID)
	}
	s.mu.Unlock()
	var appErr *quic.ApplicationError
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.As(err, &appErr):
		log.Info().Msg("Device disconnected")
	default:
		log.Warn().Err(err).Msg("Device connection lost")
	}
	if current {
		s.handler.DeviceState(context.WithoutCancel(ctx), sess.devID, false)
	}
}

func (s *session) readLoop(ctx context.Context) error {
	for {
		m, err := wire.ReadMsg(s.str)
		if err != nil {
			if errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrUnknownType) ||
				errors.Is(err, wire.ErrFrameTooLarge) || errors.Is(err, wire.ErrUnsupportedVersion) {
				_ = s.write(wire.Error{Code: "protocol", Message: err.Error()})
			}
			return err
		}
		s.mu.Lock()
		s.lastSeen = time.Now()
		s.mu.Unlock()
		switch m := m.(type) {
		case wire.Message:
			hoptrace.Mark(hoptrace.InRecv, m.ID)
			// Handled by the inbound worker, in order, so a file being pulled
			// never holds up pings and acks on this stream.
			select {
			case s.inbound <- m:
			case <-ctx.Done():
				return ctx.Err()
			}
		case wire.Typing:
			if s.isLive() { // ephemeral: not worth anything before the handshake
				s.srv.handler.HandleTyping(ctx, s.devID, m)
			}
		case wire.Ack:
			if len(m.IDs) == 0 {
				continue
			}
			if err := s.srv.store.Acked(ctx, s.devID, m.IDs); err != nil {
				return fmt.Errorf("store ack: %w", err)
			}
			s.srv.delivered()
			s.mu.Lock()
			s.inFlight = max(0, s.inFlight-len(m.IDs))
			s.mu.Unlock()
			s.wake()
		case wire.Status:
			hoptrace.Mark(hoptrace.StatusIn, m.ID)
			// Handled by the status worker, so the phone message that
			// usually follows a status (a contact's answer) is read at once
			// instead of after the status's commit.
			select {
			case s.statuses <- m:
			case <-ctx.Done():
				return ctx.Err()
			}
		case wire.Ping:
			if err := s.write(wire.Pong(m)); err != nil {
				return err
			}
		case wire.Pong:
			s.mu.Lock()
			sent, ok := s.pings[m.Nonce]
			delete(s.pings, m.Nonce)
			if ok {
				s.rtt = time.Since(sent)
			}
			rtt := s.rtt
			s.mu.Unlock()
			if err := s.srv.store.SetLive(ctx, s.devID, rtt, pongOut(m), pongIn(m)); err != nil && ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("Recording device state failed")
			}
		default:
			s.log.Warn().Stringer("type", m.FrameType()).Msg("Unexpected frame from device")
		}
	}
}

// inboundDepth bounds phone messages read but not yet handled.
const inboundDepth = 256

// statusDepth bounds statuses read but not yet handled.
const statusDepth = 256

// statusLoop records the phone's statuses in order. HandleStatus commits
// the state change before it returns; only then does the ack let the agent
// forget the status. Statuses and phone messages are handled apart: the
// store's state order makes a late "sent" after a contact's delivery
// report a no-op, so their relative order does not matter.
func (s *session) statusLoop(ctx context.Context) {
	for {
		var m wire.Status
		select {
		case m = <-s.statuses:
		case <-ctx.Done():
			// Statuses read before the connection ended are still recorded:
			// an agent without status acks never sends them again.
			for {
				select {
				case m := <-s.statuses:
					s.srv.handler.HandleStatus(context.WithoutCancel(ctx), s.devID, m)
				default:
					return
				}
			}
		}
		s.srv.handler.HandleStatus(ctx, s.devID, m)
		if s.statusAcks {
			if err := s.write(wire.Ack{Statuses: []wire.StatusRef{{ID: m.ID, State: m.State}}}); err != nil {
				return
			}
		}
	}
}

// inboundLoop hands phone messages to the bridge one at a time, in order,
// and acks each only once it is durably handled; on error it stays silent
// and the device resends on its next connection (so it also stops: later
// messages must not overtake the failed one).
func (s *session) inboundLoop(ctx context.Context) {
	for {
		var m wire.Message
		select {
		case m = <-s.inbound:
		case <-ctx.Done():
			return
		}
		if needsLive(m) {
			select { // its file is pulled through the registered session
			case <-s.live:
			case <-ctx.Done():
				return
			}
		}
		if err := s.srv.handler.HandleInbound(ctx, s.devID, m); err != nil {
			if ctx.Err() == nil {
				s.log.Warn().Err(err).Str("msg_id", m.ID).Msg("Inbound message not handled; closing so the device resends it in order")
				_ = s.conn.CloseWithError(codeProtocol, "inbound message not handled; resend")
			}
			return
		}
		if err := s.write(wire.Ack{IDs: []string{m.ID}}); err != nil {
			return
		}
		hoptrace.Mark(hoptrace.InAcked, m.ID)
	}
}

// serveMedia answers the device's media streams: it pulls the files of
// messages we sent it.
func (s *session) serveMedia(ctx context.Context) {
	for {
		str, err := s.conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		go func() {
			id, err := wire.ServeMedia(str, func(id string) (wire.MediaFile, error) {
				return s.srv.handler.OpenMedia(wire.WithPeerFeatures(ctx, s.hello.Features), s.devID, id)
			})
			if err != nil {
				s.log.Warn().Err(err).Str("msg_id", id).Msg("Media request from device failed")
				str.CancelWrite(1)
			}
			_ = str.Close()
		}()
	}
}

// sendLoop streams the outbox in order. A fresh session starts from the
// beginning: anything unacked from the last connection goes out again with
// its original id and the agent drops what it already has.
func (s *session) sendLoop(ctx context.Context) {
	var cursor int64
	for {
		s.mu.Lock()
		room := sendWindow - s.inFlight
		s.mu.Unlock()
		if room > 0 {
			items, err := s.srv.store.Pending(ctx, s.devID, cursor, room)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error().Err(err).Msg("Reading outbox failed")
				}
				return
			}
			for _, it := range items {
				if err := s.writeRaw(it.Payload); err != nil {
					return
				}
				hoptrace.Mark(hoptrace.OnStream, it.MsgID)
				cursor = it.Seq
			}
			s.mu.Lock()
			s.inFlight += len(items)
			s.mu.Unlock()
			if len(items) == room {
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wakeCh:
		}
	}
}

// writeRaw sends a frame already encoded in the outbox.
func (s *session) writeRaw(frame []byte) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	_, err := s.str.Write(frame)
	return err
}

// pingEvery paces the server's pings, which agents use to tell a dead
// server (or a partition) from a quiet one: they ping back after 1.25
// intervals of silence and probe and redial after 3 (agent/liveness.go), so
// with 5 s a restarted server is noticed within about 6 s and a partition
// within 15 s, instead of QUIC's 45–60 s idle timeout. Ping, pong and their
// ACKs are some 200 bytes per 5 s (about 150 KB an hour): cheap for the
// agent's foreground service, and it keeps mobile NAT state well under
// 25 s.
const pingEvery = 5 * time.Second

func (s *session) pingLoop(ctx context.Context) {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	var nonce uint64
	for {
		nonce++
		now := time.Now()
		s.mu.Lock()
		if len(s.pings) > 16 { // unanswered pings: forget them, keep the map small
			clear(s.pings)
		}
		s.pings[nonce] = now
		s.mu.Unlock()
		if err := s.write(wire.Ping{Nonce: nonce, TSMS: now.UnixMilli()}); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pongOut and pongIn read the agent's queue depths from a pong; agents that
// predate those fields report zero.
func pongOut(p wire.Pong) int { return deref(p.Out) }
func pongIn(p wire.Pong) int  { return deref(p.In) }

func deref(n *int) int {
	if n == nil {
		return 0
	}
	return *n
}

// Before its handshake completes, a resumed connection's 0-RTT data is
// served only as far as that is safe if the same bytes were played again by
// someone who captured them (RFC 8446 §8):
//
//   - who: the device whose certificate the resumed session carries (only
//     the server can read a ticket; VerifyConnection checked the certificate
//     again, and the device is looked up once more in handleChannel);
//   - what: Hello and Welcome, phone messages (keyed by their id: one the
//     bridge already has is acked and not bridged again), statuses (a state
//     only moves forward) and acks (deleting what is already gone changes
//     nothing), and pongs. Typing is dropped; the session is not registered,
//     so a stale connection is not replaced, nothing is sent from the
//     outbox, no file is pulled and the device is not reported connected
//     until the handshake completes;
//   - replays: chanquic.ReplayGuard gives each ticket one 0-RTT use, so a
//     replayed flight is refused its early data and, lacking the device's
//     keys, never completes a handshake. A flight held back and delivered
//     first by someone on the path is the device's own, served once; its
//     acks go to whoever cannot read them, so the device sends the same
//     messages again later and they are deduplicated.

// serveEarly waits for the handshake while the reader and the inbound
// worker serve the early frames; false if the connection ended first.
func (s *session) serveEarly(ctx context.Context) bool {
	s.log.Debug().Msg("Device resumed with 0-RTT data; serving its first frames before the handshake completes")
	select {
	case <-s.conn.HandshakeComplete():
		return true
	case <-ctx.Done():
		return false
	}
}

// isLive reports whether the session is registered as the device's.
func (s *session) isLive() bool {
	select {
	case <-s.live:
		return true
	default:
		return false
	}
}

// needsLive: handling these reaches back to the device (a file pulled on a
// stream of its own) or may need the logins made when it connects (another
// SIM), so they wait for the registered session.
func needsLive(m wire.Message) bool {
	return m.Kind == wire.KindMedia || m.Kind == wire.KindContact || m.SIM > 1
}

// deviceAllowed looks the device up again; if it is revoked, or the lookup
// fails (the device retries), it closes conn and reports false.
func (s *Server) deviceAllowed(ctx context.Context, conn *quic.Conn, log zerolog.Logger, devID string) bool {
	d, err := s.store.GetDevice(ctx, devID)
	switch {
	case err != nil:
		log.Error().Err(err).Msg("Device lookup failed; the device will retry")
		_ = conn.CloseWithError(codeUnavailable, "server cannot check devices right now; retry")
		return false
	case !d.Revoked.IsZero():
		_ = conn.CloseWithError(codeRevoked, "device revoked")
		return false
	}
	return true
}
