package testpeer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDendriteRegisterLoginWhoami(t *testing.T) {
	t.Parallel()
	hs := StartDendriteT(t, Options{})
	if d, ok := hs.(*Dendrite); ok {
		t.Logf("dendrite ready at %s after %s", hs.URL(), d.StartupTime())
	}

	if got := hs.Kind(); got != "dendrite" {
		t.Errorf("Kind() = %q, want dendrite", got)
	}
	if !strings.HasPrefix(hs.URL(), "http://127.0.0.1:") {
		t.Errorf("URL() = %q, want loopback", hs.URL())
	}
	if got := hs.ServerName(); got != "localhost" {
		t.Errorf("ServerName() = %q, want localhost", got)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	userID, err := hs.RegisterUser(ctx, "alice", "correct-horse-battery", false)
	if err != nil {
		t.Fatalf("RegisterUser: %v", err)
	}
	if want := "@alice:localhost"; userID != want {
		t.Fatalf("RegisterUser = %q, want %q", userID, want)
	}

	_, err = hs.RegisterUser(ctx, "alice", "another-password", false)
	if err == nil {
		t.Fatal("registering alice twice succeeded, want error")
	}
	var merr *MatrixError
	if !errors.As(err, &merr) || merr.ErrCode != "M_USER_IN_USE" {
		t.Errorf("second registration error = %v, want MatrixError M_USER_IN_USE", err)
	}

	var login struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	postJSON(t, ctx, hs.URL()+"/_matrix/client/v3/login", "", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": "alice"},
		"password":   "correct-horse-battery",
	}, &login)
	if login.AccessToken == "" || login.UserID != userID {
		t.Fatalf("login = %+v, want token for %s", login, userID)
	}

	var whoami struct {
		UserID string `json:"user_id"`
	}
	getJSON(t, ctx, hs.URL()+"/_matrix/client/v3/account/whoami", login.AccessToken, &whoami)
	if whoami.UserID != userID {
		t.Fatalf("whoami = %q, want %q", whoami.UserID, userID)
	}

	admin, err := hs.RegisterAccount(ctx, "root", "admin-password", true)
	if err != nil {
		t.Fatalf("RegisterAccount admin: %v", err)
	}
	if admin.UserID != "@root:localhost" || admin.AccessToken == "" {
		t.Fatalf("RegisterAccount admin = %+v", admin)
	}

	if err := hs.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := hs.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := hs.RegisterUser(ctx, "bob", "pw-after-stop", false); err == nil {
		t.Fatal("RegisterUser after Stop succeeded, want error")
	}
}

func TestDendriteAppserviceAndFixedPort(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// Dendrite requires id, as_token, hs_token and sender_localpart, and a
	// namespaces map (it panics on a registration without one).
	reg := filepath.Join(dir, "as.yaml")
	if err := os.WriteFile(reg, []byte(`id: testbridge
url: http://127.0.0.1:9
as_token: as-secret
hs_token: hs-secret
sender_localpart: testbridgebot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@testbridge_.*:localhost'
  aliases: []
  rooms: []
`), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := FreeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	hs := StartDendriteT(t, Options{Dir: filepath.Join(dir, "hs"), Port: port, AppserviceRegistrations: []string{reg}})
	if want := "http://127.0.0.1:" + strconv.Itoa(port); hs.URL() != want {
		t.Fatalf("URL() = %q, want %q", hs.URL(), want)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// The appservice's token is accepted and maps to its sender user.
	var whoami struct {
		UserID string `json:"user_id"`
	}
	getJSON(t, ctx, hs.URL()+"/_matrix/client/v3/account/whoami", "as-secret", &whoami)
	if whoami.UserID != "@testbridgebot:localhost" {
		t.Fatalf("appservice whoami = %q", whoami.UserID)
	}
	// Bridges register their puppets this way; it must work although normal
	// registration is disabled.
	var asReg struct {
		UserID string `json:"user_id"`
	}
	postJSON(t, ctx, hs.URL()+"/_matrix/client/v3/register", "as-secret", map[string]any{
		"type":     "m.login.application_service",
		"username": "testbridge_alice",
	}, &asReg)
	if asReg.UserID != "@testbridge_alice:localhost" {
		t.Fatalf("appservice register = %q", asReg.UserID)
	}
}

func TestStartDendriteErrors(t *testing.T) {
	t.Parallel()
	_, err := StartDendrite(t.Context(), Options{Dir: t.TempDir(), BinDir: t.TempDir()})
	if !errors.Is(err, ErrBinaryMissing) || !strings.Contains(err.Error(), "make tools") {
		t.Errorf("empty BinDir: err = %v, want ErrBinaryMissing mentioning make tools", err)
	}

	_, err = StartDendrite(t.Context(), Options{
		Dir:                     t.TempDir(),
		AppserviceRegistrations: []string{filepath.Join(t.TempDir(), "missing.yaml")},
	})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing registration: err = %v, want ErrNotExist", err)
	}

	// A broken registration makes Dendrite exit; the error must carry the log.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("id: x\nurl: http://127.0.0.1:9\nsender_localpart: bot\nnamespaces: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = StartDendrite(t.Context(), Options{Dir: t.TempDir(), AppserviceRegistrations: []string{bad}})
	if err == nil || !strings.Contains(err.Error(), "tail of") || !strings.Contains(err.Error(), "Token is required") {
		t.Errorf("bad registration: err = %v, want early exit with log tail", err)
	}
}

func TestFindBinDir(t *testing.T) {
	t.Setenv("RCSGATE_BIN", "/opt/elsewhere")
	if got, err := FindBinDir(); err != nil || got != "/opt/elsewhere" {
		t.Errorf("with RCSGATE_BIN: %q, %v", got, err)
	}
	t.Setenv("RCSGATE_BIN", "")
	got, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	if !modFileDeclares(filepath.Join(filepath.Dir(got), "go.mod"), modulePath) {
		t.Errorf("FindBinDir() = %q, not next to the module's go.mod", got)
	}
}

func postJSON(t *testing.T, ctx context.Context, url, token string, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	doTest(t, req, token, out)
}

func getJSON(t *testing.T, ctx context.Context, url, token string, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	doTest(t, req, token, out)
}

func doTest(t *testing.T, req *http.Request, token string, out any) {
	t.Helper()
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatalf("%s %s: read: %v", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, buf.String())
	}
	if err := json.Unmarshal(buf.Bytes(), out); err != nil {
		t.Fatalf("%s %s: decode %q: %v", req.Method, req.URL.Path, buf.String(), err)
	}
}

func TestDendritePortInUse(t *testing.T) {
	t.Parallel()
	// Hold a port without serving HTTP so Dendrite's bind fails.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port

	// A caller-chosen port is not retried: the error carries the log.
	_, err = StartDendrite(t.Context(), Options{Dir: t.TempDir(), Port: busy})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("busy fixed port: err = %v, want bind failure with log tail", err)
	}

	// A picked port that turns out to be taken is replaced by a fresh one.
	picks := 0
	hs := StartDendriteT(t, Options{pickPort: func() (int, error) {
		picks++
		if picks == 1 {
			return busy, nil
		}
		return FreeLoopbackPort()
	}})
	if picks != 2 || hs.URL() == "http://127.0.0.1:"+strconv.Itoa(busy) {
		t.Fatalf("picks = %d, URL = %s; want a retry on a fresh port", picks, hs.URL())
	}
}
