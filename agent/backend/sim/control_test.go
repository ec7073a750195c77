package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/wire"
)

func TestControlAPI(t *testing.T) {
	s, c := started(t)
	var up atomic.Bool
	srv := httptest.NewServer(s.Handler(up.Load, testToken))
	defer srv.Close()

	post := func(body string) (int, map[string]any) {
		t.Helper()
		resp, err := do(t, http.MethodPost, srv.URL+"/v1/inject", body, testToken)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("response is not JSON: %v", err)
		}
		return resp.StatusCode, out
	}

	// Inject → an inbound message.
	if code, _ := post(`{"from":"+15551234567","text":"hi there"}`); code != http.StatusAccepted {
		t.Fatalf("inject: %d", code)
	}
	if in := next(t, c); in.From != "+15551234567" || in.Chat != "+15551234567" || in.Text != "hi there" {
		t.Fatalf("%+v", in)
	}

	// Bad input → 400 with a JSON error.
	for _, body := range []string{`{"from":"5551234567","text":"x"}`, `{"from":"+15551234567","text":""}`, `not json`, `{"from":"+1","text":"x"}`} {
		code, out := post(body)
		if code != http.StatusBadRequest || out["error"] == "" || out["error"] == nil {
			t.Fatalf("%s: got %d %v, want 400 with error", body, code, out)
		}
	}

	// Sent list.
	get := func(path string, v any) int {
		t.Helper()
		resp, err := do(t, http.MethodGet, srv.URL+path, "", testToken)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.StatusCode
	}
	var sent []Sent
	if code := get("/v1/sent", &sent); code != 200 || sent == nil || len(sent) != 0 {
		t.Fatalf("empty sent list: %d %v", code, sent)
	}
	if err := s.Send(t.Context(), backend.Event{ID: "id1", Chat: "+4915112345678", Text: "yo"}); err != nil {
		t.Fatal(err)
	}
	if code := get("/v1/sent", &sent); code != 200 || len(sent) != 1 || sent[0].ID != "id1" || sent[0].Chat != "+4915112345678" || sent[0].Text != "yo" {
		t.Fatalf("sent list: %d %+v", code, sent)
	}

	// Health follows the hook.
	var h Health
	if code := get("/v1/healthz", &h); code != 200 || h.Connected {
		t.Fatalf("healthz: %d %+v", code, h)
	}
	up.Store(true)
	if get("/v1/healthz", &h); !h.Connected {
		t.Fatal("healthz does not follow the hook")
	}

	// Wrong method.
	resp, err := do(t, http.MethodGet, srv.URL+"/v1/inject", "", testToken)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/inject: %d", resp.StatusCode)
	}
}

const testToken = "test-token-0123456789"

// do makes a control request as a local program would (token, JSON).
func do(t *testing.T, method, url, body, token string) (*http.Response, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	Authorize(req, token)
	return http.DefaultClient.Do(req)
}

// TestControlGuard: what a web page (or any process without the state
// directory) can send is refused: no token, a form or text body, a
// rebound DNS name as Host. Nothing reaches the phone.
func TestControlGuard(t *testing.T) {
	s, c := started(t)
	srv := httptest.NewServer(s.Handler(nil, testToken))
	defer srv.Close()
	body := `{"from":"+15551234567","text":"forged"}`
	tests := []struct {
		name   string
		ct     string
		auth   string
		host   string
		method string
		want   int
	}{
		{"no token", "application/json", "", "", http.MethodPost, http.StatusUnauthorized},
		{"wrong token", "application/json", "Bearer nope", "", http.MethodPost, http.StatusUnauthorized},
		{"form post with the token", "application/x-www-form-urlencoded", "Bearer " + testToken, "", http.MethodPost, http.StatusUnsupportedMediaType},
		{"text/plain post (no preflight)", "text/plain", "Bearer " + testToken, "", http.MethodPost, http.StatusUnsupportedMediaType},
		{"rebound DNS name", "application/json", "Bearer " + testToken, "evil.example:8080", http.MethodPost, http.StatusForbidden},
		{"sent list without token", "", "", "", http.MethodGet, http.StatusUnauthorized},
		{"preflight", "", "", "", http.MethodOptions, http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := "/v1/inject"
			var rd io.Reader
			if tc.method == http.MethodPost {
				rd = strings.NewReader(body)
			} else {
				path = "/v1/sent"
			}
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+path, rd)
			if tc.ct != "" {
				req.Header.Set("Content-Type", tc.ct)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			if tc.host != "" {
				req.Host = tc.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("got %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	// The real thing gets through, and is the only event the phone got.
	resp, err := do(t, http.MethodPost, srv.URL+"/v1/inject", `{"from":"+15551234567","text":"real"}`, testToken)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("authorised inject: %d", resp.StatusCode)
	}
	if in := next(t, c); in.Text != "real" {
		t.Fatalf("the phone got %q first, want only the authorised event", in.Text)
	}
}

func TestControlToken(t *testing.T) {
	dir := t.TempDir()
	tok, err := LoadOrCreateControlToken(dir)
	if err != nil || len(tok) < 32 {
		t.Fatalf("token %q, %v", tok, err)
	}
	again, err := LoadOrCreateControlToken(dir)
	if err != nil || again != tok {
		t.Fatalf("second load gave %q (%v), want the same token", again, err)
	}
	st, err := os.Stat(filepath.Join(dir, ControlTokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
}

func TestListenControlLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		if ln, err := ListenControl(addr); err == nil {
			ln.Close()
			t.Fatalf("%s accepted", addr)
		} else if !strings.Contains(err.Error(), "loopback") && !strings.Contains(err.Error(), addr) {
			t.Fatalf("%s: unclear error %v", addr, err)
		}
	}
	ln, err := ListenControl("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

// fileSink reads each delivered file while Deliver runs, as the agent
// copies it before it answers.
type fileSink struct {
	c     chan backend.Inbound
	bytes chan []byte
}

func (s fileSink) Typing(string, bool) {}
func (s fileSink) Deliver(ctx context.Context, in backend.Inbound) error {
	b, err := os.ReadFile(in.File)
	if err != nil {
		return err
	}
	s.bytes <- b
	s.c <- in
	return nil
}

// POST /v1/files puts a file on the phone before any message; an inject
// naming it sends those bytes and takes the file. Names not made by
// /v1/files, and a file given two ways, are refused.
func TestControlPhoneFiles(t *testing.T) {
	s := New(zerolog.Nop())
	sink := fileSink{c: make(chan backend.Inbound, 4), bytes: make(chan []byte, 4)}
	if err := s.Start(t.Context(), sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	srv := httptest.NewServer(s.Handler(nil, testToken))
	defer srv.Close()
	call := func(path, body string, out any) int {
		t.Helper()
		resp, err := do(t, http.MethodPost, srv.URL+path, body, testToken)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}

	var made FilesResponse
	if code := call("/v1/files", `{"generate": 100000}`, &made); code != http.StatusCreated || made.File == "" {
		t.Fatalf("files: %d %+v", code, made)
	}
	want := make([]byte, 100000)
	_, _ = io.ReadFull(Pattern(), want)
	inject := `{"from":"+15551234567","kind":"media","media":{"name":"a.bin","mime":"application/octet-stream"},"file":"` + made.File + `"}`
	if code := call("/v1/inject", inject, nil); code != http.StatusAccepted {
		t.Fatalf("inject: %d", code)
	}
	if got := <-sink.bytes; !bytes.Equal(got, want) {
		t.Fatalf("delivered %d bytes, not the file's %d pattern bytes", len(got), len(want))
	}
	if in := <-sink.c; in.Kind != wire.KindMedia || !in.FileGiven {
		t.Fatalf("delivered %+v", in)
	}
	if _, err := os.Stat(filepath.Join(s.mediaDir, made.File)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the sent file is still on the phone: %v", err)
	}

	var fail errorBody
	for _, body := range []string{
		strings.Replace(inject, made.File, made.File, 1),                        // taken already
		strings.Replace(inject, made.File, "../control.token", 1),               // not a name from /v1/files
		strings.Replace(inject, made.File, "ready-"+strings.Repeat("0", 24), 1), // well formed, never made
		strings.Replace(inject, `"file":`, `"generate":10,"file":`, 1),          // two ways
	} {
		if code := call("/v1/inject", body, &fail); code != http.StatusBadRequest || fail.Error == "" {
			t.Fatalf("%s: %d %+v, want 400 with an error", body, code, fail)
		}
	}
	if code := call("/v1/files", `{"generate": -1}`, &fail); code != http.StatusBadRequest {
		t.Fatalf("negative size: %d", code)
	}
}

// A file the phone sends is kept (linked, or copied) under its id and
// hashed from what was kept; the agent may remove its own copy at once.
func TestSendKeepsFile(t *testing.T) {
	s, _ := started(t)
	src := filepath.Join(t.TempDir(), "in-file")
	data := []byte("the bytes of a file the agent hands to the phone")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ev := backend.Event{ID: "$file1", Chat: "+4915112345678", Kind: wire.KindMedia, File: src,
		Media: &wire.Media{Name: "x.txt", Mime: "text/plain"}}
	if err := s.Send(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(src); err != nil {
		t.Fatal(err)
	}
	sent := s.SentMessages()
	h := sha256.Sum256(data)
	if len(sent) != 1 || sent[0].Media == nil || sent[0].Media.Size != int64(len(data)) || sent[0].Media.SHA256 != hex.EncodeToString(h[:]) {
		t.Fatalf("sent %+v", sent)
	}
	if got, err := os.ReadFile(s.MediaPath("$file1")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("kept %q, %v", got, err)
	}
}
