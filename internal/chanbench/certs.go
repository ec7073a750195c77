package chanbench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// serverName is the name in the throwaway server certificate; clients verify
// against it (never against the address, which changes per condition).
const serverName = "rcsgate-chanbench.invalid"

// certs is a throwaway CA with one server and one client certificate: mutual
// TLS as in devicechan, without touching any state directory.
type certs struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func newCerts() (*certs, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rcsgate-chanbench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("ca cert: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse ca: %w", err)
	}
	leaf := func(serial int64, usage x509.ExtKeyUsage, dns []string) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("leaf key: %w", err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "rcsgate-chanbench"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, DNSNames: dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("leaf cert: %w", err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("parse leaf: %w", err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}, nil
	}
	srv, err := leaf(2, x509.ExtKeyUsageServerAuth, []string{serverName})
	if err != nil {
		return nil, err
	}
	cli, err := leaf(3, x509.ExtKeyUsageClientAuth, nil)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &certs{pool: pool, server: srv, client: cli}, nil
}

// serverTLS is TLS 1.3 only, client certificate required and checked, session
// tickets on (the default) so clients can resume.
func (c *certs) serverTLS(alpn string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.pool,
		NextProtos:   []string{alpn},
	}
}

// clientTLS resumes through cache (nil: every handshake is a full one).
func (c *certs) clientTLS(alpn string, cache tls.ClientSessionCache) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		RootCAs:            c.pool,
		ServerName:         serverName,
		Certificates:       []tls.Certificate{c.client},
		NextProtos:         []string{alpn},
		ClientSessionCache: cache,
	}
}
