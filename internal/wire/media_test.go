package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

func sha(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// fakeStream reads a canned answer and records what was written.
type fakeStream struct {
	r io.Reader
	w bytes.Buffer
}

func (s *fakeStream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *fakeStream) Write(p []byte) (int, error) { return s.w.Write(p) }

func serveOver(t *testing.T, files map[string][]byte, fetch func(c net.Conn) error) error {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		defer a.Close()
		_, err := ServeMedia(a, func(id string) (MediaFile, error) {
			data, ok := files[id]
			if !ok {
				return MediaFile{}, ErrMediaUnavailable
			}
			return MediaFile{R: bytes.NewReader(data), Total: int64(len(data)), SHA256: sha(data)}, nil
		})
		done <- err
	}()
	err := fetch(b)
	b.Close()
	<-done
	return err
}

func TestMediaStream(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 10_000)
	files := map[string][]byte{"m": data, "empty": {}}
	tests := []struct {
		name, id, want string
		offset, max    int64
		wantBytes      []byte
		wantErr        error
	}{
		{name: "whole file", id: "m", max: 1 << 20, wantBytes: data},
		{name: "announced hash matches", id: "m", want: sha(data), max: 1 << 20, wantBytes: data},
		{name: "resume from an offset", id: "m", offset: 99_990, max: 1 << 20, wantBytes: data[99_990:]},
		{name: "empty file", id: "empty", max: 1, wantBytes: []byte{}},
		{name: "unknown id", id: "nope", max: 1 << 20, wantErr: ErrMediaUnavailable},
		{name: "over the limit", id: "m", max: 10, wantErr: ErrMalformed},
		{name: "hash differs from the announced one", id: "m", want: sha([]byte("x")), max: 1 << 20, wantErr: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got bytes.Buffer
			err := serveOver(t, files, func(c net.Conn) error {
				_, err := FetchMedia(c, tc.id, tc.offset, tc.want, tc.max, &got, nil)
				return err
			})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got.Bytes(), tc.wantBytes) {
				t.Fatalf("got %d bytes, err %v; want %d bytes", got.Len(), err, len(tc.wantBytes))
			}
		})
	}
}

// A streamed file (no hash known up front) goes out with a hash-less header
// and a trailer; the receiver checks the bytes against the trailer, and a
// source that fails its own check after the bytes ends the transfer.
func TestMediaStreamWithTrailer(t *testing.T) {
	data := bytes.Repeat([]byte("abcdefghij"), 7_000)
	errSource := errors.New("source hash mismatch")
	tests := []struct {
		name      string
		offset    int64
		want      string
		verify    error
		wantErr   error
		wantBytes []byte
	}{
		{name: "whole file", wantBytes: data},
		{name: "announced hash matches the trailer", want: sha(data), wantBytes: data},
		{name: "announced hash differs", want: sha([]byte("x")), wantErr: ErrMalformed},
		{name: "source check fails after the bytes", verify: errSource, wantErr: io.EOF},
		{name: "resume needs the hash up front", offset: 10, wantErr: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			served := make(chan error, 1)
			go func() {
				defer a.Close()
				_, err := ServeMedia(a, func(id string) (MediaFile, error) {
					return MediaFile{R: io.MultiReader(bytes.NewReader(data)), Total: int64(len(data)),
						Verify: func() error { return tc.verify }}, nil
				})
				served <- err
			}()
			var got bytes.Buffer
			hdr, err := FetchMedia(b, "m", tc.offset, tc.want, 1<<20, &got, nil)
			b.Close()
			serr := <-served
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if tc.verify != nil && !errors.Is(serr, tc.verify) {
					t.Fatalf("server err = %v, want the source's", serr)
				}
				return
			}
			if err != nil || !bytes.Equal(got.Bytes(), tc.wantBytes) || hdr.SHA256 != sha(data) {
				t.Fatalf("got %d bytes, hash %q, err %v", got.Len(), hdr.SHA256, err)
			}
		})
	}
}

func TestFetchMediaRejectsBadTrailer(t *testing.T) {
	body := []byte("hello")
	for name, after := range map[string]Msg{
		"wrong hash":    MediaTrailer{SHA256: sha([]byte("other"))},
		"not a trailer": Ack{IDs: []string{"m"}},
		"an error":      Error{Code: "media_error", Message: "x"},
	} {
		var b bytes.Buffer
		_ = WriteMsg(&b, MediaHeader{ID: "m", Size: 5, Total: 5})
		b.Write(body)
		_ = WriteMsg(&b, after)
		if _, err := FetchMedia(&fakeStream{r: &b}, "m", 0, "", 100, io.Discard, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFetchMediaRejectsTamperedBytes(t *testing.T) {
	body := []byte("hello")
	var b bytes.Buffer
	_ = WriteMsg(&b, MediaHeader{ID: "m", Size: 5, Total: 5, SHA256: sha(body)})
	b.WriteString("HELLO")
	var dst bytes.Buffer
	if _, err := FetchMedia(&fakeStream{r: &b}, "m", 0, "", 100, &dst, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("tampered bytes accepted: %v", err)
	}
}

func TestEventValidation(t *testing.T) {
	ok := Message{ID: "i", Chat: "+1"}
	tests := []struct {
		name string
		mut  func(*Message)
		bad  bool
	}{
		{"text", func(m *Message) { m.Text = "hi" }, false},
		{"media without media", func(m *Message) { m.Kind = KindMedia }, true},
		{"media with bad mime", func(m *Message) { m.Kind, m.Media = KindMedia, &Media{Mime: "nope"} }, true},
		{"media too large", func(m *Message) { m.Kind, m.Media = KindMedia, &Media{Mime: "a/b", Size: MaxMediaSize + 1} }, true},
		{"reaction without target", func(m *Message) { m.Kind, m.Emoji = KindReaction, "x" }, true},
		{"reaction without emoji", func(m *Message) { m.Kind, m.Target = KindReaction, "t" }, true},
		{"receipt with bad state", func(m *Message) { m.Kind, m.Target, m.State = KindReceipt, "t", "sent" }, true},
		{"receipt", func(m *Message) { m.Kind, m.Target, m.State = KindReceipt, "t", StateRead }, false},
		{"group without group", func(m *Message) { m.Kind = KindGroup }, true},
		{"group with too many members", func(m *Message) {
			m.Kind, m.Group = KindGroup, &Group{Members: make([]Member, MaxMembers+1)}
		}, true},
		{"unknown transport", func(m *Message) { m.Transport = "pigeon" }, true},
		{"SIM out of range", func(m *Message) { m.SIM = 9 }, true},
		{"a newer peer's kind", func(m *Message) { m.Kind = "poll" }, false},
		{"non-UTF-8 emoji", func(m *Message) { m.Kind, m.Target, m.Emoji = KindReaction, "t", "\xff" }, true},
		{"conversation chat", func(m *Message) { m.Chat, m.From = "c:3f2a9c0d41b7e8aa", "c:3f2a9c0d41b7e8aa" }, false},
		{"conversation sender in a group", func(m *Message) { m.Chat, m.From = "g:9", "c:a-b_c.9" }, false},
		{"conversation chat without key", func(m *Message) { m.Chat = "c:" }, true},
		{"conversation key with a space", func(m *Message) { m.Chat = "c:ab cd" }, true},
		{"conversation key with a slash", func(m *Message) { m.From = "c:ab/cd" }, true},
		{"conversation key too long", func(m *Message) { m.Chat = "c:" + strings.Repeat("a", MaxConversationKey+1) }, true},
		{"conversation key at the limit", func(m *Message) { m.Chat = "c:" + strings.Repeat("a", MaxConversationKey) }, false},
		{"group member by conversation key", func(m *Message) {
			m.Kind, m.Chat, m.Group = KindGroup, "g:9", &Group{Members: []Member{{Number: "c:k1", Name: "Ann"}}}
		}, false},
		{"group member with a bad conversation key", func(m *Message) {
			m.Kind, m.Chat, m.Group = KindGroup, "g:9", &Group{Members: []Member{{Number: "c:k!"}}}
		}, true},
	}
	for _, tc := range tests {
		m := ok
		tc.mut(&m)
		if err := m.Validate(); (err != nil) != tc.bad {
			t.Errorf("%s: Validate() = %v, want bad=%v", tc.name, err, tc.bad)
		}
	}
}
