package agent

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rcsgate/rcsgate/internal/pki"
)

// Files in the agent's state directory.
const (
	KeyFile         = "device.key"   // the device's private key, mode 0600; never leaves the device
	CertFile        = "device.crt"   // the device certificate signed by the server's device CA
	CAFile          = "ca.crt"       // the server's device CA, for the record
	ServerFile      = "server.json"  // where the server is and the pin of its certificate
	ControlAddrFile = "control.addr" // bound address of the sim control API while `run` is up
)

// ErrNotPaired means the state directory holds no identity yet.
var ErrNotPaired = errors.New("agent: not paired yet (run `rcsgate-agent pair LINK`)")

// ServerInfo is server.json.
type ServerInfo struct {
	Addrs []string `json:"addrs"`
	Pin   string   `json:"pin"` // base64url (no padding) SHA-256 of the server certificate's SPKI
}

// PinBytes decodes Pin.
func (s ServerInfo) PinBytes() ([sha256.Size]byte, error) {
	var p [sha256.Size]byte
	b, err := base64.RawURLEncoding.DecodeString(s.Pin)
	if err != nil || len(b) != sha256.Size {
		return p, errors.New("pin must be a base64url SHA-256")
	}
	copy(p[:], b)
	return p, nil
}

// Identity is what pairing stored.
type Identity struct {
	Cert     *x509.Certificate
	Key      crypto.Signer
	DeviceID pki.DeviceID
	Server   ServerInfo
	Pin      [sha256.Size]byte
}

// LoadIdentity reads the identity from dir.
func LoadIdentity(dir string) (*Identity, error) {
	if _, err := os.Stat(filepath.Join(dir, CertFile)); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: no %s in %s", ErrNotPaired, CertFile, dir)
	}
	cert, key, err := pki.LoadKeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("agent: load identity: %w", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, ServerFile))
	if err != nil {
		return nil, fmt.Errorf("agent: load identity: %w", err)
	}
	var si ServerInfo
	if err := json.Unmarshal(raw, &si); err != nil {
		return nil, fmt.Errorf("agent: %s: %w", ServerFile, err)
	}
	if len(si.Addrs) == 0 {
		return nil, fmt.Errorf("agent: %s lists no server address", ServerFile)
	}
	pin, err := si.PinBytes()
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", ServerFile, err)
	}
	id := &Identity{Cert: cert, Key: key, DeviceID: pki.DeviceIDOfCert(cert), Server: si, Pin: pin}
	keyID, err := pki.DeviceIDOf(key.Public())
	if err != nil || keyID != id.DeviceID {
		return nil, fmt.Errorf("agent: %s does not belong to %s", CertFile, KeyFile)
	}
	return id, nil
}

// LoadDeviceID reads only the certificate and returns the device id.
func LoadDeviceID(dir string) (pki.DeviceID, error) {
	raw, err := os.ReadFile(filepath.Join(dir, CertFile))
	if errors.Is(err, os.ErrNotExist) {
		return pki.DeviceID{}, fmt.Errorf("%w: no %s in %s", ErrNotPaired, CertFile, dir)
	}
	if err != nil {
		return pki.DeviceID{}, fmt.Errorf("agent: %w", err)
	}
	b, _ := pem.Decode(raw)
	if b == nil {
		return pki.DeviceID{}, fmt.Errorf("agent: %s is not PEM", CertFile)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return pki.DeviceID{}, fmt.Errorf("agent: parse %s: %w", CertFile, err)
	}
	return pki.DeviceIDOfCert(c), nil
}
