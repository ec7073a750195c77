package main

import (
	"errors"
	"math"
	"slices"
	"time"
)

// Summary describes a sample of round-trip times.
type Summary struct {
	N    int
	P50  time.Duration
	P90  time.Duration
	P99  time.Duration
	Max  time.Duration
	Mean time.Duration
}

var errEmpty = errors.New("no samples")

// Percentile returns the nearest-rank p-th percentile (0 < p <= 100) of an
// ascending sample: the smallest value with at least p% of the sample at or
// below it.
func Percentile(sorted []time.Duration, p float64) (time.Duration, error) {
	if len(sorted) == 0 {
		return 0, errEmpty
	}
	if !(p > 0 && p <= 100) {
		return 0, errors.New("percentile must be in (0, 100]")
	}
	// The epsilon keeps 0.99*200 = 198 from becoming 199 through rounding.
	rank := int(math.Ceil(p*float64(len(sorted))/100 - 1e-9))
	rank = max(rank, 1)
	return sorted[rank-1], nil
}

// Summarize computes the summary of an unordered sample; it does not modify
// the sample.
func Summarize(sample []time.Duration) (Summary, error) {
	if len(sample) == 0 {
		return Summary{}, errEmpty
	}
	s := slices.Clone(sample)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	out := Summary{N: len(s), Max: s[len(s)-1], Mean: sum / time.Duration(len(s))}
	out.P50, _ = Percentile(s, 50)
	out.P90, _ = Percentile(s, 90)
	out.P99, _ = Percentile(s, 99)
	return out, nil
}

// Ratio returns num/den; den must be positive.
func Ratio(num, den time.Duration) (float64, error) {
	if den <= 0 {
		return 0, errors.New("ratio: baseline is not positive")
	}
	return float64(num) / float64(den), nil
}

// ms converts a duration to fractional milliseconds for printing and JSON.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
