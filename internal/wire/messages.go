package wire

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Msg is any payload that travels in a frame.
type Msg interface {
	FrameType() Type
	// Validate rejects values no honest peer sends, so handlers can trust
	// what they get from ReadMsg.
	Validate() error
}

// ProtocolVersion is the message-level protocol spoken over the frames.
const ProtocolVersion = 1

// Limits on fields, chosen well above what RCS allows so only abuse trips them.
const (
	MaxIDLen   = 128
	MaxChatLen = 64
	MaxTextLen = 64 << 10
	// MaxReasonLen bounds a failure reason (a Status or a receipt): a phone's
	// words shown to a Matrix user, so one sentence, not a page.
	MaxReasonLen = 256
	// MaxSIMs: no phone has more SIM slots; slots are numbered 1..MaxSIMs.
	MaxSIMs = 8
	// MaxFeatures and MaxTokenLen bound Hello/Welcome feature lists; MaxCaps
	// the transports described in a Hello (rcs, sms, mms and room for more).
	MaxFeatures = 32
	MaxTokenLen = 64 // a feature, transport, kind, backend or error code
	MaxCaps     = 8
	// MaxAgentLen bounds the agent's build string in Hello.
	MaxAgentLen = 128
	// MaxAckIDs bounds the ids (and statuses) one Ack carries; the agent
	// acks at most 256 at a time.
	MaxAckIDs = 1024
	// Pairing: a token is 32 bytes in base64url; a CSR and a certificate a
	// few hundred bytes of DER; the device name is what people see.
	MaxPairTokenLen = 128
	MaxDERLen       = 16 << 10
	MaxDeviceName   = 64
	// MaxErrorLen bounds the human part of an Error frame.
	MaxErrorLen = 1024
)

// Hello opens a channel: who the agent is and what it can do.
type Hello struct {
	Proto    int      `json:"proto"`
	Agent    string   `json:"agent"`   // agent build, e.g. "rcsgate-agent/0.1.0"
	Backend  string   `json:"backend"` // "sim", "smsgateway", ...
	Features []string `json:"features,omitempty"`
	// Caps per transport (rcs, sms, mms) the backend can use, and the SIM
	// slots it has (empty: one).
	Caps map[string]Caps `json:"caps,omitempty"`
	SIMs []int           `json:"sims,omitempty"`
}

// Welcome answers Hello.
type Welcome struct {
	Proto    int    `json:"proto"`
	DeviceID string `json:"device_id"`
	ServerMS int64  `json:"server_ms"`
	// Features the server uses on this channel (see FeatureStatusAck).
	Features []string `json:"features,omitempty"`
}

// FeatureStatusAck, in Hello.Features, says the agent understands
// Ack.Statuses; in Welcome.Features, that the server will ack every Status it
// receives with Ack.Statuses once it has handled it. The server must send
// Ack.Statuses only to an agent that announced it; the agent keeps a status
// and sends it again after each reconnect until it is acked only when the
// server announced it (otherwise a status is sent once per message, as in
// protocol 1 without the feature).
const FeatureStatusAck = "status_ack"

// FeatureMediaTrailer, in Hello.Features, says the agent accepts a media
// stream whose MediaHeader has no hash, with a MediaTrailer carrying it
// after the bytes. The server then streams a Matrix file to the phone as it
// downloads it, instead of spooling it to disk first to hash it; it must
// not send such a stream to an agent that did not announce this.
const FeatureMediaTrailer = "media_trailer"

// HasFeature reports whether list names f.
func HasFeature(list []string, f string) bool {
	for _, x := range list {
		if x == f {
			return true
		}
	}
	return false
}

// Message is one chat message. ID is the idempotency key: the sender picks it
// once and every retry carries the same one, so receivers drop duplicates.
type Message struct {
	ID   string `json:"id"`
	Chat string `json:"chat"`           // the other party's number (E.164) for a 1:1 chat, "g:<id>" for a group, "c:<key>" for a party known by name only
	From string `json:"from,omitempty"` // sender's number on inbound messages; empty from Matrix
	Text string `json:"text"`
	TSMS int64  `json:"ts"` // unix milliseconds at the origin

	// The fields below make a message any event of a conversation (see
	// events.go); a plain text message leaves them empty.
	Kind      string   `json:"kind,omitempty"`
	FromMe    bool     `json:"from_me,omitempty"`   // inbound: the phone's owner sent it from the phone itself
	Transport string   `json:"transport,omitempty"` // inbound: how it came; outbound: the chat's preference ("" = the phone decides)
	SIM       int      `json:"sim,omitempty"`       // 1-based SIM slot on dual-SIM phones; 0 = the phone's default
	ReplyTo   string   `json:"reply_to,omitempty"`  // the message this one answers
	Target    string   `json:"target,omitempty"`    // reaction, unreact, edit, delete, receipt, read: the message acted on
	Emoji     string   `json:"emoji,omitempty"`
	State     string   `json:"state,omitempty"`  // receipt
	Reason    string   `json:"reason,omitempty"` // receipt failed
	Media     *Media   `json:"media,omitempty"`
	Group     *Group   `json:"group,omitempty"`
	Contact   *Contact `json:"contact,omitempty"`
	Backfill  bool     `json:"backfill,omitempty"` // history from before pairing, not news
}

// Ack says the receiver has durably stored these messages (IDs) and, from
// the server only, that it has handled these statuses (Statuses; see
// FeatureStatusAck). At least one of the two is non-empty.
type Ack struct {
	IDs      []string    `json:"ids"`
	Statuses []StatusRef `json:"statuses,omitempty"`
}

// StatusRef names one Status frame: the message id and the state it reported.
type StatusRef struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// Delivery states reported by the phone for a message sent from Matrix.
const (
	StateSent      = "sent"
	StateDelivered = "delivered"
	StateRead      = "read"
	StateFailed    = "failed"
)

// Status reports what happened to a message sent to the phone.
type Status struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	TSMS   int64  `json:"ts"`
}

// Ping and Pong measure RTT and keep idle mappings open. Out and In, when
// present, are the sender's queue depths: Out is how many messages it holds
// for the peer that the peer has not acked yet, In how many messages it
// received (and acked) that it has not yet passed on (for the agent: not yet
// handed to the phone). The agent sets them in every Pong; nil means unknown
// (an older peer).
type Ping struct {
	Nonce uint64 `json:"n"`
	TSMS  int64  `json:"ts"`
	Out   *int   `json:"out,omitempty"`
	In    *int   `json:"in,omitempty"`
}
type Pong Ping

// PairRequest carries a one-time token and a CSR whose key never left the device.
type PairRequest struct {
	Token string `json:"token"`
	CSR   []byte `json:"csr"` // DER PKCS#10
	Name  string `json:"name,omitempty"`
}

// PairResponse returns the signed device certificate.
type PairResponse struct {
	Cert     []byte `json:"cert"` // DER
	CA       []byte `json:"ca"`   // DER of the device CA, for the agent's records
	DeviceID string `json:"device_id"`
}

// Error is a refusal with a stable code for programs and a message for people.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (Hello) FrameType() Type        { return TypeHello }
func (Welcome) FrameType() Type      { return TypeWelcome }
func (Message) FrameType() Type      { return TypeMessage }
func (Ack) FrameType() Type          { return TypeAck }
func (Status) FrameType() Type       { return TypeStatus }
func (Ping) FrameType() Type         { return TypePing }
func (Pong) FrameType() Type         { return TypePong }
func (PairRequest) FrameType() Type  { return TypePairRequest }
func (PairResponse) FrameType() Type { return TypePairResponse }
func (Error) FrameType() Type        { return TypeError }

func (h Hello) Validate() error {
	if h.Proto < 1 {
		return fmt.Errorf("%w: hello without protocol version", ErrMalformed)
	}
	if err := validText("hello agent", h.Agent, MaxAgentLen); err != nil {
		return err
	}
	if err := validText("hello backend", h.Backend, MaxTokenLen); err != nil {
		return err
	}
	if err := validFeatures(h.Features); err != nil {
		return err
	}
	if len(h.Caps) > MaxCaps {
		return fmt.Errorf("%w: hello describes %d transports (limit %d)", ErrMalformed, len(h.Caps), MaxCaps)
	}
	for t, c := range h.Caps {
		if t == "" || len(t) > MaxTokenLen || !utf8.ValidString(t) {
			return fmt.Errorf("%w: hello transport name of %d bytes", ErrMalformed, len(t))
		}
		if c.MaxFileSize < 0 || c.MaxFileSize > MaxMediaSize {
			return fmt.Errorf("%w: hello %s max file size %d", ErrMalformed, t, c.MaxFileSize)
		}
	}
	return validSIMs(h.SIMs)
}

// validSIMs: at most MaxSIMs slots, each 1..MaxSIMs, none twice.
func validSIMs(sims []int) error {
	if len(sims) > MaxSIMs {
		return fmt.Errorf("%w: hello lists %d SIM slots (limit %d)", ErrMalformed, len(sims), MaxSIMs)
	}
	var seen [MaxSIMs + 1]bool
	for _, n := range sims {
		if n < 1 || n > MaxSIMs {
			return fmt.Errorf("%w: hello SIM slot %d (slots are 1..%d)", ErrMalformed, n, MaxSIMs)
		}
		if seen[n] {
			return fmt.Errorf("%w: hello lists SIM slot %d twice", ErrMalformed, n)
		}
		seen[n] = true
	}
	return nil
}

func validFeatures(fs []string) error {
	if len(fs) > MaxFeatures {
		return fmt.Errorf("%w: %d features (limit %d)", ErrMalformed, len(fs), MaxFeatures)
	}
	for _, f := range fs {
		if f == "" || len(f) > MaxTokenLen || !utf8.ValidString(f) {
			return fmt.Errorf("%w: feature name of %d bytes", ErrMalformed, len(f))
		}
	}
	return nil
}

func (w Welcome) Validate() error {
	if w.Proto < 1 {
		return fmt.Errorf("%w: welcome without protocol version", ErrMalformed)
	}
	if err := validText("welcome device id", w.DeviceID, MaxIDLen); err != nil {
		return err
	}
	return validFeatures(w.Features)
}
func (m Message) Validate() error {
	switch {
	case m.ID == "" || len(m.ID) > MaxIDLen:
		return fmt.Errorf("%w: message id length %d", ErrMalformed, len(m.ID))
	case m.Chat == "" || len(m.Chat) > MaxChatLen:
		return fmt.Errorf("%w: message chat length %d", ErrMalformed, len(m.Chat))
	case len(m.From) > MaxChatLen:
		return fmt.Errorf("%w: message sender length %d", ErrMalformed, len(m.From))
	case len(m.Text) > MaxTextLen:
		return fmt.Errorf("%w: message text of %d bytes", ErrMalformed, len(m.Text))
	case !utf8.ValidString(m.Text):
		return fmt.Errorf("%w: message text is not UTF-8", ErrMalformed)
	}
	return m.validateEvent()
}
func (a Ack) Validate() error {
	if len(a.IDs) == 0 && len(a.Statuses) == 0 {
		return fmt.Errorf("%w: empty ack", ErrMalformed)
	}
	if len(a.IDs) > MaxAckIDs || len(a.Statuses) > MaxAckIDs {
		return fmt.Errorf("%w: ack of %d ids and %d statuses (limit %d each)", ErrMalformed, len(a.IDs), len(a.Statuses), MaxAckIDs)
	}
	for _, id := range a.IDs {
		if id == "" || len(id) > MaxIDLen {
			return fmt.Errorf("%w: ack id length %d", ErrMalformed, len(id))
		}
	}
	for _, s := range a.Statuses {
		if err := (Status{ID: s.ID, State: s.State}).Validate(); err != nil {
			return err
		}
	}
	return nil
}
func (s Status) Validate() error {
	if s.ID == "" || len(s.ID) > MaxIDLen {
		return fmt.Errorf("%w: status id length %d", ErrMalformed, len(s.ID))
	}
	switch s.State {
	case StateSent, StateDelivered, StateRead, StateFailed:
	default:
		return fmt.Errorf("%w: unknown delivery state %q", ErrMalformed, clip(s.State))
	}
	return validText("status reason", s.Reason, MaxReasonLen)
}

// clip keeps a peer's bad value short enough to quote in an error.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}
func (p Ping) Validate() error { return validDepths(p.Out, p.In) }
func (p Pong) Validate() error { return validDepths(p.Out, p.In) }

func validDepths(ns ...*int) error {
	for _, n := range ns {
		if n != nil && *n < 0 {
			return fmt.Errorf("%w: negative queue depth", ErrMalformed)
		}
	}
	return nil
}
func (p PairRequest) Validate() error {
	switch {
	case p.Token == "" || len(p.CSR) == 0:
		return fmt.Errorf("%w: pair request needs a token and a CSR", ErrMalformed)
	case len(p.Token) > MaxPairTokenLen:
		return fmt.Errorf("%w: pairing token of %d bytes", ErrMalformed, len(p.Token))
	case len(p.CSR) > MaxDERLen:
		return fmt.Errorf("%w: certificate request of %d bytes (limit %d)", ErrMalformed, len(p.CSR), MaxDERLen)
	}
	if err := validText("device name", p.Name, MaxDeviceName); err != nil {
		return err
	}
	if HasControl(p.Name) {
		return fmt.Errorf("%w: device name has control characters", ErrMalformed)
	}
	return nil
}
func (p PairResponse) Validate() error {
	switch {
	case len(p.Cert) == 0 || p.DeviceID == "":
		return fmt.Errorf("%w: pair response needs a certificate and a device id", ErrMalformed)
	case len(p.Cert) > MaxDERLen || len(p.CA) > MaxDERLen:
		return fmt.Errorf("%w: pair response certificates of %d and %d bytes (limit %d)", ErrMalformed, len(p.Cert), len(p.CA), MaxDERLen)
	}
	return validText("device id", p.DeviceID, MaxIDLen)
}
func (e Error) Validate() error {
	if e.Code == "" {
		return fmt.Errorf("%w: error without code", ErrMalformed)
	}
	if err := validText("error code", e.Code, MaxTokenLen); err != nil {
		return err
	}
	return validText("error message", e.Message, MaxErrorLen)
}

// HasControl reports whether s holds a control character (C0, DEL, C1) or
// a Unicode bidi override, which could rewrite how a terminal or a chat
// client shows the text around it.
func HasControl(s string) bool {
	for _, r := range s {
		if isControl(r) {
			return true
		}
	}
	return false
}

func isControl(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r < 0xa0:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidi embeddings, overrides, isolates
		return true
	}
	return false
}

// StripControl removes control characters and bidi overrides from s
// (newlines and tabs become spaces) and cuts it to at most max bytes on a
// rune boundary: for a peer's words shown to people.
func StripControl(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t' || r == '\r':
			r = ' '
		case isControl(r) || r == utf8.RuneError:
			continue
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// Error makes a refusal usable as a Go error on the receiving side.
func (e Error) Error() string { return "peer refused: " + e.Code + ": " + e.Message }

// Encode returns the full frame for m.
func Encode(m Msg) ([]byte, error) {
	payload, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("wire: encode %s: %w", m.FrameType(), err)
	}
	return AppendFrame(make([]byte, 0, HeaderSize+len(payload)), m.FrameType(), payload)
}

// WriteMsg writes m as one frame with a single Write call, so frames from
// one writer never interleave on a stream.
func WriteMsg(w io.Writer, m Msg) error {
	buf, err := Encode(m)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// Decode parses a payload of type t and validates it.
func Decode(t Type, payload []byte) (Msg, error) {
	var m Msg
	var err error
	switch t {
	case TypeHello:
		m, err = decodeAs[Hello](payload)
	case TypeWelcome:
		m, err = decodeAs[Welcome](payload)
	case TypeMessage:
		m, err = decodeAs[Message](payload)
	case TypeAck:
		m, err = decodeAs[Ack](payload)
	case TypeStatus:
		m, err = decodeAs[Status](payload)
	case TypePing:
		m, err = decodeAs[Ping](payload)
	case TypePong:
		m, err = decodeAs[Pong](payload)
	case TypePairRequest:
		m, err = decodeAs[PairRequest](payload)
	case TypePairResponse:
		m, err = decodeAs[PairResponse](payload)
	case TypeError:
		m, err = decodeAs[Error](payload)
	case TypeMediaGet:
		m, err = decodeAs[MediaGet](payload)
	case TypeMediaHeader:
		m, err = decodeAs[MediaHeader](payload)
	case TypeTyping:
		m, err = decodeAs[Typing](payload)
	case TypeMediaTrailer:
		m, err = decodeAs[MediaTrailer](payload)
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, uint8(t))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s payload: %w", ErrMalformed, t, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

func decodeAs[T Msg](payload []byte) (Msg, error) {
	var v T
	if err := json.Unmarshal(payload, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// ReadMsg reads and decodes one frame.
func ReadMsg(r io.Reader) (Msg, error) {
	t, payload, err := ReadFrame(r)
	if err != nil {
		return nil, err
	}
	return Decode(t, payload)
}
