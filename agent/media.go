package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/hoptrace"
	"github.com/rcsgate/rcsgate/internal/wire"
)

// Media bytes live in files under <state>/media, never in the journal: a
// phone file is copied there (fsync'd) before Deliver returns and removed
// once the server acked its message; a server file is fetched there just
// before it is handed to the phone and removed after. A server file is not
// fsync'd: nothing is acked on the strength of it (the server keeps the
// file until the phone took it), so after a restart it is fetched again
// rather than trusted; within a run it is reused while the phone retries.
const mediaDirName = "media"

// mediaFetchTimeout bounds one attempt to pull a file from the server.
const mediaFetchTimeout = 10 * time.Minute

func (a *Agent) mediaDir() string { return filepath.Join(a.cfg.StateDir, mediaDirName) }

// mediaPath is where the bytes of message id live; ids are hashed so any id
// is a safe file name.
func (a *Agent) mediaPath(prefix, id string) string {
	h := sha256.Sum256([]byte(id))
	return filepath.Join(a.mediaDir(), prefix+hex.EncodeToString(h[:16]))
}

// keepPhoneMedia copies src into the media directory as the bytes of phone
// message id, fsync'd, and returns their size and SHA-256. It streams: a
// 100 MB file never sits in memory. The copy is the kernel's
// (copy_file_range where the filesystem has it), and the hash is taken
// from the copy, while it is flushed to disk: it vouches for the bytes the
// agent will serve.
func (a *Agent) keepPhoneMedia(src, id string, max int64) (int64, string, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, "", fmt.Errorf("open phone file: %w", err)
	}
	defer in.Close()
	n, sum, err := a.writeMedia(a.mediaPath("out-", id), io.LimitReader(in, max+1), true, true)
	if err != nil {
		return 0, "", err
	}
	if n > max {
		_ = os.Remove(a.mediaPath("out-", id))
		return 0, "", fmt.Errorf("phone file over the %d-byte limit", max)
	}
	return n, sum, nil
}

// mediaChunk is the buffer for hashing a stored file.
const mediaChunk = 256 << 10

// writeMedia writes r to path via a temporary file, renamed once whole
// (and fsync'd first if durable); with withSum it also returns the SHA-256
// of what it wrote, read back while the file is flushed.
func (a *Agent) writeMedia(path string, r io.Reader, durable, withSum bool) (int64, string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, "", fmt.Errorf("media dir: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".part-*")
	if err != nil {
		return 0, "", fmt.Errorf("media file: %w", err)
	}
	n, err := io.Copy(tmp, r)
	var sum string
	if err == nil {
		synced := make(chan error, 1)
		if durable {
			go func() { synced <- tmp.Sync() }()
		} else {
			synced <- nil
		}
		if withSum {
			h := sha256.New()
			if _, err = io.CopyBuffer(h, io.NewSectionReader(tmp, 0, n), make([]byte, mediaChunk)); err == nil {
				sum = hex.EncodeToString(h.Sum(nil))
			}
		}
		if serr := <-synced; err == nil {
			err = serr
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return 0, "", fmt.Errorf("media file: %w", err)
	}
	return n, sum, nil
}

// openPhoneMedia serves the server's MediaGet for a phone message. A file's
// size and hash were recorded in its journaled message when it was stored,
// so it is not read twice; a contact photo (no hash recorded) is hashed
// here.
func (a *Agent) openPhoneMedia(id string) (wire.MediaFile, error) {
	f, err := os.Open(a.mediaPath("out-", id))
	if errors.Is(err, os.ErrNotExist) {
		return wire.MediaFile{}, wire.ErrMediaUnavailable
	} else if err != nil {
		return wire.MediaFile{}, err
	}
	if m, ok := a.j.PendingOut(id); ok && m.Media != nil && m.Media.SHA256 != "" {
		if fi, err := f.Stat(); err == nil && fi.Size() == m.Media.Size {
			// The server checks the bytes against this hash as they arrive.
			return wire.MediaFile{R: f, Total: m.Media.Size, SHA256: m.Media.SHA256, Close: f.Close}, nil
		}
	}
	n, sum, err := wire.HashFile(f)
	if err != nil {
		f.Close()
		return wire.MediaFile{}, err
	}
	return wire.MediaFile{R: f, Total: n, SHA256: sum, Close: f.Close}, nil
}

// dropPhoneMedia removes the files of phone messages the server acked.
func (a *Agent) dropPhoneMedia(ids []string) {
	for _, id := range ids {
		if err := os.Remove(a.mediaPath("out-", id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn().Err(err).Str("id", id).Msg("could not remove a delivered media file")
		}
	}
}

// serveMedia answers the server's media streams on conn until it ends.
func (s *session) serveMedia(ctx context.Context) error {
	for {
		str, err := s.conn.AcceptStream(ctx)
		if err != nil {
			return context.Cause(ctx) // the connection ended; the read loop says why
		}
		go func() {
			id, err := wire.ServeMedia(str, s.a.openPhoneMedia)
			if err != nil {
				s.log.Warn().Err(err).Str("id", id).Msg("media request from server failed")
				str.CancelWrite(1)
			}
			_ = str.Close()
		}()
	}
}

// fetchServerMedia pulls the bytes of server message m into a file for the
// backend, waiting for the channel when it is down. A file the server no
// longer has is a permanent failure.
func (a *Agent) fetchServerMedia(ctx context.Context, m wire.Message) (string, error) {
	path := a.mediaPath("in-", m.ID)
	if _, ok := a.fetched.Load(path); ok {
		if _, err := os.Stat(path); err == nil {
			return path, nil // fetched in this run: the phone is retrying
		}
	}
	for {
		cc := a.curConn.Load()
		if cc == nil || !a.connected.Load() {
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-a.connChanged():
				continue
			}
		}
		hoptrace.Mark(hoptrace.MediaDownStart, m.ID)
		err := a.fetchOnce(ctx, cc, m, path)
		if err == nil {
			hoptrace.Mark(hoptrace.MediaDownDone, m.ID)
			return path, nil
		}
		if errors.Is(err, wire.ErrMediaUnavailable) || errors.Is(err, wire.ErrMalformed) {
			return "", backend.Permanent("the file is no longer available on the server")
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", err // transient: the handover retries with backoff
	}
}

func (a *Agent) fetchOnce(ctx context.Context, cc *chanConn, m wire.Message, path string) error {
	fctx, cancel := context.WithTimeout(ctx, mediaFetchTimeout)
	defer cancel()
	str, err := cc.conn.OpenStreamSync(fctx)
	if err != nil {
		return fmt.Errorf("open media stream: %w", err)
	}
	defer str.Close()
	stop := context.AfterFunc(fctx, func() { str.CancelRead(1); str.CancelWrite(1) })
	defer stop()
	want := ""
	if m.Media != nil {
		want = m.Media.SHA256
	}
	// The file is written straight from the stream as the bytes arrive and
	// checked (wire.MediaReader): no pipe, no goroutine in between.
	r, ferr := wire.OpenMediaStream(str, m.ID, 0, want, wire.MaxMediaSize, 0)
	if ferr == nil {
		_, _, ferr = a.writeMedia(path, r, false, false)
	}
	if ferr == nil {
		a.fetched.Store(path, struct{}{})
	}
	if ferr != nil {
		_ = os.Remove(path)
		return ferr
	}
	return nil
}
