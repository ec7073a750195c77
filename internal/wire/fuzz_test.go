package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
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
		Message{ID: "p.1", Kind: KindMedia, Chat: "+12025550100", Media: &Media{Name: "a.jpg", Mime: "image/jpeg", Size: 3, Width: 1}},
		Message{ID: "r", Kind: KindReaction, Chat: "+12025550100", Target: "p.1", Emoji: "👍"},
		Message{ID: "g", Kind: KindGroup, Chat: "g:x", Group: &Group{Name: "n", Members: []Member{{Number: "+12025550101"}}}},
		Message{ID: "c", Kind: KindContact, Chat: "+1", From: "+1", Contact: &Contact{Name: "Z"}},
		Message{ID: "n", Chat: "g:x", From: "c:3f2a9c0d41b7e8aa", Text: "by name only"},
		Message{ID: "x", Kind: KindReceipt, Chat: "+1", Target: "$e", State: StateDelivered, Transport: TransportSMS, SIM: 2},
		MediaGet{ID: "m", Offset: 5},
		MediaHeader{ID: "m", Size: 1, Total: 1, SHA256: strings.Repeat("a", 64)},
		MediaHeader{ID: "m", Size: 1, Total: 1},
		MediaTrailer{SHA256: strings.Repeat("b", 64)},
		Typing{Chat: "+1", Active: true},
		Hello{Proto: 1, Caps: map[string]Caps{TransportRCS: {MaxFileSize: 1, Reactions: true}}, SIMs: []int{1, 2}},
		// At the bounds and just past them (the latter encode, and must decode
		// to a clear error).
		Hello{Proto: 1, Agent: "rcsgate-agent/1", Backend: "exec", Features: []string{FeatureStatusAck}, SIMs: []int{8, 7, 6, 5, 4, 3, 2, 1}},
		Hello{Proto: 1, SIMs: []int{1, 2, 3, 4, 5, 6, 7, 8, 9}},
		Hello{Proto: 1, SIMs: []int{2, 2}},
		Status{ID: "m", State: StateFailed, Reason: strings.Repeat("r", MaxReasonLen+1)},
		Message{ID: "x", Kind: KindReceipt, Chat: "+1", Target: "$e", State: StateFailed, Reason: "no signal\x1b[2J"},
		Message{ID: "c2", Kind: KindContact, Chat: "+1", Contact: &Contact{Name: "Z", AvatarMime: "image/png", AvatarSize: 10}},
		Ack{IDs: []string{"a", "b", "c"}, Statuses: []StatusRef{{ID: "d", State: StateRead}}},
		PairRequest{Token: "t", CSR: []byte{1, 2, 3}, Name: "phone\u202e"},
		PairResponse{Cert: []byte{1}, CA: []byte{2}, DeviceID: "D"},
		Error{Code: "revoked", Message: "device revoked"},
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

// FuzzFetchMedia: whatever a peer answers on a media stream, FetchMedia
// returns an error or exactly the announced, hash-checked bytes; it never
// writes more than the limit and never panics.
func FuzzFetchMedia(f *testing.F) {
	good := func(body []byte) []byte {
		var b bytes.Buffer
		_ = WriteMsg(&b, MediaHeader{ID: "m", Size: int64(len(body)), Total: int64(len(body)), SHA256: sha(body)})
		b.Write(body)
		return b.Bytes()
	}
	f.Add(good([]byte("hello")))
	f.Add(good(nil))
	streamed := func(body []byte) []byte {
		var b bytes.Buffer
		_ = WriteMsg(&b, MediaHeader{ID: "m", Size: int64(len(body)), Total: int64(len(body))})
		b.Write(body)
		_ = WriteMsg(&b, MediaTrailer{SHA256: sha(body)})
		return b.Bytes()
	}
	f.Add(streamed([]byte("hello")))
	f.Add(streamed(nil))
	e, _ := Encode(Error{Code: "media_unavailable", Message: "gone"})
	f.Add(e)
	f.Fuzz(func(t *testing.T, answer []byte) {
		rw := &fakeStream{r: bytes.NewReader(answer)}
		var dst bytes.Buffer
		hdr, err := FetchMedia(rw, "m", 0, "", 1<<16, &dst, nil)
		if err != nil {
			return
		}
		if int64(dst.Len()) != hdr.Size || sha(dst.Bytes()) != hdr.SHA256 || hdr.Total > 1<<16 {
			t.Fatalf("accepted %d bytes for header %+v", dst.Len(), hdr)
		}
	})
}
