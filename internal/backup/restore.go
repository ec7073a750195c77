package backup

import (
	"archive/tar"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"filippo.io/age"
	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/rcsgate/rcsgate/internal/gateway"
	"github.com/rcsgate/rcsgate/internal/pki"
)

// ErrStateDirNotEmpty is returned when restore would replace existing state.
var ErrStateDirNotEmpty = errors.New("state directory is not empty")

// ErrCorrupt means the archive failed a check; nothing was written.
var ErrCorrupt = errors.New("backup archive is damaged or was altered")

// RestoreOptions for Restore.
type RestoreOptions struct {
	Identities []age.Identity // passphrase and/or age identities
	StateDir   string         // where the state goes; created 0700 if missing
	// Force replaces rcsgate's files in a non-empty state directory. Stop
	// the daemon first: it must not hold the databases open.
	Force bool
	Log   zerolog.Logger
}

// RestoreResult says what Restore did.
type RestoreResult struct {
	Manifest   *Manifest
	StateDir   string
	ConfigPath string
	// StateDirRewritten: config.yaml's state_dir pointed elsewhere (the old
	// machine's path) and now names StateDir.
	StateDirRewritten bool
}

// Restore fetches name from src and restores it (see RestoreReader).
func Restore(ctx context.Context, src Destination, name string, o RestoreOptions) (*RestoreResult, error) {
	r, err := src.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res, err := RestoreReader(ctx, r, o)
	if err != nil {
		return nil, err
	}
	o.Log.Info().Str("from", src.Where(name)).Str("state_dir", res.StateDir).Int("files", len(res.Manifest.Files)).Msg("Backup restored")
	return res, nil
}

// RestoreReader decrypts and unpacks an archive into a staging directory
// inside the state directory, checks every file against the manifest, and
// only then moves the files into place (renames, config.yaml last). On any
// error the state directory is left as it was.
func RestoreReader(ctx context.Context, r io.Reader, o RestoreOptions) (res *RestoreResult, err error) {
	if o.StateDir == "" {
		return nil, errors.New("no state directory to restore into")
	}
	dest, err := filepath.Abs(o.StateDir)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	created := false
	switch ents, rerr := os.ReadDir(dest); {
	case errors.Is(rerr, fs.ErrNotExist):
		// Made only once the archive decrypts, so a wrong key leaves no trace.
	case rerr != nil:
		return nil, fmt.Errorf("state directory: %w", rerr)
	default:
		var present []string
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".rcsgate-restore-") {
				present = append(present, e.Name())
			}
		}
		if len(present) > 0 && !o.Force {
			return nil, fmt.Errorf("%w: %s holds %d entries (e.g. %s); restore into an empty directory, or pass --force to replace rcsgate's files there (stop rcsgate first)",
				ErrStateDirNotEmpty, dest, len(present), present[0])
		}
	}

	plain, err := decrypt(r, o.Identities)
	if err != nil {
		return nil, err
	}
	if _, serr := os.Stat(dest); errors.Is(serr, fs.ErrNotExist) {
		if err := os.MkdirAll(dest, 0o700); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
		created = true
	}
	stage, err := os.MkdirTemp(dest, ".rcsgate-restore-*")
	if err != nil {
		return nil, fmt.Errorf("staging directory: %w", err)
	}
	defer func() {
		os.RemoveAll(stage)
		if err != nil && created {
			os.Remove(dest)
		}
	}()

	m, err := unpack(ctx, plain, stage)
	if err != nil {
		return nil, err
	}
	res = &RestoreResult{Manifest: m, StateDir: dest, ConfigPath: filepath.Join(dest, ConfigName)}
	if res.StateDirRewritten, err = fixStateDir(filepath.Join(stage, ConfigName), m.StateDir, dest); err != nil {
		return nil, err
	}
	if err := checkStaged(stage); err != nil {
		return nil, err
	}
	if err := place(stage, dest, m, o.Force); err != nil {
		return nil, err
	}
	if err := os.Chmod(dest, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	return res, nil
}

// unpack reads the tar stream into stage, checking it against the manifest
// and reading the age stream to its authenticated end.
func unpack(ctx context.Context, plain io.Reader, stage string) (*Manifest, error) {
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, a...))
	}
	tr := tar.NewReader(plain)
	hdr, err := tr.Next()
	if err != nil {
		return nil, corrupt("reading the archive: %v", err)
	}
	if hdr.Name != ManifestName || hdr.Typeflag != tar.TypeReg || hdr.Size > maxManifest {
		return nil, corrupt("it does not start with %s: not an rcsgate backup?", ManifestName)
	}
	raw, err := io.ReadAll(io.LimitReader(tr, maxManifest))
	if err != nil {
		return nil, corrupt("reading the manifest: %v", err)
	}
	m, err := parseManifest(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	want := map[string]File{}
	for _, f := range m.Files {
		want[f.Path] = f
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, corrupt("reading the archive: %v", err)
		}
		f, ok := want[hdr.Name]
		switch {
		case !ok:
			return nil, corrupt("%q is not in the manifest, or appears twice", hdr.Name)
		case hdr.Typeflag != tar.TypeReg:
			return nil, corrupt("%q is not a regular file", hdr.Name)
		case hdr.Size != f.Size:
			return nil, corrupt("%q has %d bytes, the manifest says %d", hdr.Name, hdr.Size, f.Size)
		}
		delete(want, hdr.Name)
		if err := stageEntry(tr, filepath.Join(stage, filepath.FromSlash(f.Path)), f); err != nil {
			return nil, err
		}
	}
	if len(want) > 0 {
		var missing []string
		for p := range want {
			missing = append(missing, p)
		}
		sort.Strings(missing)
		return nil, corrupt("missing from the archive: %s", strings.Join(missing, ", "))
	}
	// The tar end marker is not the age stream's end: read on so that a
	// truncated or altered tail is caught.
	if _, err := io.Copy(io.Discard, plain); err != nil {
		return nil, corrupt("%v", err)
	}
	return m, nil
}

func stageEntry(r io.Reader, dst string, f File) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("stage %s: %w", f.Path, err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(fileMode(f.Path)))
	if err != nil {
		return fmt.Errorf("stage %s: %w", f.Path, err)
	}
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(out, h), r, f.Size); err != nil {
		out.Close()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: %s is cut short", ErrCorrupt, f.Path)
		}
		// age reports a failed chunk authentication here.
		return fmt.Errorf("%w: reading %s: %v", ErrCorrupt, f.Path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		out.Close()
		return fmt.Errorf("%w: %s has SHA-256 %s, the manifest says %s", ErrCorrupt, f.Path, got, f.SHA256)
	}
	if err := out.Chmod(os.FileMode(fileMode(f.Path))); err != nil { // umask-proof
		out.Close()
		return fmt.Errorf("stage %s: %w", f.Path, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("stage %s: %w", f.Path, err)
	}
	return out.Close()
}

// fixStateDir points the restored config at its new home; the rest of the
// file is left as it was.
func fixStateDir(cfgPath, oldDir, newDir string) (bool, error) {
	if filepath.Clean(oldDir) == newDir {
		return false, nil
	}
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return false, fmt.Errorf("restored config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return false, fmt.Errorf("restored config: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return false, errors.New("restored config is not a YAML mapping")
	}
	mp := doc.Content[0]
	set := false
	for i := 0; i+1 < len(mp.Content); i += 2 {
		if mp.Content[i].Value == "state_dir" {
			mp.Content[i+1].SetString(newDir)
			set = true
		}
	}
	if !set {
		mp.Content = append([]*yaml.Node{
			{Kind: yaml.ScalarNode, Tag: "!!str", Value: "state_dir"},
			{Kind: yaml.ScalarNode, Tag: "!!str", Value: newDir},
		}, mp.Content...)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		return false, fmt.Errorf("restored config: %w", err)
	}
	if err := os.WriteFile(cfgPath, out, 0o600); err != nil {
		return false, fmt.Errorf("restored config: %w", err)
	}
	return true, nil
}

// checkStaged makes sure this build can run on what was restored.
func checkStaged(stage string) error {
	if _, err := gateway.LoadConfig(filepath.Join(stage, ConfigName)); err != nil {
		return fmt.Errorf("the config in the backup does not load with this rcsgate: %w", err)
	}
	for _, p := range [][2]string{{pki.CACertFile, pki.CAKeyFile}, {pki.ChannelCertFile, pki.ChannelKeyFile}} {
		certPath, keyPath := filepath.Join(stage, p[0]), filepath.Join(stage, p[1])
		_, cerr := os.Stat(certPath)
		_, kerr := os.Stat(keyPath)
		if errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist) {
			continue
		}
		cert, key, err := pki.LoadKeyPair(certPath, keyPath)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
			return fmt.Errorf("%w: %s does not belong to %s", ErrCorrupt, p[1], p[0])
		}
	}
	return nil
}

// place moves staged files into dest. rcsgate's existing files there (and
// the databases' WAL and SHM files, which would corrupt a restored database)
// go first, into the staging directory that is removed afterwards.
func place(stage, dest string, m *Manifest, force bool) error {
	old := filepath.Join(stage, ".old")
	if err := os.Mkdir(old, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	var known []string
	known = append(known, ConfigName, CertmagicDir)
	known = append(known, plainFiles...)
	for _, db := range sqliteFiles {
		known = append(known, db, db+"-wal", db+"-shm", db+"-journal")
	}
	for _, n := range known {
		p := filepath.Join(dest, n)
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if !force { // an empty dir has none; this is a race with someone else
			return fmt.Errorf("%w: %s appeared during the restore", ErrStateDirNotEmpty, p)
		}
		if err := os.Rename(p, filepath.Join(old, n)); err != nil {
			return fmt.Errorf("restore: move old %s aside: %w", n, err)
		}
	}
	files := append([]File(nil), m.Files...)
	sort.SliceStable(files, func(i, j int) bool { return files[j].Path == ConfigName && files[i].Path != ConfigName })
	dirs := map[string]bool{dest: true}
	for _, f := range files {
		to := filepath.Join(dest, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return fmt.Errorf("restore %s: %w", f.Path, err)
		}
		if err := os.Rename(filepath.Join(stage, filepath.FromSlash(f.Path)), to); err != nil {
			return fmt.Errorf("restore %s: %w", f.Path, err)
		}
		dirs[filepath.Dir(to)] = true
	}
	for d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}
