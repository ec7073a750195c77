// Command rcsgate-chanbench compares the device channel over QUIC with the
// same frames over WebSocket on TLS 1.3 over TCP, on loopback and on
// impaired links (see internal/chanbench). Impaired conditions need root
// for network namespaces; without it they are skipped with a message.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/rcsgate/rcsgate/internal/chanbench"
)

func main() {
	cfg := chanbench.DefaultConfig()
	quick := flag.Bool("quick", false, "tiny run: few trials, small transfer")
	starts := flag.Int("starts", 0, "cold starts and reconnects per transport and condition (0: default)")
	pingsLo := flag.Int("pings", 0, "sequential text round trips on loopback (0: default)")
	pingsImp := flag.Int("pings-impaired", 0, "sequential text round trips on impaired links (0: default)")
	floodN := flag.Int("flood", 0, "pipelined messages for messages/s on loopback (0: default)")
	floodImp := flag.Int("flood-impaired", 0, "pipelined messages on impaired links (0: default)")
	window := flag.Int("window", 0, "unacked messages in flight when pipelining (0: default)")
	mediaMB := flag.Float64("media-mb", 0, "concurrent media transfer in MB (0: default 50)")
	chunk := flag.Int("chunk", 0, "media write size in bytes (0: default 16384)")
	holWin := flag.Duration("hol-window", 0, "longest text measurement during a transfer (0: default)")
	loss := flag.Int("loss", -1, "injected loss each way, percent (-1: default 5)")
	tcpCC := flag.String("tcp-cc", "", "TCP congestion control of the WebSocket baseline, e.g. cubic or bbr (default: the kernel's)")
	rtt := flag.Duration("rtt", 0, "round-trip delay of the delayed condition (0: default 50ms)")
	flag.Parse()
	if *quick {
		cfg = chanbench.QuickConfig()
	}
	setInt := func(dst *int, v int) {
		if v > 0 {
			*dst = v
		}
	}
	setInt(&cfg.Starts, *starts)
	setInt(&cfg.PingsLoopback, *pingsLo)
	setInt(&cfg.PingsImpaired, *pingsImp)
	setInt(&cfg.Flood, *floodN)
	setInt(&cfg.FloodImpaired, *floodImp)
	setInt(&cfg.Window, *window)
	setInt(&cfg.Chunk, *chunk)
	if *mediaMB > 0 {
		cfg.MediaBytes = int64(*mediaMB * 1e6)
	}
	if *holWin > 0 {
		cfg.HOLWindow = *holWin
	}
	if *loss >= 0 {
		if *loss > 100 {
			fmt.Fprintln(os.Stderr, "rcsgate-chanbench: -loss must be 0-100")
			os.Exit(2)
		}
		cfg.LossPct = *loss
	}
	if *rtt > 0 {
		cfg.RTT = *rtt
	}
	if cfg.Chunk > 1<<20 {
		fmt.Fprintln(os.Stderr, "rcsgate-chanbench: -chunk must be at most 1 MiB")
		os.Exit(2)
	}
	cfg.TCPCongestion = *tcpCC
	cfg.Log = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	start := time.Now()
	conds, err := chanbench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rcsgate-chanbench: %v\n", err)
		os.Exit(1)
	}
	cc := cfg.TCPCongestion
	if cc == "" {
		cc = chanbench.TCPCongestionDefault() + " (kernel default)"
	}
	fmt.Printf("rcsgate-chanbench: device channel, QUIC (quic-go, its own loss-based congestion control) vs WebSocket/TLS1.3/TCP (congestion control %s)\n", cc)
	fmt.Printf("%d-message window, %.0f MB transfer in %d KiB writes, text during transfer measured for at most %v\n",
		cfg.Window, float64(cfg.MediaBytes)/1e6, cfg.Chunk>>10, cfg.HOLWindow)
	chanbench.Print(os.Stdout, conds)
	fmt.Printf("\ntotal %v\n", time.Since(start).Round(time.Second))
}
