package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/rcsgate/rcsgate/internal/hoptrace"
	"github.com/rcsgate/rcsgate/internal/loadmeter"
)

// RTTFigures is a Summary in milliseconds.
type RTTFigures struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func figures(s Summary) RTTFigures {
	return RTTFigures{N: s.N, P50: ms(s.P50), P90: ms(s.P90), P99: ms(s.P99), Max: ms(s.Max), Mean: ms(s.Mean)}
}

// ThroughputFigures is one sustained-traffic phase.
type ThroughputFigures struct {
	Sent             int        `json:"sent"`
	Echoed           int        `json:"echoed"`
	Lost             int        `json:"lost"`
	Duplicates       int        `json:"duplicates"`
	Unknown          int        `json:"unknown"`
	SendSeconds      float64    `json:"send_phase_s"`
	ElapsedSeconds   float64    `json:"elapsed_s"`
	MessagesPerSec   float64    `json:"messages_per_s"`
	LatencyUnderLoad RTTFigures `json:"latency_ms"`
}

func throughputFigures(fr FloodResult) ThroughputFigures {
	t := ThroughputFigures{Sent: fr.Sent, Echoed: fr.Echoed, Lost: fr.Lost, Duplicates: fr.Duplicates, Unknown: fr.Unknown,
		SendSeconds: fr.SendPhase.Seconds(), ElapsedSeconds: fr.Elapsed.Seconds(), MessagesPerSec: fr.Rate}
	if s, err := Summarize(fr.Latency); err == nil {
		t.LatencyUnderLoad = figures(s)
	}
	return t
}

// Targets of issue 14, checked against the same run's baselines. A miss is
// printed, not failed: a shared machine's load can cause it (see Load).
const (
	targetRTTRatio        = 1.3
	targetRTTRatioStretch = 1.1
	targetRateRatio       = 0.8
	// busyFrac: other processes using more than this share of the cores
	// make a phase's figure doubtful.
	busyFrac = 0.25
)

// Report holds every figure printed; it is also the JSON output.
type Report struct {
	StartedAt  time.Time `json:"started_at"`
	Homeserver string    `json:"homeserver"`
	SentStatus string    `json:"sent_status"` // rcsgate's bridge.sent_status
	Host       struct {
		OS   string `json:"os"`
		Arch string `json:"arch"`
		CPUs int    `json:"cpus"`
	} `json:"host"`
	Config struct {
		N               int     `json:"n"`
		Warmup          int     `json:"warmup"`
		DurationSeconds float64 `json:"duration_s"`
		Window          int     `json:"window"`
		MaxMessages     int     `json:"max_messages"`
		Quick           bool    `json:"quick"`
	} `json:"config"`
	Bridge   RTTFigures `json:"bridge_rtt_ms"`
	Baseline RTTFigures `json:"baseline_rtt_ms"`
	Ratio    struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"ratio_bridge_over_baseline"`
	// Accepted: the send request alone (the homeserver's write), both ways.
	BridgeAccepted   RTTFigures        `json:"bridge_send_accepted_ms"`
	BaselineAccepted RTTFigures        `json:"baseline_send_accepted_ms"`
	Breakdown        Breakdown         `json:"breakdown"`
	Throughput       ThroughputFigures `json:"throughput"`
	BaselineRate     ThroughputFigures `json:"throughput_baseline"`
	RateRatio        float64           `json:"throughput_ratio_bridge_over_baseline"`
	Load             struct {
		RoundTrips loadmeter.Span `json:"round_trips"`
		Throughput loadmeter.Span `json:"throughput"`
	} `json:"load"`
	Targets      []string `json:"targets"`
	TotalSeconds float64  `json:"total_s"`
	Failures     []string `json:"failures"`
	OK           bool     `json:"ok"`
}

func newReport(cfg Config) *Report {
	r := &Report{StartedAt: time.Now().UTC().Truncate(time.Second), Failures: []string{}}
	r.Host.OS, r.Host.Arch, r.Host.CPUs = runtime.GOOS, runtime.GOARCH, runtime.NumCPU()
	r.Config.N, r.Config.Warmup, r.Config.Window = cfg.N, cfg.Warmup, cfg.Window
	r.Config.DurationSeconds, r.Config.MaxMessages, r.Config.Quick = cfg.Duration.Seconds(), cfg.Limit, cfg.Quick
	return r
}

func accepted(trips []trip) []time.Duration {
	out := make([]time.Duration, len(trips))
	for i, t := range trips {
		out[i] = t.Accepted.Sub(t.T0)
	}
	return out
}

// fill computes the figures and records what failed.
func (r *Report) fill(bridge, base []trip, fr, bfr FloodResult, trace hoptrace.Trace) error {
	bs, err := Summarize(rtts(bridge))
	if err != nil {
		return fmt.Errorf("bridge round trips: %w", err)
	}
	ls, err := Summarize(rtts(base))
	if err != nil {
		return fmt.Errorf("baseline round trips: %w", err)
	}
	r.Bridge, r.Baseline = figures(bs), figures(ls)
	if r.Ratio.P50, err = Ratio(bs.P50, ls.P50); err != nil {
		return err
	}
	if r.Ratio.P99, err = Ratio(bs.P99, ls.P99); err != nil {
		return err
	}
	if s, err := Summarize(accepted(bridge)); err == nil {
		r.BridgeAccepted = figures(s)
	}
	if s, err := Summarize(accepted(base)); err == nil {
		r.BaselineAccepted = figures(s)
	}
	r.Breakdown = breakdown(bridge, trace)
	r.Throughput, r.BaselineRate = throughputFigures(fr), throughputFigures(bfr)
	if bfr.Rate > 0 {
		r.RateRatio = fr.Rate / bfr.Rate
	}

	fail := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	for _, f := range []struct {
		name string
		fr   FloodResult
	}{{"bridge", fr}, {"baseline", bfr}} {
		if f.fr.Sent == 0 || f.fr.Echoed == 0 {
			fail("%s throughput: nothing sent or nothing echoed (sent %d, echoed %d)", f.name, f.fr.Sent, f.fr.Echoed)
		}
		if f.fr.Lost > 0 {
			fail("%s throughput: %d of %d messages lost (no echo within %s of the end)", f.name, f.fr.Lost, f.fr.Sent, drainWait)
		}
		if f.fr.Duplicates > 0 {
			fail("%s throughput: %d duplicate echoes", f.name, f.fr.Duplicates)
		}
		if f.fr.Unknown > 0 {
			fail("%s throughput: %d echoes of bodies never sent", f.name, f.fr.Unknown)
		}
		if f.fr.Lost == 0 && !f.fr.Barrier {
			fail("%s throughput: the final ordering message did not come back within %s", f.name, echoWait)
		}
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	r.Targets = []string{
		fmt.Sprintf("round trip p50 %.2fx baseline (target <= %.1fx, stretch %.1fx): %s", r.Ratio.P50, targetRTTRatio, targetRTTRatioStretch, verdict(r.Ratio.P50 <= targetRTTRatio)),
		fmt.Sprintf("round trip p99 %.2fx baseline (target <= %.1fx, stretch %.1fx): %s", r.Ratio.P99, targetRTTRatio, targetRTTRatioStretch, verdict(r.Ratio.P99 <= targetRTTRatio)),
		fmt.Sprintf("throughput %.2fx the homeserver's own (target >= %.1fx): %s", r.RateRatio, targetRateRatio, verdict(r.RateRatio >= targetRateRatio)),
	}
	r.OK = len(r.Failures) == 0
	return nil
}

// loadNote is printed under a phase's figures.
func loadNote(w io.Writer, phase string, s loadmeter.Span) {
	warn := ""
	if s.Busy(busyFrac) {
		warn = "  <- busy machine: this figure is distorted, repeat when idle"
	}
	fmt.Fprintf(w, "  machine during %s: %s%s\n", phase, s, warn)
}

func (r *Report) print(w io.Writer) {
	fmt.Fprintf(w, "rcsgate-bench  %s  %s/%s, %d CPUs, loopback, %s, bridge.sent_status %s\n\n",
		r.StartedAt.Format(time.RFC3339), r.Host.OS, r.Host.Arch, r.Host.CPUs, r.Homeserver, r.SentStatus)
	fmt.Fprintf(w, "Round trip, sequential: %d messages each after %d warm-up, bridge and baseline taking turns in blocks of %d (ms)\n", r.Config.N, r.Config.Warmup, rttBlock)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tn\tp50\tp90\tp99\tmax\tmean\t")
	row := func(name string, f RTTFigures) {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", name, f.N, f.P50, f.P90, f.P99, f.Max, f.Mean)
	}
	row("bridge (Matrix -> phone echo -> Matrix)", r.Bridge)
	row("baseline (Matrix user -> Matrix user)", r.Baseline)
	fmt.Fprintf(tw, "ratio bridge/baseline\t\t%.2fx\t\t%.2fx\t\t\t\n", r.Ratio.P50, r.Ratio.P99)
	row("  send accepted, bridge room", r.BridgeAccepted)
	row("  send accepted, baseline room", r.BaselineAccepted)
	_ = tw.Flush()
	loadNote(w, "the round trips", r.Load.RoundTrips)
	r.Breakdown.print(w)

	fmt.Fprintf(w, "\nSustained throughput: window %d, sending for %.0fs each, in %d alternating slices\n", r.Config.Window, r.Config.DurationSeconds, floodSlices)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tmsg/s\tsent\techoed\tlost\tdoubled\tunknown\tp50 ms\tp99 ms\t")
	trow := func(name string, t ThroughputFigures) {
		fmt.Fprintf(tw, "%s\t%.1f\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t\n", name, t.MessagesPerSec, t.Sent, t.Echoed, t.Lost,
			t.Duplicates, t.Unknown, t.LatencyUnderLoad.P50, t.LatencyUnderLoad.P99)
	}
	trow("bridge (Matrix -> phone echo -> Matrix)", r.Throughput)
	trow("baseline (Matrix user -> Matrix user)", r.BaselineRate)
	fmt.Fprintf(tw, "ratio bridge/baseline\t%.2fx\t\t\t\t\t\t\t\t\n", r.RateRatio)
	_ = tw.Flush()
	loadNote(w, "the throughput phase", r.Load.Throughput)

	fmt.Fprintln(w, "\nTargets (same run):")
	for _, t := range r.Targets {
		fmt.Fprintln(w, "  "+t)
	}
	writeVerdict(w, r.OK, r.TotalSeconds, r.Failures)
}

// writeVerdict ends every report the same way: OK with the run time, or the
// failures.
func writeVerdict(w io.Writer, ok bool, seconds float64, failures []string) {
	if ok {
		fmt.Fprintf(w, "\nOK (%.0fs in all)\n", seconds)
		return
	}
	fmt.Fprintln(w, "\nFAILED:")
	for _, f := range failures {
		fmt.Fprintln(w, "  -", f)
	}
}

func (r *Report) writeJSON(path string) error { return writeJSONFile(path, r) }

// writeJSONFile writes a report for --json.
func writeJSONFile(path string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing --json: %w", err)
	}
	return nil
}
