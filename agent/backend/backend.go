// Package backend is the interface between the agent and the phone's
// messaging stack. A backend hands events from Matrix to the phone network
// and reports what the phone received to a Sink. It imports neither Matrix
// nor cgo, like everything under agent/.
package backend

import (
	"context"
	"errors"
	"time"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// Event is one event of a conversation, in either direction: a message, a
// file, a reaction, an edit, a delete, a receipt, a group change or a
// contact card. Kind and the fields it uses are those of wire.Message (see
// internal/wire/events.go); Kind "" is a text message.
//
// Ids: on an event from the phone (Sink.Deliver), ID is the backend's own
// stable key for it (e.g. the SMS provider's row id), or "" when it has none.
// On an event to the phone (Backend.Send), ID is the bridge's idempotency
// key. Target and ReplyTo are always given as the backend knows them: its
// own key for an event it delivered, the Send ID for one it was sent.
type Event struct {
	ID        string
	Kind      string
	Chat      string // the other party's number for a 1:1 chat; wire.GroupChatPrefix+id for a group
	From      string // the sender's number (== Chat for a 1:1 chat); empty on Send
	FromMe    bool   // from the phone: the owner sent it from the phone itself
	Text      string // never logged
	TS        time.Time
	Transport string // rcs, sms, mms: how it came; on Send, the chat's preference ("" = any)
	SIM       int    // 1-based SIM slot, 0 = the phone's default
	ReplyTo   string
	Target    string
	Emoji     string
	State     string // receipts: wire.StateDelivered, StateRead, StateFailed
	Reason    string
	Media     *wire.Media
	// File holds media (or a contact's avatar) bytes. From the phone: a file
	// the backend owns; the agent copies it before Deliver returns (unless
	// it is given). To the phone: a file the agent owns, readable during
	// Send.
	File string
	// FileGiven (from the phone, with an ID): File is the agent's to take.
	// The agent moves it into its store (a rename on one filesystem) instead
	// of copying it, so the backend must not touch the path after Deliver
	// starts: once Deliver returns nil it is gone; when Deliver fails it is
	// back in place; if the agent dies in between, Deliver with the same ID
	// finds it in the agent's store.
	FileGiven bool
	Group     *wire.Group
	Contact   *wire.Contact
	Backfill  bool // history from before pairing
}

// Inbound is an event from the phone.
type Inbound = Event

// Sink takes events from the phone; the agent queues them for the server.
type Sink interface {
	// Deliver returns nil once the agent has durably stored the event
	// (fsync'd) and will deliver it; an error means it did not, and the
	// backend must keep the event and offer it again later (e.g. the agent's
	// queue is full). Offering an event again with the same ID is safe.
	Deliver(ctx context.Context, in Event) error
	// Typing passes on that a contact is (or stopped) typing. Best effort.
	Typing(chat string, active bool)
}

// Backend is one way of reaching the phone network.
type Backend interface {
	// Name identifies the backend in Hello and logs ("sim", ...).
	Name() string
	// Caps says what each transport the backend can use carries, and which
	// SIM slots exist (nil: one).
	Caps() (perTransport map[string]wire.Caps, sims []int)
	// Start begins receiving into sink and returns once set up.
	Start(ctx context.Context, sink Sink) error
	// Send hands an event to the phone. A *PermanentError (see IsPermanent)
	// means retrying cannot help; any other error is transient and the same
	// event (same ID) is offered again. Kinds the backend cannot carry must
	// be refused with Unsupported, never dropped silently.
	Send(ctx context.Context, ev Event) error
	// Typing tells the phone's contact the Matrix user is typing. Best effort.
	Typing(ctx context.Context, chat string, active bool) error
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

// Unsupported refuses an event kind the backend (or the chat's transport)
// cannot carry.
func Unsupported(kind, transport string) error {
	if kind == "" {
		kind = wire.KindText
	}
	if transport == "" {
		return Permanent(kind + " is not supported by this phone backend")
	}
	return Permanent(kind + " is not supported over " + transport)
}

// IsPermanent reports whether err (or anything it wraps) is a *PermanentError,
// and returns it.
func IsPermanent(err error) (*PermanentError, bool) {
	var pe *PermanentError
	if errors.As(err, &pe) {
		return pe, true
	}
	return nil, false
}

// ToWire turns an event into its wire form (ID and TS as given).
func (ev Event) ToWire() wire.Message {
	var ts int64
	if !ev.TS.IsZero() {
		ts = ev.TS.UnixMilli()
	}
	return wire.Message{
		ID: ev.ID, Kind: ev.Kind, Chat: ev.Chat, From: ev.From, FromMe: ev.FromMe, Text: ev.Text, TSMS: ts,
		Transport: ev.Transport, SIM: ev.SIM, ReplyTo: ev.ReplyTo, Target: ev.Target, Emoji: ev.Emoji,
		State: ev.State, Reason: ev.Reason, Media: ev.Media, Group: ev.Group, Contact: ev.Contact, Backfill: ev.Backfill,
	}
}

// FromWire is ToWire's inverse (File is left empty).
func FromWire(m wire.Message) Event {
	ev := Event{
		ID: m.ID, Kind: m.Kind, Chat: m.Chat, From: m.From, FromMe: m.FromMe, Text: m.Text,
		Transport: m.Transport, SIM: m.SIM, ReplyTo: m.ReplyTo, Target: m.Target, Emoji: m.Emoji,
		State: m.State, Reason: m.Reason, Media: m.Media, Group: m.Group, Contact: m.Contact, Backfill: m.Backfill,
	}
	if m.TSMS != 0 {
		ev.TS = time.UnixMilli(m.TSMS)
	}
	return ev
}

// Phone-message ids on the wire: an event the backend delivered with its own
// key K travels as PhonePrefix+K when K is short and plain, so it comes back
// in Target/ReplyTo as K (see NativeID); other keys are hashed by the agent.
const PhonePrefix = "p."

// MaxKeyLen bounds a backend's own event key.
const MaxKeyLen = wire.MaxIDLen - len(PhonePrefix)

// ValidKey reports whether k can be an Event.ID from the phone: 1 to
// MaxKeyLen characters of [A-Za-z0-9._:@=+-]. Backends with other keys hex-
// or base64url-encode them.
func ValidKey(k string) bool {
	if k == "" || len(k) > MaxKeyLen {
		return false
	}
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '_' || c == ':' || c == '@' || c == '=' || c == '+' || c == '-':
		default:
			return false
		}
	}
	return true
}

// WireID is the wire id of an event the phone delivered with key k.
func WireID(k string) string { return PhonePrefix + k }

// NativeID turns a wire id back into the backend's key: the phone's own key
// for an event it delivered, or the id as is (a Send ID) otherwise.
func NativeID(wireID string) string {
	if len(wireID) > len(PhonePrefix) && wireID[:len(PhonePrefix)] == PhonePrefix {
		return wireID[len(PhonePrefix):]
	}
	return wireID
}
