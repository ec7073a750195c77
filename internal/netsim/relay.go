// Package netsim is a UDP relay for tests: it sits between an agent and the
// server on loopback and can drop a share of packets, delay them, or cut the
// link entirely (a partition), so reliability tests need no root and no
// kernel qdisc. The netns/nftables tests exercise the real kernel path.
package netsim

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Relay forwards datagrams between clients and one upstream address.
type Relay struct {
	pc       net.PacketConn
	upstream *net.UDPAddr

	mu      sync.Mutex
	lossPct int           // 0–100, per packet, each direction
	delay   time.Duration // one way
	cut     bool          // partition: everything dropped
	rng     *rand.Rand
	clients map[string]*net.UDPConn // client addr → its upstream socket
	stats   Stats
}

// Stats counts what the relay did.
type Stats struct{ Forwarded, Dropped int }

// NewRelay listens on 127.0.0.1 and forwards to upstream.
func NewRelay(ctx context.Context, upstream string) (*Relay, error) {
	up, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{pc: pc, upstream: up, clients: map[string]*net.UDPConn{}, rng: rand.New(rand.NewPCG(1, 2))}
	go r.fromClients(ctx)
	go func() { <-ctx.Done(); r.close() }()
	return r, nil
}

// Addr is where clients should send.
func (r *Relay) Addr() string { return r.pc.LocalAddr().String() }

// SetLoss drops pct percent of packets in each direction.
func (r *Relay) SetLoss(pct int) { r.mu.Lock(); r.lossPct = pct; r.mu.Unlock() }

// SetDelay delays every packet by d one way.
func (r *Relay) SetDelay(d time.Duration) { r.mu.Lock(); r.delay = d; r.mu.Unlock() }

// Partition cuts (true) or heals (false) the link.
func (r *Relay) Partition(cut bool) { r.mu.Lock(); r.cut = cut; r.mu.Unlock() }

// Stats returns counters so far.
func (r *Relay) Stats() Stats { r.mu.Lock(); defer r.mu.Unlock(); return r.stats }

func (r *Relay) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.pc.Close()
	for _, c := range r.clients {
		_ = c.Close()
	}
}

// fate decides what happens to one packet.
func (r *Relay) fate() (drop bool, delay time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut || (r.lossPct > 0 && r.rng.IntN(100) < r.lossPct) {
		r.stats.Dropped++
		return true, 0
	}
	r.stats.Forwarded++
	return false, r.delay
}

func (r *Relay) send(write func() error, delay time.Duration) {
	if delay == 0 {
		_ = write()
		return
	}
	time.AfterFunc(delay, func() { _ = write() })
}

func (r *Relay) fromClients(ctx context.Context) {
	buf := make([]byte, 65535)
	for {
		n, addr, err := r.pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		up, err := r.upstreamFor(ctx, addr)
		if err != nil {
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		if drop, d := r.fate(); !drop {
			r.send(func() error { _, err := up.Write(pkt); return err }, d)
		}
	}
}

// upstreamFor gives each client its own upstream socket, so the server sees
// distinct peers and replies find their way back.
func (r *Relay) upstreamFor(ctx context.Context, client net.Addr) (*net.UDPConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.clients[client.String()]; ok {
		return c, nil
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, r.upstream)
	if err != nil {
		return nil, err
	}
	r.clients[client.String()] = c
	go func() {
		buf := make([]byte, 65535)
		for {
			n, err := c.Read(buf)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			pkt := append([]byte(nil), buf[:n]...)
			if drop, d := r.fate(); !drop {
				r.send(func() error { _, err := r.pc.WriteTo(pkt, client); return err }, d)
			}
		}
	}()
	return c, nil
}
