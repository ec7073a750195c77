package main

import (
	"math"
	"testing"
	"time"
)

// seq returns 1ms, 2ms, ... n ms in the given order (reversed if rev).
func seq(n int, rev bool) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		v := i + 1
		if rev {
			v = n - i
		}
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		sample []time.Duration
		p      float64
		want   time.Duration
	}{
		{"single", []time.Duration{7 * ms}, 50, 7 * ms},
		{"single p99", []time.Duration{7 * ms}, 99, 7 * ms},
		{"ten p50", seq(10, false), 50, 5 * ms},
		{"ten p90", seq(10, false), 90, 9 * ms},
		{"ten p99", seq(10, false), 99, 10 * ms},
		{"ten p100", seq(10, false), 100, 10 * ms},
		{"ten tiny p", seq(10, false), 0.1, 1 * ms},
		{"hundred p90", seq(100, false), 90, 90 * ms},
		{"200 p50", seq(200, false), 50, 100 * ms},
		{"200 p99 exact rank", seq(200, false), 99, 198 * ms},
		{"201 p99 rounds up", seq(201, false), 99, 199 * ms},
		{"1000 p99.9", seq(1000, false), 99.9, 999 * ms},
		{"even p50 takes lower", []time.Duration{1 * ms, 3 * ms}, 50, 1 * ms},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Percentile(tc.sample, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Percentile(n=%d, %v) = %v, want %v", len(tc.sample), tc.p, got, tc.want)
			}
		})
	}
}

func TestPercentileRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sample []time.Duration
		p      float64
	}{
		{"empty", nil, 50},
		{"zero", seq(3, false), 0},
		{"negative", seq(3, false), -1},
		{"above 100", seq(3, false), 100.5},
		{"NaN", seq(3, false), math.NaN()},
	} {
		if _, err := Percentile(tc.sample, tc.p); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		sample []time.Duration
		want   Summary
	}{
		{"one", []time.Duration{4 * ms}, Summary{N: 1, P50: 4 * ms, P90: 4 * ms, P99: 4 * ms, Max: 4 * ms, Mean: 4 * ms}},
		{"unsorted input", seq(10, true), Summary{N: 10, P50: 5 * ms, P90: 9 * ms, P99: 10 * ms, Max: 10 * ms, Mean: 5500 * time.Microsecond}},
		{"200", seq(200, true), Summary{N: 200, P50: 100 * ms, P90: 180 * ms, P99: 198 * ms, Max: 200 * ms, Mean: 100500 * time.Microsecond}},
		{"outlier moves max and mean only", append(seq(99, false), 10*time.Second),
			Summary{N: 100, P50: 50 * ms, P90: 90 * ms, P99: 99 * ms, Max: 10 * time.Second, Mean: (4950*ms + 10*time.Second) / 100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tc.sample...)
			got, err := Summarize(in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Summarize = %+v, want %+v", got, tc.want)
			}
			for i := range in {
				if in[i] != tc.sample[i] {
					t.Fatal("Summarize reordered its input")
				}
			}
		})
	}
	if _, err := Summarize(nil); err == nil {
		t.Error("Summarize(nil): no error")
	}
}

func TestRatio(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		num, den time.Duration
		want     float64
		wantErr  bool
	}{
		{30 * ms, 10 * ms, 3, false},
		{5 * ms, 10 * ms, 0.5, false},
		{10 * ms, 10 * ms, 1, false},
		{1500 * time.Microsecond, 1 * ms, 1.5, false},
		{10 * ms, 0, 0, true},
		{10 * ms, -ms, 0, true},
	}
	for _, tc := range tests {
		got, err := Ratio(tc.num, tc.den)
		if (err != nil) != tc.wantErr {
			t.Errorf("Ratio(%v, %v) error = %v, want error %v", tc.num, tc.den, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Ratio(%v, %v) = %v, want %v", tc.num, tc.den, got, tc.want)
		}
	}
}
