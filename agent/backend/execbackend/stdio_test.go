package execbackend

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/agent"
	"github.com/rcsgate/rcsgate/agent/backend"
)

// app is the program's end of a stdio backend: the test writes its lines
// and reads the agent's.
type app struct {
	t     *testing.T
	w     *io.PipeWriter // → agent's stdin
	lines chan map[string]any
}

func (a *app) send(v any) {
	a.t.Helper()
	b, _ := json.Marshal(v)
	if _, err := a.w.Write(append(b, '\n')); err != nil {
		a.t.Fatalf("write to agent: %v", err)
	}
}

// next returns the agent's next line of type typ, skipping others.
func (a *app) next(typ string) map[string]any {
	a.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-a.lines:
			if !ok {
				a.t.Fatalf("agent's output ended while waiting for %s", typ)
			}
			if m["type"] == typ {
				return m
			}
		case <-deadline:
			a.t.Fatalf("no %s line from the agent", typ)
		}
	}
}

// fakeHost is the agent's side of status and network lines.
type fakeHost struct {
	mu      sync.Mutex
	st      agent.Status
	changed chan struct{}
	dns     [][]string
}

func newFakeHost() *fakeHost { return &fakeHost{changed: make(chan struct{})} }

func (h *fakeHost) Status() agent.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}

func (h *fakeHost) set(s agent.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st = s
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *fakeHost) WaitStatus(ctx context.Context, last agent.Status) (agent.Status, error) {
	for {
		h.mu.Lock()
		s, ch := h.st, h.changed
		h.mu.Unlock()
		if s != last {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
}

func (h *fakeHost) Network(dns []string) error {
	if _, err := agent.ParseDNSServers(dns); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dns = append(h.dns, dns)
	return nil
}

// startStdio runs a Stdio backend over pipes; hello is the app's first line.
func startStdio(t *testing.T, host Host, hello any) (*Stdio, *app, *sink) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s, err := OpenStdio(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.DebugLevel), t.TempDir(), inR, outW,
		StdioConfig{SendTimeout: Duration(5 * time.Second), HelloTimeout: Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if host != nil {
		s.SetHost(host)
	}
	a := &app{t: t, w: inW, lines: make(chan map[string]any, 100)}
	go func() {
		defer close(a.lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				t.Errorf("agent wrote a line that is not JSON: %q", sc.Text())
				return
			}
			a.lines <- m
		}
	}()
	go func() {
		if hello != nil {
			a.send(hello)
		}
	}()
	snk := newSink()
	started := make(chan error, 1)
	go func() { started <- s.Start(t.Context(), snk) }()
	t.Cleanup(func() {
		inW.Close()
		outW.Close()
		s.Close()
	})
	if err := <-started; err != nil {
		return nil, nil, nil
	}
	return s, a, snk
}

var appHello = map[string]any{"type": "hello", "protocol": 1, "name": "rcsgate-phone/test",
	"caps": map[string]any{"sms": map[string]any{"delivery_reports": true}}, "sims": []int{1, 2}}

func TestStdioRoundTrip(t *testing.T) {
	s, a, snk := startStdio(t, nil, appHello)
	if s == nil {
		t.Fatal("Start failed")
	}
	w := a.next(TypeWelcome)
	if w["protocol"] != float64(1) || w["features"] != nil {
		t.Fatalf("welcome %v (no host: no features)", w)
	}
	if caps, sims := s.Caps(); !caps["sms"].DeliveryReports || !slices.Equal(sims, []int{1, 2}) {
		t.Fatalf("caps %v sims %v", caps, sims)
	}

	// A send is answered by the app; its result is the Send's outcome.
	done := make(chan error, 1)
	go func() {
		done <- s.Send(t.Context(), backend.Event{ID: "$ev1", Chat: chat, Text: "hi", Transport: "sms"})
	}()
	cmd := a.next(TypeSend)
	if cmd["id"] != "$ev1" || cmd["text"] != "hi" || cmd["transport"] != "sms" {
		t.Fatalf("send %v", cmd)
	}
	a.send(map[string]any{"type": "result", "req": cmd["req"], "ok": true})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	go func() {
		done <- s.Send(t.Context(), backend.Event{ID: "$ev2", Chat: chat, Kind: "reaction", Target: "x", Emoji: "👍"})
	}()
	cmd = a.next(TypeSend)
	a.send(map[string]any{"type": "result", "req": cmd["req"], "ok": false, "permanent": true, "reason": "reaction is not supported over sms"})
	if pe, ok := backend.IsPermanent(<-done); !ok || pe.Reason != "reaction is not supported over sms" {
		t.Fatalf("permanent refusal lost: %v", pe)
	}

	// An event from the app is acked once the agent took it.
	a.send(map[string]any{"type": "event", "id": "sms-1", "chat": chat, "from": chat, "text": "hello", "ts": 1767225600999, "transport": "sms", "sim": 2})
	if ack := a.next(TypeAck); ack["id"] != "sms-1" {
		t.Fatalf("ack %v", ack)
	}
	snk.mu.Lock()
	ev := snk.events["sms-1"]
	snk.mu.Unlock()
	if ev.Text != "hello" || ev.SIM != 2 || ev.Transport != "sms" {
		t.Fatalf("delivered %+v", ev)
	}

	// The app closes the agent's stdin: Done, and sends fail fast.
	a.w.Close()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after stdin ended")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := s.Send(ctx, backend.Event{ID: "$ev3", Chat: chat, Text: "x"}); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("send after the app left: %v", err)
	}
}

func TestStdioNoHello(t *testing.T) {
	if s, _, _ := startStdio(t, nil, nil); s != nil {
		t.Fatal("Start succeeded without a hello")
	}
	if s, _, _ := startStdio(t, nil, map[string]any{"type": "event", "id": "x"}); s != nil {
		t.Fatal("Start succeeded with an event as the first line")
	}
}

func TestStdioStatusAndNetwork(t *testing.T) {
	host := newFakeHost()
	since := time.UnixMilli(1767225600123)
	host.set(agent.Status{Connected: false, LastError: "dial: no route"})
	s, a, _ := startStdio(t, host, appHello)
	if s == nil {
		t.Fatal("Start failed")
	}
	w := a.next(TypeWelcome)
	if f, _ := w["features"].([]any); !slices.Contains(f, any("status")) || !slices.Contains(f, any("network")) {
		t.Fatalf("welcome features %v", w["features"])
	}
	st := a.next(TypeStatus)
	if st["connected"] != false || st["error"] != "dial: no route" {
		t.Fatalf("first status %v", st)
	}
	host.set(agent.Status{Connected: true, Since: since, Out: 3, In: 1})
	st = a.next(TypeStatus)
	if st["connected"] != true || st["since"] != float64(since.UnixMilli()) || st["out"] != float64(3) || st["in"] != float64(1) || st["error"] != nil {
		t.Fatalf("status after connect %v", st)
	}
	host.set(agent.Status{Unpaired: true, LastError: "revoked: device revoked"})
	if st = a.next(TypeStatus); st["unpaired"] != true {
		t.Fatalf("unpaired status %v", st)
	}

	a.send(map[string]any{"type": "network", "dns": []string{"192.0.2.53", "2001:db8::53"}})
	a.send(map[string]any{"type": "network", "dns": []string{"not-an-ip"}}) // refused, logged
	a.send(map[string]any{"type": "network"})                               // a change without DNS news
	eventually(t, "network lines applied", func() bool {
		host.mu.Lock()
		defer host.mu.Unlock()
		return len(host.dns) == 2
	})
	host.mu.Lock()
	defer host.mu.Unlock()
	if strings.Join(host.dns[0], ",") != "192.0.2.53,2001:db8::53" || host.dns[1] != nil {
		t.Fatalf("network lines: %q", host.dns)
	}
}
