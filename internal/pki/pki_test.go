package pki

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDeviceIDRoundTripAndCheck(t *testing.T) {
	key, err := NewDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	id, err := DeviceIDOf(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	s := id.String()
	if len(s) != 63 || strings.Count(s, "-") != 7 {
		t.Fatalf("unexpected shape %q", s)
	}
	got, err := ParseDeviceID(strings.ToLower(s))
	if err != nil || got != id {
		t.Fatalf("parse(%q) = %v, %v", s, got, err)
	}
	// One changed character must be caught by a check character.
	typo := []byte(s)
	if typo[2] == 'A' {
		typo[2] = 'B'
	} else {
		typo[2] = 'A'
	}
	if _, err := ParseDeviceID(string(typo)); !errors.Is(err, ErrBadDeviceID) {
		t.Fatalf("typo not caught: %v", err)
	}
}

func TestCAPersistsAndSigns(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v %v", st.Mode(), err)
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil || !again.Cert.Equal(ca.Cert) {
		t.Fatalf("CA not reloaded: %v", err)
	}
	key, _ := NewDeviceKey()
	csr, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	der, id, err := ca.SignCSR(csr, "phone")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	want, _ := DeviceIDOf(key.Public())
	if id != want || DeviceIDOfCert(cert) != want {
		t.Fatal("device id does not match the key")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("device cert does not verify: %v", err)
	}
	if _, _, err := ca.SignCSR([]byte("junk"), "x"); err == nil {
		t.Fatal("junk CSR accepted")
	}
}

func TestChannelCertStable(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateChannelCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateChannelCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	if Pin(a.Leaf) != Pin(b.Leaf) {
		t.Fatal("channel cert changed across loads: paired agents would refuse it")
	}
}

func FuzzParseDeviceID(f *testing.F) {
	f.Add("AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseDeviceID(s)
		if err != nil {
			return
		}
		if id2, err := ParseDeviceID(id.String()); err != nil || id2 != id {
			t.Fatalf("round trip failed for %q", s)
		}
	})
}
