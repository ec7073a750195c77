package smsgateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/wire"
)

type fakeSink struct {
	mu  sync.Mutex
	err error
	ch  chan backend.Event
}

func newSink() *fakeSink { return &fakeSink{ch: make(chan backend.Event, 64)} }

func (s *fakeSink) Deliver(_ context.Context, ev backend.Event) error {
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.ch <- ev
	return nil
}
func (s *fakeSink) Typing(string, bool) {}

func (s *fakeSink) setErr(err error) { s.mu.Lock(); s.err = err; s.mu.Unlock() }

func (s *fakeSink) next(t *testing.T) backend.Event {
	t.Helper()
	select {
	case ev := <-s.ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event delivered within 5s")
		return backend.Event{}
	}
}

func (s *fakeSink) none(t *testing.T) {
	t.Helper()
	select {
	case ev := <-s.ch:
		t.Fatalf("unexpected event delivered: %+v", ev)
	default:
	}
}

const hookPath = "/hook"

func testConfig(a *fakeApp) Config {
	return Config{
		URL: a.srv.URL, Username: a.user, Password: a.pass,
		WebhookListen: "127.0.0.1:0", WebhookURL: "http://127.0.0.1:8787" + hookPath,
		SigningKey: a.key, SIMs: []int{1, 2}, PollInterval: "0s",
	}
}

func open(t *testing.T, dir string, cfg Config) *Backend {
	t.Helper()
	b, err := Open(zerolog.Nop(), dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func start(t *testing.T, b *Backend, sink backend.Sink) string {
	t.Helper()
	if err := b.Start(context.Background(), sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return "http://" + b.WebhookAddr() + hookPath
}

func TestSendMapsFields(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   backend.Event
		want map[string]any
	}{
		{"default sim", backend.Event{ID: "m1", Chat: "+12025550123", Text: "hello"}, map[string]any{
			"id": appID("m1"), "textMessage": map[string]any{"text": "hello"},
			"phoneNumbers": []any{"+12025550123"}, "withDeliveryReport": true,
		}},
		{"sim 2", backend.Event{ID: "m2", Kind: wire.KindText, Chat: "+447700900123", Text: "hi ✓", SIM: 2}, map[string]any{
			"id": appID("m2"), "textMessage": map[string]any{"text": "hi ✓"},
			"phoneNumbers": []any{"+447700900123"}, "simNumber": float64(2), "withDeliveryReport": true,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newFakeApp(t)
			b := open(t, t.TempDir(), testConfig(a))
			defer b.Close()
			if err := b.Send(context.Background(), tc.ev); err != nil {
				t.Fatal(err)
			}
			p := a.posts()
			if len(p) != 1 {
				t.Fatalf("%d posts, want 1", len(p))
			}
			var got map[string]any
			if err := json.Unmarshal(p[0].Body, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("body = %v\nwant   %v", got, tc.want)
			}
			req, _ := http.NewRequest("GET", "/", nil)
			req.Header = p[0].Header
			if u, pw, ok := req.BasicAuth(); !ok || u != a.user || pw != a.pass {
				t.Errorf("basic auth = %q %q %v", u, pw, ok)
			}
			if ct := p[0].Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if id := appID(tc.ev.ID); !backend.ValidKey(id) || len(id) > 36 {
				t.Errorf("app id %q", id)
			}
		})
	}
}

func TestDuplicateSendAfterCrash(t *testing.T) {
	ev := backend.Event{ID: "evt-1", Chat: "+12025550123", Text: "once"}
	ctx := context.Background()

	t.Run("acknowledged, then resent by a new instance", func(t *testing.T) {
		a := newFakeApp(t)
		dir := t.TempDir()
		b1 := open(t, dir, testConfig(a))
		if err := b1.Send(ctx, ev); err != nil {
			t.Fatal(err)
		}
		// kill -9: no Close. A new instance on the same state dir.
		b2 := open(t, dir, testConfig(a))
		defer b2.Close()
		if err := b2.Send(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if n := len(a.posts()); n != 1 || a.messageCount() != 1 {
			t.Fatalf("posts %d, messages %d; want 1, 1", n, a.messageCount())
		}
	})

	for _, dup := range []int{http.StatusConflict, http.StatusAccepted} {
		t.Run("answer lost, app answers duplicates with "+http.StatusText(dup), func(t *testing.T) {
			a := newFakeApp(t)
			a.dupStatus = dup
			a.nextPost = http.StatusBadGateway // the app stored it; the answer did not arrive
			dir := t.TempDir()
			b1 := open(t, dir, testConfig(a))
			if err := b1.Send(ctx, ev); err == nil {
				t.Fatal("want a transient error")
			} else if _, perm := backend.IsPermanent(err); perm {
				t.Fatalf("want transient, got %v", err)
			}
			b2 := open(t, dir, testConfig(a))
			defer b2.Close()
			if err := b2.Send(ctx, ev); err != nil {
				t.Fatal(err)
			}
			if a.messageCount() != 1 || len(a.posts()) != 1 {
				t.Fatalf("messages %d posts %d; want 1, 1", a.messageCount(), len(a.posts()))
			}
		})
	}

	t.Run("state dir lost, older app answers 202 for a duplicate", func(t *testing.T) {
		a := newFakeApp(t)
		a.dupStatus = http.StatusAccepted
		b1 := open(t, t.TempDir(), testConfig(a))
		if err := b1.Send(ctx, ev); err != nil {
			t.Fatal(err)
		}
		b2 := open(t, t.TempDir(), testConfig(a))
		defer b2.Close()
		if err := b2.Send(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if a.messageCount() != 1 {
			t.Fatalf("messages %d, want 1", a.messageCount())
		}
	})

	t.Run("state dir lost: the app's 409 is success", func(t *testing.T) {
		a := newFakeApp(t)
		b1 := open(t, t.TempDir(), testConfig(a))
		if err := b1.Send(ctx, ev); err != nil {
			t.Fatal(err)
		}
		b2 := open(t, t.TempDir(), testConfig(a))
		defer b2.Close()
		if err := b2.Send(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if a.messageCount() != 1 {
			t.Fatalf("messages %d, want 1", a.messageCount())
		}
	})
}

func TestDeliveryWebhook(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		event, reason   string
		wantState, want string
	}{
		{evSmsDelivered, "", wire.StateDelivered, ""},
		{evSmsFailed, "RESULT_ERROR_GENERIC_FAILURE for +12025550123", wire.StateFailed, "RESULT_ERROR_GENERIC_FAILURE for …"},
	} {
		t.Run(tc.event, func(t *testing.T) {
			a := newFakeApp(t)
			dir := t.TempDir()
			b1 := open(t, dir, testConfig(a))
			ev := backend.Event{ID: "matrix-evt-7", Chat: "+12025550123", Text: "x"}
			if err := b1.Send(ctx, ev); err != nil {
				t.Fatal(err)
			}
			b1.Close()
			// A restarted agent still maps the app's id to the event.
			b := open(t, dir, testConfig(a))
			sink := newSink()
			url := start(t, b, sink)
			payload := map[string]any{"messageId": appID(ev.ID), "recipient": ev.Chat, "phoneNumber": ev.Chat, "simNumber": nil}
			if tc.reason != "" {
				payload["reason"] = tc.reason
			}
			// sms:sent first: acknowledged, no receipt.
			if code := postHook(t, url, a.key, envelope(evSmsSent, payload), time.Now(), ""); code != 200 {
				t.Fatalf("sms:sent: %d", code)
			}
			if code := postHook(t, url, a.key, envelope(tc.event, payload), time.Now(), ""); code != 200 {
				t.Fatalf("status %d", code)
			}
			got := sink.next(t)
			want := backend.Event{ID: appID(ev.ID) + ":" + tc.wantState, Kind: wire.KindReceipt, Chat: ev.Chat, Target: ev.ID,
				State: tc.wantState, Reason: tc.want, Transport: wire.TransportSMS}
			if tc.wantState == wire.StateFailed && want.Reason == "" {
				want.Reason = "not sent"
			}
			got.TS = time.Time{}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if !backend.ValidKey(got.ID) {
				t.Errorf("receipt id %q not a valid key", got.ID)
			}
			if err := got.ToWire().Validate(); err != nil {
				t.Errorf("receipt does not validate: %v", err)
			}
			// Redelivery by the app: the same key again.
			if code := postHook(t, url, a.key, envelope(tc.event, payload), time.Now(), ""); code != 200 {
				t.Fatalf("status %d", code)
			}
			if again := sink.next(t); again.ID != got.ID {
				t.Errorf("redelivered id %q, want %q", again.ID, got.ID)
			}
			// A report for a message this agent did not send: acknowledged, ignored.
			payload["messageId"] = "someone-elses"
			if code := postHook(t, url, a.key, envelope(tc.event, payload), time.Now(), ""); code != 200 {
				t.Fatalf("status %d", code)
			}
			sink.none(t)
		})
	}
}

func TestWebhookRejected(t *testing.T) {
	a := newFakeApp(t)
	b := open(t, t.TempDir(), testConfig(a))
	sink := newSink()
	url := start(t, b, sink)
	body := envelope(evSmsReceived, map[string]any{"messageId": "abc123", "message": "hi", "phoneNumber": "+12025550123", "simNumber": 1, "receivedAt": "2024-06-22T15:46:11.000+07:00"})
	now := time.Now()
	for _, tc := range []struct {
		name string
		key  string
		ts   time.Time
		sig  string
	}{
		{"wrong key", "otherkey", now, ""},
		{"stale timestamp", a.key, now.Add(-6 * time.Minute), ""},
		{"future timestamp", a.key, now.Add(6 * time.Minute), ""},
		{"no timestamp", a.key, time.Time{}, "00"},
		{"no signature", a.key, now, "-"},
		{"not hex", a.key, now, "zz"},
		{"truncated", a.key, now, "abcd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := postHook(t, url, tc.key, body, tc.ts, tc.sig); code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", code)
			}
		})
	}
	// A body changed after signing.
	tss := now
	sig := sign(a.key, body, strconvUnix(tss))
	tampered := []byte(strings.Replace(string(body), "hi", "ho", 1))
	if code := postHook(t, url, a.key, tampered, tss, hexs(sig)); code != http.StatusUnauthorized {
		t.Fatalf("tampered body: %d", code)
	}
	sink.none(t)
}

func TestReceived(t *testing.T) {
	a := newFakeApp(t)
	b := open(t, t.TempDir(), testConfig(a))
	sink := newSink()
	url := start(t, b, sink)
	for _, tc := range []struct {
		name    string
		event   string
		payload map[string]any
		want    backend.Event
	}{
		{"documented sms", evSmsReceived, map[string]any{"messageId": "abc123", "message": "Android is always a sweet treat!", "phoneNumber": "6505551212", "simNumber": 1, "receivedAt": "2024-06-22T15:46:11.000+07:00"},
			backend.Event{ID: "abc123." + b36(time.Date(2024, 6, 22, 8, 46, 11, 0, time.UTC)), Chat: "6505551212", From: "6505551212", Text: "Android is always a sweet treat!", Transport: "sms", SIM: 1, TS: time.Date(2024, 6, 22, 8, 46, 11, 0, time.UTC)}},
		{"v1.68 sender, formatted number, null sim", evSmsReceived, map[string]any{"messageId": "9f3e01", "message": "yo", "sender": "+1 (202) 555-0123", "recipient": nil, "phoneNumber": "+1 (202) 555-0123", "simNumber": nil, "receivedAt": "2026-01-02T03:04:05.678Z"},
			backend.Event{ID: "9f3e01." + b36(time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)), Chat: "+12025550123", From: "+12025550123", Text: "yo", Transport: "sms", TS: time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)}},
		{"mms notification", evMmsReceived, map[string]any{"messageId": "<mms/id@carrier>", "sender": "+12025550123", "simNumber": 2, "transactionId": "T1", "subject": "Photo", "size": 12345, "receivedAt": "2026-01-02T03:04:05.000Z"},
			backend.Event{ID: "mms." + inboundKey("", "<mms/id@carrier>", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), true), Chat: "+12025550123", From: "+12025550123", Text: "[MMS received: Photo; open it on the phone]", Transport: "mms", SIM: 2, TS: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := postHook(t, url, a.key, envelope(tc.event, tc.payload), time.Now(), ""); code != 200 {
				t.Fatalf("status %d", code)
			}
			got := sink.next(t)
			if !got.TS.Equal(tc.want.TS) {
				t.Errorf("TS %v, want %v", got.TS, tc.want.TS)
			}
			got.TS, tc.want.TS = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if !backend.ValidKey(got.ID) {
				t.Errorf("id %q is not a valid key", got.ID)
			}
		})
	}
	// Unknown events are acknowledged and dropped.
	if code := postHook(t, url, a.key, envelope("system:ping", map[string]any{"health": map[string]any{}}), time.Now(), ""); code != 200 {
		t.Fatalf("system:ping: %d", code)
	}
	sink.none(t)
}

func TestDeliverFailingAsksForRetry(t *testing.T) {
	a := newFakeApp(t)
	b := open(t, t.TempDir(), testConfig(a))
	sink := newSink()
	url := start(t, b, sink)
	body := envelope(evSmsReceived, map[string]any{"messageId": "abc", "message": "m", "sender": "+12025550123", "simNumber": 1, "receivedAt": "2026-01-02T03:04:05.000Z"})
	sink.setErr(errors.New("queue full"))
	if code := postHook(t, url, a.key, body, time.Now(), ""); code < 500 {
		t.Fatalf("status %d, want 5xx", code)
	}
	sink.none(t)
	sink.setErr(nil) // the app's retry
	if code := postHook(t, url, a.key, body, time.Now(), ""); code != 200 {
		t.Fatalf("retry: status %d", code)
	}
	if ev := sink.next(t); ev.Text != "m" {
		t.Fatalf("got %+v", ev)
	}
}

func TestStatusMapping(t *testing.T) {
	const (
		ok = iota
		transient
		permanent
		notFound
	)
	for _, tc := range []struct {
		op   string
		code int
		body string
		want int
	}{
		{opSend, 202, "", ok},
		{opSend, 200, "", ok},
		{opSend, 409, `{"message":"Message with the same ID already exists"}`, ok},
		{opSend, 400, `{"message":"Invalid phone number +12025550123"}`, permanent},
		{opSend, 400, `not json`, permanent},
		{opSend, 422, ``, permanent},
		{opSend, 413, ``, permanent},
		{opSend, 401, ``, transient},
		{opSend, 403, ``, transient},
		{opSend, 404, ``, transient},
		{opSend, 408, ``, transient},
		{opSend, 429, ``, transient},
		{opSend, 500, `{"message":"boom"}`, transient},
		{opSend, 502, ``, transient},
		{opSend, 503, ``, transient},
		{opGet, 200, ``, ok},
		{opGet, 404, ``, notFound},
		{opGet, 409, ``, permanent},
		{opListHooks, 500, ``, transient},
		{opAddHook, 400, `{"message":"url must start with https:// or http://127.0.0.1"}`, permanent},
	} {
		err := statusError(tc.op, tc.code, []byte(tc.body))
		_, perm := backend.IsPermanent(err)
		got := transient
		switch {
		case err == nil:
			got = ok
		case errors.Is(err, errNotFound):
			got = notFound
		case perm:
			got = permanent
		}
		if got != tc.want {
			t.Errorf("%s %d: got class %d (%v), want %d", tc.op, tc.code, got, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "5550123") {
			t.Errorf("%s %d: error leaks a phone number: %v", tc.op, tc.code, err)
		}
	}
}

func TestUnsupported(t *testing.T) {
	a := newFakeApp(t)
	b := open(t, t.TempDir(), testConfig(a))
	defer b.Close()
	base := backend.Event{ID: "u1", Chat: "+12025550123", Text: "t"}
	for _, tc := range []struct {
		name string
		mod  func(*backend.Event)
	}{
		{"media", func(e *backend.Event) { e.Kind = wire.KindMedia; e.Media = &wire.Media{Mime: "image/png", Size: 1} }},
		{"reaction", func(e *backend.Event) { e.Kind = wire.KindReaction; e.Emoji = "👍"; e.Target = "x" }},
		{"unreact", func(e *backend.Event) { e.Kind = wire.KindUnreact }},
		{"edit", func(e *backend.Event) { e.Kind = wire.KindEdit; e.Target = "x" }},
		{"delete", func(e *backend.Event) { e.Kind = wire.KindDelete; e.Target = "x" }},
		{"read", func(e *backend.Event) { e.Kind = wire.KindRead }},
		{"future kind", func(e *backend.Event) { e.Kind = "poll" }},
		{"group chat", func(e *backend.Event) { e.Chat = wire.GroupChatPrefix + "abc" }},
		{"not E.164", func(e *backend.Event) { e.Chat = "12025550123" }},
		{"empty text", func(e *backend.Event) { e.Text = "" }},
		{"text with file", func(e *backend.Event) { e.File = "/tmp/x" }},
		{"unknown sim", func(e *backend.Event) { e.SIM = 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := base
			tc.mod(&ev)
			err := b.Send(context.Background(), ev)
			if _, ok := backend.IsPermanent(err); !ok {
				t.Fatalf("got %v, want a permanent error", err)
			}
		})
	}
	if n := len(a.posts()); n != 0 {
		t.Fatalf("%d posts to the app", n)
	}
}

func TestAppRefusal(t *testing.T) {
	a := newFakeApp(t)
	b := open(t, t.TempDir(), testConfig(a))
	defer b.Close()
	ctx := context.Background()
	a.mu.Lock()
	a.refuse = "Invalid phone number: +12025550123"
	a.mu.Unlock()
	err := b.Send(ctx, backend.Event{ID: "r1", Chat: "+12025550123", Text: "t"})
	pe, ok := backend.IsPermanent(err)
	if !ok {
		t.Fatalf("got %v, want permanent", err)
	}
	if strings.Contains(pe.Reason, "5550123") || !strings.Contains(pe.Reason, "Invalid phone number") {
		t.Fatalf("reason %q", pe.Reason)
	}
	a.mu.Lock()
	a.refuse = ""
	a.mu.Unlock()
	b.cl.pass = "wrong"
	if err := b.Send(ctx, backend.Event{ID: "r2", Chat: "+12025550123", Text: "t"}); err == nil {
		t.Fatal("want error")
	} else if _, perm := backend.IsPermanent(err); perm {
		t.Fatalf("bad credentials must be transient: %v", err)
	}
	b.cl.pass = a.pass
	if err := b.Send(ctx, backend.Event{ID: "r2", Chat: "+12025550123", Text: "t"}); err != nil {
		t.Fatalf("after fixing credentials: %v", err)
	}
}

func TestRegisterWebhooks(t *testing.T) {
	a := newFakeApp(t)
	cfg := testConfig(a)
	cfg.RegisterWebhooks = true
	a.hooks = []webhookReg{
		{ID: "mine", URL: cfg.WebhookURL, Event: evSmsReceived},
		{ID: "other", URL: "https://example.com/x", Event: evSmsDelivered},
	}
	b := open(t, t.TempDir(), cfg)
	start(t, b, newSink())
	b.Close()
	want := map[string]bool{}
	for _, h := range a.hooks {
		if h.URL == cfg.WebhookURL {
			want[h.Event] = true
		}
	}
	if len(want) != len(hookEvents) || len(a.hooks) != 2+len(hookEvents)-1 {
		t.Fatalf("hooks after registration: %+v", a.hooks)
	}
	// Again: nothing new.
	b2 := open(t, t.TempDir(), cfg)
	start(t, b2, newSink())
	if len(a.hooks) != 2+len(hookEvents)-1 {
		t.Fatalf("second registration added hooks: %+v", a.hooks)
	}
}

func TestPollFallback(t *testing.T) {
	a := newFakeApp(t)
	b := open(t, t.TempDir(), testConfig(a))
	b.set.pollInterval = 10 * time.Millisecond // below the configurable minimum, for the test
	sink := newSink()
	start(t, b, sink)
	ev := backend.Event{ID: "p1", Chat: "+12025550123", Text: "x"}
	if err := b.Send(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	a.setState(appID("p1"), stateFailed, "RESULT_ERROR_NO_SERVICE")
	got := sink.next(t)
	if got.Kind != wire.KindReceipt || got.Target != "p1" || got.State != wire.StateFailed || got.Reason != "RESULT_ERROR_NO_SERVICE" || got.ID != appID("p1")+":failed" {
		t.Fatalf("got %+v", got)
	}
	// Final: no more polls for it.
	ev2 := backend.Event{ID: "p2", Chat: "+12025550123", Text: "y"}
	if err := b.Send(context.Background(), ev2); err != nil {
		t.Fatal(err)
	}
	a.setState(appID("p2"), stateDelivered, "")
	if got := sink.next(t); got.Target != "p2" || got.State != wire.StateDelivered {
		t.Fatalf("got %+v", got)
	}
	sink.none(t)
}

func TestJournalTornTail(t *testing.T) {
	a := newFakeApp(t)
	dir := t.TempDir()
	b := open(t, dir, testConfig(a))
	if err := b.Send(context.Background(), backend.Event{ID: "j1", Chat: "+12025550123", Text: "x"}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	f, _ := os.OpenFile(filepath.Join(dir, JournalFile), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"op":"send","app":"rgtorn`)
	f.Close()
	b2 := open(t, dir, testConfig(a))
	defer b2.Close()
	if e := b2.j.entries[appID("j1")]; e == nil || !e.posted || e.ev != "j1" {
		t.Fatalf("entry after reopen: %+v", e)
	}
	if err := b2.Send(context.Background(), backend.Event{ID: "j2", Chat: "+12025550123", Text: "x"}); err != nil {
		t.Fatal(err)
	}
	b2.Close()
	b3 := open(t, dir, testConfig(a))
	defer b3.Close()
	if len(b3.j.entries) != 2 {
		t.Fatalf("entries %d, want 2", len(b3.j.entries))
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pw")
	os.WriteFile(good, []byte("filepass\n"), 0o600)
	loose := filepath.Join(dir, "loose")
	os.WriteFile(loose, []byte("x\n"), 0o644)
	base := Config{Username: "sms", Password: "p", SigningKey: "k"}
	for _, tc := range []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"defaults", func(*Config) {}, ""},
		{"password file", func(c *Config) { c.Password, c.PasswordFile = "", good }, ""},
		{"both password and file", func(c *Config) { c.PasswordFile = good }, "not both"},
		{"no password", func(c *Config) { c.Password = "" }, "password (or password_file) is required"},
		{"loose password file", func(c *Config) { c.Password, c.PasswordFile = "", loose }, "readable by others"},
		{"no signing key", func(c *Config) { c.SigningKey = "" }, "signing_key"},
		{"no username", func(c *Config) { c.Username = "" }, "username"},
		{"bad url", func(c *Config) { c.URL = "127.0.0.1:8080" }, "url must be"},
		{"credentials in url", func(c *Config) { c.URL = "http://u:p@127.0.0.1:8080" }, "credentials"},
		{"bad listen", func(c *Config) { c.WebhookListen = "8787" }, "webhook_listen"},
		{"bad webhook url", func(c *Config) { c.WebhookURL = "ftp://x" }, "webhook_url"},
		{"bad sim", func(c *Config) { c.SIMs = []int{0} }, "sims"},
		{"dup sim", func(c *Config) { c.SIMs = []int{1, 1} }, "twice"},
		{"poll off", func(c *Config) { c.PollInterval = "0s" }, ""},
		{"poll too short", func(c *Config) { c.PollInterval = "1s" }, "at least"},
		{"poll junk", func(c *Config) { c.PollInterval = "soon" }, "poll_interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mod(&c)
			s, err := c.validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			_ = s
		})
	}
	s, _ := base.validate()
	if s.base.String() != DefaultURL || s.listen != DefaultWebhookListen || s.webhookURL != "http://127.0.0.1:8787/smsgateway" || s.webhookPath != "/smsgateway" || s.pollInterval != DefaultPollInterval {
		t.Errorf("defaults: %+v", s)
	}
	if len(s.warnings) != 0 {
		t.Errorf("warnings for defaults: %v", s.warnings)
	}
	c := base
	c.WebhookURL = "http://localhost:8787/x"
	if s, _ := c.validate(); len(s.warnings) != 1 {
		t.Errorf("want a warning for http://localhost, got %v", s.warnings)
	}
}

func TestCaps(t *testing.T) {
	a := newFakeApp(t)
	b := open(t, t.TempDir(), testConfig(a))
	defer b.Close()
	caps, sims := b.Caps()
	if !reflect.DeepEqual(caps, map[string]wire.Caps{"sms": {DeliveryReports: true}}) || !reflect.DeepEqual(sims, []int{1, 2}) {
		t.Fatalf("caps %+v sims %v", caps, sims)
	}
	if b.Name() != "smsgateway" {
		t.Fatal(b.Name())
	}
}

func TestSignatureMatchesDocs(t *testing.T) {
	// The docs' Go example (docs-web docs/features/webhooks.md):
	// hex(HMAC-SHA256(key, payload + timestamp)).
	body := []byte(`{"event":"sms:received"}`)
	if err := verify("k", body, "5d0e3a87f6d8b84cbf7d7cb2c2b0ab2c2bf3b0e1d55f0b8f6ae2a62bd0b5c0e0", "1700000000", time.Unix(1700000000, 0)); !errors.Is(err, errBadSignature) {
		t.Fatalf("arbitrary signature accepted: %v", err)
	}
	sig := hexs(sign("k", body, "1700000000"))
	if err := verify("k", body, sig, "1700000000", time.Unix(1700000100, 0)); err != nil {
		t.Fatal(err)
	}
	if err := verify("k", body, strings.ToUpper(sig), "1700000000", time.Unix(1700000100, 0)); err != nil {
		t.Fatalf("upper-case hex: %v", err)
	}
}
