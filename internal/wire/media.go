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
	if n, err := io.CopyN(rw, src, hdr.Size); err != nil {
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

// FetchMedia asks for id's bytes on rw (a fresh stream) and copies them to
// dst. When offset is 0 it checks the bytes against the header's SHA-256 (or
// the trailer's, for a header without one) and against want (if set); a
// mismatch is ErrMalformed and dst must be discarded. The header is returned
// before any check so callers can size uploads; on success its SHA256 is
// set. max bounds the size accepted.
func FetchMedia(rw io.ReadWriter, id string, offset int64, want string, max int64, dst io.Writer, onHeader func(MediaHeader) error) (MediaHeader, error) {
	if err := WriteMsg(rw, MediaGet{ID: id, Offset: offset}); err != nil {
		return MediaHeader{}, err
	}
	m, err := ReadMsg(rw)
	if err != nil {
		return MediaHeader{}, err
	}
	var hdr MediaHeader
	switch m := m.(type) {
	case MediaHeader:
		hdr = m
	case Error:
		if m.Code == "media_unavailable" {
			return MediaHeader{}, fmt.Errorf("%w: %s", ErrMediaUnavailable, m.Message)
		}
		return MediaHeader{}, m
	default:
		return MediaHeader{}, fmt.Errorf("%w: media stream answered with %s", ErrMalformed, m.FrameType())
	}
	trailer := hdr.SHA256 == ""
	switch {
	case hdr.ID != id:
		return hdr, fmt.Errorf("%w: media header for another id", ErrMalformed)
	case hdr.Total > max:
		return hdr, fmt.Errorf("%w: media of %d bytes, over the %d limit", ErrMalformed, hdr.Total, max)
	case hdr.Size != hdr.Total-offset:
		return hdr, fmt.Errorf("%w: media header size %d for offset %d of %d", ErrMalformed, hdr.Size, offset, hdr.Total)
	case !trailer && want != "" && hdr.SHA256 != want:
		return hdr, fmt.Errorf("%w: media hash differs from the announced one", ErrMalformed)
	case trailer && offset != 0:
		return hdr, fmt.Errorf("%w: a resumed transfer needs the hash up front", ErrMalformed)
	}
	if onHeader != nil {
		if err := onHeader(hdr); err != nil {
			return hdr, err
		}
	}
	var h hash.Hash
	if offset == 0 {
		h = sha256.New()
		dst = io.MultiWriter(dst, h)
	}
	if n, err := io.CopyN(dst, rw, hdr.Size); err != nil {
		return hdr, fmt.Errorf("media receive after %d of %d bytes: %w", n, hdr.Size, err)
	}
	if trailer {
		m, err := ReadMsg(rw)
		if err != nil {
			return hdr, fmt.Errorf("media trailer: %w", err)
		}
		switch m := m.(type) {
		case MediaTrailer:
			hdr.SHA256 = m.SHA256
		case Error:
			return hdr, fmt.Errorf("media source failed: %w", m)
		default:
			return hdr, fmt.Errorf("%w: media bytes followed by %s", ErrMalformed, m.FrameType())
		}
		if want != "" && hdr.SHA256 != want {
			return hdr, fmt.Errorf("%w: media hash differs from the announced one", ErrMalformed)
		}
	}
	if h != nil && hex.EncodeToString(h.Sum(nil)) != hdr.SHA256 {
		return hdr, fmt.Errorf("%w: media bytes do not match their hash", ErrMalformed)
	}
	return hdr, nil
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
