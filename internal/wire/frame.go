// Package wire is the device-channel protocol shared by rcsgate and the agent:
// length-prefixed, versioned frames carrying small JSON payloads. It imports
// neither Matrix nor cgo so the agent always cross-builds for Android.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the frame format version. A peer that sees another version
// refuses the frame rather than guessing at its layout.
const Version byte = 1

// HeaderSize is version (1) + type (1) + payload length (4, big endian).
const HeaderSize = 6

// MaxPayload bounds a control frame. Text, receipts and acks fit easily;
// media travels on streams of its own, never in a frame.
const MaxPayload = 256 << 10

// ALPN protocol ids: one for the paired channel, one for first-time pairing,
// so the server knows before any byte of payload which checks apply.
const (
	ALPNChannel = "rcsgate/1"
	ALPNPair    = "rcsgate-pair/1"
)

// Errors a decoder returns; callers tell them apart with errors.Is.
var (
	ErrUnsupportedVersion = errors.New("wire: unsupported frame version")
	ErrUnknownType        = errors.New("wire: unknown frame type")
	ErrFrameTooLarge      = errors.New("wire: frame too large")
	ErrMalformed          = errors.New("wire: malformed frame")
)

// Type identifies what a frame carries.
type Type uint8

const (
	TypeHello        Type = 1  // agent → server, first frame of a channel
	TypeWelcome      Type = 2  // server → agent, answer to Hello
	TypeMessage      Type = 3  // a chat message, either direction
	TypeAck          Type = 4  // the receiver has persisted these message ids
	TypeStatus       Type = 5  // delivery status of a message sent to the phone
	TypePing         Type = 6  // liveness and RTT
	TypePong         Type = 7  // answer to Ping
	TypePairRequest  Type = 8  // agent → server on the pairing ALPN
	TypePairResponse Type = 9  // server → agent: the signed certificate
	TypeError        Type = 10 // a refusal with a machine-readable code
	TypeMediaGet     Type = 11 // first frame of a media stream: send me these bytes
	TypeMediaHeader  Type = 12 // answer on a media stream; raw bytes follow
	TypeTyping       Type = 13 // ephemeral typing notice, either direction
	TypeMediaTrailer Type = 14 // after the raw bytes of a media stream whose header had no hash
)

var typeNames = map[Type]string{
	TypeHello: "hello", TypeWelcome: "welcome", TypeMessage: "message", TypeAck: "ack",
	TypeStatus: "status", TypePing: "ping", TypePong: "pong", TypePairRequest: "pair_request",
	TypePairResponse: "pair_response", TypeError: "error", TypeMediaGet: "media_get",
	TypeMediaHeader: "media_header", TypeTyping: "typing", TypeMediaTrailer: "media_trailer",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Known reports whether this build understands t.
func (t Type) Known() bool { _, ok := typeNames[t]; return ok }

// ReadFrame reads one frame. It never allocates more than MaxPayload and
// checks the header before reading the body, so a hostile length can't make
// it hang waiting for gigabytes or exhaust memory.
func ReadFrame(r io.Reader) (Type, []byte, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("%w: truncated header", ErrMalformed)
		}
		return 0, nil, err // io.EOF between frames is a clean close
	}
	if hdr[0] != Version {
		return 0, nil, fmt.Errorf("%w: got %d, want %d", ErrUnsupportedVersion, hdr[0], Version)
	}
	t := Type(hdr[1])
	if !t.Known() {
		return 0, nil, fmt.Errorf("%w: %d", ErrUnknownType, hdr[1])
	}
	n := binary.BigEndian.Uint32(hdr[2:])
	if n > MaxPayload {
		return 0, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, MaxPayload)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, fmt.Errorf("%w: truncated %s payload: %w", ErrMalformed, t, err)
	}
	return t, buf, nil
}

// AppendFrame appends one encoded frame to dst.
func AppendFrame(dst []byte, t Type, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return dst, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(payload), MaxPayload)
	}
	if !t.Known() {
		return dst, fmt.Errorf("%w: %d", ErrUnknownType, uint8(t))
	}
	dst = append(dst, Version, byte(t))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	return append(dst, payload...), nil
}
