package smsgateway

// Webhooks, as capcom6/android-sms-gateway v1.68.0 (commit 0cdc5d8) sends
// them:
//   - envelope WebHookEventDTO {id, webhookId, event, deviceId, payload}
//     (modules/webhooks/domain/WebHookEventDTO.kt), events in
//     modules/webhooks/domain/WebHookEvent.kt;
//   - payloads in modules/webhooks/payload/: MessageEventPayload
//     {messageId, sender, recipient, simNumber, phoneNumber (deprecated:
//     sender for received, recipient for sent events)}, plus
//     SmsReceived {message, receivedAt}, SmsDelivered {deliveredAt},
//     SmsFailed {failedAt, reason}, MmsReceived {transactionId, subject,
//     size, contentClass, receivedAt}; dates are gson
//     "yyyy-MM-dd'T'HH:mm:ss.SSSXXX" (extensions/GsonBuilder.kt);
//   - signing in modules/webhooks/plugins/PayloadSingingPlugin.kt:
//     X-Timestamp = unix seconds (decimal), X-Signature = lowercase hex of
//     HMAC-SHA256(key = the signing key's UTF-8 bytes, message = the body
//     text followed directly by the X-Timestamp string). The docs
//     (android-sms-gateway/docs-web docs/features/webhooks.md, "Payload
//     Signing") say the same and advise a ±5 min window;
//   - any answer outside 200..299 makes the app retry with backoff
//     (modules/webhooks/workers/WebhookQueueProcessorWorker.kt), for about
//     two days by default.
//   - sms:received's messageId is a 32-bit hash of sender, date, SIM and
//     text (modules/receiver/ReceiverService.kt): "not guaranteed to be
//     unique" per the docs, so our key adds receivedAt (see inboundKey).

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Webhook events.
const (
	evSmsReceived  = "sms:received"
	evSmsSent      = "sms:sent"
	evSmsDelivered = "sms:delivered"
	evSmsFailed    = "sms:failed"
	evMmsReceived  = "mms:received"
)

// hookEvents are the events Start registers.
var hookEvents = []string{evSmsReceived, evSmsDelivered, evSmsFailed, evMmsReceived}

// Signature headers and the accepted clock skew.
const (
	hdrSignature = "X-Signature"
	hdrTimestamp = "X-Timestamp"
	maxSkew      = 5 * time.Minute
	maxHookBody  = 1 << 20
)

var (
	errNoSignature  = errors.New("missing signature headers")
	errBadTimestamp = errors.New("bad timestamp")
	errStale        = errors.New("timestamp outside the 5 minute window")
	errBadSignature = errors.New("signature mismatch")
)

// verify checks a webhook's headers against the raw body.
func verify(key string, body []byte, sig, ts string, now time.Time) error {
	if sig == "" || ts == "" {
		return errNoSignature
	}
	if len(ts) > 12 {
		return errBadTimestamp
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errBadTimestamp
	}
	if d := now.Sub(time.Unix(sec, 0)); d > maxSkew || d < -maxSkew {
		return errStale
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return errBadSignature
	}
	if !hmac.Equal(got, sign(key, body, ts)) {
		return errBadSignature
	}
	return nil
}

// sign is the app's signature: HMAC-SHA256(key, body || timestamp).
func sign(key string, body []byte, ts string) []byte {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	m.Write([]byte(ts))
	return m.Sum(nil)
}

// hookEnvelope is WebHookEventDTO.
type hookEnvelope struct {
	ID        string          `json:"id"`
	WebhookID string          `json:"webhookId"`
	Event     string          `json:"event"`
	DeviceID  string          `json:"deviceId"`
	Payload   json.RawMessage `json:"payload"`
}

// hookPayload is the union of the payloads we use.
type hookPayload struct {
	MessageID   string `json:"messageId"`
	Sender      string `json:"sender"`
	Recipient   string `json:"recipient"`
	PhoneNumber string `json:"phoneNumber"`
	SimNumber   *int   `json:"simNumber"`
	Message     string `json:"message"`
	ReceivedAt  string `json:"receivedAt"`
	Reason      string `json:"reason"`
	// mms:received
	TransactionID string `json:"transactionId"`
	Subject       string `json:"subject"`
	Size          int64  `json:"size"`
}

// hook is a decoded webhook: either an inbound event (In) or a state
// report for a message we sent (App, State, Reason), or neither (ignored).
type hook struct {
	Event  string
	In     *backend.Event
	App    string // sms:sent/delivered/failed: the app's message id
	State  string // wire.StateDelivered, wire.StateFailed, or "" (sent)
	Reason string
}

// decodeHook parses a verified webhook body.
func decodeHook(body []byte) (*hook, error) {
	var env hookEnvelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	h := &hook{Event: env.Event}
	switch env.Event {
	case evSmsReceived, evMmsReceived, evSmsSent, evSmsDelivered, evSmsFailed:
	default:
		return h, nil // another event someone registered: acknowledge, ignore
	}
	var p hookPayload
	if len(env.Payload) == 0 || string(env.Payload) == "null" {
		return nil, errors.New("webhook: no payload")
	}
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		return nil, fmt.Errorf("webhook payload: %w", err)
	}
	if p.MessageID == "" {
		return nil, errors.New("webhook: no messageId")
	}
	switch env.Event {
	case evSmsSent, evSmsDelivered, evSmsFailed:
		h.App = p.MessageID
		switch env.Event {
		case evSmsDelivered:
			h.State = wire.StateDelivered
		case evSmsFailed:
			h.State, h.Reason = wire.StateFailed, cleanReason(p.Reason)
		}
		return h, nil
	}
	from := p.Sender
	if from == "" {
		from = p.PhoneNumber // before "sender" existed
	}
	from = normalizeNumber(from)
	if from == "" || len(from) > wire.MaxChatLen || !utf8.ValidString(from) {
		return nil, errors.New("webhook: no usable sender")
	}
	ts, tsOK := parseTime(p.ReceivedAt)
	in := &backend.Event{Chat: from, From: from, TS: ts}
	if p.SimNumber != nil && *p.SimNumber >= 1 && *p.SimNumber <= 8 {
		in.SIM = *p.SimNumber
	}
	if env.Event == evSmsReceived {
		in.Transport = wire.TransportSMS
		in.ID = inboundKey("", p.MessageID, ts, tsOK)
		in.Text = strings.ToValidUTF8(p.Message, "\uFFFD")
		if len(in.Text) > wire.MaxTextLen {
			in.Text = truncate(in.Text, wire.MaxTextLen-len("…"))
		}
	} else {
		// The app reports only the MMS notification (no content): say so.
		in.Transport = wire.TransportMMS
		in.ID = inboundKey("mms.", p.MessageID, ts, tsOK)
		in.Text = "[MMS received; its content cannot be shown here, open it on the phone]"
		if s := strings.TrimSpace(strings.ToValidUTF8(p.Subject, "")); s != "" {
			in.Text = "[MMS received: " + truncate(s, 200) + "; open it on the phone]"
		}
	}
	if in.TS.IsZero() {
		in.TS = time.Now()
	}
	h.In = in
	return h, nil
}

// inboundKey makes the app's message id a ValidKey, adding receivedAt so
// two messages whose 32-bit ids collide stay distinct while the app's
// retries of one webhook keep one key.
func inboundKey(prefix, id string, ts time.Time, tsOK bool) string {
	k := id
	if !backend.ValidKey(prefix+k) || len(prefix+k) > 80 {
		sum := sha256.Sum256([]byte(id))
		k = "h" + hex.EncodeToString(sum[:16])
	}
	if tsOK {
		k += "." + strconv.FormatInt(ts.UnixMilli(), 36)
	}
	return prefix + k
}

func parseTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// normalizeNumber strips the usual punctuation from a number written with
// a leading + ("+1 (202) 555-0100" → "+12025550100"); anything else (a
// national number, a short code, an alphanumeric sender) is passed on as
// given, trimmed: the server normalises it.
func normalizeNumber(n string) string {
	n = strings.TrimSpace(n)
	if !strings.HasPrefix(n, "+") {
		return n
	}
	var b strings.Builder
	b.WriteByte('+')
	for _, r := range n[1:] {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == ' ' || r == '-' || r == '(' || r == ')' || r == '.' || r == '\u00a0':
		default:
			return n // not an obvious format: leave it
		}
	}
	if b.Len() < 2 {
		return n
	}
	return b.String()
}

// cleanReason makes a failure reason short, printable and number-free.
func cleanReason(s string) string {
	r := answerReason(0, mustJSON(map[string]string{"message": s}))
	if r == "" {
		return "failed"
	}
	return r
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// isE164 reports whether n is "+" and 7 to 15 digits.
func isE164(n string) bool {
	if len(n) < 8 || len(n) > 16 || n[0] != '+' || n[1] == '0' {
		return false
	}
	for i := 1; i < len(n); i++ {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}
