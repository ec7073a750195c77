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
