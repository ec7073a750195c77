package front

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/internal/pki"
)

// CertInfo describes a certificate the front serves (for `rcsgate status`).
type CertInfo struct {
	Mode      string
	Names     []string // DNS names and IP addresses
	Issuer    string   // the issuing CA's distinguished name
	IssuerKey string   // acme mode: the CA directory certmagic stores under
	Serial    string   // hex
	NotBefore time.Time
	NotAfter  time.Time
	SHA256    string // fingerprint of the DER leaf, AA:BB:... (what browsers show)
	Source    string // the file it was read from, if any
}

func certInfo(mode string, leaf *x509.Certificate) CertInfo {
	names := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return CertInfo{
		Mode:      mode,
		Names:     names,
		Issuer:    leaf.Issuer.String(),
		Serial:    leaf.SerialNumber.Text(16),
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
		SHA256:    Fingerprint(leaf.Raw),
	}
}

// Fingerprint is the SHA-256 of a DER certificate as colon-separated
// upper-case hex, the form browsers and `openssl x509 -fingerprint -sha256`
// show.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

// leafOf parses the leaf of a tls.Certificate.
func leafOf(c *tls.Certificate) (*x509.Certificate, error) {
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	if len(c.Certificate) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// loadPair reads a PEM certificate chain and key and checks they match.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &pair, nil
}

// hostCovered says whether leaf is valid for the host name or IP address.
func hostCovered(leaf *x509.Certificate, host string) bool {
	return leaf.VerifyHostname(host) == nil
}

// ---- provided mode ----

// fileSource serves a provided pair and reloads it when either file
// changes (a new inode, size or modification time; a renewal tool that
// swaps symlinks counts too). A pair that fails to load is logged and the
// previous one stays in service.
type fileSource struct {
	certFile, keyFile string
	domain            string
	every             time.Duration
	log               zerolog.Logger
	notify            func(Event)

	mu         sync.Mutex
	cert       *tls.Certificate
	info       CertInfo
	certStat   os.FileInfo
	keyStat    os.FileInfo
	lastCheck  time.Time
	lastFailed [2]os.FileInfo // stats of a pair that failed, to log it once
}

func newFileSource(cfg *Config, log zerolog.Logger, notify func(Event)) (*fileSource, error) {
	s := &fileSource{
		certFile: cfg.CertFile, keyFile: cfg.KeyFile, domain: cfg.Domain,
		every: cfg.ReloadCheckInterval, log: log, notify: notify,
	}
	if s.every == 0 {
		s.every = DefaultReloadCheckInterval
	}
	cs, ks, err := s.stat()
	if err != nil {
		return nil, fmt.Errorf("front: provided certificate: %w", err)
	}
	if err := s.load(cs, ks); err != nil {
		return nil, fmt.Errorf("front: provided certificate: %w", err)
	}
	s.lastCheck = time.Now()
	return s, nil
}

func (s *fileSource) stat() (os.FileInfo, os.FileInfo, error) {
	cs, err := os.Stat(s.certFile)
	if err != nil {
		return nil, nil, err
	}
	ks, err := os.Stat(s.keyFile)
	if err != nil {
		return nil, nil, err
	}
	return cs, ks, nil
}

// load must be called with s.mu held (or before s is shared).
func (s *fileSource) load(cs, ks os.FileInfo) error {
	pair, err := loadPair(s.certFile, s.keyFile)
	if err != nil {
		return err
	}
	info := certInfo(ModeProvided, pair.Leaf)
	info.Source = s.certFile
	first := s.cert == nil
	s.cert, s.info, s.certStat, s.keyStat = pair, info, cs, ks
	ev := s.log.Info()
	if !hostCovered(pair.Leaf, s.domain) {
		ev = s.log.Warn().Str("problem", "certificate does not cover the domain")
	}
	kind := EventReloaded
	msg := "provided certificate reloaded"
	if first {
		kind, msg = EventLoaded, "provided certificate loaded"
	}
	ev.Str("domain", s.domain).Str("file", s.certFile).Str("serial", info.Serial).
		Time("not_after", info.NotAfter).Str("issuer", info.Issuer).Str("sha256", info.SHA256).Msg(msg)
	if s.notify != nil {
		s.notify(Event{Kind: kind, Domain: s.domain, Cert: &info})
	}
	return nil
}

func changed(a, b os.FileInfo) bool {
	return a == nil || b == nil || !os.SameFile(a, b) || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime())
}

// check reloads the pair if the interval has passed and a file changed.
func (s *fileSource) check(force bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !force && now.Sub(s.lastCheck) < s.every {
		return
	}
	s.lastCheck = now
	cs, ks, err := s.stat()
	if err != nil {
		s.log.Warn().Err(err).Msg("provided certificate: cannot stat files; still serving the previous one")
		return
	}
	if !changed(s.certStat, cs) && !changed(s.keyStat, ks) {
		return
	}
	if err := s.load(cs, ks); err != nil {
		if changed(s.lastFailed[0], cs) || changed(s.lastFailed[1], ks) {
			s.lastFailed = [2]os.FileInfo{cs, ks}
			s.log.Error().Err(err).Str("file", s.certFile).Msg("provided certificate changed but does not load; still serving the previous one")
			if s.notify != nil {
				s.notify(Event{Kind: EventFailed, Domain: s.domain, Err: err})
			}
		}
	}
}

func (s *fileSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.check(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert, nil
}

func (s *fileSource) certificates() []CertInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []CertInfo{s.info}
}

// ---- selfsigned mode ----

// Self-signed files inside StorageDir.
const (
	SelfSignedCertFile = "selfsigned/cert.pem"
	SelfSignedKeyFile  = "selfsigned/key.pem"
)

// 825 days is the longest validity Apple platforms accept for a TLS
// server certificate; a new one (new fingerprint) is made with 30 days left.
const (
	selfSignedValidity = 825 * 24 * time.Hour
	selfSignedMinLeft  = 30 * 24 * time.Hour
)

// loadOrCreateSelfSigned reuses the pair in dir if it covers domain and has
// more than 30 days left; otherwise it makes a new one (ECDSA P-256, key
// written 0600).
func loadOrCreateSelfSigned(dir, domain string, now time.Time) (pair *tls.Certificate, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, SelfSignedCertFile), filepath.Join(dir, SelfSignedKeyFile)
	// Missing, unreadable, mismatched, for another name or about to expire:
	// make a new one (the caller logs its fingerprint).
	if pair, err := loadPair(certPath, keyPath); err == nil &&
		hostCovered(pair.Leaf, domain) && pair.Leaf.NotAfter.Sub(now) > selfSignedMinLeft {
		return pair, false, nil
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, false, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: domain, Organization: []string{"rcsgate self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(domain); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{domain}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, false, err
	}
	if err := pki.WriteKeyPair(certPath, keyPath, der, key); err != nil {
		return nil, false, err
	}
	pair, err = loadPair(certPath, keyPath)
	if err != nil {
		return nil, false, err
	}
	return pair, true, nil
}
