package netns

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// udpPair opens a UDP socket in each namespace, the one in A reachable on
// the veth address.
func udpPair(t *testing.T, p *Pair) (a, b *net.UDPConn) {
	t.Helper()
	a, b, err := p.openUDPPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// count sends n datagrams from b to a, in bursts small enough for the
// socket buffer, and counts how many a receives (bounded: a read deadline
// ends each burst).
func count(t *testing.T, a, b *net.UDPConn, n int) int {
	t.Helper()
	got := 0
	buf := make([]byte, 16)
	for sent := 0; sent < n; {
		burst := min(50, n-sent)
		for i := 0; i < burst; i++ {
			if _, err := b.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		sent += burst
		for got < sent {
			_ = a.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, _, err := a.ReadFrom(buf); err != nil {
				break
			}
			got++
		}
	}
	return got
}

func TestPairLossPartitionAndTeardown(t *testing.T) {
	var names []string
	t.Run("pair", func(t *testing.T) {
		p := New(t)
		names = []string{p.A, p.B}
		a, b := udpPair(t, p)
		if got := count(t, a, b, 200); got != 200 {
			t.Fatalf("clean link: %d of 200 datagrams arrived", got)
		}
		if err := SetLoss(p.A, 20); err != nil {
			t.Fatal(err)
		}
		got := count(t, a, b, 1000)
		dropped, err := Dropped(p.A)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("20%% loss: %d of 1000 arrived, nft dropped %d", got, dropped)
		if got < 700 || got > 900 || int(dropped) != 1000-got {
			t.Fatalf("20%% loss: %d arrived, %d dropped", got, dropped)
		}
		if err := p.Partition(true); err != nil {
			t.Fatal(err)
		}
		if got := count(t, a, b, 50); got != 0 {
			t.Fatalf("partition: %d datagrams crossed", got)
		}
		if err := p.Partition(false); err != nil {
			t.Fatal(err)
		}
		if got := count(t, a, b, 100); got != 100 {
			t.Fatalf("healed: %d of 100 arrived", got)
		}
	})
	// The subtest's cleanup has run: its namespaces are gone.
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Fatalf("namespace %s left behind:\n%s", n, out)
		}
	}
}

// A subtest that fails half-way still leaves no namespace behind.
func TestTeardownAfterFailure(t *testing.T) {
	var names []string
	ok := t.Run("fails", func(t *testing.T) {
		p := New(t)
		names = []string{p.A, p.B}
		_ = SetPartition(p.A, true)
		t.Skip("stopping half-way on purpose") // stands in for a t.Fatal
	})
	_ = ok
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Fatalf("namespace %s left behind:\n%s", n, out)
		}
	}
}

func TestDelayRelay(t *testing.T) {
	p := New(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	a, _ := udpPair(t, p)
	go func() { // echo server in A
		buf := make([]byte, 64)
		for {
			n, from, err := a.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = a.WriteTo(buf[:n], from)
		}
	}()
	r, err := NewDelayRelay(ctx, p.A, p.AddrA+":0", a.LocalAddr().String(), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var c *net.UDPConn
	raddr, _ := net.ResolveUDPAddr("udp", r.Addr())
	if err := Do(p.B, func() (err error) { c, err = net.DialUDP("udp", nil, raddr); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	// The echo must come back (a deadline only so a lost packet fails
	// rather than hangs; generous, as a loaded machine is slow) and no
	// sooner than the relay's delay each way: that is what it is for.
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("echo through relay: %q %v", buf[:n], err)
	}
	if rtt := time.Since(start); rtt < 200*time.Millisecond {
		t.Fatalf("round trip %s, want at least the relay's 100 ms each way", rtt)
	}
}

// New's link probe reports a link that carries nothing, and passes once it
// carries again.
func TestAwaitLink(t *testing.T) {
	p := New(t)
	if err := p.Partition(true); err != nil {
		t.Fatal(err)
	}
	if err := p.awaitLink(300 * time.Millisecond); err == nil {
		t.Fatal("a partitioned link passed the probe")
	}
	if err := p.Partition(false); err != nil {
		t.Fatal(err)
	}
	if err := p.awaitLink(linkWait); err != nil {
		t.Fatal(err)
	}
}
