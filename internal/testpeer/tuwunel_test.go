package testpeer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testRegistration = `id: testbridge
url: http://127.0.0.1:9
as_token: as-secret-%[1]s
hs_token: hs-secret-%[1]s
sender_localpart: testbridgebot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@testbridge_.*:localhost'
`

func TestTuwunelRegisterLoginAppservice(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	reg := filepath.Join(dir, "as.yaml")
	if err := os.WriteFile(reg, fmt.Appendf(nil, testRegistration, "1"), 0o600); err != nil {
		t.Fatal(err)
	}
	hs := StartTuwunelT(t, Options{Dir: filepath.Join(dir, "hs"), AppserviceRegistrations: []string{reg}})
	tw := hs.(*Tuwunel)
	t.Logf("tuwunel ready at %s after %s", hs.URL(), tw.StartupTime())
	if hs.Kind() != "tuwunel" || !strings.HasPrefix(hs.URL(), "http://127.0.0.1:") || hs.ServerName() != "localhost" {
		t.Fatalf("Kind %q URL %q ServerName %q", hs.Kind(), hs.URL(), hs.ServerName())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	acct, err := hs.RegisterAccount(ctx, "alice", "correct-horse-battery", false)
	if err != nil {
		t.Fatalf("RegisterAccount: %v", err)
	}
	if acct.UserID != "@alice:localhost" || acct.AccessToken == "" || acct.DeviceID == "" {
		t.Fatalf("RegisterAccount = %+v", acct)
	}
	_, err = hs.RegisterUser(ctx, "alice", "another-password", false)
	var merr *MatrixError
	if !errors.As(err, &merr) || merr.ErrCode != "M_USER_IN_USE" {
		t.Errorf("second registration error = %v, want M_USER_IN_USE", err)
	}
	// Registration without the token is refused: the server is not open.
	if err := doJSON(ctx, tw.client, "POST", hs.URL(), "/_matrix/client/v3/register", map[string]any{
		"username": "mallory", "password": "pw-pw-pw-pw",
		"auth": map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": "x"},
	}, nil); err == nil {
		t.Error("registration with a wrong token succeeded")
	}
	var whoami struct {
		UserID string `json:"user_id"`
	}
	getJSON(t, ctx, hs.URL()+"/_matrix/client/v3/account/whoami", acct.AccessToken, &whoami)
	if whoami.UserID != acct.UserID {
		t.Fatalf("whoami = %q", whoami.UserID)
	}

	// The appservice from the config table: its users register the
	// appservice way (tuwunel does not create the bot itself), then its
	// token works.
	asRegister := func(token, localpart string) {
		t.Helper()
		var asReg struct {
			UserID string `json:"user_id"`
		}
		postJSON(t, ctx, hs.URL()+"/_matrix/client/v3/register", token, map[string]any{
			"type": "m.login.application_service", "username": localpart,
		}, &asReg)
		if asReg.UserID != "@"+localpart+":localhost" {
			t.Fatalf("appservice register = %q", asReg.UserID)
		}
	}
	asRegister("as-secret-1", "testbridgebot")
	asRegister("as-secret-1", "testbridge_alice")
	getJSON(t, ctx, hs.URL()+"/_matrix/client/v3/account/whoami", "as-secret-1", &whoami)
	if whoami.UserID != "@testbridgebot:localhost" {
		t.Fatalf("appservice whoami = %q", whoami.UserID)
	}

	// The admin room works: an admin account is made through it, and the
	// admin-room way of registering an appservice (what tuwunel < 1.6.0
	// admins do without editing the config) takes a registration.
	if _, err := hs.RegisterAccount(ctx, "root", "admin-password", true); err != nil {
		t.Fatalf("RegisterAccount admin: %v", err)
	}
	out, err := tw.AdminCommand(ctx, "users list-users")
	if err != nil || !strings.Contains(out, "@root:localhost") {
		t.Fatalf("list-users: %q, %v", out, err)
	}
	second := strings.ReplaceAll(fmt.Sprintf(testRegistration, "2"), "testbridge", "otherbridge")
	if out, err := tw.AdminCommand(ctx, "appservices register\n```\n"+second+"```"); err != nil || !strings.Contains(out, "otherbridge") {
		t.Fatalf("appservices register: %q, %v", out, err)
	}
	// (registering this way creates the appservice's sender user too)
	getJSON(t, ctx, hs.URL()+"/_matrix/client/v3/account/whoami", "as-secret-2", &whoami)
	if whoami.UserID != "@otherbridgebot:localhost" {
		t.Fatalf("appservice registered in the admin room: whoami = %q", whoami.UserID)
	}
	if _, err := tw.AdminCommand(ctx, "appservices no-such-command"); err == nil {
		t.Error("a wrong admin command gave no error")
	}

	// Restarted on the same directory, accounts (and the admin) are still there.
	if err := hs.Stop(); err != nil {
		t.Fatal(err)
	}
	again, err := StartTuwunel(ctx, Options{Dir: filepath.Join(dir, "hs"), AppserviceRegistrations: []string{reg}})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Stop()
	getJSON(t, ctx, again.URL()+"/_matrix/client/v3/account/whoami", acct.AccessToken, &whoami)
	if whoami.UserID != acct.UserID {
		t.Fatalf("after restart whoami = %q", whoami.UserID)
	}
}

func TestTuwunelUnavailableSkipsInOneLine(t *testing.T) {
	t.Setenv(TuwunelDirEnv, t.TempDir())
	ok, why := TuwunelAvailable()
	if ok || strings.Contains(why, "\n") || !strings.Contains(why, tuwunelArchive) {
		t.Fatalf("TuwunelAvailable = %v, %q; want false and one line naming the archive", ok, why)
	}
	if _, err := TuwunelBinary(t.TempDir()); !errors.Is(err, ErrTuwunelUnavailable) {
		t.Fatalf("TuwunelBinary = %v, want ErrTuwunelUnavailable", err)
	}
}

func TestTuwunelBinaryChecksSums(t *testing.T) {
	if ok, why := TuwunelAvailable(); !ok {
		t.Skip("tuwunel: " + why)
	}
	real, err := TuwunelDir()
	if err != nil {
		t.Fatal(err)
	}
	// A copy of the archive with a SHA256SUMS that does not match it.
	fake := t.TempDir()
	if err := os.Symlink(filepath.Join(real, tuwunelArchive), filepath.Join(fake, tuwunelArchive)); err != nil {
		t.Fatal(err)
	}
	sums := strings.Repeat("0", 64) + "  " + tuwunelBin + "\n" + strings.Repeat("1", 64) + "  " + tuwunelArchive + "\n"
	if err := os.WriteFile(filepath.Join(fake, tuwunelSums), []byte(sums), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(TuwunelDirEnv, fake)
	bin := t.TempDir()
	if _, err := TuwunelBinary(bin); err == nil || !strings.Contains(err.Error(), "SHA256SUMS says") {
		t.Fatalf("TuwunelBinary with wrong sums = %v, want a checksum error", err)
	}
	if entries, _ := os.ReadDir(bin); len(entries) != 0 {
		t.Fatalf("a refused archive left %d files in the bin dir", len(entries))
	}
}
