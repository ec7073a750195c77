package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Destination is where archives live: a directory or an S3 bucket prefix.
type Destination interface {
	// Put stores a new archive under name. It is all or nothing: a reader
	// never sees a partial archive, and an error from write leaves none.
	Put(ctx context.Context, name string, write func(io.Writer) error) error
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// List returns the archive names, oldest first.
	List(ctx context.Context) ([]string, error)
	Remove(ctx context.Context, name string) error
	// Where is a name's location for messages (no credentials).
	Where(name string) string
}

const timeLayout = "20060102T150405Z"

var archiveName = regexp.MustCompile(`^rcsgate-backup-[0-9]{8}T[0-9]{6}Z\.tar\.age$`)

// ArchiveName is the file name of a backup taken at t; names sort by time.
func ArchiveName(t time.Time) string {
	return "rcsgate-backup-" + t.UTC().Format(timeLayout) + ".tar.age"
}

// IsArchiveName says whether name is one List would return (and prune).
func IsArchiveName(name string) bool { return archiveName.MatchString(name) }

// Latest picks the newest archive in d.
func Latest(ctx context.Context, d Destination) (string, error) {
	names, err := d.List(ctx)
	if err != nil {
		return "", err
	}
	if len(names) == 0 {
		return "", fmt.Errorf("no rcsgate backups (rcsgate-backup-*.tar.age) in %s", d.Where(""))
	}
	return names[len(names)-1], nil
}

// Prune removes all but the newest keep archives and returns what it removed.
func Prune(ctx context.Context, d Destination, keep int) ([]string, error) {
	if keep <= 0 {
		return nil, nil
	}
	names, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	var removed []string
	for len(names) > keep {
		if err := d.Remove(ctx, names[0]); err != nil {
			return removed, err
		}
		removed = append(removed, names[0])
		names = names[1:]
	}
	return removed, nil
}

// Dir is a local directory of archives.
type Dir struct{ Path string }

func (d Dir) Where(name string) string { return filepath.Join(d.Path, name) }

func (d Dir) Put(ctx context.Context, name string, write func(io.Writer) error) error {
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return fmt.Errorf("backup directory: %w", err)
	}
	final := filepath.Join(d.Path, name)
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("%s already exists", final)
	}
	tmp, err := os.CreateTemp(d.Path, ".rcsgate-backup-*.tmp")
	if err != nil {
		return fmt.Errorf("backup directory: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once linked and removed, or renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", final, err)
	}
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", final, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", final, err)
	}
	// A hard link never replaces an existing archive; fall back to rename
	// on file systems without links.
	if err := os.Link(tmp.Name(), final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists", final)
		}
		if err := os.Rename(tmp.Name(), final); err != nil {
			return fmt.Errorf("write %s: %w", final, err)
		}
	}
	return syncDir(d.Path)
}

func (d Dir) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	f, err := os.Open(filepath.Join(d.Path, name))
	if err != nil {
		return nil, fmt.Errorf("open backup: %w", err)
	}
	return f, nil
}

func (d Dir) List(ctx context.Context) ([]string, error) {
	ents, err := os.ReadDir(d.Path)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && IsArchiveName(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

func (d Dir) Remove(ctx context.Context, name string) error {
	if !IsArchiveName(name) {
		return fmt.Errorf("refusing to remove %q: not a backup archive name", name)
	}
	if err := os.Remove(filepath.Join(d.Path, name)); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// ParseTarget turns --to into a destination: a directory or s3://bucket/prefix.
func ParseTarget(target string, s3 S3Config) (Destination, error) {
	if target == "" {
		return nil, errors.New("no destination: give --to DIR or --to s3://bucket/prefix")
	}
	if strings.HasPrefix(target, "s3://") {
		bucket, key, err := splitS3(target)
		if err != nil {
			return nil, err
		}
		return NewS3(s3, bucket, key)
	}
	if strings.Contains(target, "://") {
		return nil, fmt.Errorf("destination %q: only directories and s3:// URLs are supported", target)
	}
	return Dir{Path: target}, nil
}

// ParseSource turns --from into a destination and an archive name: a file,
// a directory or s3://bucket/prefix/ (its newest archive), or s3://bucket/key.
func ParseSource(ctx context.Context, source string, s3 S3Config) (Destination, string, error) {
	if source == "" {
		return nil, "", errors.New("no source: give --from FILE, --from DIR or --from s3://bucket/key")
	}
	var d Destination
	var name string
	switch {
	case strings.HasPrefix(source, "s3://"):
		bucket, key, err := splitS3(source)
		if err != nil {
			return nil, "", err
		}
		prefix := key
		if base := key[strings.LastIndex(key, "/")+1:]; strings.HasSuffix(base, ".tar.age") {
			prefix, name = strings.TrimSuffix(strings.TrimSuffix(key, base), "/"), base
		}
		if d, err = NewS3(s3, bucket, prefix); err != nil {
			return nil, "", err
		}
	case strings.Contains(source, "://"):
		return nil, "", fmt.Errorf("source %q: only files, directories and s3:// URLs are supported", source)
	default:
		st, err := os.Stat(source)
		if err != nil {
			return nil, "", fmt.Errorf("backup source: %w", err)
		}
		if st.IsDir() {
			d = Dir{Path: source}
		} else {
			d, name = Dir{Path: filepath.Dir(source)}, filepath.Base(source)
		}
	}
	if name == "" {
		var err error
		if name, err = Latest(ctx, d); err != nil {
			return nil, "", err
		}
	}
	return d, name, nil
}

func splitS3(u string) (bucket, key string, err error) {
	rest := strings.TrimPrefix(u, "s3://")
	bucket, key, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q has no bucket: use s3://bucket/prefix", u)
	}
	return bucket, strings.Trim(key, "/"), nil
}
