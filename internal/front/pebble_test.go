package front

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// pebble is a running Pebble ACME CA on loopback.
type pebble struct {
	dir     string // ACME directory URL
	mgmt    string // management API base URL
	apiPool *x509.CertPool
	apiPEM  []byte // the API's certificate, to trust it from a file
	logPath string
	client  *http.Client
}

// findPebble locates the pinned Pebble installed by `make tools`.
func findPebble(t *testing.T) string {
	t.Helper()
	binDir, err := testpeer.FindBinDir()
	if err != nil {
		t.Fatalf("pebble: %v (run make tools)", err)
	}
	bin := filepath.Join(binDir, "pebble")
	if st, err := os.Stat(bin); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		t.Fatalf("pebble not found at %s: run make tools", bin)
	}
	return bin
}

// startDNS answers A queries for names with 127.0.0.1 (no AAAA), over
// TCP as Pebble's -dnsserver client asks, on a loopback port.
func startDNS(t *testing.T, names ...string) string {
	t.Helper()
	known := map[string]bool{}
	for _, n := range names {
		known[dns.Fqdn(n)] = true
	}
	ln := listen(t)
	started := make(chan struct{})
	srv := &dns.Server{
		Listener:          ln,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Authoritative = true
			for _, q := range r.Question {
				if !known[strings.ToLower(q.Name)] {
					m.Rcode = dns.RcodeNameError
					continue
				}
				if q.Qtype == dns.TypeA {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
						A:   net.IPv4(127, 0, 0, 1),
					})
				}
			}
			_ = w.WriteMsg(m)
		}),
	}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// pebbleAPICert makes the TLS pair Pebble serves its API with (for
// 127.0.0.1), so nothing is copied from Pebble's source tree.
func pebbleAPICert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool, certPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebble test API"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile = writeFile(t, dir, "api-cert.pem", certPEM)
	keyFile = writeFile(t, dir, "api-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool, certPEM
}

// startPebble runs Pebble validating challenges on httpPort/tlsPort of
// 127.0.0.1 (names resolved through dnsAddr), issuing certificates valid
// for validity.
func startPebble(t *testing.T, httpPort, tlsPort int, dnsAddr string, validity time.Duration) *pebble {
	t.Helper()
	bin := findPebble(t)
	dir := t.TempDir()
	certFile, keyFile, pool, apiPEM := pebbleAPICert(t, dir)
	p := &pebble{apiPool: pool, apiPEM: apiPEM, logPath: filepath.Join(dir, "pebble.log")}
	p.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(p.logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("pebble log (tail):\n%s", b)
		}
	})

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a picked port may be taken meanwhile
		apiPort, err1 := testpeer.FreeLoopbackPort()
		mgmtPort, err2 := testpeer.FreeLoopbackPort()
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		conf := map[string]any{"pebble": map[string]any{
			"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", apiPort),
			"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmtPort),
			"certificate":                    certFile,
			"privateKey":                     keyFile,
			"httpPort":                       httpPort,
			"tlsPort":                        tlsPort,
			"ocspResponderURL":               "",
			"externalAccountBindingRequired": false,
			"retryAfter":                     map[string]int{"authz": 0, "order": 0},
			"keyAlgorithm":                   "ecdsa",
			"profiles": map[string]any{"default": map[string]any{
				"description": "short-lived, for renewal tests", "validityPeriod": int(validity / time.Second),
			}},
		}}
		b, _ := json.MarshalIndent(conf, "", "  ")
		confPath := writeFile(t, dir, "pebble-config.json", b)
		logFile, err := os.Create(p.logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-config", confPath, "-dnsserver", dnsAddr)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(),
			"PEBBLE_VA_NOSLEEP=1",      // no random 0-5 s sleep before validating
			"PEBBLE_VA_ALWAYS_VALID=0", // really validate the challenges
			"PEBBLE_AUTHZREUSE=0",      // every order (renewals too) validates afresh
			"PEBBLE_WFE_NONCEREJECT=0", // no random badNonce rejections
		)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		if err := cmd.Start(); err != nil {
			logFile.Close()
			t.Fatal(err)
		}
		logFile.Close()
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		p.dir = fmt.Sprintf("https://127.0.0.1:%d/dir", apiPort)
		p.mgmt = fmt.Sprintf("https://127.0.0.1:%d", mgmtPort)

		ready := func() bool {
			for _, u := range []string{p.dir, p.mgmt + "/roots/0"} {
				resp, err := p.client.Get(u)
				if err != nil {
					lastErr = err
					return false
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					lastErr = fmt.Errorf("%s: %s", u, resp.Status)
					return false
				}
			}
			return true
		}
		deadline := time.NewTimer(20 * time.Second)
		tick := time.NewTicker(25 * time.Millisecond)
		ok := false
	wait:
		for {
			if ready() {
				ok = true
				break
			}
			select {
			case <-exited:
				lastErr = fmt.Errorf("pebble exited early")
				break wait
			case <-deadline.C:
				lastErr = fmt.Errorf("pebble not ready in 20s: %v", lastErr)
				break wait
			case <-tick.C:
			}
		}
		deadline.Stop()
		tick.Stop()
		stop := func() {
			_ = cmd.Process.Kill()
			<-exited
		}
		if ok {
			t.Cleanup(stop)
			return p
		}
		stop()
	}
	t.Fatalf("starting pebble: %v", lastErr)
	return nil
}

// root is the root of Pebble's issuance hierarchy (random per run).
func (p *pebble) root(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pebble root: %s %v", resp.Status, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: no PEM in %q", b)
	}
	return pool
}

// log is Pebble's output so far.
func (p *pebble) log(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// requestLog wraps a listener and records the request line of every
// connection (for plain HTTP: what Pebble asked port 80).
type requestLog struct {
	net.Listener
	mu    sync.Mutex
	lines []string
}

func (l *requestLog) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &peekConn{Conn: c, log: l}, nil
}

func (l *requestLog) seen() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

type peekConn struct {
	net.Conn
	log  *requestLog
	buf  []byte
	done bool
}

func (c *peekConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.done && n > 0 {
		c.buf = append(c.buf, p[:n]...)
		if line, _, ok := strings.Cut(string(c.buf), "\r\n"); ok || len(c.buf) > 4096 {
			c.done = true
			c.log.mu.Lock()
			c.log.lines = append(c.log.lines, line)
			c.log.mu.Unlock()
		}
	}
	return n, err
}
