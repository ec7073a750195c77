package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"text/tabwriter"
	"time"
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

// Report holds every figure printed; it is also the JSON output.
type Report struct {
	StartedAt time.Time `json:"started_at"`
	Host      struct {
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
	Throughput struct {
		Sent             int        `json:"sent"`
		Echoed           int        `json:"echoed"`
		Lost             int        `json:"lost"`
		Duplicates       int        `json:"duplicates"`
		Unknown          int        `json:"unknown"`
		SendSeconds      float64    `json:"send_phase_s"`
		ElapsedSeconds   float64    `json:"elapsed_s"`
		MessagesPerSec   float64    `json:"messages_per_s"`
		LatencyUnderLoad RTTFigures `json:"latency_ms"`
	} `json:"throughput"`
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

// fill computes the figures and records what failed.
func (r *Report) fill(bridge, base []time.Duration, fr FloodResult) error {
	bs, err := Summarize(bridge)
	if err != nil {
		return fmt.Errorf("bridge round trips: %w", err)
	}
	ls, err := Summarize(base)
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
	t := &r.Throughput
	t.Sent, t.Echoed, t.Lost, t.Duplicates, t.Unknown = fr.Sent, fr.Echoed, fr.Lost, fr.Duplicates, fr.Unknown
	t.SendSeconds, t.ElapsedSeconds, t.MessagesPerSec = fr.SendPhase.Seconds(), fr.Elapsed.Seconds(), fr.Rate
	if s, err := Summarize(fr.Latency); err == nil {
		t.LatencyUnderLoad = figures(s)
	}

	fail := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	if fr.Sent == 0 || fr.Echoed == 0 {
		fail("throughput: nothing sent or nothing echoed (sent %d, echoed %d)", fr.Sent, fr.Echoed)
	}
	if fr.Lost > 0 {
		fail("throughput: %d of %d messages lost (no echo within %s of the end)", fr.Lost, fr.Sent, drainWait)
	}
	if fr.Duplicates > 0 {
		fail("throughput: %d duplicate echoes", fr.Duplicates)
	}
	if fr.Unknown > 0 {
		fail("throughput: %d echoes of bodies never sent", fr.Unknown)
	}
	if fr.Lost == 0 && !fr.Barrier {
		fail("throughput: the final ordering message did not come back within %s", echoWait)
	}
	r.OK = len(r.Failures) == 0
	return nil
}

func (r *Report) print(w io.Writer) {
	fmt.Fprintf(w, "rcsgate-bench  %s  %s/%s, %d CPUs, loopback, Dendrite\n\n",
		r.StartedAt.Format(time.RFC3339), r.Host.OS, r.Host.Arch, r.Host.CPUs)
	fmt.Fprintf(w, "Round trip, sequential: %d messages each after %d warm-up (ms)\n", r.Config.N, r.Config.Warmup)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tn\tp50\tp90\tp99\tmax\tmean\t")
	row := func(name string, f RTTFigures) {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", name, f.N, f.P50, f.P90, f.P99, f.Max, f.Mean)
	}
	row("bridge (Matrix -> phone echo -> Matrix)", r.Bridge)
	row("baseline (Matrix user -> Matrix user)", r.Baseline)
	fmt.Fprintf(tw, "ratio bridge/baseline\t\t%.2fx\t\t%.2fx\t\t\t\n", r.Ratio.P50, r.Ratio.P99)
	_ = tw.Flush()

	t := r.Throughput
	fmt.Fprintf(w, "\nSustained throughput through the bridge: window %d, sending for %.0fs\n", r.Config.Window, r.Config.DurationSeconds)
	fmt.Fprintf(w, "  rate        %.1f messages/s  (%d echoes in %.2fs, first send to last echo)\n", t.MessagesPerSec, t.Echoed, t.ElapsedSeconds)
	fmt.Fprintf(w, "  sent        %d\n  echoed      %d\n  lost        %d\n  duplicates  %d\n", t.Sent, t.Echoed, t.Lost, t.Duplicates)
	if t.Unknown > 0 {
		fmt.Fprintf(w, "  unknown     %d\n", t.Unknown)
	}
	l := t.LatencyUnderLoad
	fmt.Fprintf(w, "  latency     p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  mean %.2f ms\n", l.P50, l.P90, l.P99, l.Max, l.Mean)
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
