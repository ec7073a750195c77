package termux

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// SMS is one row as termux-sms-list prints it (termux-api SmsInboxAPI
// writeElement): threadid, type, read, sender (only when the contact is
// known), address, number (deprecated copy of address), received (local
// "yyyy-MM-dd HH:mm:ss"), body, _id.
type SMS struct {
	ID       int64  `json:"_id"`
	ThreadID int64  `json:"threadid"`
	Type     string `json:"type"` // inbox, sent, draft, failed, outbox
	Read     bool   `json:"read"`
	Sender   string `json:"sender,omitempty"` // the contact's name; never logged
	Address  string `json:"address"`
	Number   string `json:"number"`
	Received string `json:"received"`
	Body     string `json:"body"`
}

// From is the sender's address: address, or the deprecated number field
// for old Termux:API versions that print only that.
func (s SMS) From() string {
	if s.Address != "" {
		return s.Address
	}
	return s.Number
}

// receivedLayout is SmsInboxAPI's SimpleDateFormat, in the phone's zone.
const receivedLayout = "2006-01-02 15:04:05"

// Time parses Received in loc; the zero time when it does not parse.
func (s SMS) Time(loc *time.Location) time.Time {
	t, err := time.ParseInLocation(receivedLayout, s.Received, loc)
	if err != nil {
		return time.Time{}
	}
	return t
}

// ErrListOutput is wrapped by ParseList for output that is not a list.
var ErrListOutput = errors.New("termux-sms-list: unexpected output")

// maxListOutput bounds what we read from termux-sms-list.
const maxListOutput = 16 << 20

// ParseList decodes termux-sms-list output: a JSON array of SMS objects.
// Termux:API reports some failures as a JSON object with an "error" field
// (e.g. a missing permission); those, and anything that is not an array of
// rows with a positive _id, are errors. Unknown fields are ignored.
func ParseList(out []byte) ([]SMS, error) {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty (is the Termux:API app installed?)", ErrListOutput)
	}
	if len(out) > maxListOutput {
		return nil, fmt.Errorf("%w: %d bytes", ErrListOutput, len(out))
	}
	if out[0] == '{' {
		var e struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(out, &e); err == nil && e.Error != "" {
			// The message is Termux:API's, never message content; keep it short.
			msg := e.Error
			if len(msg) > 200 {
				msg = msg[:200]
			}
			return nil, fmt.Errorf("%w: error %q", ErrListOutput, msg)
		}
		return nil, fmt.Errorf("%w: an object, not a list", ErrListOutput)
	}
	var rows []SMS
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrListOutput, err)
	}
	for i, r := range rows {
		if r.ID <= 0 {
			return nil, fmt.Errorf("%w: row %d has no _id", ErrListOutput, i)
		}
	}
	return rows, nil
}
