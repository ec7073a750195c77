package smsgateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeApp follows the local-server API of SMS Gateway for Android v1.68.0
// (see client.go): basic auth, POST/GET /messages, GET/POST /webhooks,
// 409 for a duplicate message id, {"message": ...} errors, and webhooks
// signed as PayloadSingingPlugin.kt does.
type fakeApp struct {
	t          *testing.T
	srv        *httptest.Server
	user, pass string
	key        string

	mu        sync.Mutex
	reqs      []recorded
	msgs      map[string]*fakeMsg
	order     []string
	hooks     []webhookReg
	dupStatus int // answer to a duplicate id: 409 (v1.58+) or 202 with the first message (older apps)
	// nextPost, when set, is the status of the next POST /messages, after
	// storing the message (an answer lost on the way back).
	nextPost int
	// refuse, when set, makes POST /messages answer 400 with it.
	refuse string
}

type recorded struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

type fakeMsg struct {
	req   map[string]any
	state string
	err   string
}

func newFakeApp(t *testing.T) *fakeApp {
	a := &fakeApp{t: t, user: "sms", pass: "s3cret-pass", key: "signkey1", msgs: map[string]*fakeMsg{}, dupStatus: http.StatusConflict}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve)) // binds 127.0.0.1
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeApp) fail(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func (a *fakeApp) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs = append(a.reqs, recorded{r.Method, r.URL.Path, r.Header.Clone(), body})
	if u, p, ok := r.BasicAuth(); !ok || u != a.user || p != a.pass {
		w.Header().Set("WWW-Authenticate", `Basic realm="Access to SMS Gateway"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/messages":
		var m map[string]any
		if json.Unmarshal(body, &m) != nil {
			a.fail(w, 400, "bad json")
			return
		}
		n := 0
		for _, k := range []string{"message", "textMessage", "dataMessage"} {
			if m[k] != nil {
				n++
			}
		}
		nums, _ := m["phoneNumbers"].([]any)
		switch {
		case n != 1:
			a.fail(w, 400, "Must specify exactly one of: textMessage, dataMessage, or message")
			return
		case len(nums) == 0:
			a.fail(w, 400, "Empty phone numbers list")
			return
		case m["simNumber"] != nil && m["simNumber"].(float64) < 1:
			a.fail(w, 400, "SIM number cannot be less than 1")
			return
		}
		if a.refuse != "" {
			a.fail(w, 400, a.refuse)
			return
		}
		id, _ := m["id"].(string)
		if id == "" {
			id = fmt.Sprintf("nano%d", len(a.order))
		}
		if _, dup := a.msgs[id]; dup {
			if a.dupStatus == http.StatusAccepted {
				w.WriteHeader(http.StatusAccepted)
				json.NewEncoder(w).Encode(a.stateLocked(id))
				return
			}
			a.fail(w, a.dupStatus, "Message with the same ID already exists")
			return
		}
		a.msgs[id] = &fakeMsg{req: m, state: statePending}
		a.order = append(a.order, id)
		if a.nextPost != 0 {
			code := a.nextPost
			a.nextPost = 0
			a.fail(w, code, "lost answer")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(a.stateLocked(id))
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/messages/"):
		id := strings.TrimPrefix(r.URL.Path, "/messages/")
		if a.msgs[id] == nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		json.NewEncoder(w).Encode(a.stateLocked(id))
	case r.Method == http.MethodGet && r.URL.Path == "/webhooks":
		out := []map[string]any{}
		for _, h := range a.hooks {
			out = append(out, map[string]any{"id": h.ID, "deviceId": nil, "url": h.URL, "event": h.Event, "source": "Local"})
		}
		json.NewEncoder(w).Encode(out)
	case r.Method == http.MethodPost && r.URL.Path == "/webhooks":
		var h webhookReg
		if json.Unmarshal(body, &h) != nil || h.URL == "" || h.Event == "" {
			a.fail(w, 400, "bad webhook")
			return
		}
		if h.ID == "" {
			h.ID = fmt.Sprintf("wh%d", len(a.hooks))
		}
		replaced := false
		for i := range a.hooks {
			if a.hooks[i].ID == h.ID {
				a.hooks[i], replaced = h, true
			}
		}
		if !replaced {
			a.hooks = append(a.hooks, h)
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(h)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (a *fakeApp) stateLocked(id string) map[string]any {
	m := a.msgs[id]
	var recips []map[string]any
	nums, _ := m.req["phoneNumbers"].([]any)
	for _, n := range nums {
		recips = append(recips, map[string]any{"phoneNumber": n, "state": m.state, "error": nilIfEmpty(m.err)})
	}
	return map[string]any{"id": id, "deviceId": "dev1", "state": m.state, "isHashed": false, "isEncrypted": false,
		"recipients": recips, "states": map[string]string{m.state: time.Now().Format("2006-01-02T15:04:05.000-07:00")}}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (a *fakeApp) setState(id, state, errText string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.msgs[id].state, a.msgs[id].err = state, errText
}

// posts returns the recorded POST /messages bodies.
func (a *fakeApp) posts() []recorded {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []recorded
	for _, r := range a.reqs {
		if r.Method == http.MethodPost && r.Path == "/messages" {
			out = append(out, r)
		}
	}
	return out
}

func (a *fakeApp) messageCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.msgs)
}

// envelope builds a webhook body as the app's gson does.
func envelope(event string, payload any) []byte {
	b, _ := json.Marshal(map[string]any{
		"deviceId": "ffffffffceb0b1db0000018e937c815b", "event": event,
		"id": "Ey6ECgOkVVFjz3CL48B8C", "payload": payload, "webhookId": "rcsgate-x",
	})
	return b
}

// post sends body to url signed with key at ts (sig overrides when set).
func postHook(t *testing.T, url, key string, body []byte, ts time.Time, sig string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if !ts.IsZero() {
		tss := strconv.FormatInt(ts.Unix(), 10)
		req.Header.Set("X-Timestamp", tss)
		if sig == "" {
			sig = fmt.Sprintf("%x", sign(key, body, tss))
		}
	}
	if sig != "-" {
		req.Header.Set("X-Signature", sig)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("webhook post: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
