package smsgateway

import (
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// FuzzWebhook feeds arbitrary bodies and headers to the webhook verifier
// and decoder: they must never panic, and whatever they accept must make a
// valid event.
func FuzzWebhook(f *testing.F) {
	f.Add(envelope(evSmsReceived, map[string]any{"messageId": "abc123", "message": "Android is always a sweet treat!", "phoneNumber": "6505551212", "simNumber": 1, "receivedAt": "2024-06-22T15:46:11.000+07:00"}), "1700000000", "00")
	f.Add(envelope(evSmsDelivered, map[string]any{"messageId": "rg00", "recipient": "+12025550123", "simNumber": nil, "deliveredAt": "2026-01-02T03:04:05.000Z"}), "x", "zz")
	f.Add(envelope(evSmsFailed, map[string]any{"messageId": "rg00", "reason": "RESULT_ERROR_GENERIC_FAILURE"}), "", "")
	f.Add(envelope(evMmsReceived, map[string]any{"messageId": "<a@b>", "sender": "+1 202 555 0123", "transactionId": "T", "subject": "s", "size": 1}), "1", "1")
	f.Add([]byte(`{"event":"sms:received","payload":null}`), "1", "")
	f.Add([]byte(`{"event":"sms:received","payload":{"messageId":"a","sender":"\ud800","message":"\xff"}}`), "1", "")
	f.Add([]byte(`[]`), "", "")
	f.Fuzz(func(t *testing.T, body []byte, ts, sig string) {
		_ = verify("key", body, sig, ts, time.Unix(1700000000, 0))
		h, err := decodeHook(body)
		if err != nil {
			return
		}
		if h.In != nil {
			in := h.In
			if !backend.ValidKey(in.ID) {
				t.Fatalf("invalid key %q", in.ID)
			}
			if !utf8.ValidString(in.Text) || !utf8.ValidString(in.Chat) {
				t.Fatal("invalid UTF-8")
			}
			if in.TS.IsZero() {
				t.Fatal("zero TS")
			}
			if err := in.ToWire().Validate(); err != nil {
				t.Fatalf("event does not validate: %v (%+v)", err, in)
			}
		}
		if h.App != "" {
			switch h.State {
			case "", wire.StateDelivered, wire.StateFailed:
			default:
				t.Fatalf("state %q", h.State)
			}
			if len(h.Reason) > wire.MaxNameLen || !utf8.ValidString(h.Reason) {
				t.Fatalf("reason %q", h.Reason)
			}
		}
	})
}
