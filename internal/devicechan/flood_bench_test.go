package devicechan

import (
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// BenchmarkIdlePairingFlood measures what 500 strangers that open the
// pairing protocol, send a request with a made-up token and then sit idle
// (keep-alives only) hold, 5 s later: connections still open and heap in
// use (server and clients share the process). Run it once:
//
//	go test -run '^$' -bench IdlePairingFlood -benchtime 1x ./internal/devicechan
//
// "open" is while a pairing link is open (the pairing protocol is offered),
// "closed" the usual state.
func BenchmarkIdlePairingFlood(b *testing.B) {
	for _, open := range []bool{true, false} {
		name := "closed"
		if open {
			name = "open"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				held, heap, gor := pairingFlood(b, 500, open)
				b.ReportMetric(float64(held), "held_conns")
				b.ReportMetric(heap, "heap_MB")
				b.ReportMetric(float64(gor), "goroutines")
			}
		})
	}
}

func pairingFlood(b *testing.B, n int, open bool) (held int, heapMB float64, goroutines int) {
	f := newFixtureWith(b, nil)
	ctx, st := f.ctx, f.st
	if open {
		if err := st.AddPairToken(ctx, "some-other-token-hash", "@u:x", "p", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	heap := func() float64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapInuse) / (1 << 20)
	}
	baseHeap, baseG := heap(), runtime.NumGoroutine()

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer udp.Close()
	defer tr.Close()
	var mu sync.Mutex
	var conns []*quic.Conn
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			defer dcancel()
			raddr, err := net.ResolveUDPAddr("udp", f.addr)
			if err != nil {
				return
			}
			conn, err := tr.Dial(dctx, raddr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
				NextProtos: []string{wire.ALPNPair}}, &quic.Config{KeepAlivePeriod: time.Second, MaxIdleTimeout: time.Minute})
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			if str, err := conn.OpenStreamSync(dctx); err == nil {
				_ = wire.WriteMsg(str, wire.PairRequest{Token: strings.Repeat("u", 43), CSR: []byte{1}})
			}
		}()
	}
	wg.Wait()
	// A benchmark, not a test: give the server time to do what it does.
	time.Sleep(5 * time.Second)
	for _, c := range conns {
		if c.Context().Err() == nil {
			held++
		}
	}
	heapMB, goroutines = heap()-baseHeap, runtime.NumGoroutine()-baseG
	b.Logf("%s: %d of %d connections still open 5 s later, heap +%.1f MB, goroutines +%d",
		map[bool]string{true: "pairing open", false: "pairing closed"}[open], held, n, heapMB, goroutines)
	for _, c := range conns {
		_ = c.CloseWithError(0, "")
	}
	return held, heapMB, goroutines
}
