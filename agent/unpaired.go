package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rcsgate/rcsgate/internal/atomicfile"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// ErrUnpaired is what Run returns when the server refused this device's
// certificate for good: it was revoked, or the server no longer knows it
// (its state was reset, or it is another server). Dialling again could
// never work and would only fill the server's log, so the agent stops and
// writes UnpairedFile: later runs return ErrUnpaired at once, without
// dialling, until Pair stores a new identity. The phone app shows this
// state as "unpaired — pair again" (errors.Is(err, ErrUnpaired)).
var ErrUnpaired = errors.New("unpaired — pair again")

// ErrPairingClosed is returned by Pair when the server refused the pairing
// protocol in the handshake: it has no pairing link open (the link
// expired, was used, or was never made there).
var ErrPairingClosed = errors.New("the server is not taking pairings now: the link expired or was already used; make a new one with `rcsgate pair`")

// UnpairedFile, in the state directory, records that the server refused
// this device's certificate.
const UnpairedFile = "unpaired.json"

// Unpaired is UnpairedFile's content.
type Unpaired struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"` // what the server said, as the agent saw it
}

// LoadUnpaired reports whether dir's identity was refused by the server.
func LoadUnpaired(dir string) (Unpaired, bool) {
	var u Unpaired
	b, err := os.ReadFile(filepath.Join(dir, UnpairedFile))
	if err != nil {
		return u, false
	}
	if json.Unmarshal(b, &u) != nil {
		u.Reason = "refused by the server"
	}
	return u, true
}

func markUnpaired(dir string, u Unpaired) error {
	b, _ := json.Marshal(u)
	return atomicfile.Write(filepath.Join(dir, UnpairedFile), append(b, '\n'), 0o600)
}

func clearUnpaired(dir string) error {
	if err := os.Remove(filepath.Join(dir, UnpairedFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (u Unpaired) error() error {
	return fmt.Errorf("%w: the server refused this device's certificate on %s (%s); pair it again with `rcsgate-agent pair --force LINK`",
		ErrUnpaired, u.At.Format(time.RFC3339), u.Reason)
}

// TLS alerts (RFC 8446 §6) the server's handshake ends with, which QUIC
// carries as CRYPTO_ERROR 0x100 + alert.
const (
	alertBadCertificate     = 42
	alertCertificateExpired = 45
	alertNoALPN             = 120
)

// tlsAlert returns the TLS alert a server closed the connection with.
func tlsAlert(err error) (uint8, bool) {
	var te *quic.TransportError
	if !errors.As(err, &te) || !te.Remote || !te.ErrorCode.IsCryptoError() {
		return 0, false
	}
	return uint8(te.ErrorCode - 0x100), true
}

// codeRevoked is the server's close code for a live connection of a
// device it just revoked (devicechan).
const codeRevoked quic.ApplicationErrorCode = 2

// refusedForGood reports whether err means the server will never take this
// certificate again, and says why.
func refusedForGood(err error) (string, bool) {
	if alert, ok := tlsAlert(err); ok && (alert == alertBadCertificate || alert == alertCertificateExpired) {
		return "the server refused the device certificate (revoked, or unknown to this server)", true
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == codeRevoked {
		return "the server closed the connection: " + ae.ErrorMessage, true
	}
	var refused wire.Error
	if errors.As(err, &refused) && (refused.Code == CodeRevoked || refused.Code == CodeUnknownDevice) {
		return "the server said: " + refused.Message, true
	}
	return "", false
}
