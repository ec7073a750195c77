package chanquic

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func TestReplayGuardAdmit(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	g := &ReplayGuard{MaxAge: time.Hour, Max: 3, now: func() time.Time { return now }}
	fresh := now.Add(-time.Minute)
	for _, tc := range []struct {
		name   string
		ticket string
		issued time.Time
		want   bool
	}{
		{"first use", "a", fresh, true},
		{"second use of the same ticket", "a", fresh, false},
		{"another ticket", "b", fresh, true},
		{"too old", "c", now.Add(-2 * time.Hour), false},
		{"no issue time", "d", time.Time{}, false},
		{"issued in the future", "e", now.Add(time.Hour), false},
		{"third ticket fills the register", "f", fresh, true},
		{"register full: refused", "g", fresh, false},
	} {
		if got := g.Admit([]byte(tc.ticket), tc.issued); got != tc.want {
			t.Errorf("%s: Admit = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Once the remembered tickets are too old to be used, room frees up;
	// the old ones are refused for their age, not remembered.
	now = now.Add(2 * time.Hour)
	if !g.Admit([]byte("h"), now) {
		t.Fatal("after expiry a new ticket must be admitted")
	}
	if g.Admit([]byte("a"), fresh) {
		t.Fatal("an expired ticket must stay refused")
	}
}

func TestIssuedExtraRoundTrip(t *testing.T) {
	at := time.Unix(0, 1_700_000_000_123_456_789)
	got := issuedAt([][]byte{[]byte("quic-go stuff"), issuedExtra(at)})
	if !got.Equal(at) {
		t.Fatalf("issuedAt = %v, want %v", got, at)
	}
	if !issuedAt([][]byte{[]byte(issuedTag)}).IsZero() {
		t.Fatal("a truncated entry must read as no issue time")
	}
}

// frozenCache hands out the first ticket it got for ever, like a client
// (or an attacker) presenting the same ticket again.
type frozenCache struct {
	mu  sync.Mutex
	cs  *tls.ClientSessionState
	got chan struct{} // closed at the first ticket
}

func (c *frozenCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}

func (c *frozenCache) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil && cs != nil {
		c.cs = cs
		close(c.got)
	}
}

// Over real QUIC: a ticket's first resumption carries 0-RTT data, the same
// ticket again resumes without it, and the server reads the early bytes once.
func TestReplayGuardOverQUIC(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "s"}, DNSNames: []string{"s"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	srvTLS := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"t"}}
	(&ReplayGuard{}).Install(srvTLS)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	defer tr.Close()
	ln, err := tr.ListenEarly(srvTLS, ServerConfig(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type seen struct {
		early bool
		data  string
	}
	got := make(chan seen, 8)
	go func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				early := conn.ConnectionState().Used0RTT
				str, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				b, _ := io.ReadAll(str)
				got <- seen{early, string(b)}
				_, _ = str.Write([]byte("ok"))
				_ = str.Close()
			}()
		}
	}()
	cache := &frozenCache{got: make(chan struct{})}
	dial := func(msg string) (used0RTT, resumed bool) {
		t.Helper()
		conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"t"}, ClientSessionCache: cache}
		conn, err := quic.DialAddrEarly(ctx, pc.LocalAddr().String(), conf, ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		str, err := conn.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = str.Write([]byte(msg))
		_ = str.Close()
		<-conn.HandshakeComplete()
		cs := conn.ConnectionState()
		if !cs.Used0RTT && cs.TLS.DidResume {
			// Early data refused: it never reached the server; send it again.
			if conn, err = conn.NextConnection(ctx); err != nil {
				t.Fatal(err)
			}
			if str, err = conn.OpenStream(); err != nil {
				t.Fatal(err)
			}
			_, _ = str.Write([]byte(msg))
			_ = str.Close()
		}
		if _, err := io.ReadAll(str); err != nil {
			t.Fatal(err)
		}
		select { // the next dial needs the ticket
		case <-cache.got:
		case <-ctx.Done():
			t.Fatal("no session ticket")
		}
		return cs.Used0RTT, cs.TLS.DidResume
	}
	if early, _ := dial("full"); early {
		t.Fatal("a first connection cannot use 0-RTT")
	}
	if s := <-got; s.early || s.data != "full" {
		t.Fatalf("server saw %+v", s)
	}
	if early, resumed := dial("first resumption"); !early || !resumed {
		t.Fatalf("first use of a ticket: 0-RTT %v, resumed %v; want both", early, resumed)
	}
	if s := <-got; !s.early || s.data != "first resumption" {
		t.Fatalf("server saw %+v, want the early data", s)
	}
	if early, resumed := dial("same ticket again"); early || !resumed {
		t.Fatalf("second use of a ticket: 0-RTT %v, resumed %v; want resumed without 0-RTT", early, resumed)
	}
	if s := <-got; s.early || s.data != "same ticket again" {
		t.Fatalf("server saw %+v, want the data after the handshake", s)
	}
}
