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
	"testing/iotest"
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

// chunkReader hands out at most n bytes per Read, as a QUIC stream does
// when the reader is ahead of the network.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// A MediaReader with a holdback hands out the last bytes only once the
// whole file checked out, whatever the read sizes; a file that does not
// check out fails before its last bytes are handed out.
func TestMediaReaderHoldback(t *testing.T) {
	data := make([]byte, 10_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	answer := func(body []byte, trailer bool) []byte {
		var b bytes.Buffer
		hdr := MediaHeader{ID: "m", Size: int64(len(body)), Total: int64(len(body)), SHA256: sha(data)}
		if trailer {
			hdr.SHA256 = ""
		}
		_ = WriteMsg(&b, hdr)
		b.Write(body)
		if trailer {
			_ = WriteMsg(&b, MediaTrailer{SHA256: sha(data)})
		}
		return b.Bytes()
	}
	for _, tc := range []struct {
		name                string
		body                []byte
		trailer             bool
		keep, chunk, readSz int
		wantErr             bool
	}{
		{name: "small reads", body: data, keep: 100, chunk: 7, readSz: 5},
		{name: "reads larger than the tail", body: data, keep: 100, chunk: 1000, readSz: 4096},
		{name: "tail larger than the file", body: data, keep: 20_000, chunk: 512, readSz: 512},
		{name: "no holdback", body: data, keep: 0, chunk: 1 << 20, readSz: 1 << 20},
		{name: "hash in the trailer", body: data, trailer: true, keep: 64, chunk: 300, readSz: 1000},
		{name: "wrong last byte", body: bad, keep: 64, chunk: 700, readSz: 1000, wantErr: true},
		{name: "wrong last byte, trailer", body: bad, trailer: true, keep: 1, chunk: 700, readSz: 333, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rw := &fakeStream{r: chunkReader{bytes.NewReader(answer(tc.body, tc.trailer)), tc.chunk}}
			r, err := OpenMediaStream(rw, "m", 0, "", 1<<20, tc.keep)
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			buf := make([]byte, tc.readSz)
			for {
				n, err := r.Read(buf)
				got = append(got, buf[:n]...)
				if !r.Checked() && len(got) > len(data)-tc.keep {
					t.Fatalf("%d bytes handed out before the file checked out (holdback %d of %d)", len(got), tc.keep, len(data))
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					if !tc.wantErr || !errors.Is(err, ErrMalformed) {
						t.Fatalf("read after %d bytes: %v", len(got), err)
					}
					return
				}
			}
			if tc.wantErr {
				t.Fatal("a file that does not match its hash read to the end")
			}
			if !bytes.Equal(got, data) || r.Header().SHA256 != sha(data) {
				t.Fatalf("read %d bytes, header %+v", len(got), r.Header())
			}
		})
	}
}

type failWriter struct{ after int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.after -= len(p); w.after < 0 {
		return 0, errors.New("peer gone")
	}
	return len(p), nil
}

// copyAhead writes exactly n bytes in order, reports a source that ends
// early, and stops at the first failed write.
func TestCopyAhead(t *testing.T) {
	data := make([]byte, 3*mediaChunk+12345)
	for i := range data {
		data[i] = byte(i * 31)
	}
	for _, tc := range []struct {
		name    string
		src     io.Reader
		n       int64
		dst     io.Writer
		want    []byte
		wantErr error
	}{
		{name: "whole", src: chunkReader{bytes.NewReader(data), 1000}, n: int64(len(data)), want: data},
		{name: "prefix", src: bytes.NewReader(data), n: 100, want: data[:100]},
		{name: "nothing", src: bytes.NewReader(data), n: 0, want: []byte{}},
		{name: "source ends early", src: bytes.NewReader(data[:5000]), n: int64(len(data)), wantErr: io.ErrUnexpectedEOF},
		{name: "writer fails", src: bytes.NewReader(data), n: int64(len(data)), dst: &failWriter{after: mediaChunk}, wantErr: errors.New("")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got bytes.Buffer
			dst := tc.dst
			if dst == nil {
				dst = &got
			}
			n, err := copyAhead(dst, tc.src, tc.n)
			if tc.wantErr != nil {
				if err == nil || (tc.wantErr == io.ErrUnexpectedEOF && !errors.Is(err, io.ErrUnexpectedEOF)) {
					t.Fatalf("copied %d bytes, err %v; want %v", n, err, tc.wantErr)
				}
				return
			}
			if err != nil || n != tc.n || !bytes.Equal(got.Bytes(), tc.want) {
				t.Fatalf("copied %d bytes (%d in dst), err %v", n, got.Len(), err)
			}
		})
	}
}

// A stream may hand its last bytes together with io.EOF (the sender closed
// right after them): that is the end of a complete file, but still an
// error for a file cut short or a trailer that never came.
func TestMediaReaderLastBytesWithEOF(t *testing.T) {
	data := bytes.Repeat([]byte("rcsgate "), 9_000)
	frame := func(body []byte, hash string, trailer *MediaTrailer) []byte {
		var b bytes.Buffer
		_ = WriteMsg(&b, MediaHeader{ID: "m", Size: int64(len(data)), Total: int64(len(data)), SHA256: hash})
		b.Write(body)
		if trailer != nil {
			_ = WriteMsg(&b, *trailer)
		}
		return b.Bytes()
	}
	for _, tc := range []struct {
		name    string
		answer  []byte
		keep    int
		wantErr bool
	}{
		{name: "complete, hash up front", answer: frame(data, sha(data), nil)},
		{name: "complete, hash up front, holdback", answer: frame(data, sha(data), nil), keep: 4096},
		{name: "complete, hash in the trailer", answer: frame(data, "", &MediaTrailer{SHA256: sha(data)})},
		{name: "cut short", answer: frame(data[:len(data)-10], sha(data), nil), wantErr: true},
		{name: "trailer missing", answer: frame(data, "", nil), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rw := &fakeStream{r: iotest.DataErrReader(chunkReader{bytes.NewReader(tc.answer), 1 << 20})}
			r, err := OpenMediaStream(rw, "m", 0, "", 1<<20, tc.keep)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			_, err = r.WriteTo(&got)
			switch {
			case tc.wantErr && err == nil:
				t.Fatal("an incomplete stream read as complete")
			case !tc.wantErr && err != nil:
				t.Fatalf("complete stream failed: %v", err)
			case !tc.wantErr && (!bytes.Equal(got.Bytes(), data) || !r.Checked()):
				t.Fatalf("read %d of %d bytes, checked %v", got.Len(), len(data), r.Checked())
			}
		})
	}
}
