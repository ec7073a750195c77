package execbackend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/wire"
)

var fakephone string // the built testdata/fakephone

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fakephone")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fakephone = filepath.Join(dir, "fakephone")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", fakephone, "./testdata/fakephone")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build fakephone: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sink records deliveries, copying files as the agent does; refuse makes
// the first Deliver of an id fail.
type sink struct {
	mu     sync.Mutex
	events map[string]backend.Event
	files  map[string][]byte
	count  map[string]int
	refuse map[string]bool
	typing []string
	ch     chan string
}

func newSink() *sink {
	return &sink{events: map[string]backend.Event{}, files: map[string][]byte{}, count: map[string]int{},
		refuse: map[string]bool{}, ch: make(chan string, 1000)}
}

func (s *sink) Deliver(ctx context.Context, in backend.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse[in.ID] {
		delete(s.refuse, in.ID)
		return errors.New("journal full")
	}
	if in.File != "" {
		b, err := os.ReadFile(in.File)
		if err != nil {
			return err
		}
		s.files[in.ID] = b
	}
	s.events[in.ID] = in
	s.count[in.ID]++
	s.ch <- in.ID
	return nil
}

func (s *sink) Typing(chat string, active bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.typing = append(s.typing, fmt.Sprintf("%s %v", chat, active))
	s.ch <- "typing"
}

// waitFor waits until every id in ids was delivered.
func (s *sink) waitFor(t *testing.T, ids ...string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		s.mu.Lock()
		missing := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return s.count[id] > 0 })
		s.mu.Unlock()
		if len(missing) == 0 {
			return
		}
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %v", missing)
		}
	}
}

type env struct {
	dir  string // fakephone's records
	b    *Exec
	sink *sink
}

func start(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), sink: newSink()}
	cfg := Config{Command: fakephone, Env: map[string]string{"FAKEPHONE_DIR": e.dir},
		SendTimeout: Duration(15 * time.Second), StopGrace: Duration(2 * time.Second),
		RestartBackoff: []Duration{Duration(10 * time.Millisecond)}}
	if mod != nil {
		mod(&cfg)
	}
	b, err := Open(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel), t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.b = b
	if err := b.Start(t.Context(), e.sink); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return e
}

func (e *env) lines(t *testing.T, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(15 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (e *env) acked(t *testing.T, line string) {
	t.Helper()
	eventually(t, line, func() bool { return slices.Contains(e.lines(t, "acks.log"), line) })
}

const chat = "+12025550123"

var ts = time.UnixMilli(1767225600123)

func TestHelloCapsAndWelcome(t *testing.T) {
	e := start(t, nil)
	caps, sims := e.b.Caps()
	if len(caps) != 2 || caps[wire.TransportRCS].MaxFileSize != wire.MaxMediaSize || !caps[wire.TransportRCS].Groups ||
		!caps[wire.TransportSMS].DeliveryReports || caps[wire.TransportSMS].Reactions {
		t.Fatalf("caps = %+v (the unknown transport must be dropped)", caps)
	}
	if !slices.Equal(sims, []int{1, 2}) {
		t.Fatalf("sims = %v", sims)
	}
	var w map[string]any
	eventually(t, "welcome", func() bool { return len(e.lines(t, "welcome.json")) == 1 })
	if err := json.Unmarshal([]byte(e.lines(t, "welcome.json")[0]), &w); err != nil {
		t.Fatal(err)
	}
	if w["protocol"] != 1.0 || w["state_dir"] != e.b.stateDir || w["max_line"] != float64(MaxLine) {
		t.Fatalf("welcome = %v", w)
	}
}

func TestRoundTripEveryKind(t *testing.T) {
	e := start(t, nil)
	ctx := t.Context()
	media := filepath.Join(t.TempDir(), "cat.png")
	png := bytes.Repeat([]byte("\x89PNG-bytes"), 1000)
	if err := os.WriteFile(media, png, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []backend.Event{
		{Kind: wire.KindText, Text: "hello \"world\"\n✓", ReplyTo: "p.earlier", Transport: wire.TransportRCS, SIM: 2},
		{Kind: wire.KindMedia, Text: "caption", Media: &wire.Media{Name: "cat.png", Mime: "image/png", Size: int64(len(png)), Width: 3, Height: 4}, File: media},
		{Kind: wire.KindReaction, Target: "p.m1", Emoji: "👍"},
		{Kind: wire.KindUnreact, Target: "p.m1", Emoji: "👍"},
		{Kind: wire.KindEdit, Target: "p.m1", Text: "fixed"},
		{Kind: wire.KindDelete, Target: "p.m1"},
		{Kind: wire.KindRead, Target: "p.m1"},
		{Kind: wire.KindReceipt, Target: "p.m1", State: wire.StateFailed, Reason: "too large"},
		{Kind: wire.KindGroup, Chat: "g:family", Text: "renamed", Group: &wire.Group{Name: "Family", Topic: "t",
			Members: []wire.Member{{Number: "+12025550111", Name: "Ann"}, {Number: "+12025550112"}}}},
		{Kind: wire.KindContact, Contact: &wire.Contact{Name: "Bob"}},
	}
	for i, ev := range cases {
		ev.ID = fmt.Sprintf("$ev%d", i)
		if ev.Chat == "" {
			ev.Chat = chat
		}
		ev.TS = ts
		if err := e.b.Send(ctx, ev); err != nil {
			t.Fatalf("%s: %v", ev.Kind, err)
		}
	}
	// Matrix-style ids ("$...") reach the program unchanged; its echoes
	// "echo-$evN" are not valid phone keys and are nacked as permanent.
	sends := e.lines(t, "sends.jsonl")
	if len(sends) != len(cases) {
		t.Fatalf("program got %d sends, want %d", len(sends), len(cases))
	}
	reqs := map[string]bool{}
	for i, l := range sends {
		var got sendLine
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatal(err)
		}
		if got.Type != TypeSend || got.Req == "" || reqs[got.Req] {
			t.Fatalf("send line %s: bad type or req", l)
		}
		reqs[got.Req] = true
		want := cases[i]
		want.ID = fmt.Sprintf("$ev%d", i)
		if want.Chat == "" {
			want.Chat = chat
		}
		want.TS = ts
		if !reflect.DeepEqual(got.Event(), want) {
			t.Errorf("program got %+v\nwant %+v", got.Event(), want)
		}
	}
	e.acked(t, "nack echo-$ev0 true")

	// Plain ids: the full round trip back into the sink.
	for i, ev := range cases {
		ev.ID = fmt.Sprintf("k%d", i)
		if ev.Chat == "" {
			ev.Chat = chat
		}
		ev.TS = ts
		if err := e.b.Send(ctx, ev); err != nil {
			t.Fatalf("%s: %v", ev.Kind, err)
		}
		e.sink.waitFor(t, "echo-"+ev.ID)
		e.sink.mu.Lock()
		got := e.sink.events["echo-"+ev.ID]
		file := e.sink.files["echo-"+ev.ID]
		e.sink.mu.Unlock()
		want := ev
		want.ID, want.From = "echo-"+ev.ID, ev.Chat
		if ev.File != "" {
			if got.File == "" || got.File == ev.File || !bytes.Equal(file, png) {
				t.Errorf("media: file %q, %d bytes", got.File, len(file))
			}
			want.File = got.File
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", ev.Kind, got, want)
		}
		e.acked(t, "ack echo-"+ev.ID)
		if ev.Kind == wire.KindText || ev.Kind == wire.KindMedia {
			e.sink.waitFor(t, "rcpt-"+ev.ID)
			e.sink.mu.Lock()
			r := e.sink.events["rcpt-"+ev.ID]
			e.sink.mu.Unlock()
			if r.Kind != wire.KindReceipt || r.Target != ev.ID || r.State != wire.StateDelivered || r.Chat != chat {
				t.Errorf("receipt %+v", r)
			}
		}
	}
}

func TestNackThenAck(t *testing.T) {
	e := start(t, nil)
	e.sink.mu.Lock()
	e.sink.refuse["echo-n1"] = true
	e.sink.mu.Unlock()
	if err := e.b.Send(t.Context(), backend.Event{ID: "n1", Chat: chat, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	e.sink.waitFor(t, "echo-n1")
	e.acked(t, "ack echo-n1")
	acks := e.lines(t, "acks.log")
	ni, ai := slices.Index(acks, "nack echo-n1 false"), slices.Index(acks, "ack echo-n1")
	if ni < 0 || ai < ni {
		t.Fatalf("acks = %q: want a nack, then an ack", acks)
	}
	e.sink.mu.Lock()
	defer e.sink.mu.Unlock()
	if e.sink.count["echo-n1"] != 1 {
		t.Fatalf("delivered %d times", e.sink.count["echo-n1"])
	}
}

func TestInvalidEventIsNackedPermanent(t *testing.T) {
	e := start(t, nil)
	if err := e.b.Send(t.Context(), backend.Event{ID: "b1", Chat: chat, Text: "badevent"}); err != nil {
		t.Fatal(err)
	}
	e.acked(t, "nack bad id! true")
}

func TestResults(t *testing.T) {
	e := start(t, nil)
	err := e.b.Send(t.Context(), backend.Event{ID: "r1", Chat: "+15550000001", Text: "x"})
	if pe, ok := backend.IsPermanent(err); !ok || pe.Reason != "invalid number" {
		t.Fatalf("err = %v, want permanent invalid number", err)
	}
	err = e.b.Send(t.Context(), backend.Event{ID: "r2", Chat: "+15550000002", Text: "x"})
	if _, ok := backend.IsPermanent(err); ok || err == nil || !strings.Contains(err.Error(), "network down") {
		t.Fatalf("err = %v, want transient", err)
	}
}

func TestRestartWithPendingCommand(t *testing.T) {
	e := start(t, nil)
	ev := backend.Event{ID: "c1", Chat: chat, Text: "crash"}
	err := e.b.Send(t.Context(), ev)
	if !errors.Is(err, ErrProgramExited) {
		t.Fatalf("err = %v, want ErrProgramExited", err)
	}
	if _, ok := backend.IsPermanent(err); ok {
		t.Fatal("a crash must be transient")
	}
	if err := e.b.Send(t.Context(), ev); err != nil { // waits for the restart
		t.Fatalf("retry: %v", err)
	}
	e.sink.waitFor(t, "echo-c1")
	if n := len(e.lines(t, "starts.log")); n != 2 {
		t.Fatalf("program started %d times, want 2", n)
	}
	if e.b.restarts.Load() != 1 {
		t.Fatalf("restarts = %d", e.b.restarts.Load())
	}
}

func TestMalformedLinesSkipped(t *testing.T) {
	e := start(t, nil)
	if err := e.b.Send(t.Context(), backend.Event{ID: "g1", Chat: chat, Text: "garbage"}); err != nil {
		t.Fatal(err)
	}
	e.sink.waitFor(t, "echo-g1")
	if n := len(e.lines(t, "starts.log")); n != 1 {
		t.Fatalf("program started %d times, want 1", n)
	}
	e.sink.mu.Lock()
	defer e.sink.mu.Unlock()
	if len(e.sink.typing) != 0 {
		t.Fatalf("typing without a chat passed on: %v", e.sink.typing)
	}
}

func TestLineOverLimitRestarts(t *testing.T) {
	e := start(t, nil)
	err := e.b.Send(t.Context(), backend.Event{ID: "l1", Chat: chat, Text: "toolong"})
	if !errors.Is(err, ErrProgramExited) {
		t.Fatalf("err = %v, want ErrProgramExited", err)
	}
	if err := e.b.Send(t.Context(), backend.Event{ID: "l1", Chat: chat, Text: "toolong"}); err != nil {
		t.Fatal(err)
	}
	if n := len(e.lines(t, "starts.log")); n != 2 {
		t.Fatalf("program started %d times, want 2", n)
	}
}

func TestSendTimeoutIsTransient(t *testing.T) {
	e := start(t, func(c *Config) { c.SendTimeout = Duration(200 * time.Millisecond) })
	err := e.b.Send(t.Context(), backend.Event{ID: "h1", Chat: chat, Text: "hang"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline", err)
	}
	if _, ok := backend.IsPermanent(err); ok {
		t.Fatal("a timeout must be transient")
	}
}

func TestTypingBothWays(t *testing.T) {
	e := start(t, nil)
	if err := e.b.Typing(t.Context(), chat, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "typing echo", func() bool {
		e.sink.mu.Lock()
		defer e.sink.mu.Unlock()
		return slices.Contains(e.sink.typing, chat+" true")
	})
	if err := e.b.Typing(t.Context(), chat, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "typing stop echo", func() bool {
		e.sink.mu.Lock()
		defer e.sink.mu.Unlock()
		return slices.Contains(e.sink.typing, chat+" false")
	})
}

func TestCloseStopsProgram(t *testing.T) {
	e := start(t, nil)
	p := e.b.curProc.Load()
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.ended:
	default:
		t.Fatal("program still running after Close")
	}
	if err := e.b.Send(context.Background(), backend.Event{ID: "x", Chat: chat, Text: "x"}); err == nil {
		t.Fatal("send after Close succeeded")
	}
}

func TestStartFailures(t *testing.T) {
	for _, mode := range []string{"nohello", "badhello", "missing"} {
		t.Run(mode, func(t *testing.T) {
			cmd := fakephone
			if mode == "missing" {
				cmd = filepath.Join(t.TempDir(), "nothing-here")
			}
			b, err := Open(zerolog.Nop(), t.TempDir(), Config{Command: cmd,
				Env:          map[string]string{"FAKEPHONE_DIR": t.TempDir(), "FAKEPHONE_MODE": mode},
				HelloTimeout: Duration(300 * time.Millisecond), StopGrace: Duration(time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if err := b.Start(t.Context(), newSink()); err == nil {
				t.Fatal("Start succeeded")
			}
		})
	}
	if _, err := Open(zerolog.Nop(), t.TempDir(), Config{}); err == nil {
		t.Fatal("Open without a command succeeded")
	}
}

func TestStderrLogTruncates(t *testing.T) {
	var buf bytes.Buffer
	s := &stderrLog{log: zerolog.New(&buf)}
	s.Write([]byte("call +12025550123 now\n" + strings.Repeat("y", 2000)))
	s.Write([]byte("zz\nlast\n"))
	out := buf.String()
	if strings.Contains(out, "+12025550123") || strings.Contains(out, "zz") || strings.Count(out, "\n") != 3 ||
		!strings.Contains(out, `"cut":true`) || !strings.Contains(out, "last") {
		t.Fatalf("log:\n%s", out)
	}
}

func TestDecodeLine(t *testing.T) {
	l, err := DecodeLine([]byte(`{"type":"event","id":"sms-1","kind":"media","chat":"+12025550123","from":"+12025550123","text":"c","ts":5,"media":{"mime":"image/png","size":3},"file":"/x/y","future_field":1}`))
	if err != nil {
		t.Fatal(err)
	}
	ev := l.Event()
	if l.Type != TypeEvent || ev.ID != "sms-1" || ev.Media.Mime != "image/png" || ev.File != "/x/y" || ev.TS.UnixMilli() != 5 {
		t.Fatalf("%+v", ev)
	}
	if err := CheckEvent(ev); err != nil {
		t.Fatal(err)
	}
	if ev.FileGiven {
		t.Fatal("a file without give is given")
	}
	if l, err = DecodeLine([]byte(`{"type":"event","id":"sms-2","kind":"media","chat":"+12025550123","media":{"mime":"image/png"},"file":"/x/y","give":true}`)); err != nil || !l.Event().FileGiven {
		t.Fatalf("give:true not read: %+v %v", l, err)
	}
	for _, bad := range []string{"", "null", "[]", "{}", `{"type":""}`, `{"type":1}`, "{", `"hello"`} {
		if _, err := DecodeLine([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeLine(%q) = %v", bad, err)
		}
	}
	for _, bad := range []backend.Event{{ID: "bad id", Chat: chat, Text: "x"}, {ID: "k", Chat: chat, Kind: "media", Media: &wire.Media{Mime: "a/b"}, File: "rel"},
		{ID: "k", Chat: "", Text: "x"}, {ID: "k", Chat: chat, Kind: wire.KindReceipt, Target: "t", State: "lost"}} {
		if CheckEvent(bad) == nil {
			t.Errorf("CheckEvent(%+v) accepted", bad)
		}
	}
}

func FuzzDecodeLine(f *testing.F) {
	f.Add([]byte(`{"type":"hello","protocol":1,"name":"x","caps":{"sms":{}},"sims":[1]}`))
	f.Add([]byte(`{"type":"result","req":"1","ok":false,"permanent":true,"reason":"r"}`))
	f.Add([]byte(`{"type":"event","id":"a","kind":"group","chat":"g:1","group":{"members":[{"number":"+1"}]},"ts":-1}`))
	f.Add([]byte(`{"type":"typing","chat":"+1","active":true}`))
	f.Add([]byte("not json"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeLine(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if l.Type == "" {
			t.Fatal("decoded a line without a type")
		}
		ev := l.Event()
		_ = CheckEvent(ev)
		_ = resultErr(l)
		// What we decode re-encodes to an equal line.
		re, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		l2, err := DecodeLine(re)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !reflect.DeepEqual(l.Event(), l2.Event()) {
			t.Fatalf("round trip changed the event: %+v vs %+v", l.Event(), l2.Event())
		}
	})
}
