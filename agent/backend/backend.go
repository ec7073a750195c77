// Package backend is the interface between the agent and the phone's
// messaging stack. A backend hands messages from Matrix to the phone network
// and reports messages the phone received to a Sink. It imports neither
// Matrix nor cgo, like everything under agent/.
package backend

import (
	"context"
	"errors"
	"time"
)

// Inbound is a message the phone received.
type Inbound struct {
	// ID, if set, is the phone's own stable key for this message (e.g. the
	// SMS provider's row id). The agent derives the message's idempotency key
	// from it, so a backend that hands the same message again (say after a
	// crash, not knowing whether Deliver finished) never makes it twice. Empty
	// means the agent picks a fresh random key.
	ID   string
	Chat string    // the conversation: the other party's number for a 1:1 chat
	From string    // the sender's number (== Chat for a 1:1 chat)
	Text string    // never logged
	TS   time.Time // when the phone received it
}

// Sink takes inbound messages; the agent queues them for the server. A nil
// return means the agent has durably stored the message (fsync'd) and will
// deliver it; an error means it did not, and the backend must keep the
// message and offer it again later (e.g. the agent's queue is full).
type Sink interface {
	Deliver(ctx context.Context, in Inbound) error
}

// Backend is one way of reaching the phone network.
type Backend interface {
	// Name identifies the backend in Hello and logs ("sim", ...).
	Name() string
	// Start begins receiving into sink and returns once set up.
	Start(ctx context.Context, sink Sink) error
	// Send hands a message to the phone for the contact chat. id is the
	// idempotency key the server chose. A *PermanentError (see IsPermanent)
	// means retrying cannot help; any other error is transient.
	Send(ctx context.Context, id, chat, text string) error
	Close() error
}

// PermanentError marks a send that must not be retried (bad number, refused).
// Other errors from Send are transient.
type PermanentError struct {
	Reason string // short, human readable, safe to send to the server
	Err    error  // optional cause
}

func (e *PermanentError) Error() string {
	if e.Err != nil {
		return "permanent failure: " + e.Reason + ": " + e.Err.Error()
	}
	return "permanent failure: " + e.Reason
}

func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps a reason as a *PermanentError.
func Permanent(reason string) error { return &PermanentError{Reason: reason} }

// IsPermanent reports whether err (or anything it wraps) is a *PermanentError,
// and returns it.
func IsPermanent(err error) (*PermanentError, bool) {
	var pe *PermanentError
	if errors.As(err, &pe) {
		return pe, true
	}
	return nil, false
}
