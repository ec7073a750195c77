package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/harness"
	"github.com/rcsgate/rcsgate/internal/testpeer"
)

// The daemon's HTTPS front (self-signed mode, as on a LAN appliance) serves
// .well-known and proxies the Matrix API to the homeserver.
func TestHTTPSFrontInDaemon(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	httpsPort, _ := testpeer.FreeLoopbackPort()
	httpPort, _ := testpeer.FreeLoopbackPort()
	startStack(t, ctx, harness.Options{Configure: func(c *gateway.Config) {
		c.TLS = gateway.TLSConfig{
			Mode: "selfsigned", Domain: "matrix.localhost",
			HTTPSListen: fmt.Sprintf("127.0.0.1:%d", httpsPort), HTTPListen: fmt.Sprintf("127.0.0.1:%d", httpPort),
		}
	}})
	client := &http.Client{
		Timeout:       10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "matrix.localhost"}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	get := func(url string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	base := fmt.Sprintf("https://127.0.0.1:%d", httpsPort)
	resp, body := get(base + "/.well-known/matrix/client")
	var wk struct {
		HS struct {
			BaseURL string `json:"base_url"`
		} `json:"m.homeserver"`
	}
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &wk) != nil || wk.HS.BaseURL != "https://matrix.localhost" {
		t.Fatalf(".well-known/matrix/client: %d %s", resp.StatusCode, body)
	}
	if resp, body = get(base + "/_matrix/client/versions"); resp.StatusCode != 200 || !strings.Contains(body, "versions") {
		t.Fatalf("proxied /versions: %d %s", resp.StatusCode, body)
	}
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.PeerCertificates[0].VerifyHostname("matrix.localhost") != nil {
		t.Fatal("front does not serve a certificate for its domain")
	}
	resp, _ = get(fmt.Sprintf("http://127.0.0.1:%d/_matrix/client/versions", httpPort))
	if resp.StatusCode != http.StatusPermanentRedirect || !strings.HasPrefix(resp.Header.Get("Location"), "https://matrix.localhost") {
		t.Fatalf("port 80: %d → %q, want a 308 to https", resp.StatusCode, resp.Header.Get("Location"))
	}
}
