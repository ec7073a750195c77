package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	msgs := []Msg{
		Hello{Proto: 1, Agent: "a/1", Backend: "sim", Features: []string{"text"}},
		Welcome{Proto: 1, DeviceID: "ABC", ServerMS: 5},
		Welcome{Proto: 1, DeviceID: "ABC", ServerMS: 5, Features: []string{FeatureStatusAck}},
		Message{ID: "m1", Chat: "+12025550100", From: "+12025550100", Text: "héllo", TSMS: 1},
		Ack{IDs: []string{"m1", "m2"}},
		Ack{Statuses: []StatusRef{{ID: "m1", State: StateSent}, {ID: "m2", State: StateFailed}}},
		Ack{IDs: []string{"p1"}, Statuses: []StatusRef{{ID: "m3", State: StateSent}}},
		Status{ID: "m1", State: StateDelivered, TSMS: 2},
		Ping{Nonce: 7, TSMS: 3},
		Pong{Nonce: 7, TSMS: 3},
		Pong{Nonce: 8, TSMS: 4, Out: intp(0), In: intp(12)},
		PairRequest{Token: "t", CSR: []byte{1, 2}, Name: "phone"},
		PairResponse{Cert: []byte{3}, CA: []byte{4}, DeviceID: "D"},
		Error{Code: "revoked", Message: "device revoked"},
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := WriteMsg(&buf, m); err != nil {
			t.Fatalf("write %T: %v", m, err)
		}
	}
	for _, want := range msgs {
		got, err := ReadMsg(&buf)
		if err != nil {
			t.Fatalf("read %T: %v", want, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %#v, want %#v", got, want)
		}
	}
	if _, err := ReadMsg(&buf); !errors.Is(err, io.EOF) {
		t.Fatalf("after last frame: got %v, want io.EOF", err)
	}
}

func TestDecodeErrors(t *testing.T) {
	frame := func(v, typ byte, n uint32, body string) []byte {
		return append([]byte{v, typ, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, body...)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"unknown type", frame(Version, 200, 2, "{}"), ErrUnknownType},
		{"type zero", frame(Version, 0, 2, "{}"), ErrUnknownType},
		{"wrong version", frame(9, byte(TypePing), 2, "{}"), ErrUnsupportedVersion},
		{"oversized", frame(Version, byte(TypeMessage), MaxPayload+1, ""), ErrFrameTooLarge},
		{"huge length", frame(Version, byte(TypeMessage), 0xFFFFFFFF, ""), ErrFrameTooLarge},
		{"truncated header", []byte{Version, byte(TypePing), 0}, ErrMalformed},
		{"truncated body", frame(Version, byte(TypePing), 10, "{}"), ErrMalformed},
		{"not json", frame(Version, byte(TypePing), 3, "{{{"), ErrMalformed},
		{"wrong json shape", frame(Version, byte(TypeAck), 10, `{"ids":3}`), ErrMalformed},
		{"message without id", frame(Version, byte(TypeMessage), 13, `{"chat":"+1"}`), ErrMalformed},
		{"empty ack", frame(Version, byte(TypeAck), 2, "{}"), ErrMalformed},
		{"empty ack lists", frame(Version, byte(TypeAck), uint32(len(`{"ids":[],"statuses":[]}`)), `{"ids":[],"statuses":[]}`), ErrMalformed},
		{"status ack bad state", frame(Version, byte(TypeAck), uint32(len(`{"statuses":[{"id":"x","state":"no"}]}`)), `{"statuses":[{"id":"x","state":"no"}]}`), ErrMalformed},
		{"negative depth", frame(Version, byte(TypePong), uint32(len(`{"n":1,"out":-1}`)), `{"n":1,"out":-1}`), ErrMalformed},
		{"bad state", frame(Version, byte(TypeStatus), 26, `{"id":"x","state":"maybe"}`), ErrMalformed},
		{"bad utf8", frame(Version, byte(TypeMessage), 34, "{\"id\":\"x\",\"chat\":\"c\",\"text\":\"\xff\"}"), ErrMalformed},
		{"hello no proto", frame(Version, byte(TypeHello), 2, "{}"), ErrMalformed},
		{"status reason not utf8", frame(Version, byte(TypeStatus), 44, "{\"id\":\"x\",\"state\":\"failed\",\"reason\":\"\xff\"}"), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadMsg(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err.Error() == "" || !strings.HasPrefix(err.Error(), "wire:") {
				t.Fatalf("error %q should say where it comes from", err)
			}
		})
	}
}

func TestEncodeRefusesOversized(t *testing.T) {
	_, err := Encode(Message{ID: "x", Chat: "c", Text: strings.Repeat("a", MaxPayload)})
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("got %v, want ErrFrameTooLarge", err)
	}
}

// A peer that announces a large frame and then stalls must not make the
// reader allocate the announced size up front.
func TestOversizedLengthNeverAllocates(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates; allocation counts mean nothing under -race")
	}
	in := []byte{Version, byte(TypeMessage), 0x7f, 0xff, 0xff, 0xff}
	allocs := testing.AllocsPerRun(10, func() { _, _, _ = ReadFrame(bytes.NewReader(in)) })
	if allocs > 5 {
		t.Fatalf("%v allocations for a refused frame", allocs)
	}
}

func TestPairLink(t *testing.T) {
	l := PairLink{Addrs: []string{"127.0.0.1:4443", "[::1]:4443"}, Token: strings.Repeat("k", 32)}
	l.Pin[0] = 9
	got, err := ParsePairLink(l.String())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, l) {
		t.Fatalf("got %+v want %+v", got, l)
	}
	bad := []string{
		"", "http://pair?x", "rcsgate://other?token=x",
		"rcsgate://pair?token=" + strings.Repeat("k", 32), // no addr
		"rcsgate://pair?addr=nohost&token=" + strings.Repeat("k", 32),
		"rcsgate://pair?addr=h:99999&token=" + strings.Repeat("k", 32),
		"rcsgate://pair?addr=h:1&token=short&pin=" + strings.Repeat("A", 43),
		"rcsgate://pair?addr=h:1&token=" + strings.Repeat("k", 32) + "&pin=short",
		"rcsgate://pair?" + strings.Repeat("a", 5000),
	}
	for _, s := range bad {
		if _, err := ParsePairLink(s); !errors.Is(err, ErrBadPairLink) {
			t.Errorf("ParsePairLink(%q) = %v, want ErrBadPairLink", s, err)
		}
	}
}

func intp(n int) *int { return &n }

// TestBounds: every list and field a peer controls has a limit, and going
// past it is a clear ErrMalformed naming what was wrong.
func TestBounds(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = "m" + strings.Repeat("x", i%3)
		}
		return out
	}
	tests := []struct {
		name string
		m    Msg
		want string // in the error; "" = valid
	}{
		{"hello 8 sims", Hello{Proto: 1, SIMs: []int{1, 2, 3, 4, 5, 6, 7, 8}}, ""},
		{"hello 9 sims", Hello{Proto: 1, SIMs: []int{1, 2, 3, 4, 5, 6, 7, 8, 1}}, "SIM slots"},
		{"hello sim twice", Hello{Proto: 1, SIMs: []int{1, 1}}, "twice"},
		{"hello sim 0", Hello{Proto: 1, SIMs: []int{0}}, "SIM slot 0"},
		{"hello sim 9", Hello{Proto: 1, SIMs: []int{9}}, "SIM slot 9"},
		{"hello negative sim", Hello{Proto: 1, SIMs: []int{-1}}, "SIM slot -1"},
		{"hello many features", Hello{Proto: 1, Features: ids(MaxFeatures + 1)}, "features"},
		{"hello long feature", Hello{Proto: 1, Features: []string{long(MaxTokenLen + 1)}}, "feature name"},
		{"hello long agent", Hello{Proto: 1, Agent: long(MaxAgentLen + 1)}, "hello agent"},
		{"hello long backend", Hello{Proto: 1, Backend: long(MaxTokenLen + 1)}, "hello backend"},
		{"hello many caps", Hello{Proto: 1, Caps: map[string]Caps{"a": {}, "b": {}, "c": {}, "d": {}, "e": {}, "f": {}, "g": {}, "h": {}, "i": {}}}, "transports"},
		{"hello negative file size", Hello{Proto: 1, Caps: map[string]Caps{"rcs": {MaxFileSize: -1}}}, "max file size"},
		{"hello huge file size", Hello{Proto: 1, Caps: map[string]Caps{"rcs": {MaxFileSize: MaxMediaSize + 1}}}, "max file size"},
		{"welcome many features", Welcome{Proto: 1, Features: ids(MaxFeatures + 1)}, "features"},
		{"ack max ids", Ack{IDs: ids(MaxAckIDs)}, ""},
		{"ack too many ids", Ack{IDs: ids(MaxAckIDs + 1)}, "ack of"},
		{"status reason", Status{ID: "m", State: StateFailed, Reason: long(MaxReasonLen)}, ""},
		{"status long reason", Status{ID: "m", State: StateFailed, Reason: long(MaxReasonLen + 1)}, "status reason"},
		{"receipt long reason", Message{ID: "r", Chat: "+1", Kind: KindReceipt, Target: "$e", State: StateFailed, Reason: long(MaxReasonLen + 1)}, "reason"},
		{"message long kind", Message{ID: "r", Chat: "+1", Kind: long(MaxTokenLen + 1)}, "kind or state"},
		{"avatar bad type", Message{ID: "c", Chat: "+1", Kind: KindContact, Contact: &Contact{AvatarMime: "not a type"}}, "avatar type"},
		{"pair long token", PairRequest{Token: long(MaxPairTokenLen + 1), CSR: []byte{1}}, "pairing token"},
		{"pair huge csr", PairRequest{Token: "t", CSR: make([]byte, MaxDERLen+1)}, "certificate request"},
		{"pair long name", PairRequest{Token: "t", CSR: []byte{1}, Name: long(MaxDeviceName + 1)}, "device name"},
		{"pair name with escape", PairRequest{Token: "t", CSR: []byte{1}, Name: "phone\x1b[2J"}, "control characters"},
		{"pair name with bidi override", PairRequest{Token: "t", CSR: []byte{1}, Name: "phone\u202egnp.exe"}, "control characters"},
		{"pair response huge cert", PairResponse{Cert: make([]byte, MaxDERLen+1), DeviceID: "D"}, "certificates"},
		{"error long message", Error{Code: "x", Message: long(MaxErrorLen + 1)}, "error message"},
		{"error long code", Error{Code: long(MaxTokenLen + 1)}, "error code"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			_, err = ReadMsg(bytes.NewReader(b))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused a valid frame: %v", err)
			case tc.want != "" && !errors.Is(err, ErrMalformed):
				t.Fatalf("got %v, want ErrMalformed", err)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not say %q", err, tc.want)
			case err != nil && len(err.Error()) > 200:
				t.Fatalf("error quotes too much of the peer's input: %d bytes", len(err.Error()))
			}
		})
	}
}

func TestStripControl(t *testing.T) {
	tests := []struct{ in, want string }{
		{"no signal", "no signal"},
		{"line1\nline2\ttab", "line1 line2 tab"},
		{"\x1b[31mred\x1b[0m", "[31mred[0m"},
		{"a\u202eb\u2066c", "abc"},
		{"  padded  ", "padded"},
		{"\x00\x07bell", "bell"},
		{"\u0085next", "next"},
		{"ünïcödé ✓", "ünïcödé ✓"},
	}
	for _, tc := range tests {
		if got := StripControl(tc.in, 100); got != tc.want {
			t.Errorf("StripControl(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := StripControl(strings.Repeat("é", 10), 5); got != "éé" {
		t.Errorf("cut must keep whole runes within the limit: %q", got)
	}
}
