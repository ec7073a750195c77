package agent

import (
	"testing"
	"time"
)

func TestExponentialSchedule(t *testing.T) {
	ms := time.Millisecond
	got := ExponentialSchedule(200*ms, 30*time.Second)
	want := []time.Duration{200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 12800 * ms, 25600 * ms, 30 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("step %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

func TestBackoffSchedule(t *testing.T) {
	ms := time.Millisecond
	sched := []time.Duration{100 * ms, 200 * ms, 400 * ms}
	tests := []struct {
		name   string
		jitter float64
		rnd    float64
		ops    string // n = Next, r = Reset, c = Cap
		want   []time.Duration
	}{
		{"walks the schedule then stays at the cap", 0, 0.9, "nnnnn", []time.Duration{100 * ms, 200 * ms, 400 * ms, 400 * ms, 400 * ms}},
		{"reset starts over", 0, 0, "nnrn", []time.Duration{100 * ms, 200 * ms, 100 * ms}},
		{"cap jumps to the end", 0, 0, "ncn", []time.Duration{100 * ms, 400 * ms, 400 * ms}},
		{"jitter of zero draw keeps the step", 0.5, 0, "nn", []time.Duration{100 * ms, 200 * ms}},
		{"jitter shortens by jitter*rand", 0.5, 0.5, "nnn", []time.Duration{75 * ms, 150 * ms, 300 * ms}},
		{"jitter above 1 is clamped", 3, 0.5, "n", []time.Duration{50 * ms}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &Backoff{Schedule: sched, Jitter: tc.jitter, Rand: func() float64 { return tc.rnd }}
			var got []time.Duration
			for _, op := range tc.ops {
				switch op {
				case 'n':
					got = append(got, b.Next())
				case 'c':
					got = append(got, b.Cap())
				case 'r':
					b.Reset()
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestDefaultBackoffBounds(t *testing.T) {
	b := NewBackoff()
	b.Rand = func() float64 { return 0.999 }
	first := b.Next()
	if first > DefaultBackoffStart || first < time.Duration(float64(DefaultBackoffStart)*(1-DefaultJitter)) {
		t.Fatalf("first delay %v out of range", first)
	}
	var last time.Duration
	for range 50 {
		last = b.Next()
	}
	if last > DefaultBackoffCap || last < time.Duration(float64(DefaultBackoffCap)*(1-DefaultJitter)) {
		t.Fatalf("capped delay %v out of range", last)
	}
}
