// Package devicechan is the server end of the device channel: QUIC with
// mutual TLS, pairing, and a durable per-device outbox. It speaks
// internal/wire and knows nothing of Matrix; the connector plugs in through
// Handler.
package devicechan

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/internal/chanquic"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/ratelog"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Handler is what the bridge does with what devices send.
type Handler interface {
	// DevicePaired runs after a device has paired and been stored.
	DevicePaired(ctx context.Context, dev store.Device, tokenHash string)
	// HandleInbound must return nil only once msg is durably handled: the
	// device deletes its copy when it gets our ack.
	HandleInbound(ctx context.Context, dev string, msg wire.Message) error
	// HandleStatus reports the fate of a message we sent to the phone.
	HandleStatus(ctx context.Context, dev string, st wire.Status)
	// DeviceState reports a device coming or going.
	DeviceState(ctx context.Context, dev string, connected bool)
	// HandleTyping passes on a contact's typing; best effort.
	HandleTyping(ctx context.Context, dev string, t wire.Typing)
	// OpenMedia opens the bytes of a message we sent to the device (the
	// device pulls them on a stream of their own); wire.ErrMediaUnavailable
	// when there are none.
	OpenMedia(ctx context.Context, dev, msgID string) (wire.MediaFile, error)
	// MayPair refuses (with a reason for the log) a pairing for an owner
	// the bridge's permissions do not let in; it runs before anything is
	// signed.
	MayPair(ctx context.Context, owner string) error
}

// QUIC error codes we close connections with.
const (
	codeOK       quic.ApplicationErrorCode = 0
	codeProtocol quic.ApplicationErrorCode = 1
	codeRevoked  quic.ApplicationErrorCode = 2
	codeReplaced quic.ApplicationErrorCode = 3
	codeShutdown quic.ApplicationErrorCode = 4
	// codeUnavailable: the server could not check the device just now
	// (database trouble); the device retries as after any drop.
	codeUnavailable quic.ApplicationErrorCode = 5
)

// Tunables; a later issue makes them configurable.
const (
	sendWindow = 256 // unacked messages in flight per device
	// A phone that vanishes is declared gone after idleTimeout without a
	// packet (the agent keeps alive every 20 s): well within the 60 s in
	// which a silent phone must be reported.
	idleTimeout   = 45 * time.Second
	revokePoll    = 250 * time.Millisecond // CLI revocations reach live connections this fast
	helloDeadline = 10 * time.Second
)

// Server accepts device connections.
type Server struct {
	store   *store.Store
	ca      *pki.CA
	cert    tls.Certificate
	handler Handler
	log     zerolog.Logger

	// IdleTimeout: a device silent this long is declared gone (tests
	// shorten it; the default keeps within the 60 s reporting promise).
	IdleTimeout time.Duration
	// MaxUnauthenticated and MaxUnauthenticatedPerIP cap connections that
	// have not shown a paired device's certificate (see guard.go).
	MaxUnauthenticated, MaxUnauthenticatedPerIP int

	tlsBase  *tls.Config
	adm      admission
	refusals *ratelog.Limiter
	wipe     chan struct{} // outbox rows were deleted (see wipeLoop)
	wipeOnce sync.Once

	mu       sync.Mutex
	sessions map[string]*session
}

// New builds a server; call Serve to accept connections.
func New(st *store.Store, ca *pki.CA, cert tls.Certificate, h Handler, log zerolog.Logger) *Server {
	s := &Server{store: st, ca: ca, cert: cert, handler: h, log: log, sessions: map[string]*session{}, IdleTimeout: idleTimeout,
		MaxUnauthenticated: DefaultMaxUnauthenticated, MaxUnauthenticatedPerIP: DefaultMaxUnauthenticatedPerIP,
		adm: admission{perIP: map[netip.Addr]int{}}, refusals: newRefusals(), wipe: make(chan struct{}, 1)}
	s.tlsBase = s.tlsConfig()
	(&chanquic.ReplayGuard{}).Install(s.tlsBase) // per-handshake clones keep it
	return s
}

// Pin is what pairing links carry so agents trust this server only.
func (s *Server) Pin() [32]byte { return pki.Pin(s.cert.Leaf) }

// tlsConfig is the listener's TLS config; each handshake gets its own copy
// from configFor (guard.go), which decides what the peer may do.
func (s *Server) tlsConfig() *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{s.cert},
		NextProtos:   []string{wire.ALPNChannel, wire.ALPNPair},
		// Pairing comes without a client cert; the channel needs one. We
		// verify it ourselves so every refusal gets a log line with a reason.
		ClientAuth: tls.RequestClientCert,
	}
	c.GetConfigForClient = s.configFor
	return c
}

// Listen starts accepting connections on pc (which may come from systemd)
// and returns once the listener is up; the returned channel yields the accept
// loop's end (nil when ctx ends).
func (s *Server) Listen(ctx context.Context, pc net.PacketConn) (<-chan error, error) {
	// A stable stateless-reset key lets a restarted server tell agents at
	// once that their old connection is gone (RFC 9000 §10.3), instead of
	// leaving them to wait out the idle timeout after a crash or upgrade.
	resetKey, err := s.statelessResetKey()
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: pc, StatelessResetKey: resetKey, ConnContext: s.admit, VerifySourceAddress: s.underLoad}
	// Early listener: a resumed agent sends its Hello and first messages in
	// 0-RTT, and gets its acks a round trip later (see serveEarly); each
	// session ticket carries early data once (the ReplayGuard New installs).
	ln, err := tr.ListenEarly(s.tlsBase, chanquic.ServerConfig(s.IdleTimeout))
	if err != nil {
		return nil, fmt.Errorf("devicechan: listen: %w", err)
	}
	if err := s.store.ClearConnected(ctx); err != nil {
		return nil, err
	}
	go s.watchRevocations(ctx)
	s.wipeOnce.Do(func() { go s.wipeLoop(ctx) })
	s.log.Info().Str("addr", pc.LocalAddr().String()).Msg("Device channel listening")
	done := make(chan error, 1)
	go func() {
		defer ln.Close()
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				if ctx.Err() != nil {
					s.closeAll()
					done <- nil
					return
				}
				done <- fmt.Errorf("devicechan: accept: %w", err)
				return
			}
			go s.handleConn(ctx, conn)
		}
	}()
	return done, nil
}

func (s *Server) handleConn(ctx context.Context, conn *quic.Conn) {
	sl := slotOf(conn)
	defer sl.release()
	if sl != nil {
		sl.accepted.Store(true)
	}
	// A device resuming a session with 0-RTT data is served at once (see
	// serveEarly): its identity is the resumed session's certificate, which
	// verifyPeer checked again before the connection was handed to us.
	if cs := conn.ConnectionState(); cs.Used0RTT && cs.TLS.NegotiatedProtocol == wire.ALPNChannel {
		sl.release() // a paired device's certificate: no longer a stranger
		s.handleChannel(ctx, conn, true)
		return
	}
	select { // client certificates are only known once the handshake is done
	case <-conn.HandshakeComplete():
	case <-conn.Context().Done():
		return
	case <-ctx.Done():
		_ = conn.CloseWithError(codeShutdown, "server shutting down")
		return
	}
	switch conn.ConnectionState().TLS.NegotiatedProtocol {
	case wire.ALPNPair:
		s.handlePair(ctx, conn) // unauthenticated until it ends
	case wire.ALPNChannel:
		sl.release() // a paired device's certificate: no longer a stranger
		s.handleChannel(ctx, conn, false)
	default:
		_ = conn.CloseWithError(codeProtocol, "unknown protocol")
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.sessions {
		_ = sess.conn.CloseWithError(codeShutdown, "server shutting down")
	}
}

func (s *Server) statelessResetKey() (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(s.cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("devicechan: reset key: %w", err)
	}
	sum := sha256.Sum256(append([]byte("rcsgate stateless reset v1\x00"), der...))
	key := quic.StatelessResetKey(sum)
	return &key, nil
}

// watchRevocations closes live connections of devices revoked by any
// process (the CLI writes the store; this daemon notices within revokePoll).
func (s *Server) watchRevocations(ctx context.Context) {
	t := time.NewTicker(revokePoll)
	defer t.Stop()
	since := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		ids, err := s.store.RevokedSince(ctx, since.Add(-time.Second))
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn().Err(err).Msg("Checking revocations failed")
			}
			continue
		}
		since = now
		for _, id := range ids {
			if s.Connected(id) {
				s.log.Info().Str("device", id[:7]).Msg("Closing connection of revoked device")
				s.Kick(id, "device revoked")
			}
		}
	}
}

// Kick closes a device's live connection, if any; the store's revoked flag
// keeps new handshakes out.
func (s *Server) Kick(deviceID string, reason string) {
	s.mu.Lock()
	sess := s.sessions[deviceID]
	s.mu.Unlock()
	if sess != nil {
		_ = sess.conn.CloseWithError(codeRevoked, reason)
	}
}

// Notify wakes the sender of a device after something was enqueued.
func (s *Server) Notify(deviceID string) {
	s.mu.Lock()
	sess := s.sessions[deviceID]
	s.mu.Unlock()
	if sess != nil {
		sess.wake()
	}
}

// Enqueue stores msg in the device's outbox and wakes its session.
func (s *Server) Enqueue(ctx context.Context, deviceID string, msg wire.Message) error {
	payload, err := wire.Encode(msg)
	if err != nil {
		return err
	}
	if err := s.store.Enqueue(ctx, deviceID, msg.ID, payload); err != nil {
		return err
	}
	s.Notify(deviceID)
	return nil
}

// SessionInfo is what `rcsgate status` shows of a live device.
type SessionInfo struct {
	DeviceID string
	Since    time.Time
	LastSeen time.Time
	RTT      time.Duration
	Remote   string
}

// Sessions lists connected devices.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for id, sess := range s.sessions {
		out = append(out, sess.info(id))
	}
	return out
}

// Connected reports whether a device has a live session.
func (s *Server) Connected(deviceID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[deviceID] != nil
}
