package wire

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Media streams: the side that needs a message's bytes opens a fresh stream
// and writes MediaGet; the owner answers MediaHeader and the raw bytes (or an
// Error) and closes its side. Each transfer is its own stream, so a 100 MB
// file shares no buffer and no ordering with text.

// ErrMediaUnavailable is returned by FetchMedia when the peer has no bytes
// for the id (and by MediaOpener for the same reason).
var ErrMediaUnavailable = errors.New("wire: media not available")

// MediaFile is what a MediaOpener returns: the bytes, their total size and
// SHA-256 (hex). SHA256 empty means the bytes are streamed from a source
// not seen yet (R need not seek): they go out with a hash-less header and a
// MediaTrailer, only to a peer that announced FeatureMediaTrailer. Verify,
// if set, is called once every byte was read and must succeed before the
// transfer counts (it checks the source, e.g. an encrypted file's hash).
type MediaFile struct {
	R      io.Reader
	Total  int64
	SHA256 string
	Close  func() error
	Verify func() error
}

// ServeMedia answers one media stream: it reads MediaGet from rw, asks open
// for the bytes and writes the header and the bytes from the asked offset
// (and, for a streamed file, the trailer).
func ServeMedia(rw io.ReadWriter, open func(id string) (MediaFile, error)) (id string, err error) {
	m, err := ReadMsg(rw)
	if err != nil {
		return "", err
	}
	get, ok := m.(MediaGet)
	if !ok {
		_ = WriteMsg(rw, Error{Code: "protocol", Message: "expected media_get"})
		return "", fmt.Errorf("%w: media stream opened with %s", ErrMalformed, m.FrameType())
	}
	f, err := open(get.ID)
	if err != nil {
		code := "media_error"
		if errors.Is(err, ErrMediaUnavailable) {
			code = "media_unavailable"
		}
		_ = WriteMsg(rw, Error{Code: code, Message: "no media for this message"})
		return get.ID, err
	}
	if f.Close != nil {
		defer f.Close()
	}
	if get.Offset > f.Total {
		_ = WriteMsg(rw, Error{Code: "media_range", Message: "offset past the end"})
		return get.ID, fmt.Errorf("%w: media offset %d past %d", ErrMalformed, get.Offset, f.Total)
	}
	src := f.R
	var h hash.Hash
	if f.SHA256 == "" { // streamed: hash what goes by, skipped bytes included
		h = sha256.New()
		src = io.TeeReader(src, h)
		if _, err := io.CopyN(io.Discard, src, get.Offset); err != nil {
			return get.ID, fmt.Errorf("media skip: %w", err)
		}
	} else if get.Offset > 0 {
		seeker, ok := f.R.(io.Seeker)
		if !ok {
			return get.ID, errors.New("media seek: source cannot seek")
		}
		if _, err := seeker.Seek(get.Offset, io.SeekStart); err != nil {
			return get.ID, fmt.Errorf("media seek: %w", err)
		}
	}
	hdr := MediaHeader{ID: get.ID, Size: f.Total - get.Offset, Total: f.Total, SHA256: f.SHA256}
	if err := WriteMsg(rw, hdr); err != nil {
		return get.ID, err
	}
	if n, err := copyAhead(rw, src, hdr.Size); err != nil {
		return get.ID, fmt.Errorf("media send after %d bytes: %w", n, err)
	}
	if f.Verify != nil {
		if err := f.Verify(); err != nil {
			return get.ID, fmt.Errorf("media source: %w", err)
		}
	}
	if h != nil {
		if err := WriteMsg(rw, MediaTrailer{SHA256: hex.EncodeToString(h.Sum(nil))}); err != nil {
			return get.ID, err
		}
	}
	return get.ID, nil
}

// mediaChunk is how many bytes a media transfer moves per read and write:
// large enough that a 100 MB file is a few hundred hand-offs between the
// file, the hash and the QUIC stream rather than thousands.
const mediaChunk = 256 << 10

// aheadDepth is how many chunks copyAhead reads before they are written.
const aheadDepth = 3

// copyAhead copies n bytes from src to dst, reading the next chunks while
// the last one is written: a QUIC stream's Write returns only once the
// connection packed the bytes, so reading (and hashing) in the same
// goroutine would leave the connection idle meanwhile. It returns when the
// bytes were written or on the first error; src is not read after a
// successful return.
func copyAhead(dst io.Writer, src io.Reader, n int64) (int64, error) {
	type chunk struct {
		b   []byte
		err error
	}
	size := int(min(mediaChunk, max(n, 1)))
	free := make(chan []byte, aheadDepth)
	full := make(chan chunk, aheadDepth)
	stop := make(chan struct{})
	defer close(stop)
	for range aheadDepth {
		free <- make([]byte, size)
	}
	go func() {
		defer close(full)
		for left := n; left > 0; {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			k, err := io.ReadFull(src, b[:min(int64(len(b)), left)])
			left -= int64(k)
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // fewer bytes than announced
			}
			select {
			case full <- chunk{b[:k], err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var written int64
	for c := range full {
		m, err := dst.Write(c.b)
		written += int64(m)
		if err == nil {
			err = c.err
		}
		if err != nil {
			return written, err
		}
		free <- c.b[:cap(c.b)]
	}
	return written, nil
}

// FetchMedia asks for id's bytes on rw (a fresh stream) and copies them to
// dst. When offset is 0 it checks the bytes against the header's SHA-256 (or
// the trailer's, for a header without one) and against want (if set); a
// mismatch is ErrMalformed and dst must be discarded. The header is returned
// before any check so callers can size uploads; on success its SHA256 is
// set. max bounds the size accepted.
func FetchMedia(rw io.ReadWriter, id string, offset int64, want string, max int64, dst io.Writer, onHeader func(MediaHeader) error) (MediaHeader, error) {
	r, err := OpenMediaStream(rw, id, offset, want, max, 0)
	if err != nil {
		return r.Header(), err
	}
	if onHeader != nil {
		if err := onHeader(r.Header()); err != nil {
			return r.Header(), err
		}
	}
	if _, err := r.WriteTo(dst); err != nil {
		return r.Header(), err
	}
	return r.Header(), nil
}

// MediaReader reads the bytes of one media stream (see OpenMediaStream).
// Its last Read before io.EOF checks them: a mismatch with the announced
// hash is an error wrapping ErrMalformed instead of io.EOF. With a holdback
// of k bytes, the last k bytes are not handed out before that check passed,
// so a consumer that needs every byte to finish (a homeserver upload with a
// Content-Length) never finishes with bytes that turn out wrong.
type MediaReader struct {
	src     io.Reader
	hdr     MediaHeader
	want    string
	h       hash.Hash // nil for a resumed transfer (checked by the caller)
	trailer bool
	left    int64  // body bytes not read from src yet
	keep    int64  // the holdback
	tail    []byte // the held bytes, once read and checked
	done    bool   // every byte read and checked
	err     error  // sticky
}

// OpenMediaStream asks for id's bytes on rw (a fresh stream) and reads the
// answer's header, which it checks against offset, want and max (see
// FetchMedia); the bytes are then read from the returned reader, which
// checks them as they pass (see MediaReader).
func OpenMediaStream(rw io.ReadWriter, id string, offset int64, want string, maxSize int64, holdback int) (*MediaReader, error) {
	r := &MediaReader{src: rw, want: want, keep: int64(max(holdback, 0))}
	if err := WriteMsg(rw, MediaGet{ID: id, Offset: offset}); err != nil {
		return r, err
	}
	m, err := ReadMsg(rw)
	if err != nil {
		return r, err
	}
	switch m := m.(type) {
	case MediaHeader:
		r.hdr = m
	case Error:
		if m.Code == "media_unavailable" {
			return r, fmt.Errorf("%w: %s", ErrMediaUnavailable, m.Message)
		}
		return r, m
	default:
		return r, fmt.Errorf("%w: media stream answered with %s", ErrMalformed, m.FrameType())
	}
	hdr := r.hdr
	r.trailer = hdr.SHA256 == ""
	switch {
	case hdr.ID != id:
		return r, fmt.Errorf("%w: media header for another id", ErrMalformed)
	case hdr.Size < 0 || hdr.Total < 0:
		return r, fmt.Errorf("%w: media header with a negative size", ErrMalformed)
	case hdr.Total > maxSize:
		return r, fmt.Errorf("%w: media of %d bytes, over the %d limit", ErrMalformed, hdr.Total, maxSize)
	case hdr.Size != hdr.Total-offset:
		return r, fmt.Errorf("%w: media header size %d for offset %d of %d", ErrMalformed, hdr.Size, offset, hdr.Total)
	case !r.trailer && want != "" && hdr.SHA256 != want:
		return r, fmt.Errorf("%w: media hash differs from the announced one", ErrMalformed)
	case r.trailer && offset != 0:
		return r, fmt.Errorf("%w: a resumed transfer needs the hash up front", ErrMalformed)
	}
	if offset == 0 {
		r.h = sha256.New()
	}
	r.left = hdr.Size
	r.keep = min(r.keep, hdr.Size)
	return r, nil
}

// MediaStream is a MediaReader on a stream of its own, closed when the
// reader is done with it (early or not).
type MediaStream struct {
	*MediaReader
	close func()
}

// NewMediaStream pairs r with what closes its stream.
func NewMediaStream(r *MediaReader, close func()) MediaStream {
	return MediaStream{MediaReader: r, close: close}
}

// Close ends the stream.
func (m MediaStream) Close() error {
	if m.close != nil {
		m.close()
	}
	return nil
}

// Checked reports whether every byte was read and checked.
func (r *MediaReader) Checked() bool { return r.done }

// Header is the stream's header; once every byte was read and checked,
// its SHA256 is the checked hash (the trailer's, for a streamed file).
func (r *MediaReader) Header() MediaHeader { return r.hdr }

func (r *MediaReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.left > r.keep { // bytes before the held tail go through as they come
		if n := r.left - r.keep; int64(len(p)) > n {
			p = p[:n]
		}
		n, err := r.src.Read(p)
		r.left -= int64(n)
		if r.h != nil {
			r.h.Write(p[:n])
		}
		// A reader may hand the last bytes together with io.EOF (a QUIC
		// stream whose sender closed right after them): only an end
		// before every byte is an error; a trailer still owed is asked
		// for, and found missing, in finish.
		if err == io.EOF {
			if r.left > 0 {
				err = io.ErrUnexpectedEOF
			} else {
				err = nil
			}
		}
		if err != nil {
			r.err = fmt.Errorf("media receive after %d of %d bytes: %w", r.hdr.Size-r.left, r.hdr.Size, err)
		}
		return n, r.err
	}
	if !r.done {
		if err := r.finish(); err != nil {
			r.err = err
			return 0, err
		}
	}
	if len(r.tail) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.tail)
	r.tail = r.tail[n:]
	return n, nil
}

// finish reads the held tail and the trailer, and checks the hash.
func (r *MediaReader) finish() error {
	r.tail = make([]byte, r.left)
	if n, err := io.ReadFull(r.src, r.tail); err != nil {
		return fmt.Errorf("media receive after %d of %d bytes: %w", r.hdr.Size-r.left+int64(n), r.hdr.Size, err)
	}
	r.left = 0
	if r.h != nil {
		r.h.Write(r.tail)
	}
	if r.trailer {
		m, err := ReadMsg(r.src)
		if err != nil {
			return fmt.Errorf("media trailer: %w", err)
		}
		switch m := m.(type) {
		case MediaTrailer:
			r.hdr.SHA256 = m.SHA256
		case Error:
			return fmt.Errorf("media source failed: %w", m)
		default:
			return fmt.Errorf("%w: media bytes followed by %s", ErrMalformed, m.FrameType())
		}
		if r.want != "" && r.hdr.SHA256 != r.want {
			return fmt.Errorf("%w: media hash differs from the announced one", ErrMalformed)
		}
	}
	if r.h != nil && hex.EncodeToString(r.h.Sum(nil)) != r.hdr.SHA256 {
		return fmt.Errorf("%w: media bytes do not match their hash", ErrMalformed)
	}
	r.done = true
	return nil
}

// WriteTo copies the rest of the bytes to w in large chunks; like Read, it
// fails instead of finishing when they do not check out.
func (r *MediaReader) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, min(mediaChunk, max(r.left, 1)))
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Peer features ride in the context of a media opener, so it can choose a
// streamed answer only for a peer that takes one.
type peerFeaturesKey struct{}

// WithPeerFeatures records what the peer announced (Hello.Features).
func WithPeerFeatures(ctx context.Context, features []string) context.Context {
	return context.WithValue(ctx, peerFeaturesKey{}, features)
}

// PeerHas reports whether the peer whose request ctx serves announced f.
func PeerHas(ctx context.Context, f string) bool {
	list, _ := ctx.Value(peerFeaturesKey{}).([]string)
	return HasFeature(list, f)
}

// HashFile returns r's size and SHA-256 (hex) and rewinds it.
func HashFile(r io.ReadSeeker) (int64, string, error) {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return 0, "", err
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return 0, "", err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
