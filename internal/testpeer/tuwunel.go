package testpeer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/rcsgate/rcsgate/internal/asreg"
)

// tuwunel is the appliance's homeserver. Its test build is not installed by
// `make tools` (no release of it can be built on CI machines, see
// ../shared/peers/tuwunel/README.md): it is an xz-compressed binary next to
// the repository, checked against SHA256SUMS and unpacked into the bin dir
// on first use. Where it is absent, tuwunel tests skip.
const (
	TuwunelVersion = "1.4.6"
	// TuwunelDirEnv names the directory holding the archive and SHA256SUMS;
	// default: <repo root>/../shared/peers/tuwunel.
	TuwunelDirEnv = "RCSGATE_TUWUNEL_DIR"

	tuwunelBin     = "tuwunel-" + TuwunelVersion + "-x86_64-linux-gnu"
	tuwunelArchive = tuwunelBin + ".xz"
	tuwunelSums    = "SHA256SUMS"
)

// Files tuwunel uses inside Options.Dir.
const (
	tuwunelConfigFile = "tuwunel.toml"
	tuwunelLogFile    = "tuwunel.log"
	tuwunelDBDir      = "db"
	tuwunelSecretFile = "registration_token"
)

// ErrTuwunelUnavailable: the tuwunel test build is not on this machine.
var ErrTuwunelUnavailable = errors.New("tuwunel test build not available")

// TuwunelDir is where the tuwunel archive is looked for: $RCSGATE_TUWUNEL_DIR,
// else ../shared/peers/tuwunel next to the repository root.
func TuwunelDir() (string, error) {
	if d := os.Getenv(TuwunelDirEnv); d != "" {
		return filepath.Abs(d)
	}
	bin, err := FindBinDir()
	if err != nil {
		return "", err
	}
	root := filepath.Dir(bin)
	if os.Getenv("RCSGATE_BIN") != "" {
		// bin may live anywhere then; the repository is what we want.
		wd, _ := os.Getwd()
		if r, ok := findModuleRoot(wd); ok {
			root = r
		}
	}
	return filepath.Join(filepath.Dir(root), "shared", "peers", "tuwunel"), nil
}

// TuwunelAvailable says whether the tuwunel test build can run here; when
// not, why, in one line for a skip message.
func TuwunelAvailable() (bool, string) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return false, "the tuwunel test build is for linux/amd64"
	}
	dir, err := TuwunelDir()
	if err != nil {
		return false, err.Error()
	}
	if _, err := os.Stat(filepath.Join(dir, tuwunelArchive)); err != nil {
		return false, fmt.Sprintf("%s not found (set %s to its directory)", filepath.Join(dir, tuwunelArchive), TuwunelDirEnv)
	}
	return true, ""
}

// unpackMu serialises unpacking within a process; across processes the
// rename of a verified temp file is what makes it safe.
var unpackMu sync.Mutex

// TuwunelBinary returns the verified tuwunel binary, unpacking it into
// binDir ("" means FindBinDir) from the archive when it is not there yet.
// Both the archive and the binary must match SHA256SUMS.
func TuwunelBinary(binDir string) (string, error) {
	if ok, why := TuwunelAvailable(); !ok {
		return "", fmt.Errorf("%w: %s", ErrTuwunelUnavailable, why)
	}
	if binDir == "" {
		var err error
		if binDir, err = FindBinDir(); err != nil {
			return "", err
		}
	}
	dir, err := TuwunelDir()
	if err != nil {
		return "", err
	}
	sums, err := readSums(filepath.Join(dir, tuwunelSums))
	if err != nil {
		return "", err
	}
	wantBin, wantArchive := sums[tuwunelBin], sums[tuwunelArchive]
	if wantBin == "" || wantArchive == "" {
		return "", fmt.Errorf("testpeer: %s lists no checksum for %s or %s", filepath.Join(dir, tuwunelSums), tuwunelBin, tuwunelArchive)
	}
	unpackMu.Lock()
	defer unpackMu.Unlock()
	dst := filepath.Join(binDir, tuwunelBin)
	if got, err := fileSHA256(dst); err == nil && got == wantBin {
		return dst, nil
	}
	archive := filepath.Join(dir, tuwunelArchive)
	if got, err := fileSHA256(archive); err != nil {
		return "", fmt.Errorf("testpeer: %w", err)
	} else if got != wantArchive {
		return "", fmt.Errorf("testpeer: %s has SHA-256 %s, SHA256SUMS says %s", archive, got, wantArchive)
	}
	xz, err := exec.LookPath("xz")
	if err != nil {
		return "", fmt.Errorf("testpeer: unpacking %s needs xz (apt-get install xz-utils): %w", archive, err)
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("testpeer: %w", err)
	}
	tmp, err := os.CreateTemp(binDir, "."+tuwunelBin+".*")
	if err != nil {
		return "", fmt.Errorf("testpeer: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	cmd := exec.Command(xz, "-dc", archive)
	cmd.Stdout = tmp
	var stderr strings.Builder
	cmd.Stderr = &stderr
	runErr := cmd.Run()
	closeErr := tmp.Close()
	if runErr != nil || closeErr != nil {
		return "", fmt.Errorf("testpeer: unpack %s: %w: %s", archive, errors.Join(runErr, closeErr), strings.TrimSpace(stderr.String()))
	}
	if got, err := fileSHA256(tmp.Name()); err != nil || got != wantBin {
		return "", fmt.Errorf("testpeer: unpacked %s has SHA-256 %s, SHA256SUMS says %s (%v)", tuwunelBin, got, wantBin, err)
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return "", fmt.Errorf("testpeer: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("testpeer: %w", err)
	}
	return dst, nil
}

// readSums parses `sha256sum` output: "<hex>  <name>" per line.
func readSums(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("testpeer: %w", err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(io.LimitReader(f, 1<<16))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && len(fields[0]) == 64 {
			sums[strings.TrimPrefix(fields[1], "*")] = strings.ToLower(fields[0])
		}
	}
	return sums, sc.Err()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Tuwunel is a running tuwunel (RocksDB in Options.Dir, one loopback
// listener, no federation). Users register with a registration token
// (m.login.registration_token); there is no shared-secret registration.
// The first account, made at start, is the server's admin: it is what
// AdminCommand speaks through.
type Tuwunel struct {
	server
	regToken string

	adminMu   sync.Mutex // one admin command at a time
	admin     Account
	adminRoom string
}

var _ Homeserver = (*Tuwunel)(nil)

// tuwunelAdminLocalpart is the account made at start, so no test account
// becomes the server admin by being the first to register.
const tuwunelAdminLocalpart = "testpeer-admin"

// StartTuwunel writes a config into opts.Dir (appservices from
// opts.AppserviceRegistrations as config tables, the way tuwunel before
// 1.6.0 takes them), starts tuwunel on loopback and returns once it answers
// and its admin account exists. ctx bounds only the startup.
func StartTuwunel(ctx context.Context, opts Options) (Homeserver, error) {
	t, err := startTuwunel(ctx, opts)
	if err != nil {
		return nil, err
	}
	return t, nil
}

func startTuwunel(ctx context.Context, opts Options) (*Tuwunel, error) {
	dir, serverName, ctx, cancel, err := prepare(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer cancel()
	bin, err := TuwunelBinary(opts.BinDir)
	if err != nil {
		return nil, err
	}
	var tables []string
	for _, p := range opts.AppserviceRegistrations {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("testpeer: appservice registration: %w", err)
		}
		reg, err := asreg.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("testpeer: %s: %w", p, err)
		}
		tables = append(tables, reg.TuwunelTable())
	}
	// The token survives restarts on the same Dir, like the other peers' keys.
	token, err := persistentSecret(filepath.Join(dir, tuwunelSecretFile))
	if err != nil {
		return nil, err
	}
	t := &Tuwunel{server: server{
		kind:       "tuwunel",
		dir:        dir,
		configPath: filepath.Join(dir, tuwunelConfigFile),
		serverName: serverName,
		logFile:    tuwunelLogFile,
		client:     newLoopbackClient(),
	}, regToken: token}
	err = t.start(ctx, opts, bin, func(port int) ([]string, error) {
		if err := writeTuwunelConfig(t.configPath, dir, serverName, port, token, tables); err != nil {
			return nil, err
		}
		return []string{"-c", t.configPath}, nil
	}, func(tail string) bool { return strings.Contains(strings.ToLower(tail), "address already in use") })
	if err != nil {
		return nil, err
	}
	if err := t.ensureAdmin(ctx); err != nil {
		return nil, errors.Join(err, t.Stop())
	}
	return t, nil
}

// persistentSecret returns the secret in path, creating it if needed.
func persistentSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return strings.TrimSpace(string(b)), nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("testpeer: %w", err)
	}
	s, err := randomHex(32)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("testpeer: %w", err)
	}
	return s, nil
}

// writeTuwunelConfig writes a private, loopback-only config. Keys are those
// of tuwunel 1.4.6's config (src/core/config/mod.rs).
func writeTuwunelConfig(path, dir, serverName string, port int, regToken string, appservices []string) error {
	var b strings.Builder
	fmt.Fprintf(&b, `[global]
server_name = %q
database_path = %q
address = ["127.0.0.1"]
port = %d
# Users register with this token only; appservices register their own users.
allow_registration = true
registration_token = %q
allow_guest_registration = false
# Nothing may leave the machine.
allow_federation = false
trusted_servers = []
url_preview_domain_explicit_allowlist = []
# Plain display names, as on the other test homeservers.
new_user_displayname_suffix = ""
# Phones send files up to 100 MiB; the default 20 MiB request limit would refuse them.
max_request_size = %d
log_colors = false
# Small: tests run several homeservers on two cores.
db_pool_workers = 4
cache_capacity_modifier = 0.25
`, serverName, filepath.Join(dir, tuwunelDBDir), port, regToken, mediaUploadLimit)
	for _, tbl := range appservices {
		b.WriteString("\n")
		b.WriteString(tbl)
	}
	// 0600: the file holds the registration token and appservice tokens.
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("testpeer: write tuwunel config: %w", err)
	}
	return nil
}

// RegisterUser implements Homeserver.
func (t *Tuwunel) RegisterUser(ctx context.Context, localpart, password string, admin bool) (string, error) {
	acct, err := t.RegisterAccount(ctx, localpart, password, admin)
	return acct.UserID, err
}

// RegisterAccount implements Homeserver with the registration token; an
// admin is then made one with the admin room's `users make-user-admin`.
func (t *Tuwunel) RegisterAccount(ctx context.Context, localpart, password string, admin bool) (Account, error) {
	acct, err := registerWithToken(ctx, t.client, t.url, t.regToken, localpart, password)
	if err != nil || !admin {
		return acct, err
	}
	if _, err := t.AdminCommand(ctx, "users make-user-admin "+acct.UserID); err != nil {
		return acct, fmt.Errorf("testpeer: make %s admin: %w", acct.UserID, err)
	}
	return acct, nil
}

// registerWithToken does the two requests of m.login.registration_token:
// the first gets a UIA session, the second completes it.
func registerWithToken(ctx context.Context, client *http.Client, baseURL, token, localpart, password string) (Account, error) {
	var acct Account
	body := map[string]any{"username": localpart, "password": password, "initial_device_display_name": "testpeer"}
	err := doJSON(ctx, client, http.MethodPost, baseURL, "/_matrix/client/v3/register", body, &acct)
	var merr *MatrixError
	if err == nil {
		return acct, nil // the server asked for nothing
	}
	if !errors.As(err, &merr) || merr.Status != http.StatusUnauthorized {
		return acct, fmt.Errorf("testpeer: register %q: %w", localpart, err)
	}
	var uia struct {
		Session string `json:"session"`
	}
	if err := postForUIA(ctx, client, baseURL+"/_matrix/client/v3/register", body, &uia); err != nil || uia.Session == "" {
		return acct, fmt.Errorf("testpeer: register %q: no UIA session: %v", localpart, err)
	}
	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": token, "session": uia.Session}
	if err := doJSON(ctx, client, http.MethodPost, baseURL, "/_matrix/client/v3/register", body, &acct); err != nil {
		return acct, fmt.Errorf("testpeer: register %q: %w", localpart, err)
	}
	if acct.UserID == "" {
		return acct, fmt.Errorf("testpeer: register %q: response has no user_id", localpart)
	}
	return acct, nil
}

// postForUIA posts body and decodes the 401 answer (doJSON keeps only
// errcode and message of non-2xx answers).
func postForUIA(ctx context.Context, client *http.Client, url string, body, out any) error {
	req, err := newJSONRequest(ctx, http.MethodPost, url, "", body)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("HTTP %d, want 401 with a UIA session", resp.StatusCode)
	}
	return decodeLimited(resp.Body, out)
}

// ensureAdmin registers (or logs in) the admin account and joins it to the
// admin room; tuwunel makes the first account registered the admin.
func (t *Tuwunel) ensureAdmin(ctx context.Context) error {
	t.adminMu.Lock()
	defer t.adminMu.Unlock()
	pw := t.regToken // as good a password as any, and stable across restarts
	acct, err := registerWithToken(ctx, t.client, t.url, t.regToken, tuwunelAdminLocalpart, pw)
	var merr *MatrixError
	if errors.As(err, &merr) && merr.ErrCode == "M_USER_IN_USE" {
		acct, err = passwordLogin(ctx, t.client, t.url, tuwunelAdminLocalpart, pw)
	}
	if err != nil {
		return fmt.Errorf("testpeer: tuwunel admin account: %w", err)
	}
	t.admin = acct
	var alias struct {
		RoomID string `json:"room_id"`
	}
	aliasPath := "/_matrix/client/v3/directory/room/" + url.PathEscape("#admins:"+t.serverName)
	if err := t.adminDo(ctx, http.MethodGet, aliasPath, nil, &alias); err != nil {
		return fmt.Errorf("testpeer: tuwunel admin room: %w", err)
	}
	t.adminRoom = alias.RoomID
	// Joined already as the first user; joining again is harmless.
	if err := t.adminDo(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(alias.RoomID), map[string]any{}, nil); err != nil {
		return fmt.Errorf("testpeer: join tuwunel admin room: %w", err)
	}
	return nil
}

func passwordLogin(ctx context.Context, client *http.Client, baseURL, localpart, password string) (Account, error) {
	var acct Account
	err := doJSON(ctx, client, http.MethodPost, baseURL, "/_matrix/client/v3/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart}, "password": password,
	}, &acct)
	return acct, err
}

// adminDo is doJSON with the admin account's token.
func (t *Tuwunel) adminDo(ctx context.Context, method, path string, in, out any) error {
	req, err := newJSONRequest(ctx, method, t.url+path, t.admin.AccessToken, in)
	if err != nil {
		return err
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &MatrixError{Method: method, Path: path, Status: resp.StatusCode, Message: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	return decodeLimited(resp.Body, out)
}

// AdminRoom is the server's admin room (#admins), which the admin account
// has joined.
func (t *Tuwunel) AdminRoom() string { return t.adminRoom }

// AdminCommand runs one admin command ("users list-users", or "appservices
// register" followed by the lines of a code block) in the admin room and
// returns the server bot's reply to it. A reply that reports a failure is
// an error.
func (t *Tuwunel) AdminCommand(ctx context.Context, command string) (string, error) {
	t.adminMu.Lock()
	defer t.adminMu.Unlock()
	txn, err := randomHex(8)
	if err != nil {
		return "", err
	}
	var sent struct {
		EventID string `json:"event_id"`
	}
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(t.adminRoom) + "/send/m.room.message/" + txn
	if err := t.adminDo(ctx, http.MethodPut, path, map[string]any{"msgtype": "m.text", "body": "!admin " + command}, &sent); err != nil {
		return "", err
	}
	bot := "@conduit:" + t.serverName // tuwunel 1.4.6's server user
	filter := url.QueryEscape(fmt.Sprintf(`{"room":{"rooms":[%q],"timeline":{"limit":50,"senders":[%q]}}}`, t.adminRoom, bot))
	since := ""
	for {
		q := "/_matrix/client/v3/sync?filter=" + filter
		if since != "" {
			q += "&timeout=10000&since=" + url.QueryEscape(since)
		}
		var s struct {
			NextBatch string `json:"next_batch"`
			Rooms     struct {
				Join map[string]struct {
					Timeline struct {
						Events []struct {
							Sender  string `json:"sender"`
							Content struct {
								Body      string `json:"body"`
								RelatesTo struct {
									InReplyTo struct {
										EventID string `json:"event_id"`
									} `json:"m.in_reply_to"`
								} `json:"m.relates_to"`
							} `json:"content"`
						} `json:"events"`
					} `json:"timeline"`
				} `json:"join"`
			} `json:"rooms"`
		}
		if err := t.adminDo(ctx, http.MethodGet, q, nil, &s); err != nil {
			return "", err
		}
		since = s.NextBatch
		for _, e := range s.Rooms.Join[t.adminRoom].Timeline.Events {
			if e.Sender != bot || e.Content.RelatesTo.InReplyTo.EventID != sent.EventID {
				continue
			}
			body := e.Content.Body
			if strings.Contains(body, "Command failed") || strings.Contains(body, "Panic occurred") || strings.HasPrefix(body, "error:") {
				return body, fmt.Errorf("testpeer: tuwunel admin command %q: %s", firstLine(command), body)
			}
			return body, nil
		}
		if err := ctx.Err(); err != nil {
			return "", fmt.Errorf("testpeer: no reply to admin command %q: %w", firstLine(command), err)
		}
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
