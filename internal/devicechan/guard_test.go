package devicechan

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/internal/pki"
	"github.com/rcsgate/rcsgate/internal/store"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// dialPair opens a pairing connection from local (nil: any) as a stranger
// would: right ALPN, any server certificate.
func dialPair(ctx context.Context, addr string, local *net.UDPAddr) (*quic.Conn, func(), error) {
	udp, err := net.ListenUDP("udp", local)
	if err != nil {
		return nil, nil, err
	}
	tr := &quic.Transport{Conn: udp}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, nil, err
	}
	conn, err := tr.Dial(ctx, raddr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{wire.ALPNPair}, MinVersion: tls.VersionTLS13},
		&quic.Config{KeepAlivePeriod: time.Second, MaxIdleTimeout: time.Minute})
	closeAll := func() {
		if conn != nil {
			_ = conn.CloseWithError(0, "")
		}
		_ = tr.Close()
		_ = udp.Close()
	}
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return conn, closeAll, nil
}

// sendBadRequest opens the pairing stream and sends a request with an
// unknown token, then reads the refusal.
func sendBadRequest(ctx context.Context, conn *quic.Conn) (wire.Msg, error) {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	if err := wire.WriteMsg(str, wire.PairRequest{Token: strings.Repeat("u", 43), CSR: []byte{1}}); err != nil {
		return nil, err
	}
	_ = str.SetReadDeadline(time.Now().Add(5 * time.Second))
	return wire.ReadMsg(str)
}

// TestPairingRefusedWithoutOpenLink: with no pairing link open, the
// pairing protocol is refused in the handshake, and the agent says so.
func TestPairingRefusedWithoutOpenLink(t *testing.T) {
	f := newFixture(t)
	link := wire.PairLink{Addrs: []string{f.addr}, Token: strings.Repeat("u", 43), Pin: f.srv.Pin()}
	_, err := agent.Pair(f.ctx, link, t.TempDir(), agent.PairOptions{})
	if !errors.Is(err, agent.ErrPairingClosed) {
		t.Fatalf("pairing with no link open: %v, want agent.ErrPairingClosed", err)
	}
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.TransportErrorCode(0x100+120) {
		t.Fatalf("want the TLS alert no_application_protocol, got %v", err)
	}
	eventually(t, "nothing held", func() bool { return f.srv.Unauthenticated() == 0 })
	// Once a link is open, pairing works.
	if _, err := agent.Pair(f.ctx, f.link(t, time.Minute), t.TempDir(), agent.PairOptions{}); err != nil {
		t.Fatalf("pairing with an open link: %v", err)
	}
}

// TestRefusedPairingClosedAtOnce: a peer whose pairing request was refused
// and who then just stays (keep-alives) is closed within refuseLinger.
func TestRefusedPairingClosedAtOnce(t *testing.T) {
	f := newFixture(t)
	f.link(t, time.Minute) // pairing is open
	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	conn, done, err := dialPair(ctx, f.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	m, err := sendBadRequest(ctx, conn)
	if e, ok := m.(wire.Error); err != nil || !ok || e.Code != "token_unknown" {
		t.Fatalf("refusal: %v %v, want token_unknown", m, err)
	}
	refused := time.Now()
	select {
	case <-conn.Context().Done():
	case <-ctx.Done():
		t.Fatal("the server kept a refused pairing connection open")
	}
	if d := time.Since(refused); d > refuseLinger+time.Second {
		t.Fatalf("refused connection closed after %s, want within %s", d, refuseLinger)
	}
	eventually(t, "nothing held", func() bool { return f.srv.Unauthenticated() == 0 })
}

// TestSilentPairingClosed: a pairing connection that never sends a request
// is closed after helloDeadline.
func TestSilentPairingClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the request deadline")
	}
	f := newFixture(t)
	f.link(t, time.Minute)
	ctx, cancel := context.WithTimeout(f.ctx, helloDeadline+5*time.Second)
	defer cancel()
	conn, done, err := dialPair(ctx, f.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	select {
	case <-conn.Context().Done():
	case <-ctx.Done():
		t.Fatal("a silent pairing connection was kept")
	}
}

// TestUnauthenticatedCaps: strangers get at most MaxUnauthenticatedPerIP
// connections per address and MaxUnauthenticated overall; more are refused
// in the first packet, and the places come back when they leave.
func TestUnauthenticatedCaps(t *testing.T) {
	f := newFixtureWith(t, func(s *Server) { s.MaxUnauthenticated, s.MaxUnauthenticatedPerIP = 6, 4 })
	agentDir, _ := pairAgent(t, f)
	f.link(t, time.Minute) // pairing open: strangers get through the handshake
	ctx, cancel := context.WithTimeout(f.ctx, 20*time.Second)
	defer cancel()
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	dial := func(ip string) error {
		_, done, err := dialPair(ctx, f.addr, &net.UDPAddr{IP: net.ParseIP(ip)})
		if err == nil {
			closers = append(closers, done)
		}
		return err
	}
	for i := range 4 {
		if err := dial("127.0.0.1"); err != nil {
			t.Fatalf("connection %d from one address: %v", i+1, err)
		}
	}
	err := dial("127.0.0.1")
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("5th connection from one address: %v, want CONNECTION_REFUSED", err)
	}
	// Other addresses (all of 127/8 is loopback on Linux) fill the rest.
	for i, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		if err := dial(ip); err != nil {
			t.Fatalf("connection from %s (%d overall): %v", ip, 5+i, err)
		}
	}
	if err := dial("127.0.0.4"); !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("connection past the overall cap: %v, want CONNECTION_REFUSED", err)
	}
	if n := f.srv.Unauthenticated(); n != 6 {
		t.Fatalf("server counts %d unauthenticated connections, want 6", n)
	}
	// A paired device is not a stranger: it connects even now (its
	// handshake takes a place for a moment; one frees up when it is done).
	closers[0]()
	closers = closers[1:]
	eventually(t, "a place free", func() bool { return f.srv.Unauthenticated() == 5 })
	startAgent(t, f, agentDir)
	eventually(t, "strangers still held", func() bool { return f.srv.Unauthenticated() == 5 })
	for _, c := range closers {
		c()
	}
	closers = nil
	eventually(t, "places given back", func() bool { return f.srv.Unauthenticated() == 0 })
	if err := dial("127.0.0.1"); err != nil {
		t.Fatalf("after the strangers left: %v", err)
	}
}

// TestPairingRefusedForUserWithoutPermission: a link made for someone the
// bridge's permissions do not let in pairs nothing.
func TestPairingRefusedForUserWithoutPermission(t *testing.T) {
	f := newFixture(t)
	f.rec.mu.Lock()
	f.rec.denied = "@u:example.org"
	f.rec.mu.Unlock()
	_, err := agent.Pair(f.ctx, f.link(t, time.Minute), t.TempDir(), agent.PairOptions{})
	if err == nil || !strings.Contains(err.Error(), "not_allowed") {
		t.Fatalf("got %v, want not_allowed", err)
	}
	if devs, _ := f.st.Devices(f.ctx); len(devs) != 0 {
		t.Fatalf("a device was stored: %+v", devs)
	}
}

// syncBuf is a log sink tests can read while the server writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRefusalLogsRateLimited: a revoked phone hammering the server leaves
// a handful of lines, each naming the remote address in the message
// (fail2ban matches "Refused device handshake from <ip>").
func TestRefusalLogsRateLimited(t *testing.T) {
	f := newFixture(t)
	ctx, st, ca, logs := f.ctx, f.st, f.srv.ca, f.logs
	key, _ := pki.NewDeviceKey()
	csr, _ := pki.NewCSR(key)
	der, rid, _ := ca.SignCSR(csr, "lost")
	if err := st.AddDevice(ctx, store.Device{ID: rid.String(), Name: "lost", Owner: "@u:x", CertDER: der}); err != nil {
		t.Fatal(err)
	}
	if err := st.RevokeDevice(ctx, rid.String()); err != nil {
		t.Fatal(err)
	}
	revoked := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	for range 30 {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := quic.DialAddr(dctx, f.addr, &tls.Config{InsecureSkipVerify: true,
			NextProtos: []string{wire.ALPNChannel}, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{revoked}}, nil)
		if err == nil {
			<-conn.Context().Done() // TLS 1.3: the refusal arrives after the client's side finished
		}
		dcancel()
	}
	eventually(t, "refusal logged", func() bool { return strings.Contains(logs.String(), "revoked") })
	lines := strings.Count(logs.String(), `"Refused device handshake from 127.0.0.1"`)
	if lines < 1 || lines > 5 {
		t.Fatalf("%d refusal lines for 30 refused handshakes, want 1 to 5:\n%s", lines, logs.String())
	}
	if !strings.Contains(logs.String(), `"remote":"127.0.0.1:`) || !strings.Contains(logs.String(), `"reason":"revoked"`) {
		t.Fatalf("refusal lines lack the remote address or the reason:\n%s", logs.String())
	}
}

// TestDeliveredTextWipedFromDatabase: once the phone has a message, its
// text is gone from every file of the server's state while the server
// runs (outbox row zeroed, WAL checkpointed and truncated).
func TestDeliveredTextWipedFromDatabase(t *testing.T) {
	f := newFixture(t)
	id, phone, _, _ := runAgent(t, f)
	body := "wipe me " + strings.Repeat("x", 40)
	if err := f.srv.Enqueue(f.ctx, id.String(), wire.Message{ID: "$wipe", Chat: "+12025550123", Text: body}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "phone got it", func() bool { return len(phone.SentMessages()) == 1 })
	eventually(t, "text gone from the server's files", func() bool { return !dirContains(t, f.dir, []byte(body)) })
}

func dirContains(t *testing.T, dir string, needle []byte) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		found = found || bytes.Contains(b, needle)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestResumptionSurvivesPerHandshakeConfig: each handshake gets its own TLS
// config (configFor); a returning device still resumes its session and
// sends its hello as 0-RTT.
func TestResumptionSurvivesPerHandshakeConfig(t *testing.T) {
	f := newFixture(t)
	id, _, a, _ := runAgent(t, f)
	first := f.srv.session(id.String())
	if first == nil {
		t.Fatal("no session")
	}
	f.srv.closeAll() // as a restart would, but the ticket keys stay
	eventually(t, "a new session", func() bool {
		s := f.srv.session(id.String())
		return s != nil && s != first && a.Connected()
	})
	if !f.srv.session(id.String()).conn.ConnectionState().Used0RTT {
		t.Fatal("the device did not resume with 0-RTT")
	}
}

func TestSourceOf(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"192.0.2.7:4443", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:4443", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:4443", "2001:db8:1:2::"},
		{"[2001:db8:1:2:bbbb::9]:1", "2001:db8:1:2::"}, // same /64: one source
		{"[2001:db8:1:3::1]:1", "2001:db8:1:3::"},
	}
	for _, tc := range tests {
		a, err := net.ResolveUDPAddr("udp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceOf(a).String(); got != tc.want {
			t.Errorf("sourceOf(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}
