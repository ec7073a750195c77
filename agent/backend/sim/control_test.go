package sim

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rcsgate/rcsgate/agent/backend"
)

func TestControlAPI(t *testing.T) {
	s, c := started(t)
	var up atomic.Bool
	srv := httptest.NewServer(s.Handler(up.Load))
	defer srv.Close()

	post := func(body string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Post(srv.URL+"/v1/inject", "application/json", strings.NewReader(body))
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
		resp, err := http.Get(srv.URL + path)
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
	resp, err := http.Get(srv.URL + "/v1/inject")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/inject: %d", resp.StatusCode)
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
