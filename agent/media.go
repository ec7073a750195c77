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
// before it is handed to the phone and removed after.
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
// 100 MB file never sits in memory.
func (a *Agent) keepPhoneMedia(src, id string, max int64) (int64, string, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, "", fmt.Errorf("open phone file: %w", err)
	}
	defer in.Close()
	h := sha256.New()
	n, err := a.writeMedia(a.mediaPath("out-", id), io.TeeReader(io.LimitReader(in, max+1), h))
	if err != nil {
		return 0, "", err
	}
	if n > max {
		_ = os.Remove(a.mediaPath("out-", id))
		return 0, "", fmt.Errorf("phone file over the %d-byte limit", max)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// writeMedia writes r to path via a temporary file, fsync'd and renamed.
func (a *Agent) writeMedia(path string, r io.Reader) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, fmt.Errorf("media dir: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".part-*")
	if err != nil {
		return 0, fmt.Errorf("media file: %w", err)
	}
	n, err := io.Copy(tmp, r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return 0, fmt.Errorf("media file: %w", err)
	}
	return n, nil
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
	if fi, err := os.Stat(path); err == nil && m.Media != nil && fi.Size() == m.Media.Size {
		return path, nil // fetched before a restart
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
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := a.writeMedia(path, pr)
		pr.CloseWithError(err)
		done <- err
	}()
	_, ferr := wire.FetchMedia(str, m.ID, 0, want, wire.MaxMediaSize, pw, nil)
	pw.CloseWithError(ferr)
	if werr := <-done; ferr == nil && werr != nil {
		ferr = werr
	}
	if ferr != nil {
		_ = os.Remove(path)
		return ferr
	}
	return nil
}
