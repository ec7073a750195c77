package devicechan

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rcsgate/rcsgate/internal/ctxutil"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/ratelog"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Unauthenticated peers hold nothing for long. A connection is
// unauthenticated from its first packet until the handshake has checked a
// paired device's certificate (pairing connections stay so until they end).
// Such connections are capped overall and per source address; the pairing
// protocol is refused in the TLS handshake while no pairing link is open;
// a refused connection is closed at once (a pairing refusal waits at most
// refuseLinger for the peer to read why). Refusals are logged with the
// remote address, a few lines per address a minute.

// Default caps on unauthenticated connections (Server fields override).
const (
	DefaultMaxUnauthenticated      = 256
	DefaultMaxUnauthenticatedPerIP = 16
	// refuseLinger: how long a refused pairing connection stays open for the
	// peer to read the refusal.
	refuseLinger = 2 * time.Second
	// handshakeLimit: quic-go abandons a handshake after twice its 5 s idle
	// timeout; a slot not claimed by then is released anyway.
	handshakeLimit = 11 * time.Second
)

// admission counts unauthenticated connections.
type admission struct {
	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
}

// slot is one unauthenticated connection's place; release is idempotent.
type slot struct {
	a        *admission
	ip       netip.Addr
	once     sync.Once
	accepted atomic.Bool // handed to handleConn, which watches it from then on
}

func (s *slot) release() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		s.a.mu.Lock()
		defer s.a.mu.Unlock()
		s.a.total--
		if s.a.perIP[s.ip]--; s.a.perIP[s.ip] <= 0 {
			delete(s.a.perIP, s.ip)
		}
	})
}

// errBusy and errBusyIP say why a connection was not admitted.
var (
	errBusy   = errors.New("too many unauthenticated connections")
	errBusyIP = errors.New("too many unauthenticated connections from this address")
)

func (a *admission) acquire(ip netip.Addr, maxTotal, maxPerIP int) (*slot, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.total >= maxTotal:
		return nil, errBusy
	case a.perIP[ip] >= maxPerIP:
		return nil, errBusyIP
	}
	a.total++
	a.perIP[ip]++
	return &slot{a: a, ip: ip}, nil
}

func (a *admission) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

type slotKey struct{}

// Unauthenticated reports how many connections have not (yet) shown a
// paired device's certificate: handshakes under way and pairing sessions.
func (s *Server) Unauthenticated() int { return s.adm.count() }

// admit is the transport's ConnContext: it runs for the first packet of
// every connection, before any state is kept for it.
func (s *Server) admit(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	ip := sourceOf(info.RemoteAddr)
	sl, err := s.adm.acquire(ip, s.MaxUnauthenticated, s.MaxUnauthenticatedPerIP)
	if err != nil {
		reason := "busy"
		if errors.Is(err, errBusyIP) {
			reason = "busy_address"
		}
		s.refused(info.RemoteAddr, info.AddrVerified, "connection", reason, err, "")
		return nil, err
	}
	// The context ends when the connection does (quic-go cancels it); a
	// connection never handed to us by then (its handshake failed early, or
	// it never ran) gives its place back when quic-go has given up on it.
	context.AfterFunc(ctx, sl.release)
	time.AfterFunc(handshakeLimit, func() {
		if !sl.accepted.Load() {
			sl.release()
		}
	})
	return context.WithValue(ctx, slotKey{}, sl), nil
}

// slotOf is the admission slot of an accepted connection (nil if none).
func slotOf(conn *quic.Conn) *slot {
	sl, _ := conn.Context().Value(slotKey{}).(*slot)
	return sl
}

// underLoad makes new peers prove their address (a QUIC Retry, one round
// trip) once a quarter of the unauthenticated places are taken, so spoofed
// source addresses cannot fill the rest.
func (s *Server) underLoad(net.Addr) bool {
	return s.adm.count() >= s.MaxUnauthenticated/4
}

// sourceOf is what the per-source cap counts: the IPv4 address, or the
// IPv6 /64 (one host commonly has a whole /64 to pick addresses from).
func sourceOf(a net.Addr) netip.Addr {
	ip := ipOf(a)
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

func ipOf(a net.Addr) netip.Addr {
	if ua, ok := a.(*net.UDPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ua.IP); ok {
			return ip.Unmap()
		}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// refused logs one refusal, rate-limited per address. A verified address
// (the peer answered our handshake packets, so it is not spoofed) is put in
// the message, "Refused <what> from <ip>", for fail2ban; an unverified one
// only in the remote field.
func (s *Server) refused(remote net.Addr, verified bool, what, reason string, err error, device string) {
	ip := ipOf(remote)
	ok, suppressed := s.refusals.Allow(sourceOf(remote).String())
	if !ok {
		return
	}
	ev := s.log.Warn().Str("reason", reason).Str("remote", remote.String()).AnErr("error", err)
	if device != "" {
		ev = ev.Str("device", device)
	}
	if suppressed > 0 {
		ev = ev.Int("suppressed", suppressed)
	}
	if verified {
		ev.Msg("Refused " + what + " from " + ip.String())
	} else {
		ev.Bool("address_unverified", true).Msg("Refused " + what)
	}
}

// newRefusals: 5 lines per address per minute, 4096 addresses remembered.
func newRefusals() *ratelog.Limiter { return ratelog.New(time.Minute, 5, 4096) }

// configFor is the handshake's GetConfigForClient: the pairing protocol is
// offered only while a pairing link is open, and certificate checks know
// the peer's address for the log.
func (s *Server) configFor(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	var remote net.Addr = &net.UDPAddr{}
	if hello.Conn != nil {
		remote = hello.Conn.RemoteAddr()
	}
	c := s.tlsBase.Clone()
	c.GetConfigForClient = nil
	c.VerifyConnection = func(cs tls.ConnectionState) error { return s.verifyPeer(cs, remote) }
	if slices.Contains(hello.SupportedProtos, wire.ALPNPair) {
		open, err := s.store.PairingOpen(hello.Context())
		if err != nil {
			s.log.Error().Err(err).Msg("Checking for open pairing links failed; refusing pairing meanwhile")
		}
		if !open {
			c.NextProtos = []string{wire.ALPNChannel}
			s.refused(remote, false, "pairing", "no_pairing_link", nil, "")
		}
	}
	return c, nil
}

// errUnpaired is what a device whose certificate is refused for good sees
// (as TLS alert bad_certificate): revoked, unknown, expired or from another
// CA. The agent then stops dialling until it is paired again.
func (s *Server) verifyPeer(cs tls.ConnectionState, remote net.Addr) error {
	if cs.NegotiatedProtocol != wire.ALPNChannel {
		return nil
	}
	if len(cs.PeerCertificates) == 0 {
		s.refused(remote, true, "device handshake", "no_client_cert", nil, "")
		return errors.New("rcsgate: a device certificate is required")
	}
	leaf := cs.PeerCertificates[0]
	dev := pki.DeviceIDOfCert(leaf).Short()
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: s.ca.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		reason := "foreign_ca"
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			reason = "expired_cert"
		}
		s.refused(remote, true, "device handshake", reason, nil, dev)
		return fmt.Errorf("rcsgate: device certificate refused: %w", err)
	}
	d, err := s.store.GetDevice(context.Background(), pki.DeviceIDOfCert(leaf).String())
	switch {
	case errors.Is(err, store.ErrNoDevice):
		s.refused(remote, true, "device handshake", "unknown_device", nil, dev)
		return errors.New("rcsgate: unknown device")
	case err != nil:
		// Not the device's fault: let the handshake finish and have the
		// session close with a retryable code (see handleChannel).
		s.log.Error().Err(err).Str("device", dev).Msg("Device lookup failed during the handshake")
		return nil
	case !d.Revoked.IsZero():
		s.refused(remote, true, "device handshake", "revoked", nil, dev)
		return errors.New("rcsgate: device revoked")
	}
	return nil
}

// lingerClose ends a refused connection once the peer has closed it or
// refuseLinger has passed, whichever comes first.
func lingerClose(conn *quic.Conn, code quic.ApplicationErrorCode, msg string) {
	ctxutil.Sleep(conn.Context(), refuseLinger)
	_ = conn.CloseWithError(code, msg)
}

// wipeAfter is how long after an ack the WAL is checkpointed, so a burst
// of acks costs one checkpoint.
const wipeAfter = 500 * time.Millisecond

// delivered tells the wipe loop that outbox rows (message bodies) were
// deleted.
func (s *Server) delivered() {
	select {
	case s.wipe <- struct{}{}:
	default:
	}
}

// wipeLoop checkpoints and truncates the database's WAL shortly after
// messages were delivered, so their text does not linger there (the rows
// themselves are zeroed by secure_delete). A busy database is tried again.
func (s *Server) wipeLoop(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wipe:
			t.Reset(wipeAfter)
			continue
		case <-t.C:
		}
		if err := s.store.Checkpoint(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if !errors.Is(err, store.ErrBusy) {
				s.log.Warn().Err(err).Msg("Wiping delivered messages from the database's WAL failed; trying again")
			}
			t.Reset(2 * wipeAfter)
		}
	}
}
