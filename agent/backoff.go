package agent

import (
	"math/rand/v2"
	"time"
)

// Backoff yields reconnect delays from a schedule held as data: step i waits
// Schedule[i], and every step after the last waits the last entry (the cap).
// Each delay is shortened by up to Jitter of itself, drawn from Rand, so a
// fleet of agents does not reconnect in lockstep. Not safe for concurrent use.
type Backoff struct {
	Schedule []time.Duration
	Jitter   float64        // fraction in [0,1]; 0 disables jitter
	Rand     func() float64 // [0,1); nil means math/rand/v2
	n        int
}

// Default reconnect policy: 200 ms doubling to a 30 s cap.
const (
	DefaultBackoffStart = 200 * time.Millisecond
	DefaultBackoffCap   = 30 * time.Second
	DefaultJitter       = 0.25
)

// ExponentialSchedule returns start, start*2, start*4, ... up to and
// ending with cap.
func ExponentialSchedule(start, cap time.Duration) []time.Duration {
	if start <= 0 || cap < start {
		return []time.Duration{cap}
	}
	var s []time.Duration
	for d := start; d < cap; d *= 2 {
		s = append(s, d)
	}
	return append(s, cap)
}

// NewBackoff returns the default policy.
func NewBackoff() *Backoff {
	return &Backoff{Schedule: ExponentialSchedule(DefaultBackoffStart, DefaultBackoffCap), Jitter: DefaultJitter}
}

// Next returns the delay before the next attempt and advances.
func (b *Backoff) Next() time.Duration {
	i := b.n
	if i >= len(b.Schedule) {
		i = len(b.Schedule) - 1
	} else {
		b.n++
	}
	return b.jitter(b.at(i))
}

// Cap returns the (jittered) longest delay without advancing: the pace for
// retrying when only a human can fix things, e.g. a revoked device.
func (b *Backoff) Cap() time.Duration {
	b.n = len(b.Schedule)
	return b.jitter(b.at(len(b.Schedule) - 1))
}

// Reset starts the schedule over, after a healthy connection.
func (b *Backoff) Reset() { b.n = 0 }

func (b *Backoff) at(i int) time.Duration {
	if i < 0 {
		return DefaultBackoffCap
	}
	return b.Schedule[i]
}

func (b *Backoff) jitter(d time.Duration) time.Duration {
	if b.Jitter <= 0 {
		return d
	}
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	j := min(b.Jitter, 1)
	return d - time.Duration(float64(d)*j*r())
}
