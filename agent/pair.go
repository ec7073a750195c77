package agent

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/rcsgate/rcsgate/internal/atomicfile"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// PairTimeout bounds the whole pairing exchange with one server address.
const PairTimeout = 15 * time.Second

// ErrAlreadyPaired is returned by Pair when dir already holds an identity
// and PairOptions.Force is not set.
var ErrAlreadyPaired = errors.New("agent: state directory already holds a device identity (use --force to replace it)")

// PairOptions configure Pair.
type PairOptions struct {
	Name  string // shown on the server; optional
	Force bool   // replace an existing identity in the state directory
	// DialTimeout bounds the handshake with each address; 0 means PairTimeout.
	DialTimeout time.Duration
}

// Pair registers this device with the server named by link: it makes a new
// key here, sends only a CSR, and stores the signed certificate, the CA and
// the server's addresses and pin in dir. The private key never leaves the
// device. The returned error is a wire.Error when the server refused.
func Pair(ctx context.Context, link wire.PairLink, dir string, opts PairOptions) (pki.DeviceID, error) {
	var none pki.DeviceID
	if !opts.Force {
		if _, err := os.Stat(filepath.Join(dir, KeyFile)); err == nil {
			return none, ErrAlreadyPaired
		}
	}
	key, err := pki.NewDeviceKey()
	if err != nil {
		return none, err
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return none, err
	}
	wantID, err := pki.DeviceIDOf(key.Public())
	if err != nil {
		return none, err
	}

	dialTimeout := opts.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = PairTimeout
	}
	var mismatch atomic.Bool
	conn, _, err := dialFirst(ctx, link.Addrs, pinnedTLS(wire.ALPNPair, link.Pin, &mismatch), &mismatch, dialTimeout)
	if alert, ok := tlsAlert(err); ok && alert == alertNoALPN {
		return none, fmt.Errorf("pair: %w (%w)", ErrPairingClosed, err)
	}
	if err != nil {
		return none, fmt.Errorf("pair: %w", err)
	}
	defer conn.CloseWithError(0, "pairing done")

	ectx, cancel := context.WithTimeout(ctx, PairTimeout)
	defer cancel()
	stream, err := conn.OpenStreamSync(ectx)
	if err != nil {
		return none, fmt.Errorf("pair: open stream: %w", err)
	}
	deadline, _ := ectx.Deadline()
	_ = stream.SetDeadline(deadline)
	if err := wire.WriteMsg(stream, wire.PairRequest{Token: link.Token, CSR: csr, Name: opts.Name}); err != nil {
		return none, fmt.Errorf("pair: send request: %w", err)
	}
	_ = stream.Close() // FIN: nothing more from us
	m, err := wire.ReadMsg(stream)
	if err != nil {
		return none, fmt.Errorf("pair: read response: %w", err)
	}
	var resp wire.PairResponse
	switch m := m.(type) {
	case wire.PairResponse:
		resp = m
	case wire.Error:
		return none, m
	default:
		return none, fmt.Errorf("pair: unexpected %s frame from server", m.FrameType())
	}

	cert, err := x509.ParseCertificate(resp.Cert)
	if err != nil {
		return none, fmt.Errorf("pair: server sent an unreadable certificate: %w", err)
	}
	if pki.DeviceIDOfCert(cert) != wantID {
		return none, errors.New("pair: server signed a different key than ours")
	}
	var caPEM []byte
	if len(resp.CA) > 0 {
		ca, err := x509.ParseCertificate(resp.CA)
		if err != nil {
			return none, fmt.Errorf("pair: server sent an unreadable CA: %w", err)
		}
		if err := cert.CheckSignatureFrom(ca); err != nil {
			return none, fmt.Errorf("pair: device certificate is not signed by the CA sent with it: %w", err)
		}
		caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: resp.CA})
	}
	// The certificate is what counts; the id the server reports must agree
	// with it when it is in the usual form.
	if got, err := pki.ParseDeviceID(resp.DeviceID); err == nil && got != wantID {
		return none, fmt.Errorf("pair: server reports device id %s, ours is %s", got, wantID)
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return none, fmt.Errorf("pair: %w", err)
	}
	if err := pki.WriteKeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile), resp.Cert, key); err != nil {
		return none, fmt.Errorf("pair: store identity: %w", err)
	}
	if caPEM != nil {
		if err := atomicfile.Write(filepath.Join(dir, CAFile), caPEM, 0o644); err != nil {
			return none, fmt.Errorf("pair: store CA: %w", err)
		}
	}
	si, _ := json.MarshalIndent(ServerInfo{Addrs: link.Addrs, Pin: base64.RawURLEncoding.EncodeToString(link.Pin[:])}, "", "  ")
	if err := atomicfile.Write(filepath.Join(dir, ServerFile), append(si, '\n'), 0o600); err != nil {
		return none, fmt.Errorf("pair: store server info: %w", err)
	}
	if err := clearUnpaired(dir); err != nil { // a new identity: the server's refusal of the old one is history
		return none, fmt.Errorf("pair: %w", err)
	}
	return wantID, nil
}
