package netns

import (
	"context"
	"net"
	"sync"
	"time"
)

// DelayRelay forwards UDP between clients and one upstream address, holding
// every datagram for a fixed delay in each direction (order kept). All its
// sockets live in the namespace it was created for.
type DelayRelay struct {
	ns       string
	pc       net.PacketConn
	upstream *net.UDPAddr
	delay    time.Duration

	mu    sync.Mutex
	peers map[string]*net.UDPConn
}

// NewDelayRelay listens on listen (host:port, inside ns) and forwards to
// upstream with delay d each way, until ctx ends.
func NewDelayRelay(ctx context.Context, ns, listen, upstream string, d time.Duration) (*DelayRelay, error) {
	up, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn
	if err := Do(ns, func() (err error) { pc, err = net.ListenPacket("udp", listen); return err }); err != nil {
		return nil, err
	}
	r := &DelayRelay{ns: ns, pc: pc, upstream: up, delay: d, peers: map[string]*net.UDPConn{}}
	toUp := r.delayed(ctx)
	go func() { <-ctx.Done(); r.close() }()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			c, err := r.upstreamFor(ctx, from)
			if err != nil {
				continue
			}
			pkt := append([]byte(nil), buf[:n]...)
			toUp <- func() { _, _ = c.Write(pkt) }
		}
	}()
	return r, nil
}

// Addr is the address clients send to.
func (r *DelayRelay) Addr() string { return r.pc.LocalAddr().String() }

func (r *DelayRelay) close() {
	_ = r.pc.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.peers {
		_ = c.Close()
	}
}

type held struct {
	due  time.Time
	send func()
}

// delayed returns a queue whose functions run delay after being queued,
// in order.
func (r *DelayRelay) delayed(ctx context.Context) chan<- func() {
	in := make(chan func(), 4096)
	q := make(chan held, 4096)
	go func() {
		for {
			select {
			case f := <-in:
				q <- held{time.Now().Add(r.delay), f}
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case h := <-q:
				if w := time.Until(h.due); w > 0 {
					t.Reset(w)
					select {
					case <-t.C:
					case <-ctx.Done():
						return
					}
				}
				h.send()
			case <-ctx.Done():
				return
			}
		}
	}()
	return in
}

func (r *DelayRelay) upstreamFor(ctx context.Context, client net.Addr) (*net.UDPConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.peers[client.String()]; ok {
		return c, nil
	}
	var c *net.UDPConn
	if err := Do(r.ns, func() (err error) { c, err = net.DialUDP("udp", nil, r.upstream); return err }); err != nil {
		return nil, err
	}
	r.peers[client.String()] = c
	back := r.delayed(ctx)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			pkt := append([]byte(nil), buf[:n]...)
			back <- func() { _, _ = r.pc.WriteTo(pkt, client) }
		}
	}()
	return c, nil
}
