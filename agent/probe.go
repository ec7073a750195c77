package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// While the server is unreachable the agent does not only sleep out its
// backoff: every ProbeInterval it sends each server address one UDP packet
// that any QUIC server answers at once without creating state, and dials as
// soon as one is answered. That brings the channel back within about one
// probe interval of the network (or the server) returning, while dial
// attempts themselves stay on the exponential, jittered, capped backoff.
//
// The probe is a QUIC long-header packet for a reserved version (RFC 9000
// §15: versions 0x?a?a?a?a exist to exercise version negotiation), padded to
// 1200 bytes. A quic-go server answers a packet of an unsupported version of
// at least MinUnknownVersionPacketSize (1200) bytes with a Version
// Negotiation packet (quic-go v0.65 server.go, handlePacketImpl →
// maybeSendVersionNegotiationPacket) unless the Transport sets
// DisableVersionNegotiationPackets. The answer echoes our source connection
// id as its destination id, which is how a real answer is told from noise.
const (
	probeVersion = 0x1a2a3a4a
	probeSize    = 1200
	probeCIDLen  = 8
	probeMemory  = 16 // recent probes whose answers still count
)

// newProbe returns a probe packet and the source connection id an answer
// must carry.
func newProbe() (pkt []byte, scid [probeCIDLen]byte) {
	var dcid [probeCIDLen]byte
	_, _ = rand.Read(dcid[:])
	_, _ = rand.Read(scid[:])
	pkt = make([]byte, 0, probeSize)
	pkt = append(pkt, 0xc0) // long header, fixed bit
	pkt = binary.BigEndian.AppendUint32(pkt, probeVersion)
	pkt = append(pkt, probeCIDLen)
	pkt = append(pkt, dcid[:]...)
	pkt = append(pkt, probeCIDLen)
	pkt = append(pkt, scid[:]...)
	return pkt[:probeSize], scid // zero padding
}

// versionNegotiationFor returns the destination connection id of a Version
// Negotiation packet, or false if b is not one.
func versionNegotiationFor(b []byte) ([]byte, bool) {
	if len(b) < 7 || b[0]&0x80 == 0 || binary.BigEndian.Uint32(b[1:5]) != 0 {
		return nil, false
	}
	n := int(b[5])
	if len(b) < 6+n+1 {
		return nil, false
	}
	return b[6 : 6+n], true
}

// prober probes the server addresses in the background and signals on
// answered() each time the server goes from silent to answering: after a
// probe round that got no answer, or after arm. A nil *prober is valid and
// never signals.
type prober struct {
	interval time.Duration
	sig      chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
	log      zerolog.Logger

	mu         sync.Mutex
	recent     [][probeCIDLen]byte
	answeredAt time.Time // last answer
	sentAt     time.Time // last probe round
	reachable  bool
}

func startProber(ctx context.Context, addrs []string, interval time.Duration, log zerolog.Logger) *prober {
	pctx, cancel := context.WithCancel(ctx)
	p := &prober{interval: interval, sig: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}), log: log}
	go p.run(pctx, append([]string(nil), addrs...))
	return p
}

func (p *prober) stop() {
	if p == nil {
		return
	}
	p.cancel()
	<-p.done
}

func (p *prober) answered() <-chan struct{} {
	if p == nil {
		return nil
	}
	return p.sig
}

// arm makes the next answer signal, whatever the prober saw before: the
// agent has just failed to reach the server and is about to wait.
func (p *prober) arm() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.reachable = false
	p.mu.Unlock()
	p.drain()
}

// hasAnswered reports whether the server answers probes now: its answer to
// the last round came, or no round went unanswered since the last answer.
func (p *prober) hasAnswered() bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reachable
}

// drain forgets an answer signalled earlier.
func (p *prober) drain() {
	if p == nil {
		return
	}
	select {
	case <-p.sig:
	default:
	}
}

func (p *prober) run(ctx context.Context, addrs []string) {
	defer close(p.done)
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		p.log.Warn().Err(err).Msg("cannot open a socket to probe the server; relying on backoff alone")
		return
	}
	defer conn.Close()
	stopRead := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stopRead()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { p.read(ctx, conn) })

	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.round(conn, addrs)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// round sends one probe to every address. A round without an answer to the
// previous one marks the server unreachable again, so its next answer wakes
// the agent.
func (p *prober) round(conn *net.UDPConn, addrs []string) {
	pkt, scid := newProbe()
	p.mu.Lock()
	if p.answeredAt.Before(p.sentAt) {
		p.reachable = false
	}
	p.sentAt = time.Now()
	p.recent = append(p.recent, scid)
	if len(p.recent) > probeMemory {
		p.recent = p.recent[1:]
	}
	p.mu.Unlock()
	for _, addr := range addrs {
		ua, err := net.ResolveUDPAddr("udp", addr) // again each round: DNS may come back with the network
		if err != nil {
			continue
		}
		_, _ = conn.WriteToUDP(pkt, ua) // errors (no route) just mean: not yet
	}
}

func (p *prober) read(ctx context.Context, conn *net.UDPConn) {
	buf := make([]byte, 2048)
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue // e.g. ICMP port unreachable reported on the socket
		}
		dcid, ok := versionNegotiationFor(buf[:n])
		if !ok {
			continue
		}
		p.mu.Lock()
		match := false
		for _, s := range p.recent {
			if bytes.Equal(s[:], dcid) {
				match = true
				break
			}
		}
		wake := match && !p.reachable
		if match {
			p.answeredAt, p.reachable = time.Now(), true
		}
		p.mu.Unlock()
		if wake {
			select {
			case p.sig <- struct{}{}:
			default:
			}
		}
	}
}
