package front

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// certmagicDefaultDir is where certmagic's package default storage points
// (computed from $HOME at init, as certmagic does): the front must never
// write there (it fails under DynamicUser).
func certmagicDefaultDir() string {
	base := filepath.Join(os.Getenv("HOME"), ".local", "share")
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		base = x
	}
	return filepath.Join(base, "certmagic")
}

// TestACMEHTTP01 and TestACMETLSALPN01 run the front against a real Pebble
// on loopback, one challenge type each: a certificate is obtained, served
// (verified against Pebble's issuance root), renewed (a new serial served),
// and Matrix requests go through the proxy.
func TestACMEHTTP01(t *testing.T)    { testACME(t, "http-01") }
func TestACMETLSALPN01(t *testing.T) { testACME(t, "tls-alpn-01") }

func testACME(t *testing.T, challenge string) {
	defaultDir := certmagicDefaultDir()
	_, statErr := os.Stat(defaultDir)
	defaultDirExisted := statErr == nil

	// distinct names per test: certmagic keeps challenge and retry state per name, process-wide
	domain := "matrix-" + challenge + ".rcsgate.test"
	dnsAddr := startDNS(t, domain)
	httpsLn := listen(t)
	httpLn := &requestLog{Listener: listen(t)}
	const validity = 12 * time.Second
	peb := startPebble(t, portOf(httpLn), portOf(httpsLn), dnsAddr, validity)
	hs := fakeHomeserver(t)
	log, logs := testLogger(t)

	// certmagic's job goroutines may still touch storage for a moment after
	// Serve returns; keep the directory out of t.TempDir's strict cleanup.
	storageRoot, err := os.MkdirTemp("", "front-certmagic-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(storageRoot) })
	storage := filepath.Join(storageRoot, "certmagic")

	var mu sync.Mutex
	issued := map[string]bool{}
	ev := newEvents()
	cfg := Config{
		Mode: ModeACME, Domain: domain, Email: "ops@rcsgate.test",
		CA: peb.dir, CARoots: peb.apiPool, StorageDir: storage, Homeserver: hs.URL,
		DisableHTTPChallenge:    challenge != "http-01",
		DisableTLSALPNChallenge: challenge != "tls-alpn-01",
		RenewalWindowRatio:      0.75, // with 12 s certificates: renew 3 s after issuance
		RenewCheckInterval:      200 * time.Millisecond,
		OnEvent: func(e Event) {
			if e.Cert != nil && (e.Kind == EventObtained || e.Kind == EventRenewed) {
				mu.Lock()
				issued[e.Cert.Serial] = true
				mu.Unlock()
			}
			ev.on(e)
		},
		Log: log,
	}
	wasIssued := func(serial string) bool {
		mu.Lock()
		defer mu.Unlock()
		return issued[serial]
	}

	f, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	serve(t, f, httpsLn, httpLn)

	// obtained
	obtained := ev.wait(t, EventObtained, 60*time.Second)
	t.Logf("%s: certificate obtained %s after Serve started (ACME order took %s)", challenge, time.Since(start).Round(time.Millisecond), obtained.Took.Round(time.Millisecond))
	if obtained.Cert == nil || obtained.Renewal {
		t.Fatalf("obtained event: %+v", obtained)
	}
	first := obtained.Cert.Serial
	ev.wait(t, EventLoaded, 10*time.Second) // in the cache, so in service

	// served, and it verifies against Pebble's root for the domain
	roots := peb.root(t)
	verify := func(chain []*x509.Certificate) {
		t.Helper()
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: domain, Roots: roots, Intermediates: inter}); err != nil {
			t.Fatalf("served certificate does not verify: %v", err)
		}
		if !wasIssued(chain[0].SerialNumber.Text(16)) {
			t.Fatalf("served serial %s was not reported as issued", chain[0].SerialNumber.Text(16))
		}
	}
	verify(servedChain(t, httpsLn.Addr().String(), domain))
	// a client without SNI gets it too (DefaultServerName)
	verify(servedChain(t, httpsLn.Addr().String(), ""))
	if infos := f.Certificates(); len(infos) == 0 || !wasIssued(infos[0].Serial) || infos[0].IssuerKey == "" || infos[0].NotAfter.IsZero() {
		t.Errorf("Certificates() = %+v", infos)
	}
	if info, err := Inspect(context.Background(), cfg); err != nil || !wasIssued(info.Serial) {
		t.Errorf("Inspect = %+v, %v", info, err)
	}

	// a Matrix request through the proxy, .well-known, HSTS
	client := clientFor(httpsLn.Addr().String(), roots)
	base := "https://" + domain
	resp, body := get(t, client, "GET", base+"/_matrix/client/versions", nil, nil)
	if resp.StatusCode != 200 || string(body) != `{"versions":["v1.11","v1.12"]}` || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Errorf("versions through the front: %d %s (HSTS %q)", resp.StatusCode, body, resp.Header.Get("Strict-Transport-Security"))
	}
	for path, want := range map[string]string{
		"/.well-known/matrix/client": `{"m.homeserver":{"base_url":"https://` + domain + `"}}`,
		"/.well-known/matrix/server": `{"m.server":"` + domain + `:443"}`,
	} {
		if resp, body := get(t, client, "GET", base+path, nil, nil); resp.StatusCode != 200 || string(body) != want ||
			resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s %v", path, resp.StatusCode, body, resp.Header)
		}
	}

	// port 80: 308 to https with path and query
	resp, _ = get(t, clientFor(httpLn.Addr().String(), nil), "POST", "http://"+domain+"/_matrix/client/v3/login?x=1", strings.NewReader("{}"), nil)
	if resp.StatusCode != 308 || resp.Header.Get("Location") != base+"/_matrix/client/v3/login?x=1" {
		t.Errorf("port 80: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	// the challenge went through our listeners
	var challengeLines []string
	for _, l := range httpLn.seen() {
		if strings.HasPrefix(l, "GET /.well-known/acme-challenge/") {
			challengeLines = append(challengeLines, l)
		}
	}
	pebbleLog := peb.log(t)
	switch challenge {
	case "http-01":
		if len(challengeLines) == 0 {
			t.Errorf("no HTTP-01 request reached the port-80 listener; it saw %q", httpLn.seen())
		}
		mustContain(t, "pebble log", pebbleLog, "Attempting to validate w/ HTTP", "set VALID by completed challenge")
		mustContain(t, "front log", logs.String(), `"challenge":"http-01"`, "served key authentication")
	case "tls-alpn-01":
		if len(challengeLines) != 0 {
			t.Errorf("HTTP-01 requests with the HTTP challenge disabled: %q", challengeLines)
		}
		mustContain(t, "pebble log", pebbleLog, "tls-alpn-01", "set VALID by completed challenge")
		mustContain(t, "front log", logs.String(), `"challenge":"tls-alpn-01"`, "served key authentication certificate")
	}

	// renewed: a new serial is served
	renewed := ev.wait(t, EventRenewed, 60*time.Second)
	if renewed.Cert == nil || renewed.Cert.Serial == first {
		t.Fatalf("renewed event: %+v (first serial %s)", renewed, first)
	}
	t.Logf("%s: renewal took %s", challenge, renewed.Took.Round(time.Millisecond))
	var served []*x509.Certificate
	waitFor(t, 10*time.Second, "the renewed certificate in service", func() bool {
		served = servedChain(t, httpsLn.Addr().String(), domain)
		return served[0].SerialNumber.Text(16) != first
	})
	verify(served)
	if resp, _ := get(t, clientFor(httpsLn.Addr().String(), roots), "GET", base+"/_matrix/client/versions", nil, nil); resp.StatusCode != 200 {
		t.Errorf("after renewal: %d", resp.StatusCode)
	}

	// certmagic's own log came through zerolog; nothing in certmagic's default storage
	mustContain(t, "log", logs.String(), `"component":"certmagic"`, `"message":"certificate obtained"`, `"message":"certificate renewed"`)
	if st, err := os.Stat(storage); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("storage dir: %v %v", st, err)
	}
	if _, err := os.Stat(defaultDir); !defaultDirExisted && err == nil {
		t.Errorf("certmagic wrote to its default storage %s", defaultDir)
	}
}

// TestACMERestartReusesStoredCertificate: a restarted front serves the
// certificate kept in StorageDir without a new ACME order.
func TestACMERestartReusesStoredCertificate(t *testing.T) {
	domain := "matrix-restart.rcsgate.test"
	dnsAddr := startDNS(t, domain)
	https1, http1 := listen(t), listen(t)
	// a long validity, so neither the ratio nor ARI asks for a renewal
	peb := startPebble(t, portOf(http1), portOf(https1), dnsAddr, 30*24*time.Hour)
	hs := fakeHomeserver(t)
	storageRoot, err := os.MkdirTemp("", "front-certmagic-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(storageRoot) })
	// the CA roots as a file this time, as the config file gives them
	rootsFile := filepath.Join(storageRoot, "pebble-api.pem")
	if err := os.WriteFile(rootsFile, peb.apiPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	log, _ := testLogger(t)
	ev := newEvents()
	cfg := Config{
		Mode: ModeACME, Domain: domain, CA: peb.dir, CARootsFile: rootsFile,
		StorageDir: filepath.Join(storageRoot, "certmagic"), Homeserver: hs.URL,
		DisableTLSALPNChallenge: true, OnEvent: ev.on, Log: log,
	}

	f1, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx1, stop1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { done1 <- f1.Serve(ctx1, https1, http1) }()
	first := ev.wait(t, EventObtained, 60*time.Second).Cert.Serial
	ev.wait(t, EventLoaded, 10*time.Second)
	stop1()
	if err := <-done1; err != nil {
		t.Fatalf("first Serve: %v", err)
	}

	f2, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	https2 := listen(t)
	serve(t, f2, https2, listen(t))
	// storage is read synchronously before any order could start
	select {
	case e := <-ev.ch:
		if e.Kind != EventLoaded || e.Cert == nil || e.Cert.Serial != first {
			t.Fatalf("first event after restart: %+v, want loaded serial %s", e, first)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event after restart")
	}
	if got := servedChain(t, https2.Addr().String(), domain)[0].SerialNumber.Text(16); got != first {
		t.Errorf("after restart served %s, want %s", got, first)
	}
}
