// Package backup writes rcsgate's state — config, both SQLite databases, the
// device CA and the channel key — into one age-encrypted tar archive in a
// directory or an S3 bucket, and restores it into a fresh state directory
// so that paired devices reconnect without pairing again.
//
// Archive: age( tar( rcsgate-backup.json, files… ) ). The manifest comes
// first and carries each file's size and SHA-256; restore checks all of
// them before placing anything.
package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/rs/zerolog"

	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/pki"
)

// ConfigName is the config's path in the archive and in a restored state dir.
const ConfigName = "config.yaml"

// CertmagicDir holds the HTTPS front's ACME account, certificates and keys.
const CertmagicDir = "certmagic"

// Files taken from the state directory when present. The databases are
// snapshotted; the rest are copied as they are.
var (
	sqliteFiles = []string{gateway.StoreFile, gateway.BridgeFile}
	plainFiles  = []string{
		"registration.yaml", // what the homeserver loads; holds the tokens
		"secrets.yaml",      // NixOS module: the tokens config.yaml is built from
		pki.CACertFile, pki.CAKeyFile, pki.ChannelCertFile, pki.ChannelKeyFile,
	}
)

// Options for Create.
type Options struct {
	ConfigPath string
	Recipients []age.Recipient // a passphrase (alone) or age recipients
	Dest       Destination
	Keep       int    // after success, keep only the newest Keep archives (0: keep all)
	TempDir    string // where snapshots are staged; default the state directory (same disk, same privacy)
	Log        zerolog.Logger
	Now        func() time.Time
}

// Result says what Create did.
type Result struct {
	Name     string
	Location string
	Files    []string
	Bytes    int64 // archive size
	Skipped  []string
	Pruned   []string
}

// Create takes a consistent snapshot of the state and writes the archive.
func Create(ctx context.Context, o Options) (*Result, error) {
	if len(o.Recipients) == 0 {
		return nil, errors.New("no passphrase or recipient to encrypt the backup to")
	}
	if o.Dest == nil {
		return nil, errors.New("no destination for the backup")
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	cfg, err := gateway.LoadConfig(o.ConfigPath)
	if err != nil {
		return nil, err
	}
	stateDir := cfg.StateDir
	tmpRoot := o.TempDir
	if tmpRoot == "" {
		tmpRoot = stateDir
	}
	stage, err := os.MkdirTemp(tmpRoot, ".rcsgate-backup-stage-*")
	if err != nil {
		return nil, fmt.Errorf("staging directory: %w", err)
	}
	defer os.RemoveAll(stage)

	created := now().UTC()
	m := &Manifest{Format: FormatVersion, RcsgateVersion: rcsgateVersion(), Created: created, StateDir: stateDir}
	res := &Result{}
	stageFile := func(rel string, sqlite bool, from string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		dst := filepath.Join(stage, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return fmt.Errorf("stage %s: %w", rel, err)
		}
		if sqlite {
			if err := snapshotDB(ctx, from, dst); err != nil {
				return err
			}
		} else if err := copyFile(from, dst); err != nil {
			return err
		}
		size, sum, err := hashFile(dst)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, File{Path: rel, Size: size, SHA256: sum, Mode: fileMode(rel), SQLite: sqlite})
		res.Files = append(res.Files, rel)
		return nil
	}

	// The databases first: they are what moves while the daemon runs.
	for _, name := range sqliteFiles {
		p := filepath.Join(stateDir, name)
		if ok, err := isRegular(p); err != nil {
			return nil, err
		} else if ok {
			if err := stageFile(name, true, p); err != nil {
				return nil, err
			}
		}
	}
	if err := stageFile(ConfigName, false, o.ConfigPath); err != nil {
		return nil, err
	}
	for _, name := range plainFiles {
		p := filepath.Join(stateDir, name)
		if ok, err := isRegular(p); err != nil {
			return nil, err
		} else if ok {
			if err := stageFile(name, false, p); err != nil {
				return nil, err
			}
		}
	}
	cmFiles, err := certmagicFiles(stateDir)
	if err != nil {
		return nil, err
	}
	for _, rel := range cmFiles {
		if err := stageFile(rel, false, filepath.Join(stateDir, filepath.FromSlash(rel))); err != nil {
			return nil, err
		}
	}
	if res.Skipped, err = unknownEntries(stateDir); err != nil {
		return nil, err
	}
	if len(res.Skipped) > 0 {
		o.Log.Warn().Strs("entries", res.Skipped).Msg("Not backed up: unknown entries in the state directory")
	}
	if cfg.TLS.Mode == "provided" {
		o.Log.Warn().Msg("Not backed up: tls.cert_file and tls.key_file (outside the state directory); keep them with the backup")
	}

	res.Name = ArchiveName(created)
	res.Location = o.Dest.Where(res.Name)
	err = o.Dest.Put(ctx, res.Name, func(w io.Writer) error {
		cw := &countWriter{w: w}
		err := writeArchive(ctx, cw, o.Recipients, m, stage)
		res.Bytes = cw.n
		return err
	})
	if err != nil {
		return nil, err
	}
	o.Log.Info().Str("location", res.Location).Int("files", len(m.Files)).Int64("bytes", res.Bytes).Msg("Backup written")
	if res.Pruned, err = Prune(ctx, o.Dest, o.Keep); err != nil {
		return res, fmt.Errorf("backup written to %s, but pruning old ones failed: %w", res.Location, err)
	}
	for _, p := range res.Pruned {
		o.Log.Info().Str("location", o.Dest.Where(p)).Msg("Pruned old backup")
	}
	return res, nil
}

// writeArchive streams age(tar(manifest, files)) to w.
func writeArchive(ctx context.Context, w io.Writer, rs []age.Recipient, m *Manifest, stage string) error {
	aw, err := age.Encrypt(w, rs...)
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	tw := tar.NewWriter(aw)
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	hdr := func(name string, size int64, mode uint32) *tar.Header {
		return &tar.Header{Name: name, Size: size, Mode: int64(mode), ModTime: m.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr(ManifestName, int64(len(raw)), 0o600)); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if _, err := tw.Write(raw); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr(f.Path, f.Size, f.Mode)); err != nil {
			return fmt.Errorf("archive %s: %w", f.Path, err)
		}
		src, err := os.Open(filepath.Join(stage, filepath.FromSlash(f.Path)))
		if err != nil {
			return fmt.Errorf("archive %s: %w", f.Path, err)
		}
		_, err = io.CopyN(tw, src, f.Size)
		src.Close()
		if err != nil {
			return fmt.Errorf("archive %s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func isRegular(p string) (bool, error) {
	st, err := os.Lstat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("state: %w", err)
	case !st.Mode().IsRegular():
		return false, fmt.Errorf("%s is not a regular file", p)
	}
	return true, nil
}

// certmagicFiles lists the front's storage, without its lock files (they
// belong to a running process, not to the state).
func certmagicFiles(stateDir string) ([]string, error) {
	root := filepath.Join(stateDir, CertmagicDir)
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(stateDir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir() && rel == CertmagicDir+"/locks":
			return fs.SkipDir
		case d.IsDir():
			return nil
		case !d.Type().IsRegular():
			return nil // symlinks and the like: not certmagic's own
		}
		if checkPath(rel) != nil {
			return nil
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("certmagic storage: %w", err)
	}
	sort.Strings(out)
	return out, nil
}

// unknownEntries names top-level entries the backup leaves out on purpose
// or by ignorance, so the operator hears about them.
func unknownEntries(stateDir string) ([]string, error) {
	ents, err := os.ReadDir(stateDir)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	known := map[string]bool{ConfigName: true, CertmagicDir: true}
	for _, n := range append(append([]string{}, sqliteFiles...), plainFiles...) {
		known[n] = true
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if known[n] || strings.HasPrefix(n, ".rcsgate-") {
			continue
		}
		if base, ok := sidecarOf(n); ok && known[base] {
			continue // captured by the snapshot
		}
		out = append(out, n)
	}
	return out, nil
}

func sidecarOf(name string) (string, bool) {
	for _, s := range []string{"-wal", "-shm", "-journal"} {
		if strings.HasSuffix(name, s) {
			return strings.TrimSuffix(name, s), true
		}
	}
	return "", false
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("read %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("stage %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("stage %s: %w", src, err)
	}
	return nil
}

func hashFile(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", fmt.Errorf("hash: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("hash %s: %w", p, err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
