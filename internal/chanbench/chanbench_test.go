package chanbench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// tinyConfig keeps every stage to a handful of messages; no assertion here
// depends on timing, only on counts and on figures being measured at all.
func tinyConfig() Config {
	c := DefaultConfig()
	c.Starts, c.PingsLoopback, c.PingsImpaired, c.Flood, c.FloodImpaired = 2, 20, 10, 300, 100
	c.MediaBytes, c.Chunk, c.HOLWindow, c.StageTimeout = 1_000_000, 16<<10, 10*time.Second, 60*time.Second
	return c
}

func transports(t testing.TB, ctx context.Context, pl place) []transport {
	t.Helper()
	cs, err := newCerts()
	if err != nil {
		t.Fatal(err)
	}
	q, err := newQUIC(ctx, pl, cs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.close)
	w, err := newWS(ctx, pl, cs, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.close)
	return []transport{q, w}
}

func checkFigures(t *testing.T, name string, f Figures, cfg Config) {
	t.Helper()
	if f.Err != nil {
		t.Fatalf("%s: %v", name, f.Err)
	}
	if f.Sent == 0 || f.Lost != 0 || f.Doubled != 0 {
		t.Errorf("%s: sent %d, lost %d, doubled %d; want some sent, none lost or doubled", name, f.Sent, f.Lost, f.Doubled)
	}
	for what, d := range map[string]time.Duration{
		"cold start": f.Cold, "reconnect": f.Reconnect, "RTT p50": f.RTT50, "RTT p99": f.RTT99, "server cost p50": f.Cost50,
	} {
		if d <= 0 {
			t.Errorf("%s: %s not measured", name, what)
		}
	}
	if f.MsgsPerSec <= 0 {
		t.Errorf("%s: messages/s not measured", name)
	}
	if f.Resumed != cfg.Starts {
		t.Errorf("%s: %d of %d reconnects resumed TLS", name, f.Resumed, cfg.Starts)
	}
}

func TestLoopbackBothTransports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := tinyConfig()
	for _, tr := range transports(t, ctx, loopback()) {
		f := measure(ctx, cfg, tr, false, true, t.Logf)
		checkFigures(t, tr.name(), f, cfg)
		if tr.name() == "QUIC" && f.ZeroRTT != cfg.Starts {
			t.Errorf("QUIC: %d of %d reconnects had 0-RTT accepted", f.ZeroRTT, cfg.Starts)
		}
	}
}

// TestImpairedLink runs both transports through the namespace link with
// delay and loss, when this machine allows namespaces.
func TestImpairedLink(t *testing.T) {
	if testing.Short() {
		t.Skip("impaired link takes a few seconds")
	}
	if why := namespacesUsable(); why != "" {
		t.Skipf("network namespaces unavailable: %s", why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := newLink(ctx, 5*time.Millisecond, 5)
	if err != nil {
		t.Skipf("namespaces refused: %v", err)
	}
	defer l.close()
	cfg := tinyConfig()
	cfg.MediaBytes = 300_000
	for _, tr := range transports(t, ctx, l.place()) {
		checkFigures(t, tr.name(), measure(ctx, cfg, tr, true, true, t.Logf), cfg)
	}
	t.Logf("link: %d packets, largest %d bytes, nft dropped %d", l.pkts.Load(), l.maxPkt.Load(), l.dropped())
	if l.dropped() == 0 {
		t.Errorf("nft dropped nothing: loss is not on the path")
	}
}

func TestPct(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0, 1}} {
		if got := pct(ds, c.p); got != c.want {
			t.Errorf("pct(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if pct(nil, 50) != 0 {
		t.Error("pct of nothing should be 0")
	}
}

func TestAimsAndPrint(t *testing.T) {
	good := func(recon, hol time.Duration) Figures {
		return Figures{Reconnect: recon, HOL99: hol, Cost50: time.Millisecond, Sent: 10, MediaRate: 2}
	}
	conds := []Condition{
		{Name: "loopback", QUIC: good(1, 1), WS: good(1, 1)},
		{Name: "lossy", Skipped: "skipped: no root"},
		{Name: "rtt", Impaired: true, HOL: true, QUIC: good(40*time.Millisecond, 50*time.Millisecond), WS: good(100*time.Millisecond, 300*time.Millisecond)},
	}
	aims := Aims(conds)
	var verdicts []string
	for _, a := range aims {
		verdicts = append(verdicts, a.Verdict)
	}
	if got := strings.Join(verdicts, " "); got != "PASS PASS PASS PASS PASS n/a" {
		t.Errorf("verdicts %q", got)
	}
	conds[2].QUIC.MediaRate = 1.5 // 0.75 of TCP's 2 MB/s
	if a := Aims(conds)[2]; a.Verdict != "MISS" || !strings.Contains(a.Text, "file rate") {
		t.Errorf("a file moving at 0.75x TCP's rate should miss: %+v", a)
	}
	conds[2].WS.Doubled = 1
	if a := Aims(conds)[4]; a.Verdict != "MISS" {
		t.Errorf("a doubled message should miss: %+v", a)
	}
	var buf bytes.Buffer
	Print(&buf, conds)
	for _, want := range []string{"== rtt ==", "QUIC/WS", "skipped: no root", "== aims =="} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, buf.String())
		}
	}
}
