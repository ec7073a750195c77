package netsim

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestRelayForwardsDropsAndPartitions(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	echo, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:n], a)
		}
	}()
	r, err := NewRelay(ctx, echo.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip := func() bool {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 16)
		_, err := c.Read(buf)
		return err == nil
	}
	if !roundTrip() {
		t.Fatal("relay did not forward")
	}
	r.Partition(true)
	if roundTrip() {
		t.Fatal("partition let a packet through")
	}
	r.Partition(false)
	if !roundTrip() {
		t.Fatal("healed link does not forward")
	}
	r.SetLoss(100)
	if roundTrip() {
		t.Fatal("100% loss let a packet through")
	}
	if s := r.Stats(); s.Dropped < 2 || s.Forwarded < 4 {
		t.Fatalf("stats %+v", s)
	}
}
