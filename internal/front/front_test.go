package front

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	good := Config{Mode: ModeACME, Domain: "matrix.example.org", StorageDir: "/var/lib/rcsgate/certmagic", Homeserver: "http://127.0.0.1:6167"}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no mode", func(c *Config) { c.Mode = "" }, "mode is required"},
		{"bad mode", func(c *Config) { c.Mode = "letsencrypt" }, `mode "letsencrypt"`},
		{"no domain", func(c *Config) { c.Domain = "" }, "the public host name"},
		{"url as domain", func(c *Config) { c.Domain = "https://matrix.example.org" }, "without scheme"},
		{"domain with port", func(c *Config) { c.Domain = "matrix.example.org:443" }, "no port"},
		{"upper case", func(c *Config) { c.Domain = "Matrix.example.org" }, "lower case"},
		{"wildcard", func(c *Config) { c.Domain = "*.example.org" }, "wildcards"},
		{"ip in acme", func(c *Config) { c.Domain = "192.0.2.7" }, "selfsigned"},
		{"internal name with LE", func(c *Config) { c.Domain = "matrix.local" }, "internal names"},
		{"no storage", func(c *Config) { c.StorageDir = "" }, "storage dir is required in acme mode"},
		{"no homeserver", func(c *Config) { c.Homeserver = "" }, "homeserver URL is required"},
		{"homeserver no scheme", func(c *Config) { c.Homeserver = "127.0.0.1:6167" }, "want http://"},
		{"homeserver query", func(c *Config) { c.Homeserver = "http://127.0.0.1:6167/?x=1" }, "no query"},
		{"http CA", func(c *Config) { c.CA = "http://127.0.0.1:14000/dir" }, "https:// URL"},
		{"bad email", func(c *Config) { c.Email = "Admin <a@b.c>" }, "plain address"},
		{"both challenges off", func(c *Config) { c.DisableHTTPChallenge, c.DisableTLSALPNChallenge = true, true }, "both ACME challenges"},
		{"ratio", func(c *Config) { c.RenewalWindowRatio = 1.5 }, "renewal window ratio"},
		{"port", func(c *Config) { c.ChallengePorts.HTTP = 70000 }, "out of range"},
		{"server name", func(c *Config) { c.ServerName = "example.org:x" }, "server name"},
		{"provided without files", func(c *Config) { c.Mode = ModeProvided }, "certificate file and a key file"},
		{"selfsigned without storage", func(c *Config) { c.Mode, c.StorageDir = ModeSelfSigned, "" }, "storage dir is required in selfsigned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// several problems are reported together
	err := (&Config{Mode: ModeACME}).Validate()
	for _, want := range []string{"public host name", "homeserver URL is required", "storage dir"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("empty acme config: %v, want %q among the errors", err, want)
		}
	}
	ok := []Config{
		{Mode: ModeSelfSigned, Domain: "192.168.1.20", StorageDir: "x", Homeserver: "http://127.0.0.1:8008"},
		{Mode: ModeSelfSigned, Domain: "rcsgate.local", StorageDir: "x", Homeserver: "http://[::1]:8008"},
		{Mode: ModeProvided, Domain: "m.example.org", CertFile: "c", KeyFile: "k", Homeserver: "https://hs.internal:8448", ServerName: "example.org:8448"},
		{Mode: ModeACME, Domain: "matrix.rcsgate.test", CA: "https://127.0.0.1:14000/dir", StorageDir: "x", Homeserver: "http://127.0.0.1:1", Email: "ops@example.org", RenewalWindowRatio: 0.5},
	}
	for _, c := range ok {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestSelfSignedGeneratedAndReused(t *testing.T) {
	log, logs := testLogger(t)
	hs := fakeHomeserver(t)
	dir := t.TempDir()
	cfg := Config{Mode: ModeSelfSigned, Domain: "rcsgate.lan", StorageDir: dir, Homeserver: hs.URL, Log: log}

	f, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	https, http_ := listen(t), listen(t)
	serve(t, f, https, http_)
	chain := servedChain(t, https.Addr().String(), "rcsgate.lan")
	fp := Fingerprint(chain[0].Raw)
	infos := f.Certificates()
	if len(infos) != 1 || infos[0].SHA256 != fp {
		t.Fatalf("Certificates() = %+v, served fingerprint %s", infos, fp)
	}
	if err := chain[0].VerifyHostname("rcsgate.lan"); err != nil {
		t.Errorf("served cert: %v", err)
	}
	if chain[0].Issuer.String() != chain[0].Subject.String() || chain[0].CheckSignature(chain[0].SignatureAlgorithm, chain[0].RawTBSCertificate, chain[0].Signature) != nil {
		t.Errorf("served cert is not self-signed: issuer %s", chain[0].Issuer)
	}
	if life := chain[0].NotAfter.Sub(chain[0].NotBefore); life > 826*24*time.Hour {
		t.Errorf("validity %s exceeds 825 days", life)
	}
	mustContain(t, "log", logs.String(), fp, "self-signed certificate generated")
	st, err := os.Stat(filepath.Join(dir, SelfSignedKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	// a client without SNI (an IP in the URL) gets the same certificate
	if got := Fingerprint(servedChain(t, https.Addr().String(), "")[0].Raw); got != fp {
		t.Errorf("no-SNI handshake served %s", got)
	}
	// no HSTS in this mode: it would forbid clicking through the warning
	resp, _ := get(t, clientFor(https.Addr().String(), nil), "GET", "https://rcsgate.lan/_matrix/client/versions", nil, nil)
	if resp.StatusCode != 200 || resp.Header.Get("Strict-Transport-Security") != "" {
		t.Errorf("selfsigned: status %d, HSTS %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
	}

	// restart: same certificate
	log2, logs2 := testLogger(t)
	cfg.Log = log2
	f2, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	https2 := listen(t)
	serve(t, f2, https2, nil)
	if got := Fingerprint(servedChain(t, https2.Addr().String(), "rcsgate.lan")[0].Raw); got != fp {
		t.Errorf("after restart served %s, want the same %s", got, fp)
	}
	mustContain(t, "log after restart", logs2.String(), fp, "self-signed certificate reused")
	if info, err := Inspect(context.Background(), cfg); err != nil || info.SHA256 != fp {
		t.Errorf("Inspect = %+v, %v", info, err)
	}

	// another domain: a new certificate
	cfg.Domain = "192.168.7.7"
	f3, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	c3 := f3.Certificates()[0]
	if c3.SHA256 == fp || len(c3.Names) != 1 || c3.Names[0] != "192.168.7.7" {
		t.Errorf("for an IP: %+v", c3)
	}
}

func TestProvidedServedAndReloaded(t *testing.T) {
	log, _ := testLogger(t)
	hs := fakeHomeserver(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	c1, k1 := ca.issue(t, 1001, "matrix.example.test")
	certFile, keyFile := writeFile(t, dir, "fullchain.pem", c1), writeFile(t, dir, "privkey.pem", k1)
	ev := newEvents()
	cfg := Config{
		Mode: ModeProvided, Domain: "matrix.example.test", CertFile: certFile, KeyFile: keyFile,
		Homeserver: hs.URL, ReloadCheckInterval: time.Nanosecond, OnEvent: ev.on, Log: log,
	}
	f, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	https := listen(t)
	serve(t, f, https, nil)
	addr := https.Addr().String()

	// the served certificate verifies against our CA for the domain
	client := clientFor(addr, ca.pool)
	resp, body := get(t, client, "GET", "https://matrix.example.test/_matrix/client/versions", nil, nil)
	if resp.StatusCode != 200 || string(body) != `{"versions":["v1.11","v1.12"]}` {
		t.Fatalf("versions through the proxy: %d %s", resp.StatusCode, body)
	}
	if got := servedChain(t, addr, "matrix.example.test")[0].SerialNumber.Int64(); got != 1001 {
		t.Fatalf("served serial %d, want 1001", got)
	}
	if info, err := Inspect(context.Background(), cfg); err != nil || info.Serial != "3e9" {
		t.Errorf("Inspect = %+v, %v", info, err)
	}

	// renewal tool replaces both files: the next handshake serves the new pair
	c2, k2 := ca.issue(t, 1002, "matrix.example.test")
	replaceFile(t, keyFile, k2)
	replaceFile(t, certFile, c2)
	if got := servedChain(t, addr, "matrix.example.test")[0].SerialNumber.Int64(); got != 1002 {
		t.Fatalf("after replacing the files served serial %d, want 1002", got)
	}
	if e := ev.wait(t, EventReloaded, 5*time.Second); e.Cert == nil || e.Cert.Serial != "3ea" {
		t.Errorf("reloaded event %+v", e)
	}
	if infos := f.Certificates(); infos[0].Serial != "3ea" {
		t.Errorf("Certificates() = %+v", infos)
	}

	// a broken replacement (key of another cert) is refused, the last good pair stays
	_, k3 := ca.issue(t, 1003, "matrix.example.test")
	replaceFile(t, keyFile, k3)
	if got := servedChain(t, addr, "matrix.example.test")[0].SerialNumber.Int64(); got != 1002 {
		t.Fatalf("after a broken replacement served serial %d, want 1002", got)
	}
	if e := ev.wait(t, EventFailed, 5*time.Second); e.Err == nil {
		t.Errorf("failed event without error: %+v", e)
	}
}

func TestProxyRoutesAndWellKnown(t *testing.T) {
	log, logs := testLogger(t)
	hs := fakeHomeserver(t)
	ca := newTestCA(t)
	dir := t.TempDir()
	c, k := ca.issue(t, 7, "matrix.example.test")
	cfg := Config{
		Mode: ModeProvided, Domain: "matrix.example.test", ServerName: "example.test",
		CertFile: writeFile(t, dir, "c.pem", c), KeyFile: writeFile(t, dir, "k.pem", k),
		Homeserver: hs.URL, Log: log,
	}
	f, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	https, plain := listen(t), listen(t)
	serve(t, f, https, plain)
	client := clientFor(https.Addr().String(), ca.pool)
	base := "https://matrix.example.test"
	mustContain(t, "log", logs.String(), `"server_name":"example.test"`, `.well-known/matrix`)

	// .well-known: exact bodies, JSON, CORS, HSTS
	for path, want := range map[string]string{
		"/.well-known/matrix/client": `{"m.homeserver":{"base_url":"https://matrix.example.test"}}`,
		"/.well-known/matrix/server": `{"m.server":"matrix.example.test:443"}`,
	} {
		resp, body := get(t, client, "GET", base+path, nil, nil)
		if resp.StatusCode != 200 || string(body) != want {
			t.Errorf("%s: %d %q, want %q", path, resp.StatusCode, body, want)
		}
		for h, v := range map[string]string{
			"Content-Type": "application/json", "Access-Control-Allow-Origin": "*",
			"Strict-Transport-Security": hstsValue,
		} {
			if got := resp.Header.Get(h); got != v {
				t.Errorf("%s: %s = %q, want %q", path, h, got, v)
			}
		}
		resp, _ = get(t, client, "OPTIONS", base+path, nil, nil)
		if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s OPTIONS: %d", path, resp.StatusCode)
		}
	}

	// the proxy: method, body, query, escaped path, Host kept, X-Forwarded-* from the connection
	var seen seenRequest
	resp, body := get(t, client, "PUT", base+"/_matrix/client/v3/rooms/%21r%3Aexample.test/send/m.room.message/t1?access_token=secret&x=1",
		strings.NewReader(`{"body":"hi"}`), http.Header{"X-Forwarded-For": {"6.6.6.6"}, "X-Forwarded-Proto": {"http"}})
	if resp.StatusCode != 200 {
		t.Fatalf("proxied PUT: %d %s", resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, &seen); err != nil {
		t.Fatal(err)
	}
	want := seenRequest{
		Method: "PUT", Host: "matrix.example.test", Path: "/_matrix/client/v3/rooms/!r:example.test/send/m.room.message/t1",
		RawPath: "/_matrix/client/v3/rooms/%21r%3Aexample.test/send/m.room.message/t1", Query: "access_token=secret&x=1",
		Body: `{"body":"hi"}`, XFF: "127.0.0.1", XFProto: "https", XFHost: "matrix.example.test",
	}
	if seen != want {
		t.Errorf("upstream saw\n %+v\nwant\n %+v", seen, want)
	}
	if resp.Header.Get("Strict-Transport-Security") != hstsValue {
		t.Errorf("proxied response without HSTS")
	}
	// an event id with '/' escaped, which unescapes to "//": passed as is, no redirect
	resp, body = get(t, client, "GET", base+"/_matrix/federation/v1/event/%24ab%2F%2Fcd", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"RawPath":"/_matrix/federation/v1/event/%24ab%2F%2Fcd"`) {
		t.Errorf("federation event path: %d %s", resp.StatusCode, body)
	}
	for _, p := range []string{"/_matrix/key/v2/server", "/_synapse/client/oidc/callback"} {
		if resp, body := get(t, client, "GET", base+p, nil, nil); resp.StatusCode != 200 || !strings.Contains(string(body), `"Path":"`+p+`"`) {
			t.Errorf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
	// not proxied
	for p, code := range map[string]int{
		"/":                             404,
		"/_synapse/admin/v1/users":      404,
		"/_matrix/../_synapse/admin/v1": 400,
		"/_matrix/%2e%2e/_synapse/x":    400,
		"/index.html":                   404,
	} {
		resp, body := get(t, client, "GET", base+p, nil, nil)
		if resp.StatusCode != code || !strings.Contains(string(body), "M_UNRECOGNIZED") {
			t.Errorf("%s: %d %s, want %d", p, resp.StatusCode, body, code)
		}
	}
	if strings.Contains(logs.String(), "secret") {
		t.Errorf("the access token reached the log")
	}

	// plain HTTP: 308 to https://<domain> with path and query, for any Host and method
	plainClient := clientFor(plain.Addr().String(), nil)
	for _, m := range []string{"GET", "POST"} {
		resp, _ := get(t, plainClient, m, "http://evil.example/_matrix/client/versions?a=b", nil, nil)
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://matrix.example.test/_matrix/client/versions?a=b" {
			t.Errorf("%s on port 80: %d Location %q", m, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	// homeserver down: 502 in Matrix form
	hs.Close()
	resp, body = get(t, client, "GET", base+"/_matrix/client/versions", nil, nil)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "M_UNKNOWN") {
		t.Errorf("homeserver down: %d %s", resp.StatusCode, body)
	}
}

func TestPublicPortAndWellKnown(t *testing.T) {
	cfg := Config{Mode: ModeSelfSigned, Domain: "rcsgate.lan", PublicPort: 8443, StorageDir: t.TempDir(), Homeserver: "http://127.0.0.1:1"}
	f, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	client, server := f.WellKnown()
	if string(client) != `{"m.homeserver":{"base_url":"https://rcsgate.lan:8443"}}` || string(server) != `{"m.server":"rcsgate.lan:8443"}` {
		t.Errorf("well-known with port 8443: %s %s", client, server)
	}
	rec := httptest.NewRecorder()
	f.HTTPHandler().ServeHTTP(rec, httptest.NewRequest("GET", "http://rcsgate.lan/x?y", nil))
	if rec.Code != 308 || rec.Header().Get("Location") != "https://rcsgate.lan:8443/x?y" {
		t.Errorf("redirect: %d %q", rec.Code, rec.Header().Get("Location"))
	}
}

func TestServeArguments(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Mode: ModeACME, Domain: "matrix.rcsgate.test", CA: "https://127.0.0.1:1/dir", StorageDir: dir, Homeserver: "http://127.0.0.1:1"}
	f, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Serve(context.Background(), nil, nil); err == nil || !strings.Contains(err.Error(), "HTTPS listener") {
		t.Errorf("no listeners: %v", err)
	}
	if err := f.Serve(context.Background(), listen(t), nil); err == nil || !strings.Contains(err.Error(), "port-80 listener") {
		t.Errorf("acme without port 80: %v", err)
	}
	// nothing issued yet
	if _, err := Inspect(context.Background(), cfg); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Inspect before issuance: %v, want fs.ErrNotExist", err)
	}
	// an unwritable storage dir is reported by New, with its path
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		cfg.StorageDir = ro
		if _, err := New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), ro) {
			t.Errorf("read-only storage: %v", err)
		}
	}
}

func TestHasDotSegment(t *testing.T) {
	for p, want := range map[string]bool{
		"/_matrix/client": false, "/_matrix/../x": true, "/_matrix/./x": true, "/_matrix/..x": false, "/_matrix//x": false,
	} {
		if got := hasDotSegment(p); got != want {
			t.Errorf("hasDotSegment(%q) = %v", p, got)
		}
	}
}

func TestChallengeAddrs(t *testing.T) {
	cfg := Config{Mode: ModeACME, Domain: "matrix.rcsgate.test", CA: "https://127.0.0.1:1/dir", StorageDir: t.TempDir(), Homeserver: "http://127.0.0.1:1"}
	f, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	https, plain := listen(t), listen(t)
	defer https.Close()
	defer plain.Close()
	// by default the challenge "servers" are the very addresses we listen on
	f.acme.setChallengeAddrs(https, plain)
	if iss := f.acme.issuer; iss.ListenHost != "127.0.0.1" || iss.AltHTTPPort != portOf(plain) || iss.AltTLSALPNPort != portOf(https) {
		t.Errorf("derived: host %q http %d tls-alpn %d", iss.ListenHost, iss.AltHTTPPort, iss.AltTLSALPNPort)
	}
	// ChallengePorts overrides them
	cfg.ChallengePorts = ChallengePorts{HTTP: 5002, TLSALPN: 5001}
	cfg.StorageDir = t.TempDir()
	g, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.acme.setChallengeAddrs(https, plain)
	if iss := g.acme.issuer; iss.AltHTTPPort != 5002 || iss.AltTLSALPNPort != 5001 {
		t.Errorf("override: http %d tls-alpn %d", iss.AltHTTPPort, iss.AltTLSALPNPort)
	}
	if got := f.TLSConfig().NextProtos; strings.Join(got, ",") != "h2,http/1.1,acme-tls/1" {
		t.Errorf("NextProtos %v", got)
	}
}
