// Package netns builds throw-away network namespaces for fault tests: two
// namespaces joined by a veth pair (10.250.x.y/30, only inside them),
// nftables loss and partitions, and a way to open sockets inside a
// namespace from the test process (a socket keeps the namespace it was
// created in).
package netns

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Pair is two namespaces A and B joined by a veth pair: A has AddrA, B has
// AddrB, on a /30.
type Pair struct {
	A, B         string // namespace names
	AddrA, AddrB string // IPv4 addresses on the veth ends
}

var seq atomic.Int64

// Available reports why namespaces cannot be used here ("" if they can).
func Available() string {
	if _, err := exec.LookPath("ip"); err != nil {
		return "the ip command (Debian iproute2) is not installed"
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return "the nft command (Debian nftables) is not installed"
	}
	return ""
}

// New creates a fresh namespace pair for t and deletes it in t.Cleanup. It
// skips t only when the machine refuses to create a namespace.
func New(t testing.TB) *Pair {
	t.Helper()
	if why := Available(); why != "" {
		t.Skipf("network namespaces unavailable: %s", why)
	}
	n := seq.Add(1)
	p := &Pair{
		A: fmt.Sprintf("rg-%d-%d-a", os.Getpid(), n),
		B: fmt.Sprintf("rg-%d-%d-b", os.Getpid(), n),
	}
	// A distinct /30 per pair inside 10.250.0.0/16 (namespaces are private,
	// this only keeps logs unambiguous).
	base := int(n%16000) * 4
	p.AddrA = fmt.Sprintf("10.250.%d.%d", base/256, base%256+1)
	p.AddrB = fmt.Sprintf("10.250.%d.%d", base/256, base%256+2)
	if out, err := run("ip", "netns", "add", p.A); err != nil {
		t.Skipf("this machine refuses network namespaces (ip netns add: %v: %s); run as root or with CAP_NET_ADMIN and CAP_SYS_ADMIN", err, out)
	}
	t.Cleanup(func() { _, _ = run("ip", "netns", "del", p.A) })
	mustRun(t, "ip", "netns", "add", p.B)
	t.Cleanup(func() { _, _ = run("ip", "netns", "del", p.B) })
	// The veth is created directly in A with its peer in B: it never
	// appears in the test's own namespace. Deleting a namespace deletes it.
	// Fixed MAC addresses and permanent neighbour entries: no ARP, whose
	// first request a link not yet switched on drops, after which the
	// kernel waits a whole second before asking again.
	va, vb := "rgva", "rgvb"
	const macA, macB = "02:72:67:00:00:0a", "02:72:67:00:00:0b"
	mustRun(t, "ip", "-n", p.A, "link", "add", va, "address", macA, "type", "veth", "peer", "name", vb, "address", macB, "netns", p.B)
	mustRun(t, "ip", "-n", p.A, "addr", "add", p.AddrA+"/30", "dev", va)
	mustRun(t, "ip", "-n", p.B, "addr", "add", p.AddrB+"/30", "dev", vb)
	mustRun(t, "ip", "-n", p.A, "neigh", "replace", p.AddrB, "lladdr", macB, "dev", va, "nud", "permanent")
	mustRun(t, "ip", "-n", p.B, "neigh", "replace", p.AddrA, "lladdr", macA, "dev", vb, "nud", "permanent")
	for _, ns := range []string{p.A, p.B} {
		mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	mustRun(t, "ip", "-n", p.A, "link", "set", va, "up")
	mustRun(t, "ip", "-n", p.B, "link", "set", vb, "up")
	if err := p.awaitLink(linkWait); err != nil {
		t.Fatal(err)
	}
	return p
}

// openUDPPair opens a UDP socket on AddrA in A and one in B connected to
// it.
func (p *Pair) openUDPPair() (a, b *net.UDPConn, err error) {
	if err := Do(p.A, func() (err error) {
		a, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(p.AddrA)})
		return err
	}); err != nil {
		return nil, nil, err
	}
	if err := Do(p.B, func() (err error) {
		b, err = net.DialUDP("udp", nil, a.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// linkWait bounds how long New waits for a fresh veth to carry packets.
const linkWait = 20 * time.Second

// awaitLink returns once a datagram has gone from B to A and back. The
// kernel switches a veth's transmit queues on from a work queue after
// "link up" returns; until then (milliseconds, longer on a loaded machine)
// every packet is dropped, which a test would read as loss.
func (p *Pair) awaitLink(wait time.Duration) error {
	a, b, err := p.openUDPPair()
	if err != nil {
		return fmt.Errorf("link probe: %w", err)
	}
	defer a.Close()
	defer b.Close()
	buf := make([]byte, 16)
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		// Each try waits for its own answer; a lost one is sent again.
		if _, err := b.Write([]byte("probe")); err != nil {
			return fmt.Errorf("link probe: %w", err)
		}
		_ = a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, from, err := a.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		if _, err := a.WriteToUDP([]byte("back"), from); err != nil {
			return fmt.Errorf("link probe: %w", err)
		}
		_ = b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := b.Read(buf); err == nil {
			return nil
		}
	}
	return fmt.Errorf("veth between %s and %s carried no probe within %v", p.A, p.B, wait)
}

func run(name string, args ...string) (string, error) {
	return runIn(nil, name, args...)
}

func runIn(stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := run(name, args...); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// Do runs f on an OS thread switched into namespace ns. Sockets f creates
// stay in ns. The thread is discarded afterwards (never returned to the
// scheduler in the wrong namespace).
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the goroutine exits locked, so the runtime
		// kills the thread instead of reusing it in ns.
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// Command returns a command that runs name inside namespace ns.
func Command(ns, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

const table = "rgfault"

// SetLoss drops pct% of the packets arriving in ns (input hook, loopback
// exempt), UDP and TCP alike. 0 removes the rule. Drops are on input only:
// a drop on the output hook makes the sender's write fail with EPERM, which
// is not what a lossy network does. Call it on both namespaces (or use
// Pair.SetLoss) for loss both ways.
func SetLoss(ns string, pct int) error { return setRules(ns, pct, false) }

// SetPartition drops every packet arriving in ns (except on loopback)
// while cut is true. It replaces any loss rule; healing removes all rules,
// so call SetLoss again afterwards if loss should go on.
func SetPartition(ns string, cut bool) error {
	if cut {
		return setRules(ns, 0, true)
	}
	return setRules(ns, 0, false)
}

func setRules(ns string, pct int, cut bool) error {
	_, _ = runIn(nil, "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", table)
	if pct <= 0 && !cut {
		return nil
	}
	rule := fmt.Sprintf("meta iifname != \"lo\" numgen random mod 100 < %d counter drop", pct)
	if cut {
		rule = "meta iifname != \"lo\" counter drop"
	}
	script := fmt.Sprintf(`table inet %s {
	chain in { type filter hook input priority 0; policy accept; %s; }
}
`, table, rule)
	if out, err := runIn([]byte(script), "ip", "netns", "exec", ns, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", ns, err, out)
	}
	return nil
}

var counterRE = regexp.MustCompile(`counter packets (\d+) bytes`)

// Dropped returns the packets dropped so far by the rules now in ns
// (summed over both chains; rules are replaced by SetLoss/SetPartition).
func Dropped(ns string) (int64, error) {
	out, err := run("ip", "netns", "exec", ns, "nft", "list", "table", "inet", table)
	if err != nil {
		if strings.Contains(out, "No such file") {
			return 0, nil
		}
		return 0, fmt.Errorf("nft list: %v: %s", err, out)
	}
	var n int64
	for _, m := range counterRE.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		n += v
	}
	return n, nil
}

// SetLoss drops pct% of packets both ways between A and B.
func (p *Pair) SetLoss(pct int) error {
	if err := SetLoss(p.A, pct); err != nil {
		return err
	}
	return SetLoss(p.B, pct)
}

// Partition cuts (or heals) the link between A and B both ways. Healing
// removes every rule, loss included.
func (p *Pair) Partition(cut bool) error {
	if err := SetPartition(p.A, cut); err != nil {
		return err
	}
	return SetPartition(p.B, cut)
}

// Dropped is the packets dropped by the current rules of A and B.
func (p *Pair) Dropped() (int64, error) {
	a, err := Dropped(p.A)
	if err != nil {
		return 0, err
	}
	b, err := Dropped(p.B)
	return a + b, err
}
