package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/rcsgate/rcsgate/internal/atomicfile"
)

// File names inside the server's state directory.
const (
	CACertFile      = "device-ca.crt"
	CAKeyFile       = "device-ca.key"
	ChannelCertFile = "channel.crt"
	ChannelKeyFile  = "channel.key"
)

// DeviceCertValidity is how long a device certificate lasts; revocation, not
// expiry, is how a device is cut off, so this only bounds a forgotten device.
const DeviceCertValidity = 5 * 365 * 24 * time.Hour

// CA signs device certificates. Its key never leaves the server's state
// directory and is written with mode 0600.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// LoadOrCreateCA loads the device CA from dir, creating it on first use.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	cert, key, err := loadPair(certPath, keyPath)
	if err == nil {
		return &CA{Cert: cert, Key: key}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "rcsgate device CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(20 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: self-sign CA: %w", err)
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, err
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse new CA: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Pool is the set of roots a server accepts client certificates from.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// SignCSR checks a device's CSR and returns a client certificate for its key.
func (ca *CA) SignCSR(csrDER []byte, name string) (certDER []byte, id DeviceID, err error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, id, fmt.Errorf("pki: parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, id, fmt.Errorf("pki: CSR signature: %w", err)
	}
	switch pub := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return nil, id, fmt.Errorf("pki: CSR key must be P-256 or Ed25519")
		}
	case interface{ Equal(crypto.PublicKey) bool }: // ed25519.PublicKey
		if csr.PublicKeyAlgorithm != x509.Ed25519 {
			return nil, id, fmt.Errorf("pki: CSR key must be P-256 or Ed25519, got %s", csr.PublicKeyAlgorithm)
		}
	default:
		return nil, id, fmt.Errorf("pki: unsupported CSR key type %T", pub)
	}
	id = sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: id.String(), OrganizationalUnit: []string{truncate(name, 64)}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(DeviceCertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, id, fmt.Errorf("pki: sign device certificate: %w", err)
	}
	return certDER, id, nil
}

// LoadOrCreateChannelCert returns the server's certificate for the device
// channel. It is self-signed: agents trust it by the pin in the pairing link,
// not by any public CA, so a mis-issued web certificate can't intercept it.
func LoadOrCreateChannelCert(dir string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, ChannelCertFile), filepath.Join(dir, ChannelKeyFile)
	cert, key, err := loadPair(certPath, keyPath)
	if errors.Is(err, os.ErrNotExist) {
		k, gerr := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if gerr != nil {
			return tls.Certificate{}, fmt.Errorf("pki: generate channel key: %w", gerr)
		}
		tmpl := &x509.Certificate{
			SerialNumber: randSerial(),
			Subject:      pkix.Name{CommonName: "rcsgate device channel"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(20 * 365 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			DNSNames:     []string{"rcsgate"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, cerr := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		if cerr != nil {
			return tls.Certificate{}, fmt.Errorf("pki: self-sign channel cert: %w", cerr)
		}
		if err := writePair(certPath, keyPath, der, k); err != nil {
			return tls.Certificate{}, err
		}
		cert, key, err = loadPair(certPath, keyPath)
	}
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// Pin is the SHA-256 of a certificate's SubjectPublicKeyInfo.
func Pin(c *x509.Certificate) [sha256.Size]byte { return sha256.Sum256(c.RawSubjectPublicKeyInfo) }

// NewDeviceKey makes the key a device keeps for itself.
func NewDeviceKey() (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate device key: %w", err)
	}
	return k, nil
}

// NewCSR builds a certificate request for key.
func NewCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "rcsgate-agent"},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CSR: %w", err)
	}
	return der, nil
}

// NewToken returns a fresh one-time pairing token (256 bits).
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("pki: token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// HashToken is what the server stores: a leaked database doesn't leak
// usable tokens.
func HashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// WriteKeyPair stores a certificate and key as PEM; the key file is 0600.
func WriteKeyPair(certPath, keyPath string, certDER []byte, key crypto.Signer) error {
	return writePair(certPath, keyPath, certDER, key)
}

// LoadKeyPair reads what WriteKeyPair wrote.
func LoadKeyPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	return loadPair(certPath, keyPath)
}

func writePair(certPath, keyPath string, certDER []byte, key crypto.Signer) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: marshal key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := atomicfile.Write(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o644)
}

func loadPair(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("pki: %s or %s is not PEM", certPath, keyPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse %s: %w", certPath, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse %s: %w", keyPath, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("pki: %s holds no signing key", keyPath)
	}
	return cert, signer, nil
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
