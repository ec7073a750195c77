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

	"gopkg.in/yaml.v3"
)

func TestSynapseRegisterLoginWhoami(t *testing.T) {
	t.Parallel()
	hs := StartSynapseT(t, Options{})
	if s, ok := hs.(*Synapse); ok {
		t.Logf("synapse ready at %s after %s", hs.URL(), s.StartupTime())
	}
	if got := hs.Kind(); got != "synapse" {
		t.Errorf("Kind() = %q, want synapse", got)
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
	var merr *MatrixError
	if !errors.As(err, &merr) || merr.ErrCode != "M_USER_IN_USE" {
		t.Errorf("second registration error = %v, want MatrixError M_USER_IN_USE", err)
	}

	// Well past Synapse's default rc_login (burst 5): tests log in often.
	var token string
	for i := range 20 {
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
			t.Fatalf("login %d = %+v, want token for %s", i, login, userID)
		}
		token = login.AccessToken
	}
	var whoami struct {
		UserID string `json:"user_id"`
	}
	getJSON(t, ctx, hs.URL()+"/_matrix/client/v3/account/whoami", token, &whoami)
	if whoami.UserID != userID {
		t.Fatalf("whoami = %q, want %q", whoami.UserID, userID)
	}

	// Well past the default rc_message (burst 10).
	var room struct {
		RoomID string `json:"room_id"`
	}
	postJSON(t, ctx, hs.URL()+"/_matrix/client/v3/createRoom", token, map[string]any{}, &room)
	for i := range 50 {
		var sent struct {
			EventID string `json:"event_id"`
		}
		putJSON(t, ctx, hs.URL()+"/_matrix/client/v3/rooms/"+room.RoomID+"/send/m.room.message/t"+strconv.Itoa(i), token,
			map[string]any{"msgtype": "m.text", "body": "burst " + strconv.Itoa(i)}, &sent)
		if sent.EventID == "" {
			t.Fatalf("message %d: no event id", i)
		}
	}

	admin, err := hs.RegisterAccount(ctx, "root", "admin-password", true)
	if err != nil {
		t.Fatalf("RegisterAccount admin: %v", err)
	}
	if admin.UserID != "@root:localhost" || admin.AccessToken == "" {
		t.Fatalf("RegisterAccount admin = %+v", admin)
	}
	var adminInfo struct {
		Admin bool `json:"admin"`
	}
	getJSON(t, ctx, hs.URL()+"/_synapse/admin/v2/users/@root:localhost", admin.AccessToken, &adminInfo)
	if !adminInfo.Admin {
		t.Fatal("admin registration did not make @root an admin")
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

func TestSynapseAppserviceFixedPortAndRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reg := filepath.Join(dir, "as.yaml")
	if err := os.WriteFile(reg, []byte(`id: testbridge
url: http://127.0.0.1:9
as_token: as-secret
hs_token: hs-secret
sender_localpart: testbridgebot
rate_limited: false
receive_ephemeral: true
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
	opts := Options{Dir: filepath.Join(dir, "hs"), Port: port, AppserviceRegistrations: []string{reg}}
	hs := StartSynapseT(t, opts)
	if want := "http://127.0.0.1:" + strconv.Itoa(port); hs.URL() != want {
		t.Fatalf("URL() = %q, want %q", hs.URL(), want)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var whoami struct {
		UserID string `json:"user_id"`
	}
	getJSON(t, ctx, hs.URL()+"/_matrix/client/v3/account/whoami", "as-secret", &whoami)
	if whoami.UserID != "@testbridgebot:localhost" {
		t.Fatalf("appservice whoami = %q", whoami.UserID)
	}
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

	// The config is loopback-only, federation-free and has no presence.
	raw, err := os.ReadFile(hs.(*Synapse).ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Listeners []struct {
			BindAddresses []string `yaml:"bind_addresses"`
			Resources     []struct {
				Names []string `yaml:"names"`
			} `yaml:"resources"`
		} `yaml:"listeners"`
		FederationWhitelist []string       `yaml:"federation_domain_whitelist"`
		Presence            map[string]any `yaml:"presence"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, l := range cfg.Listeners {
		if len(l.BindAddresses) != 1 || l.BindAddresses[0] != "127.0.0.1" {
			t.Errorf("listener binds %v, want only 127.0.0.1", l.BindAddresses)
		}
		for _, r := range l.Resources {
			for _, n := range r.Names {
				if n != "client" {
					t.Errorf("listener serves %q, want only client", n)
				}
			}
		}
	}
	if cfg.FederationWhitelist == nil || len(cfg.FederationWhitelist) != 0 || cfg.Presence["enabled"] != false {
		t.Errorf("federation whitelist %v, presence %v: want empty and disabled", cfg.FederationWhitelist, cfg.Presence)
	}

	// A restart on the same Dir keeps the signing key and the database.
	key, err := os.ReadFile(filepath.Join(opts.Dir, synapseKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := hs.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	hs2 := StartSynapseT(t, opts)
	key2, err := os.ReadFile(filepath.Join(opts.Dir, synapseKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(key) != string(key2) {
		t.Error("restart replaced the signing key")
	}
	_, err = hs2.RegisterUser(ctx, "testbridge_alice", "pw", false)
	var merr *MatrixError
	if !errors.As(err, &merr) || merr.Status/100 != 4 {
		t.Errorf("re-registering a user after restart: err = %v, want a 4xx (database kept)", err)
	}
}

func TestStartSynapseErrors(t *testing.T) {
	t.Parallel()
	_, err := StartSynapse(t.Context(), Options{Dir: t.TempDir(), BinDir: t.TempDir()})
	if !errors.Is(err, ErrBinaryMissing) || !strings.Contains(err.Error(), "make tools") {
		t.Errorf("empty BinDir: err = %v, want ErrBinaryMissing mentioning make tools", err)
	}
	_, err = StartSynapse(t.Context(), Options{
		Dir:                     t.TempDir(),
		AppserviceRegistrations: []string{filepath.Join(t.TempDir(), "missing.yaml")},
	})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing registration: err = %v, want ErrNotExist", err)
	}
	// A registration without tokens makes Synapse exit; the error carries the log.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("id: x\nurl: http://127.0.0.1:9\nsender_localpart: bot\nnamespaces: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = StartSynapse(t.Context(), Options{Dir: t.TempDir(), AppserviceRegistrations: []string{bad}})
	if err == nil || !strings.Contains(err.Error(), "tail of") || !strings.Contains(err.Error(), "as_token") {
		t.Errorf("bad registration: err = %v, want early exit with log tail", err)
	}
}

func TestSynapsePortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port

	_, err = StartSynapse(t.Context(), Options{Dir: t.TempDir(), Port: busy})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "address already in use") {
		t.Fatalf("busy fixed port: err = %v, want bind failure with log tail", err)
	}
	picks := 0
	hs := StartSynapseT(t, Options{pickPort: func() (int, error) {
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

func TestKindFromEnv(t *testing.T) {
	for v, want := range map[string]string{"": "dendrite", "dendrite": "dendrite", "synapse": "synapse", "tuwunel": "tuwunel"} {
		t.Setenv(HomeserverEnv, v)
		if got, err := KindFromEnv(); err != nil || got != want {
			t.Errorf("%s=%q: %q, %v; want %q", HomeserverEnv, v, got, err, want)
		}
	}
	for _, v := range []string{"both", "all", "conduit"} {
		t.Setenv(HomeserverEnv, v)
		if _, err := KindFromEnv(); err == nil {
			t.Errorf("%s=%q: no error", HomeserverEnv, v)
		}
	}
}

func putJSON(t *testing.T, ctx context.Context, url, token string, in, out any) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	doTest(t, req, token, out)
}
