package chanbench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rcsgate/rcsgate/internal/netns"
)

// link is an impaired path between two network namespaces, C (client) and
// S (server), made honestly at the packet level because this kernel has no
// netem (nor fq, sfq, prio; only pfifo, htb, tbf, red, none of which delay):
//
//   - each namespace has a TUN device; the bench process reads every IP
//     packet the kernel sends on one and writes it into the other after the
//     one-way delay, so TCP segments and QUIC datagrams are delayed one by
//     one, with their own timers and their own retransmissions, exactly as
//     on a long wire (a TCP byte-stream relay would hide loss from TCP);
//   - loss is nftables' `numgen random mod 100 < N drop` on the input hook
//     of both namespaces (internal/netns.SetLoss), acting on those same
//     packets in the kernel;
//   - TUN devices have no offloads, so the kernel hands over MTU-sized
//     packets (no 64 KB TSO/GSO super-packets that one drop would wipe out).
//
// There is no rate limit: the link has delay and loss, not a bottleneck.
type link struct {
	c, s       string // namespace names
	cIP, sIP   net.IP
	tunC, tunS *os.File
	delay      time.Duration // one way
	overflow   atomic.Int64  // packets tail-dropped by a full delay queue
	maxPkt     atomic.Int64  // largest packet seen (MTU-sized when offloads are off)
	pkts       atomic.Int64  // packets forwarded
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

var linkSeq atomic.Int64

// delayQueue bounds packets held in flight one way (~24 MB of 1500-byte
// packets): far above any window here, so it only guards memory.
const delayQueue = 16384

// namespacesUsable reports why namespaces cannot be made here ("" if they can).
func namespacesUsable() string {
	if why := netns.Available(); why != "" {
		return why
	}
	if os.Geteuid() != 0 {
		return "not running as root (network namespaces, TUN and nftables need CAP_NET_ADMIN and CAP_SYS_ADMIN)"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "no /dev/net/tun"
	}
	return ""
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newLink builds C and S with delay each way and lossPct% loss each way.
func newLink(ctx context.Context, delay time.Duration, lossPct int) (_ *link, err error) {
	n := linkSeq.Add(1)
	l := &link{
		c:     fmt.Sprintf("rgcb-%d-%d-c", os.Getpid(), n),
		s:     fmt.Sprintf("rgcb-%d-%d-s", os.Getpid(), n),
		cIP:   net.IPv4(10, 251, byte(n%250), 1),
		sIP:   net.IPv4(10, 251, byte(n%250), 2),
		delay: delay,
	}
	if err := ipCmd("netns", "add", l.c); err != nil {
		return nil, fmt.Errorf("namespaces refused: %w", err)
	}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if err := ipCmd("netns", "add", l.s); err != nil {
		return nil, err
	}
	const dev = "rgcb0"
	if l.tunC, err = openTun(l.c, dev); err != nil {
		return nil, err
	}
	if l.tunS, err = openTun(l.s, dev); err != nil {
		return nil, err
	}
	for _, side := range []struct {
		ns         string
		self, peer net.IP
	}{{l.c, l.cIP, l.sIP}, {l.s, l.sIP, l.cIP}} {
		for _, args := range [][]string{
			{"-n", side.ns, "link", "set", "lo", "up"},
			{"-n", side.ns, "addr", "add", side.self.String(), "peer", side.peer.String(), "dev", dev},
			{"-n", side.ns, "link", "set", dev, "up"},
		} {
			if err := ipCmd(args...); err != nil {
				return nil, err
			}
		}
		if err := netns.SetLoss(side.ns, lossPct); err != nil {
			return nil, fmt.Errorf("loss rule: %w", err)
		}
	}
	ctx, l.cancel = context.WithCancel(ctx)
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.pump(ctx, l.tunC, l.tunS) }()
	go func() { defer l.wg.Done(); l.pump(ctx, l.tunS, l.tunC) }()
	return l, nil
}

// openTun creates a TUN device inside ns; it lives as long as the file.
func openTun(ns, name string) (*os.File, error) {
	var fd int
	err := netns.Do(ns, func() error {
		var err error
		// Non-blocking so the Go poller serves reads and a Close ends them.
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("tun name: %w", err)
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			_ = unix.Close(fd)
			return fmt.Errorf("TUNSETIFF in %s: %w", ns, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

type heldPkt struct {
	due time.Time
	pkt []byte
}

// pump moves packets from one TUN to the other, each held for the delay,
// order kept.
func (l *link) pump(ctx context.Context, from, to *os.File) {
	var q chan heldPkt
	if l.delay > 0 {
		q = make(chan heldPkt, delayQueue)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			t := time.NewTimer(time.Hour)
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
					_, _ = to.Write(h.pkt)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	buf := make([]byte, 65536)
	for {
		n, err := from.Read(buf)
		if err != nil {
			return
		}
		pkt := append([]byte(nil), buf[:n]...)
		l.pkts.Add(1)
		if int64(n) > l.maxPkt.Load() {
			l.maxPkt.Store(int64(n))
		}
		if q == nil {
			_, _ = to.Write(pkt)
			continue
		}
		select {
		case q <- heldPkt{time.Now().Add(l.delay), pkt}:
		default:
			l.overflow.Add(1)
		}
	}
}

// place puts servers in S and clients in C.
func (l *link) place() place {
	return place{
		clientDo: func(f func() error) error { return netns.Do(l.c, f) },
		serverDo: func(f func() error) error { return netns.Do(l.s, f) },
		clientIP: l.cIP, serverIP: l.sIP,
	}
}

// dropped is what the nft loss rules dropped so far, both ways.
func (l *link) dropped() int64 {
	a, _ := netns.Dropped(l.c)
	b, _ := netns.Dropped(l.s)
	return a + b
}

func (l *link) close() {
	if l.cancel != nil {
		l.cancel()
	}
	for _, f := range []*os.File{l.tunC, l.tunS} {
		if f != nil {
			_ = f.Close()
		}
	}
	l.wg.Wait()
	_ = ipCmd("netns", "del", l.c)
	_ = ipCmd("netns", "del", l.s)
}
