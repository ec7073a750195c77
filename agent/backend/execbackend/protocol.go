package execbackend

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Protocol is the version of the JSON-lines protocol this build speaks (see
// docs/backends/exec.md). A program announces the highest version it speaks
// in hello; the welcome names the version both will use.
const Protocol = 1

// MaxLine is the longest line (without its newline) either side may write.
// A longer line from the program is a protocol error that restarts it.
const MaxLine = 1 << 20

// Line types.
const (
	TypeHello   = "hello"   // program → agent, first line
	TypeWelcome = "welcome" // agent → program, answers hello
	TypeSend    = "send"    // agent → program: hand an event to the phone network
	TypeTyping  = "typing"  // both ways: typing notice
	TypeResult  = "result"  // program → agent: outcome of a send or typing command
	TypeEvent   = "event"   // program → agent: an event from the phone network
	TypeAck     = "ack"     // agent → program: the event is stored; forget it
	TypeNack    = "nack"    // agent → program: the event was not taken

	// Optional lines (either side may ignore them; the welcome's features
	// say the agent understands them).
	TypeStatus  = "status"  // agent → program: the channel and queues, at every change
	TypeNetwork = "network" // program → agent: the phone's network changed; its DNS servers
)

// ErrMalformed is wrapped by DecodeLine for lines that are not protocol
// lines.
var ErrMalformed = errors.New("exec: malformed line")

// EventFields is an Event on the wire of the protocol: wire.Message's
// fields (same JSON names) plus file. Used by send and event lines.
type EventFields struct {
	ID        string        `json:"id,omitempty"`
	Kind      string        `json:"kind,omitempty"`
	Chat      string        `json:"chat,omitempty"`
	From      string        `json:"from,omitempty"`
	FromMe    bool          `json:"from_me,omitempty"`
	Text      string        `json:"text,omitempty"`
	TS        int64         `json:"ts,omitempty"` // unix milliseconds
	Transport string        `json:"transport,omitempty"`
	SIM       int           `json:"sim,omitempty"`
	ReplyTo   string        `json:"reply_to,omitempty"`
	Target    string        `json:"target,omitempty"`
	Emoji     string        `json:"emoji,omitempty"`
	State     string        `json:"state,omitempty"`
	Reason    string        `json:"reason,omitempty"` // receipt failed; result and nack: why
	Media     *wire.Media   `json:"media,omitempty"`
	Group     *wire.Group   `json:"group,omitempty"`
	Contact   *wire.Contact `json:"contact,omitempty"`
	File      string        `json:"file,omitempty"` // absolute path of media or avatar bytes
	Give      bool          `json:"give,omitempty"` // event: file is the agent's to take (backend.Event.FileGiven)
	Backfill  bool          `json:"backfill,omitempty"`
}

// Line is any line the program writes; which fields matter depends on Type.
type Line struct {
	Type string `json:"type"`
	// hello
	Protocol int                  `json:"protocol,omitempty"`
	Name     string               `json:"name,omitempty"`
	Caps     map[string]wire.Caps `json:"caps,omitempty"`
	SIMs     []int                `json:"sims,omitempty"`
	// result (and the commands it answers)
	Req       string `json:"req,omitempty"`
	OK        bool   `json:"ok,omitempty"`
	Permanent bool   `json:"permanent,omitempty"`
	// typing
	Active bool `json:"active,omitempty"`
	// network
	DNS []string `json:"dns,omitempty"`
	EventFields
}

// DecodeLine parses one line from the program. It never panics; anything
// that is not a JSON object with a non-empty string "type" wraps
// ErrMalformed. Unknown fields are ignored (forward compatibility).
func DecodeLine(b []byte) (Line, error) {
	b = bytes.TrimSpace(b)
	if len(b) > MaxLine {
		return Line{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	if len(b) == 0 || b[0] != '{' {
		return Line{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var l Line
	if err := json.Unmarshal(b, &l); err != nil {
		return Line{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if l.Type == "" {
		return Line{}, fmt.Errorf("%w: no type", ErrMalformed)
	}
	return l, nil
}

// fieldsOf is ev in its protocol form.
func fieldsOf(ev backend.Event) EventFields {
	f := EventFields{
		ID: ev.ID, Kind: ev.Kind, Chat: ev.Chat, From: ev.From, FromMe: ev.FromMe, Text: ev.Text,
		Transport: ev.Transport, SIM: ev.SIM, ReplyTo: ev.ReplyTo, Target: ev.Target, Emoji: ev.Emoji,
		State: ev.State, Reason: ev.Reason, Media: ev.Media, Group: ev.Group, Contact: ev.Contact,
		File: ev.File, Give: ev.FileGiven, Backfill: ev.Backfill,
	}
	if !ev.TS.IsZero() {
		f.TS = ev.TS.UnixMilli()
	}
	return f
}

// Event is the Event an event line carries.
func (f EventFields) Event() backend.Event {
	ev := backend.Event{
		ID: f.ID, Kind: f.Kind, Chat: f.Chat, From: f.From, FromMe: f.FromMe, Text: f.Text,
		Transport: f.Transport, SIM: f.SIM, ReplyTo: f.ReplyTo, Target: f.Target, Emoji: f.Emoji,
		State: f.State, Reason: f.Reason, Media: f.Media, Group: f.Group, Contact: f.Contact,
		File: f.File, FileGiven: f.Give, Backfill: f.Backfill,
	}
	if f.TS != 0 {
		ev.TS = time.UnixMilli(f.TS)
	}
	return ev
}

// CheckEvent says why an event line can never be accepted (nil if it can):
// its id is not a valid backend key, its fields fail the wire rules, or its
// file is not an absolute path. Such events are nacked as permanent.
func CheckEvent(ev backend.Event) error {
	if !backend.ValidKey(ev.ID) {
		return errors.New("id must be 1 to 126 characters of [A-Za-z0-9._:@=+-]")
	}
	if ev.File != "" && !strings.HasPrefix(ev.File, "/") {
		return errors.New("file must be an absolute path")
	}
	m := ev.ToWire()
	m.ID = backend.WireID(ev.ID)
	if err := m.Validate(); err != nil {
		return err
	}
	return nil
}

// Lines the agent writes.
type welcomeLine struct {
	Type     string `json:"type"`
	Protocol int    `json:"protocol"`
	Agent    string `json:"agent"`
	StateDir string `json:"state_dir"`
	MaxLine  int    `json:"max_line"`
	// Features lists the optional line types the agent understands.
	Features []string `json:"features,omitempty"`
}

// statusLine is the agent's status for the program (a person's view).
type statusLine struct {
	Type      string `json:"type"`
	Connected bool   `json:"connected"`
	Since     int64  `json:"since,omitempty"` // unix ms of the last connect or disconnect
	Out       int    `json:"out"`             // phone messages waiting for the server
	In        int    `json:"in"`              // server messages waiting for the phone
	Error     string `json:"error,omitempty"` // why the channel is down
	Unpaired  bool   `json:"unpaired,omitempty"`
}

type sendLine struct {
	Type string `json:"type"`
	Req  string `json:"req"`
	EventFields
}

type typingLine struct {
	Type   string `json:"type"`
	Req    string `json:"req"`
	Chat   string `json:"chat"`
	Active bool   `json:"active"`
}

type ackLine struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Permanent bool   `json:"permanent,omitempty"` // nack: never offer it again
	Reason    string `json:"reason,omitempty"`
}

// clip makes a program-supplied string safe to pass on: valid UTF-8, at
// most n bytes.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "")
	}
	return s
}
