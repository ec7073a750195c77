// Package ratelog keeps refusal logs useful under attack: each key (a
// remote address, a device) gets a few lines per interval, and the next
// line after a quiet spell says how many were left out. A flood then costs
// the journal a handful of lines a minute, while every line still carries
// what fail2ban and people need (who, why).
package ratelog

import (
	"sync"
	"time"
)

// Limiter allows Burst lines per key per Interval. The zero value is not
// usable; use New.
type Limiter struct {
	interval time.Duration
	burst    int
	maxKeys  int
	now      func() time.Time

	mu   sync.Mutex
	keys map[string]*window
}

type window struct {
	start      time.Time
	n          int // lines allowed in this window
	suppressed int // lines refused since the last allowed one
}

// New returns a limiter of burst lines per key per interval, remembering
// at most maxKeys keys (the oldest windows are dropped first when full, so
// a spray of source addresses cannot grow it without bound).
func New(interval time.Duration, burst, maxKeys int) *Limiter {
	return &Limiter{interval: interval, burst: burst, maxKeys: maxKeys, now: time.Now, keys: map[string]*window{}}
}

// Allow reports whether a line for key may be logged now, and how many
// lines for key were suppressed before it (to put in that line).
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.keys[key]
	if w == nil || now.Sub(w.start) >= l.interval {
		if w == nil {
			if len(l.keys) >= l.maxKeys {
				l.evict(now)
			}
			w = &window{}
			l.keys[key] = w
		}
		w.start, w.n = now, 0
	}
	if w.n >= l.burst {
		w.suppressed++
		return false, 0
	}
	w.n++
	suppressed, w.suppressed = w.suppressed, 0
	return true, suppressed
}

// evict drops expired windows, or the oldest one if none expired.
func (l *Limiter) evict(now time.Time) {
	var oldest string
	var oldestAt time.Time
	for k, w := range l.keys {
		if now.Sub(w.start) >= l.interval {
			delete(l.keys, k)
			continue
		}
		if oldest == "" || w.start.Before(oldestAt) {
			oldest, oldestAt = k, w.start
		}
	}
	if len(l.keys) >= l.maxKeys && oldest != "" {
		delete(l.keys, oldest)
	}
}
