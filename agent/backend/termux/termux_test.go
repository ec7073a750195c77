package termux

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// fake is a bin_dir with shell-script stand-ins for termux-sms-send and
// termux-sms-list that record their arguments and input.
type fake struct {
	dir   string // bin_dir and the scripts' records
	state string // the agent state dir
}

const sendScript = `#!/bin/sh
printf '%s\n' "$*" >> "DIR/send.log"
cat >> "DIR/stdin.log"
printf '<EOF>\n' >> "DIR/stdin.log"
mode=$(cat "DIR/send-mode" 2>/dev/null)
case "$mode" in
invalid) echo "termux-sms-send: invalid number"; exit 1;;
fail) echo "termux-api: could not connect" >&2; exit 1;;
hang) exec sleep 30;;
esac
exit 0
`

const listScript = `#!/bin/sh
printf '%s\n' "$*" >> "DIR/list.log"
if [ -f "DIR/list-error" ]; then cat "DIR/list-error"; exit 0; fi
while getopts t:l:o: o; do
  case $o in t) t=$OPTARG;; l) l=$OPTARG;; o) off=$OPTARG;; esac
done
f="DIR/page-$l-$off.json"
if [ -f "$f" ]; then cat "$f"; else echo '[]'; fi
`

func newFake(t *testing.T) *fake {
	t.Helper()
	f := &fake{dir: t.TempDir(), state: t.TempDir()}
	for name, body := range map[string]string{"termux-sms-send": sendScript, "termux-sms-list": listScript} {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(strings.ReplaceAll(body, "DIR", f.dir)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fake) open(t *testing.T, cfg Config) *Termux {
	t.Helper()
	cfg.BinDir = f.dir
	if cfg.PollInterval == 0 {
		cfg.PollInterval = Duration(100 * time.Millisecond)
	}
	tb, err := Open(zerolog.Nop(), f.state, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func (f *fake) lines(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (f *fake) setMode(t *testing.T, mode string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, "send-mode"), []byte(mode), 0o644); err != nil {
		t.Fatal(err)
	}
}

// setInbox writes the pages termux-sms-list prints for rows, as Termux:API
// does: newest first (by _id here) cut into pages of limit at each offset,
// each page printed oldest first.
func (f *fake) setInbox(t *testing.T, rows []SMS, limits ...int) {
	t.Helper()
	old, _ := filepath.Glob(filepath.Join(f.dir, "page-*.json"))
	for _, p := range old {
		os.Remove(p)
	}
	desc := slices.Clone(rows)
	slices.SortFunc(desc, func(a, b SMS) int { return int(b.ID - a.ID) })
	for _, l := range limits {
		for off := 0; off < len(desc); off += l {
			page := slices.Clone(desc[off:min(off+l, len(desc))])
			slices.Reverse(page)
			b, _ := json.MarshalIndent(page, "", "  ")
			if err := os.WriteFile(filepath.Join(f.dir, fmt.Sprintf("page-%d-%d.json", l, off)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func sms(id int64, from, body string) SMS {
	return SMS{ID: id, ThreadID: 7, Type: "inbox", Address: from, Number: from,
		Received: time.Date(2026, 3, 1, 12, 0, int(id), 0, time.Local).Format(receivedLayout), Body: body}
}

// sink records what the backend delivers; refuse makes the first Deliver
// of an id fail.
type sink struct {
	mu       sync.Mutex
	got      []backend.Event
	accepted map[string]int
	refuse   map[string]bool
	ch       chan string
}

func newSink() *sink {
	return &sink{accepted: map[string]int{}, refuse: map[string]bool{}, ch: make(chan string, 100)}
}

func (s *sink) Deliver(ctx context.Context, in backend.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse[in.ID] {
		delete(s.refuse, in.ID)
		return errors.New("queue full")
	}
	s.got = append(s.got, in)
	s.accepted[in.ID]++
	s.ch <- in.ID
	return nil
}
func (s *sink) Typing(string, bool) {}

func (s *sink) wait(t *testing.T, ids ...string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for _, want := range ids {
		select {
		case got := <-s.ch:
			if got != want {
				t.Fatalf("delivered %s, want %s", got, want)
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", want)
		}
	}
}

// polls waits until the backend has finished n more polls.
func polls(t *testing.T, tb *Termux, n int) {
	t.Helper()
	tb.mu.Lock()
	if tb.polled == nil {
		tb.polled = make(chan struct{})
	}
	ch := tb.polled
	tb.mu.Unlock()
	deadline := time.After(10 * time.Second)
	for range n {
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("timed out waiting for a poll")
		}
	}
}

const num = "+12025550123"

func TestSendArgumentsAndStdin(t *testing.T) {
	f := newFake(t)
	tb := f.open(t, Config{SIMs: []int{1, 2}})
	defer tb.Close()
	caps, sims := tb.Caps()
	if c, ok := caps[wire.TransportSMS]; !ok || len(caps) != 1 || c.DeliveryReports || c.MaxFileSize != 0 {
		t.Fatalf("caps = %+v", caps)
	}
	if !slices.Equal(sims, []int{1, 2}) {
		t.Fatalf("sims = %v", sims)
	}
	// Text that a shell or echo would mangle must arrive as is, on stdin.
	text := `-n "$(touch x)" \c back\\slash` + "\nline two"
	ctx := context.Background()
	if err := tb.Send(ctx, backend.Event{ID: "a1", Chat: num, Text: text, SIM: 2}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Send(ctx, backend.Event{ID: "a2", Chat: num, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	if err := tb.Send(ctx, backend.Event{ID: "a3", Chat: num, Text: "hi", SIM: 1, Transport: wire.TransportRCS}); err != nil {
		t.Fatal(err)
	}
	if got, want := f.lines(t, "send.log"), []string{"-n " + num + " -s 1", "-n " + num, "-n " + num + " -s 0"}; !slices.Equal(got, want) {
		t.Fatalf("args = %q, want %q", got, want)
	}
	stdin, _ := os.ReadFile(filepath.Join(f.dir, "stdin.log"))
	if want := text + "<EOF>\nhi<EOF>\nhi<EOF>\n"; string(stdin) != want {
		t.Fatalf("stdin = %q, want %q", stdin, want)
	}
}

func TestSendIsAtMostOnce(t *testing.T) {
	f := newFake(t)
	tb := f.open(t, Config{})
	ctx := context.Background()
	ev := backend.Event{ID: "once", Chat: num, Text: "hello"}
	for range 2 {
		if err := tb.Send(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	tb.Close()
	tb = f.open(t, Config{}) // a restart
	defer tb.Close()
	if err := tb.Send(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if n := len(f.lines(t, "send.log")); n != 1 {
		t.Fatalf("termux-sms-send ran %d times, want 1", n)
	}
}

func TestSendCutOffIsUnknownAfterRestart(t *testing.T) {
	f := newFake(t)
	// A crash after the attempt record and before the outcome record.
	sl, err := openSentLog(filepath.Join(f.state, SentFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := sl.put("cut", stAttempt); err != nil {
		t.Fatal(err)
	}
	sl.close()
	// and a torn line after it
	fh, _ := os.OpenFile(filepath.Join(f.state, SentFile), os.O_APPEND|os.O_WRONLY, 0)
	fh.WriteString(`{"id":"cut","st":"se`)
	fh.Close()

	tb := f.open(t, Config{})
	defer tb.Close()
	err = tb.Send(context.Background(), backend.Event{ID: "cut", Chat: num, Text: "hello"})
	pe, ok := backend.IsPermanent(err)
	if !ok || pe.Reason != "sent status unknown after restart" || !errors.Is(err, ErrUnknownOutcome) {
		t.Fatalf("err = %v, want permanent unknown", err)
	}
	if n := len(f.lines(t, "send.log")); n != 0 {
		t.Fatalf("termux-sms-send ran %d times, want 0", n)
	}
}

func TestSendErrors(t *testing.T) {
	f := newFake(t)
	tb := f.open(t, Config{CommandTimeout: Duration(time.Second)})
	defer tb.Close()
	ctx := context.Background()

	f.setMode(t, "invalid")
	err := tb.Send(ctx, backend.Event{ID: "e1", Chat: num, Text: "x"})
	if _, ok := backend.IsPermanent(err); !ok {
		t.Fatalf("invalid number: err = %v, want permanent", err)
	}

	f.setMode(t, "fail")
	err = tb.Send(ctx, backend.Event{ID: "e2", Chat: num, Text: "x"})
	if _, ok := backend.IsPermanent(err); ok || err == nil {
		t.Fatalf("failure: err = %v, want transient", err)
	}
	f.setMode(t, "")
	if err := tb.Send(ctx, backend.Event{ID: "e2", Chat: num, Text: "x"}); err != nil {
		t.Fatalf("retry after a transient failure: %v", err)
	}

	f.setMode(t, "hang")
	err = tb.Send(ctx, backend.Event{ID: "e3", Chat: num, Text: "x"})
	if pe, ok := backend.IsPermanent(err); !ok || !errors.Is(err, ErrUnknownOutcome) || !strings.Contains(pe.Reason, "unknown") {
		t.Fatalf("timeout: err = %v, want permanent unknown", err)
	}
	f.setMode(t, "")
	before := len(f.lines(t, "send.log"))
	if _, ok := backend.IsPermanent(tb.Send(ctx, backend.Event{ID: "e3", Chat: num, Text: "x"})); !ok {
		t.Fatal("retry of a send with unknown outcome must stay refused")
	}
	if after := len(f.lines(t, "send.log")); after != before {
		t.Fatal("retry of a send with unknown outcome ran termux-sms-send")
	}

	// Not installed: nothing was sent, so it is transient.
	empty := t.TempDir()
	tb2, err := Open(zerolog.Nop(), t.TempDir(), Config{BinDir: empty})
	if err != nil {
		t.Fatal(err)
	}
	defer tb2.Close()
	err = tb2.Send(ctx, backend.Event{ID: "e4", Chat: num, Text: "x"})
	if _, ok := backend.IsPermanent(err); ok || err == nil {
		t.Fatalf("missing binary: err = %v, want transient", err)
	}
}

func TestUnsupportedIsPermanent(t *testing.T) {
	f := newFake(t)
	tb := f.open(t, Config{})
	defer tb.Close()
	md := &wire.Media{Mime: "image/png", Size: 1}
	for name, ev := range map[string]backend.Event{
		"media":     {Kind: wire.KindMedia, Media: md, File: "/dev/null"},
		"reaction":  {Kind: wire.KindReaction, Target: "t", Emoji: "👍"},
		"unreact":   {Kind: wire.KindUnreact, Target: "t", Emoji: "👍"},
		"edit":      {Kind: wire.KindEdit, Target: "t", Text: "y"},
		"delete":    {Kind: wire.KindDelete, Target: "t"},
		"receipt":   {Kind: wire.KindReceipt, Target: "t", State: wire.StateRead},
		"read":      {Kind: wire.KindRead, Target: "t"},
		"group":     {Kind: wire.KindGroup, Group: &wire.Group{Name: "g"}},
		"contact":   {Kind: wire.KindContact, Contact: &wire.Contact{Name: "n"}},
		"future":    {Kind: "hologram"},
		"reply":     {Text: "x", ReplyTo: "t"},
		"groupchat": {Chat: "g:abc", Text: "x"},
		"number":    {Chat: "+1,2025550123", Text: "x"},
		"alpha":     {Chat: "Vodafone", Text: "x"},
		"empty":     {Text: "  \n"},
		"sim":       {Text: "x", SIM: 2},
	} {
		ev.ID = "u-" + name
		if ev.Chat == "" {
			ev.Chat = num
		}
		if _, ok := backend.IsPermanent(tb.Send(context.Background(), ev)); !ok {
			t.Errorf("%s: want a permanent refusal", name)
		}
	}
	if n := len(f.lines(t, "send.log")); n != 0 {
		t.Fatalf("termux-sms-send ran %d times, want 0", n)
	}
	if err := tb.Typing(context.Background(), num, true); err != nil {
		t.Fatal(err)
	}
}

func TestReceiveCursorSurvivesRestart(t *testing.T) {
	f := newFake(t)
	const page = 2
	rows := []SMS{sms(1, num, "old 1"), sms(2, num, "old 2"), sms(3, num, "old 3")}
	f.setInbox(t, rows, page, 1)
	s := newSink()
	tb := f.open(t, Config{PageSize: page})
	ctx := t.Context()
	polls(t, tb, 0) // arm the poll signal before Start
	if err := tb.Start(ctx, s); err != nil {
		t.Fatal(err)
	}
	polls(t, tb, 2)
	s.mu.Lock()
	if len(s.got) != 0 {
		t.Fatalf("history delivered without backfill: %d", len(s.got))
	}
	s.mu.Unlock()

	// More new SMS than a page, and the agent refuses one once.
	s.mu.Lock()
	s.refuse["termux-6"] = true
	s.mu.Unlock()
	for i := int64(4); i <= 7; i++ {
		rows = append(rows, sms(i, "+4915112345678", fmt.Sprintf("new %d", i)))
	}
	f.setInbox(t, rows, page, 1)
	s.wait(t, "termux-4", "termux-5", "termux-6", "termux-7")
	s.mu.Lock()
	ev := s.got[0]
	s.mu.Unlock()
	if ev.Chat != "+4915112345678" || ev.From != ev.Chat || ev.Text != "new 4" || ev.Transport != wire.TransportSMS ||
		ev.Backfill || !ev.TS.Equal(time.Date(2026, 3, 1, 12, 0, 4, 0, time.Local)) {
		t.Fatalf("event = %+v", ev)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart: only what arrived since is delivered.
	rows = append(rows, sms(8, num, "after restart"))
	f.setInbox(t, rows, page, 1)
	tb = f.open(t, Config{PageSize: page})
	defer tb.Close()
	polls(t, tb, 0)
	if err := tb.Start(ctx, s); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "termux-8")
	polls(t, tb, 2)
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, n := range s.accepted {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	if len(s.accepted) != 5 {
		t.Errorf("delivered %d events, want 5", len(s.accepted))
	}
	for _, l := range f.lines(t, "list.log") {
		if !strings.HasPrefix(l, "-t inbox -l ") {
			t.Fatalf("termux-sms-list args %q", l)
		}
	}
}

func TestBackfillAndSkips(t *testing.T) {
	f := newFake(t)
	rows := []SMS{sms(1, num, "one"), sms(2, num, ""), sms(3, "", "no sender"), sms(4, num, "four")}
	f.setInbox(t, rows, 3, 50)
	s := newSink()
	tb := f.open(t, Config{Backfill: 3})
	defer tb.Close()
	polls(t, tb, 0)
	if err := tb.Start(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	s.wait(t, "termux-4")
	polls(t, tb, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) != 1 || !s.got[0].Backfill {
		t.Fatalf("got %+v, want only termux-4 as backfill", s.got)
	}
}

func TestListErrorBacksOff(t *testing.T) {
	f := newFake(t)
	if err := os.WriteFile(filepath.Join(f.dir, "list-error"), []byte(`{"error":"Permission denied"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newSink()
	tb := f.open(t, Config{})
	defer tb.Close()
	polls(t, tb, 0)
	if err := tb.Start(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	polls(t, tb, 2)
	if _, err := os.Stat(filepath.Join(f.state, CursorFile)); !os.IsNotExist(err) {
		t.Fatal("cursor written although listing failed")
	}
	os.Remove(filepath.Join(f.dir, "list-error"))
	f.setInbox(t, []SMS{sms(5, num, "x")}, 1, 50)
	polls(t, tb, 2)
	c, ok, err := loadCursor(filepath.Join(f.state, CursorFile))
	if err != nil || !ok || c.LastID != 5 {
		t.Fatalf("cursor = %+v %v %v", c, ok, err)
	}
}

func TestParseList(t *testing.T) {
	// The shape Termux:API's SmsInboxAPI writes (JsonWriter, indent 2).
	out := `[
  {
    "threadid": 12,
    "type": "inbox",
    "read": false,
    "sender": "Alice",
    "address": "+12025550123",
    "number": "+12025550123",
    "received": "2026-03-01 12:00:04",
    "body": "hi",
    "_id": 345
  }
]
`
	rows, err := ParseList([]byte(out))
	if err != nil || len(rows) != 1 {
		t.Fatal(rows, err)
	}
	r := rows[0]
	if r.ID != 345 || r.ThreadID != 12 || r.From() != num || r.Body != "hi" || r.Read || r.Type != "inbox" {
		t.Fatalf("%+v", r)
	}
	if !r.Time(time.UTC).Equal(time.Date(2026, 3, 1, 12, 0, 4, 0, time.UTC)) {
		t.Fatal(r.Time(time.UTC))
	}
	for _, bad := range []string{"", "  ", `{"error":"no permission"}`, `{}`, `[{"body":"x"}]`, `[1]`, `nope`, `[{"_id":"1"}]`} {
		if _, err := ParseList([]byte(bad)); !errors.Is(err, ErrListOutput) {
			t.Errorf("ParseList(%q) = %v, want ErrListOutput", bad, err)
		}
	}
	if rows, err := ParseList([]byte("[]\n")); err != nil || len(rows) != 0 {
		t.Fatal(rows, err)
	}
}

func FuzzParseList(f *testing.F) {
	f.Add([]byte(`[{"threadid":1,"type":"inbox","read":true,"address":"+1","number":"+1","received":"2026-01-01 00:00:00","body":"x","_id":1}]`))
	f.Add([]byte(`{"error":"x"}`))
	f.Add([]byte(`[{"_id":9223372036854775807,"received":"9999-99-99 99:99:99"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rows, err := ParseList(b)
		if err != nil {
			if !errors.Is(err, ErrListOutput) {
				t.Fatalf("error does not wrap ErrListOutput: %v", err)
			}
			return
		}
		for _, r := range rows {
			if r.ID <= 0 {
				t.Fatalf("row with _id %d accepted", r.ID)
			}
			_ = r.Time(time.UTC)
			_ = r.From()
		}
	})
}
