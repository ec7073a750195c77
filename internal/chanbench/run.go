package chanbench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rcsgate/rcsgate/internal/loadmeter"
)

// Config sizes a run. Every loop in the bench is bounded by one of these
// counts or by a deadline.
type Config struct {
	Starts        int           // cold starts and reconnects per transport and condition
	PingsLoopback int           // sequential text round trips on clean loopback
	PingsImpaired int           // ... on impaired links (also the cap during a transfer)
	Flood         int           // pipelined messages for messages/s on loopback
	FloodImpaired int           // ... on impaired links
	Window        int           // unacked messages in flight when pipelining (devicechan's sendWindow)
	MediaBytes    int64         // size of the concurrent media transfer
	Chunk         int           // media write size (one WebSocket message each)
	HOLWindow     time.Duration // longest time text is measured during a transfer
	LossPct       int           // injected loss each way, in percent
	RTT           time.Duration // round-trip delay of the delayed condition
	StageTimeout  time.Duration // bound on each measuring stage
	TCPCongestion string        // congestion control of the WebSocket's TCP ("": kernel default)
	Log           io.Writer     // progress lines (nil: none)
}

// DefaultConfig is the full run (about 3–4 minutes on 2 cores).
func DefaultConfig() Config {
	return Config{
		Starts: 10, PingsLoopback: 1000, PingsImpaired: 300, Flood: 20000, FloodImpaired: 5000,
		Window: 256, MediaBytes: 50_000_000, Chunk: 16 << 10, HOLWindow: 20 * time.Second,
		LossPct: 5, RTT: 50 * time.Millisecond, StageTimeout: 90 * time.Second,
	}
}

// QuickConfig is a tiny run for smoke checks.
func QuickConfig() Config {
	c := DefaultConfig()
	c.Starts, c.PingsLoopback, c.PingsImpaired, c.Flood, c.FloodImpaired = 3, 100, 40, 1000, 300
	c.MediaBytes, c.HOLWindow = 4_000_000, 4*time.Second
	return c
}

// Figures is one transport's results in one condition.
type Figures struct {
	Cold, Reconnect     time.Duration // p50 of Starts trials: dial to first message acked
	ColdMax, ReconMax   time.Duration
	Resumed, ZeroRTT    int // reconnects that resumed TLS / had 0-RTT accepted
	Trials              int
	RTT50, RTT99        time.Duration
	MsgsPerSec          float64
	Cost50, Cost99      time.Duration // server handler: frame read to ack written
	HOL50, HOL99        time.Duration // text round trips while media ran (zero: not measured)
	HOLPings            int
	MediaSent, MediaGot int64          // bytes the client wrote / the server read during the window
	MediaDone           bool           // the whole transfer was written within the window
	MediaRate           float64        // MB (10^6) per second the server received during the window
	Load                loadmeter.Span // the machine while this transport was measured
	Sent, Lost, Doubled int
	Err                 error // the run stopped early
}

// Condition is one network condition with both transports.
type Condition struct {
	Name     string
	Impaired bool
	HOL      bool // a transfer runs in this condition (the head-of-line figure)
	Skipped  string
	QUIC, WS Figures
	Dropped  int64 // packets dropped by nftables during the condition
	Overflow int64 // packets dropped by a full delay queue (should be 0)
}

// Run measures every condition: clean loopback, loss without added delay,
// and RTT plus loss with and without a concurrent transfer.
func Run(ctx context.Context, cfg Config) ([]Condition, error) {
	cs, err := newCerts()
	if err != nil {
		return nil, err
	}
	logf := func(format string, a ...any) {
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, format+"\n", a...)
		}
	}
	var out []Condition

	c := Condition{Name: "loopback 127.0.0.1, clean", HOL: true}
	logf("# %s", c.Name)
	c.QUIC, c.WS = runBoth(ctx, cfg, cs, loopback(), false, true, logf)
	out = append(out, c)

	type impaired struct {
		name  string
		delay time.Duration
	}
	conds := []impaired{
		{fmt.Sprintf("lossy link, %d%% loss each way, no added delay (netns+TUN, nft)", cfg.LossPct), 0},
		{fmt.Sprintf("%v RTT + %d%% loss each way (netns+TUN, nft)", cfg.RTT, cfg.LossPct), cfg.RTT / 2},
	}
	why := namespacesUsable()
	for _, ic := range conds {
		c := Condition{Name: ic.name, Impaired: true, HOL: true}
		logf("# %s", c.Name)
		if why != "" {
			c.Skipped = "skipped: " + why
			logf("  %s", c.Skipped)
			out = append(out, c)
			continue
		}
		l, err := newLink(ctx, ic.delay, cfg.LossPct)
		if err != nil {
			c.Skipped = "skipped: " + err.Error()
			logf("  %s", c.Skipped)
			out = append(out, c)
			continue
		}
		c.QUIC, c.WS = runBoth(ctx, cfg, cs, l.place(), true, true, logf)
		c.Dropped, c.Overflow = l.dropped(), l.overflow.Load()
		l.close()
		out = append(out, c)
	}
	return out, nil
}

func runBoth(ctx context.Context, cfg Config, cs *certs, pl place, impaired, withHOL bool, logf func(string, ...any)) (q, w Figures) {
	mk := []func() (transport, error){
		func() (transport, error) { return newQUIC(ctx, pl, cs) },
		func() (transport, error) { return newWS(ctx, pl, cs, cfg.TCPCongestion) },
	}
	res := make([]Figures, 2)
	for i, f := range mk {
		tr, err := f()
		if err != nil {
			res[i].Err = err
			logf("  transport %d: %v", i, err)
			continue
		}
		load := loadmeter.Take()
		res[i] = measure(ctx, cfg, tr, impaired, withHOL, logf)
		res[i].Load = loadmeter.Since(load)
		tr.close()
	}
	return res[0], res[1]
}

// measure runs every stage for one transport in one condition, in order,
// on fresh server state, and stops at the first failure (kept in Err).
func measure(ctx context.Context, cfg Config, tr transport, impaired, withHOL bool, logf func(string, ...any)) (f Figures) {
	led := newLedger(tr.name())
	srv := tr.stats()
	pings, n := cfg.PingsLoopback, cfg.Flood
	if impaired {
		pings, n = cfg.PingsImpaired, cfg.FloodImpaired
	}
	defer func() {
		f.Sent, f.Lost, f.Doubled = led.check(srv)
		costs := srv.costs()
		f.Cost50, f.Cost99 = pct(costs, 50), pct(costs, 99)
		if f.Err != nil {
			logf("  %s: stopped: %v", tr.name(), f.Err)
		}
	}()
	stage := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, cfg.StageTimeout) }

	// Cold starts: empty session cache each time, so a full handshake.
	var cold, recon []time.Duration
	sctx, cancel := stage()
	for i := 0; i < cfg.Starts; i++ {
		tr.forget()
		d, s, err := firstMessage(sctx, tr, led)
		if err != nil {
			cancel()
			f.Err = fmt.Errorf("cold start %d: %w", i, err)
			return f
		}
		s.close()
		cold = append(cold, d)
	}
	cancel()
	f.Cold, f.ColdMax, f.Trials = pct(cold, 50), pct(cold, 100), len(cold)
	logf("  %s: cold start p50 %v", tr.name(), f.Cold)

	// Reconnects: the client drops a live connection (which delivered the
	// session ticket) and dials again with it.
	sctx, cancel = stage()
	_, s, err := firstMessage(sctx, tr, led)
	if err != nil {
		cancel()
		f.Err = fmt.Errorf("warm-up connection: %w", err)
		return f
	}
	for i := 0; i < cfg.Starts; i++ {
		s.c.settle(sctx)
		s.close()
		var d time.Duration
		d, s, err = firstMessage(sctx, tr, led)
		if err != nil {
			cancel()
			f.Err = fmt.Errorf("reconnect %d: %w", i, err)
			return f
		}
		r, z := s.c.resumed()
		if r {
			f.Resumed++
		}
		if z {
			f.ZeroRTT++
		}
		recon = append(recon, d)
	}
	cancel()
	defer func() { s.close() }()
	f.Reconnect, f.ReconMax = pct(recon, 50), pct(recon, 100)
	logf("  %s: reconnect p50 %v (resumed %d/%d, 0-RTT %d)", tr.name(), f.Reconnect, f.Resumed, len(recon), f.ZeroRTT)

	// Text round trips, one at a time.
	var rtts []time.Duration
	sctx, cancel = stage()
	for i := 0; i < pings; i++ {
		d, err := s.roundTrip(sctx)
		if err != nil {
			cancel()
			f.Err = fmt.Errorf("ping %d: %w", i, err)
			return f
		}
		rtts = append(rtts, d)
	}
	cancel()
	f.RTT50, f.RTT99 = pct(rtts, 50), pct(rtts, 99)
	logf("  %s: text RTT p50 %v p99 %v", tr.name(), f.RTT50, f.RTT99)

	// Messages/s: pipelined with a bounded window of unacked messages.
	sctx, cancel = stage()
	d, err := flood(sctx, s, n, cfg.Window)
	cancel()
	if err != nil {
		f.Err = fmt.Errorf("flood: %w", err)
		return f
	}
	f.MsgsPerSec = float64(n) / d.Seconds()
	logf("  %s: %.0f messages/s", tr.name(), f.MsgsPerSec)

	if !withHOL {
		return f
	}
	// Text while media runs on the same connection. A fresh connection, so
	// the transfer starts from a fresh congestion window for both.
	s.close()
	sctx, cancel = stage()
	defer cancel()
	_, s, err = firstMessage(sctx, tr, led)
	if err != nil {
		f.Err = fmt.Errorf("transfer connection: %w", err)
		return f
	}
	before := srv.media.Load()
	h, err := hol(sctx, s, cfg.MediaBytes, cfg.Chunk, pings, cfg.HOLWindow,
		func() int64 { return srv.media.Load() - before })
	f.MediaGot = srv.media.Load() - before
	f.HOL50, f.HOL99, f.HOLPings = pct(h.rtts, 50), pct(h.rtts, 99), len(h.rtts)
	f.MediaSent, f.MediaDone = h.written, h.complete
	if h.elapsed > 0 {
		f.MediaRate = float64(h.got) / 1e6 / h.elapsed.Seconds()
	}
	if err != nil {
		f.Err = fmt.Errorf("transfer: %w", err)
		return f
	}
	logf("  %s: text during transfer p50 %v p99 %v (%d pings, %.1f MB sent, %.2f MB/s received)", tr.name(), f.HOL50, f.HOL99, f.HOLPings, float64(f.MediaSent)/1e6, f.MediaRate)
	return f
}
