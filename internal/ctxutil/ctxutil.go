// Package ctxutil has the one wait every loop of the server side needs: a
// pause that its context cuts short.
package ctxutil

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends; it reports whether the whole d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Doubling is a pause that doubles after each wait, up to Max: the
// schedule of a loop that polls or retries until something answers.
type Doubling struct {
	Next, Max time.Duration
}

// Wait sleeps the current pause (see Sleep), then doubles the next one up
// to Max; it reports whether the whole pause passed.
func (d *Doubling) Wait(ctx context.Context) bool {
	ok := Sleep(ctx, d.Next)
	d.Next = min(2*d.Next, d.Max)
	return ok
}
