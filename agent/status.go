package agent

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Status is what a person (or the phone app's setup screen) wants to know
// about the agent: is the channel up and since when, how much waits each
// way, what went wrong last, and whether the server no longer knows this
// device (it must be paired again).
type Status struct {
	Connected bool
	Since     time.Time // when Connected last changed (zero: never connected yet)
	Out       int       // phone messages waiting for the server's ack
	In        int       // server messages not yet handed to the phone
	LastError string    // why the channel is down; "" while connected
	Unpaired  bool      // the server refuses this device (revoked or unknown): pair again
}

// statusState holds the parts of Status the journal does not.
type statusState struct {
	mu       sync.Mutex
	since    time.Time
	lastErr  string
	unpaired bool
	changed  chan struct{} // closed at the next change
}

func (s *statusState) notifyLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// noteConnected records a connect or disconnect.
func (s *statusState) noteConnected(up bool, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.since = at
	if up {
		s.lastErr, s.unpaired = "", false
	}
	s.notifyLocked()
}

// noteDown records why the last attempt (or connection) ended.
func (s *statusState) noteDown(err error) {
	if err == nil {
		return
	}
	_, refused := refusedForGood(err)
	unpaired := errors.Is(err, ErrNotPaired) || errors.Is(err, ErrUnpaired) || refused
	msg := oneLine(err.Error())
	if len(msg) > maxStatusError {
		msg = msg[:maxStatusError]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr == msg && s.unpaired == unpaired {
		return
	}
	s.lastErr, s.unpaired = msg, unpaired
	s.notifyLocked()
}

// maxStatusError bounds Status.LastError.
const maxStatusError = 300

func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' || c == '\t' {
			b[i] = ' '
		}
	}
	return string(b)
}

func (s *statusState) changedCh() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

// Status returns the agent's current status.
func (a *Agent) Status() Status {
	d := a.j.Depth()
	a.st.mu.Lock()
	defer a.st.mu.Unlock()
	return Status{Connected: a.connected.Load(), Since: a.st.since, Out: d.Out, In: d.In,
		LastError: a.st.lastErr, Unpaired: a.st.unpaired}
}

// WaitStatus returns the status as soon as it differs from last, or ctx's
// error.
func (a *Agent) WaitStatus(ctx context.Context, last Status) (Status, error) {
	for {
		jc, sc := a.j.Changed(), a.st.changedCh()
		if s := a.Status(); s != last {
			return s, nil
		}
		select {
		case <-jc:
		case <-sc:
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
}

// NetworkChanged tells the agent the phone's network changed (the phone
// app hears it from the platform): a live channel checks its route to the
// server at once (and migrates when it moved), and a channel that is down
// redials now instead of waiting out its backoff.
func (a *Agent) NetworkChanged() {
	select {
	case a.netChanged <- struct{}{}:
	default:
	}
}
