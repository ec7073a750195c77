// Package pki holds the device CA, the server's channel certificate, device
// ids and pairing tokens. Both ends use it; it imports neither Matrix nor cgo.
package pki

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// DeviceID is SHA-256 of a device key's SubjectPublicKeyInfo, written as
// Syncthing writes its ids: base32, a Luhn mod-32 check character after each
// 13 characters, grouped by 7 with dashes — easy to read aloud and compare
// on the phone and on the server, and typos are caught.
type DeviceID [sha256.Size]byte

var ErrBadDeviceID = errors.New("invalid device id")

// DeviceIDOf returns the id of a public key.
func DeviceIDOf(pub crypto.PublicKey) (DeviceID, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return DeviceID{}, fmt.Errorf("pki: marshal public key: %w", err)
	}
	return sha256.Sum256(der), nil
}

// DeviceIDOfCert returns the id of a certificate's key.
func DeviceIDOfCert(c *x509.Certificate) DeviceID {
	return sha256.Sum256(c.RawSubjectPublicKeyInfo)
}

const luhnAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func (d DeviceID) String() string {
	b32 := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(d[:]) // 52 chars
	var withCheck strings.Builder
	for i := 0; i < 4; i++ {
		part := b32[i*13 : (i+1)*13]
		withCheck.WriteString(part)
		withCheck.WriteByte(luhn32(part))
	}
	s := withCheck.String() // 56 chars
	var out strings.Builder
	for i := 0; i < len(s); i += 7 {
		if i > 0 {
			out.WriteByte('-')
		}
		out.WriteString(s[i : i+7])
	}
	return out.String()
}

// Short is the first group, enough to tell a user's few devices apart in logs.
func (d DeviceID) Short() string { return d.String()[:7] }

// ParseDeviceID accepts the dashed form (dashes and spaces optional, any case)
// and checks every check character.
func ParseDeviceID(s string) (DeviceID, error) {
	var d DeviceID
	s = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(s))
	if len(s) != 56 {
		return d, fmt.Errorf("%w: want 56 characters without dashes, got %d", ErrBadDeviceID, len(s))
	}
	var b32 strings.Builder
	for i := 0; i < 4; i++ {
		part := s[i*14 : i*14+13]
		if luhn32(part) != s[i*14+13] {
			return d, fmt.Errorf("%w: check character of group %d does not match (typo?)", ErrBadDeviceID, i+1)
		}
		b32.WriteString(part)
	}
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(b32.String())
	if err != nil || len(raw) != len(d) {
		return d, fmt.Errorf("%w: not base32", ErrBadDeviceID)
	}
	copy(d[:], raw)
	return d, nil
}

// luhn32 is the Luhn mod N algorithm over the base32 alphabet. Characters
// outside the alphabet get a check char that can never match a valid id.
func luhn32(s string) byte {
	factor, sum, n := 1, 0, len(luhnAlphabet)
	for i := 0; i < len(s); i++ {
		cp := strings.IndexByte(luhnAlphabet, s[i])
		if cp < 0 {
			return '!'
		}
		addend := factor * cp
		if factor == 2 {
			factor = 1
		} else {
			factor = 2
		}
		addend = addend/n + addend%n
		sum += addend
	}
	return luhnAlphabet[(n-sum%n)%n]
}
