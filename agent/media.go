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
	"syscall"
	"time"

	"github.com/rcsgate/rcsgate/agent/backend"
	"github.com/rcsgate/rcsgate/internal/atomicfile"
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

// keptMedia is a phone file in the agent's store: its size and SHA-256,
// what to do once its message is queued (done) and how to put things back
// when it could not be (undo).
type keptMedia struct {
	n          int64
	sum        string
	done, undo func()
}

// keepPhoneMedia stores src in the media directory as the bytes of phone
// message id, fsync'd. A file the backend gave (Event.FileGiven) is moved
// there when it can be (one rename, no copy: on a phone that spares a
// second copy of every photo); otherwise it is copied. It streams: a 100 MB
// file never sits in memory. A copy is the kernel's (copy_file_range where
// the filesystem has it), and the hash is taken from the stored file, while
// it is flushed to disk: it vouches for the bytes the agent will serve.
func (a *Agent) keepPhoneMedia(src, id string, max int64, given bool) (keptMedia, error) {
	dst := a.mediaPath("out-", id)
	nothing := func() {}
	removeCopy := func() { _ = os.Remove(dst) }
	if given && a.mayTake(src) {
		n, sum, err := a.takePhoneMedia(src, dst, max)
		if err == nil {
			return keptMedia{n, sum, nothing, func() { _ = os.Rename(dst, src) }}, nil
		}
		if !errors.Is(err, errOtherFilesystem) {
			return keptMedia{}, err
		}
		// On another filesystem: copied, and the given file removed once
		// the message is queued (it is the agent's).
		n, sum, err = a.copyPhoneMedia(src, dst, max)
		if err != nil {
			return keptMedia{}, err
		}
		return keptMedia{n, sum, func() { _ = os.Remove(src) }, removeCopy}, nil
	}
	n, sum, err := a.copyPhoneMedia(src, dst, max)
	if err != nil {
		return keptMedia{}, err
	}
	return keptMedia{n, sum, nothing, removeCopy}, nil
}

func (a *Agent) copyPhoneMedia(src, dst string, max int64) (int64, string, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, "", fmt.Errorf("open phone file: %w", err)
	}
	defer in.Close()
	n, sum, err := a.writeMedia(dst, io.LimitReader(in, max+1), true, true)
	if err != nil {
		return 0, "", err
	}
	if n > max {
		_ = os.Remove(dst)
		return 0, "", overLimit(max)
	}
	return n, sum, nil
}

var errOtherFilesystem = errors.New("the given file is on another filesystem")

func overLimit(max int64) error { return fmt.Errorf("phone file over the %d-byte limit", max) }

// mayTake reports whether a given file may be moved: a regular file (not a
// link to one) that is not one of the agent's own files (its identity and
// journal in the state directory, the media directory), whatever a backend
// says; anything else is copied. A path already empty may be a move the
// agent made before it died (takePhoneMedia looks).
func (a *Agent) mayTake(src string) bool {
	if !filepath.IsAbs(src) {
		return false
	}
	if fi, err := os.Lstat(src); err == nil && !fi.Mode().IsRegular() {
		return false
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(src))
	if err != nil {
		return false
	}
	state, err := filepath.EvalSymlinks(a.cfg.StateDir)
	if err != nil {
		return false
	}
	return dir != state && dir != filepath.Join(state, mediaDirName)
}

// takePhoneMedia moves the regular file src to dst, then flushes and
// hashes it. A src already gone with dst in place is a move made before
// the agent died (Deliver again with the same ID). Anything else that
// fails leaves src where it was.
func (a *Agent) takePhoneMedia(src, dst string, max int64) (int64, string, error) {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return 0, "", fmt.Errorf("media dir: %w", err)
	}
	fi, err := os.Lstat(src)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if _, serr := os.Lstat(dst); serr != nil {
			return 0, "", fmt.Errorf("open phone file: %w", err)
		}
	case err != nil:
		return 0, "", fmt.Errorf("open phone file: %w", err)
	case !fi.Mode().IsRegular(): // swapped since mayTake
		return 0, "", fmt.Errorf("phone file %s is not a regular file", filepath.Base(src))
	case fi.Size() > max:
		return 0, "", overLimit(max)
	default:
		if err := os.Rename(src, dst); errors.Is(err, syscall.EXDEV) {
			return 0, "", errOtherFilesystem
		} else if err != nil {
			return 0, "", fmt.Errorf("take phone file: %w", err)
		}
	}
	// Checked again on the file now in the store: the backend may have
	// swapped the path between the check and the move.
	n, sum, err := syncAndHash(dst, max)
	if err != nil {
		_ = os.Rename(dst, src)
		return 0, "", err
	}
	return n, sum, nil
}

// syncAndHash flushes the regular file at path (at most max bytes) and its
// directory to disk and returns its size and SHA-256.
func syncAndHash(path string, max int64) (int64, string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return 0, "", fmt.Errorf("stored phone file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, "", fmt.Errorf("stored phone file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return 0, "", errors.New("stored phone file is not a regular file")
	}
	if fi.Size() > max {
		return 0, "", overLimit(max)
	}
	n, sum, err := flushAndHash(f, fi.Size(), true, true)
	if err == nil {
		err = atomicfile.SyncDir(filepath.Dir(path))
	}
	if err != nil {
		return 0, "", fmt.Errorf("stored phone file: %w", err)
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
		_, sum, err = flushAndHash(tmp, n, durable, withSum)
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

// flushAndHash fsyncs f (if durable) while it hashes f's first n bytes (if
// withSum): the hash is read back from the page cache as the bytes go to
// disk. It returns how many bytes it hashed.
func flushAndHash(f *os.File, n int64, durable, withSum bool) (int64, string, error) {
	synced := make(chan error, 1)
	if durable {
		go func() { synced <- f.Sync() }()
	} else {
		synced <- nil
	}
	var read int64
	var sum string
	var err error
	if withSum {
		h := sha256.New()
		if read, err = io.CopyBuffer(h, io.NewSectionReader(f, 0, n), make([]byte, mediaChunk)); err == nil {
			sum = hex.EncodeToString(h.Sum(nil))
		}
	}
	if serr := <-synced; err == nil {
		err = serr
	}
	return read, sum, err
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
