package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReadMsg: any byte string either decodes to a valid message that
// re-encodes and decodes to the same thing, or gives an error; never a panic.
func FuzzReadMsg(f *testing.F) {
	for _, m := range []Msg{
		Hello{Proto: 1, Agent: "a", Backend: "sim"},
		Message{ID: "m", Chat: "+12025550100", Text: "hi"},
		Ack{IDs: []string{"m"}},
		Ack{Statuses: []StatusRef{{ID: "m", State: StateSent}}},
		Pong{Nonce: 1, Out: new(int), In: new(int)},
		Welcome{Proto: 1, Features: []string{FeatureStatusAck}},
		Status{ID: "m", State: StateFailed, Reason: "x"},
		PairRequest{Token: "t", CSR: []byte{1}},
	} {
		b, _ := Encode(m)
		f.Add(b)
	}
	f.Add([]byte{Version, 200, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			m, err := ReadMsg(r)
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnknownType) ||
					errors.Is(err, ErrFrameTooLarge) || errors.Is(err, ErrUnsupportedVersion) {
					return
				}
				t.Fatalf("unexpected error kind: %v", err)
			}
			enc, err := Encode(m)
			if err != nil {
				t.Fatalf("re-encode %T: %v", m, err)
			}
			m2, err := ReadMsg(bytes.NewReader(enc))
			if err != nil {
				t.Fatalf("decode of re-encoded %T: %v", m, err)
			}
			enc2, _ := Encode(m2)
			if !bytes.Equal(enc, enc2) {
				t.Fatalf("not stable: %q vs %q", enc, enc2)
			}
		}
	})
}

func FuzzParsePairLink(f *testing.F) {
	f.Add("rcsgate://pair?addr=127.0.0.1:4443&token=kkkkkkkkkkkkkkkkkkkk&pin=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("rcsgate://pair")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParsePairLink(s)
		if err != nil {
			if !errors.Is(err, ErrBadPairLink) {
				t.Fatalf("error not wrapped: %v", err)
			}
			return
		}
		l2, err := ParsePairLink(l.String())
		if err != nil {
			t.Fatalf("round trip of accepted link failed: %v", err)
		}
		if l2.Token != l.Token || l2.Pin != l.Pin || len(l2.Addrs) != len(l.Addrs) {
			t.Fatalf("round trip changed the link")
		}
	})
}
