package chanquic

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"sync"
	"time"
)

// ReplayGuard makes a server's session tickets single-use for 0-RTT (RFC
// 8446 §8.1): the first connection that presents a ticket may send early
// data, any later one with the same ticket resumes without it (a full
// round trip later, but authenticated by the handshake). A replayed first
// flight — an attacker on the path re-sending a device's captured
// ClientHello and 0-RTT packets — is therefore never read a second time.
// Tickets older than MaxAge carry no early data either, which bounds what
// the guard must remember: it keeps the hash of each ticket used, until that
// ticket is too old to matter.
//
// Ticket keys live only in the process (crypto/tls generates them), so
// tickets from before a restart cannot be read at all: forgetting the used
// ones in a restart opens nothing.
type ReplayGuard struct {
	// MaxAge: tickets older than this get no early data (0: 24 h).
	MaxAge time.Duration
	// Max bounds the tickets remembered (0: 20,000, about 1 MB); when full,
	// early data is refused until old entries expire (failing safe).
	Max int

	now       func() time.Time
	mu        sync.Mutex
	seen      map[[32]byte]time.Time // ticket hash → when it stops mattering
	lastPrune time.Time
}

const (
	defaultGuardAge = 24 * time.Hour
	defaultGuardMax = 20_000
	// issuedTag prefixes the issue time the guard stores in a ticket
	// (tls.SessionState.Extra; quic-go keeps its own entry there too).
	issuedTag = "rcsgate-issued-v1\x00"
)

// Install makes conf's tickets carry their issue time and be single-use for
// early data. conf must not set WrapSession or UnwrapSession itself.
func (g *ReplayGuard) Install(conf *tls.Config) {
	conf.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = append(ss.Extra, issuedExtra(g.clock()))
		return conf.EncryptTicket(cs, ss)
	}
	conf.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := conf.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			return ss, err
		}
		if ss.EarlyData && !g.Admit(identity, issuedAt(ss.Extra)) {
			ss.EarlyData = false // resume, but without 0-RTT
		}
		return ss, nil
	}
}

// Admit reports whether a ticket issued at issued may carry early data now,
// and records it as used.
func (g *ReplayGuard) Admit(ticket []byte, issued time.Time) bool {
	now := g.clock()
	age := g.MaxAge
	if age <= 0 {
		age = defaultGuardAge
	}
	limit := g.Max
	if limit <= 0 {
		limit = defaultGuardMax
	}
	if issued.IsZero() || issued.After(now.Add(time.Minute)) || now.Sub(issued) > age {
		return false
	}
	h := sha256.Sum256(ticket)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen == nil {
		g.seen = map[[32]byte]time.Time{}
	}
	if len(g.seen) >= limit || now.Sub(g.lastPrune) > time.Minute {
		g.lastPrune = now
		for k, until := range g.seen {
			if now.After(until) {
				delete(g.seen, k)
			}
		}
	}
	if _, used := g.seen[h]; used || len(g.seen) >= limit {
		return false
	}
	g.seen[h] = issued.Add(age)
	return true
}

func (g *ReplayGuard) clock() time.Time {
	if g.now != nil {
		return g.now()
	}
	return time.Now()
}

func issuedExtra(t time.Time) []byte {
	b := append([]byte(issuedTag), make([]byte, 8)...)
	binary.BigEndian.PutUint64(b[len(issuedTag):], uint64(t.UnixNano()))
	return b
}

// issuedAt finds the issue time in a ticket's extra data (zero if absent:
// such a ticket gets no early data).
func issuedAt(extra [][]byte) time.Time {
	for _, e := range extra {
		if len(e) == len(issuedTag)+8 && string(e[:len(issuedTag)]) == issuedTag {
			return time.Unix(0, int64(binary.BigEndian.Uint64(e[len(issuedTag):])))
		}
	}
	return time.Time{}
}
