package wire

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// PairLink is what `rcsgate pair` hands to a device (as text or QR code):
// where the server listens, a one-time token, and a pin of the server's
// channel certificate so the agent trusts nothing else on first contact.
type PairLink struct {
	Addrs []string // host:port, tried in order
	Token string
	Pin   [sha256.Size]byte // SHA-256 of the server certificate's SubjectPublicKeyInfo
}

// ErrBadPairLink wraps every reason a link is refused.
var ErrBadPairLink = errors.New("invalid pairing link")

const maxPairLinkLen = 2048

// String renders the link as rcsgate://pair?addr=...&token=...&pin=...
func (l PairLink) String() string {
	q := url.Values{}
	for _, a := range l.Addrs {
		q.Add("addr", a)
	}
	q.Set("token", l.Token)
	q.Set("pin", base64.RawURLEncoding.EncodeToString(l.Pin[:]))
	return "rcsgate://pair?" + q.Encode()
}

// ParsePairLink parses and checks a link; it never panics on any input.
func ParsePairLink(s string) (PairLink, error) {
	var l PairLink
	s = strings.TrimSpace(s)
	if len(s) > maxPairLinkLen {
		return l, fmt.Errorf("%w: longer than %d bytes", ErrBadPairLink, maxPairLinkLen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return l, fmt.Errorf("%w: %w", ErrBadPairLink, err)
	}
	if u.Scheme != "rcsgate" || (u.Host != "pair" && u.Opaque != "pair") {
		return l, fmt.Errorf("%w: want rcsgate://pair?..., got scheme %q", ErrBadPairLink, u.Scheme)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return l, fmt.Errorf("%w: query: %w", ErrBadPairLink, err)
	}
	for _, a := range q["addr"] {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return l, fmt.Errorf("%w: address %q is not host:port", ErrBadPairLink, a)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return l, fmt.Errorf("%w: address %q has a bad port", ErrBadPairLink, a)
		}
		l.Addrs = append(l.Addrs, a)
	}
	if len(l.Addrs) == 0 {
		return l, fmt.Errorf("%w: no server address", ErrBadPairLink)
	}
	l.Token = q.Get("token")
	if len(l.Token) < 16 || len(l.Token) > 128 {
		return l, fmt.Errorf("%w: token missing or of the wrong length", ErrBadPairLink)
	}
	pin, err := base64.RawURLEncoding.DecodeString(q.Get("pin"))
	if err != nil || len(pin) != sha256.Size {
		return l, fmt.Errorf("%w: pin must be a base64url SHA-256", ErrBadPairLink)
	}
	copy(l.Pin[:], pin)
	return l, nil
}
