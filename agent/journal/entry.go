package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// Kind is what an entry records.
type Kind uint8

// Entry kinds. The first five are written as things happen; the last two
// only by compaction, as the short form of a finished message whose id is
// kept for the retention window so a resend is recognised.
const (
	KindOutQueued   Kind = 1 // Msg: a message from the phone, to send to the server
	KindOutAcked    Kind = 2 // ID: the server has stored it
	KindInReceived  Kind = 3 // Msg: a message from the server, to hand to the phone
	KindInHanded    Kind = 4 // ID, State, Reason, TSMS: handed to the phone; its status is to be reported
	KindStatusAcked Kind = 5 // ID, State: the server has the status
	KindOutSeen     Kind = 6 // ID: an acked phone message, remembered
	KindInSeen      Kind = 7 // ID, State, Reason, TSMS: a finished server message, remembered
)

var kindNames = map[Kind]string{
	KindOutQueued: "out_queued", KindOutAcked: "out_acked", KindInReceived: "in_received",
	KindInHanded: "in_handed", KindStatusAcked: "status_acked", KindOutSeen: "out_seen", KindInSeen: "in_seen",
}

func (k Kind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Entry is one journal entry. A record's payload is a JSON array of them.
type Entry struct {
	Kind   Kind          `json:"k"`
	ID     string        `json:"id,omitempty"`
	Msg    *wire.Message `json:"m,omitempty"`
	State  string        `json:"st,omitempty"`
	Reason string        `json:"re,omitempty"`
	TSMS   int64         `json:"ts,omitempty"` // when the phone handed the message on (status time)
	AtMS   int64         `json:"at,omitempty"` // when this entry was written, unix ms; drives retention
}

// key is the message id the entry is about.
func (e *Entry) key() string {
	if e.Msg != nil {
		return e.Msg.ID
	}
	return e.ID
}

func (e *Entry) validate() error {
	switch e.Kind {
	case KindOutQueued, KindInReceived:
		if e.Msg == nil {
			return fmt.Errorf("%s entry without a message", e.Kind)
		}
		if err := e.Msg.Validate(); err != nil {
			return fmt.Errorf("%s entry: %w", e.Kind, err)
		}
		return nil
	case KindOutAcked, KindOutSeen:
	case KindInHanded, KindStatusAcked, KindInSeen:
		if err := (wire.Status{ID: e.ID, State: e.State}).Validate(); err != nil {
			return fmt.Errorf("%s entry: %w", e.Kind, err)
		}
	default:
		return fmt.Errorf("unknown entry kind %d (written by a newer agent?)", uint8(e.Kind))
	}
	if e.ID == "" || len(e.ID) > wire.MaxIDLen {
		return fmt.Errorf("%s entry with id length %d", e.Kind, len(e.ID))
	}
	return nil
}

func decodePayload(p []byte) ([]Entry, error) {
	var es []Entry
	if err := json.Unmarshal(p, &es); err != nil {
		return nil, fmt.Errorf("payload is not a JSON array of entries: %w", err)
	}
	if len(es) == 0 {
		return nil, errors.New("empty record")
	}
	for i := range es {
		if err := es[i].validate(); err != nil {
			return nil, err
		}
	}
	return es, nil
}

// encodeEntries marshals es into record payloads of at most about maxPayload
// bytes each (one entry is never split).
func encodeEntries(es []Entry, maxPayload int) ([][]byte, error) {
	var out [][]byte
	var buf bytes.Buffer
	for i := range es {
		b, err := json.Marshal(&es[i])
		if err != nil {
			return nil, fmt.Errorf("journal: encode %s entry: %w", es[i].Kind, err)
		}
		if len(b)+2 > MaxRecord {
			return nil, fmt.Errorf("journal: %s entry of %d bytes exceeds the record limit", es[i].Kind, len(b))
		}
		if buf.Len() > 0 && buf.Len()+len(b)+2 > maxPayload {
			buf.WriteByte(']')
			out = append(out, bytes.Clone(buf.Bytes()))
			buf.Reset()
		}
		if buf.Len() == 0 {
			buf.WriteByte('[')
		} else {
			buf.WriteByte(',')
		}
		buf.Write(b)
	}
	if buf.Len() > 0 {
		buf.WriteByte(']')
		out = append(out, bytes.Clone(buf.Bytes()))
	}
	return out, nil
}
