package journal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/rcsgate/rcsgate/internal/atomicfile"
)

// A journal directory holds one live segment, NNNNNNNNNNNNNNNN.jnl (16 hex
// digits). Compaction writes the live entries to the next number as a .tmp
// file, fsyncs it, renames it into place and fsyncs the directory; only then
// is the old segment removed. On open the highest-numbered segment wins:
// lower ones are leftovers of a compaction that crashed before removing
// them, and .tmp files are compactions that never finished.
const segmentExt = ".jnl"

func segmentName(num uint64) string { return fmt.Sprintf("%016x%s", num, segmentExt) }

func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(hex, 16, 64)
	return n, err == nil && n > 0
}

// segment is the open live segment file.
type segment struct {
	dir    string
	num    uint64
	f      *os.File
	size   int64
	noSync bool
}

func (s *segment) path() string { return filepath.Join(s.dir, segmentName(s.num)) }

// openInfo says what Open found and repaired.
type openInfo struct {
	Segment      string // file name of the live segment
	TornBytes    int    // bytes of a torn tail record that were truncated
	RemovedFiles []string
	Created      bool
}

// openSegment opens (creating if needed) the live segment in dir, truncates
// a torn tail and returns the entries it holds.
func openSegment(dir string, noSync bool) (*segment, []Entry, openInfo, error) {
	var info openInfo
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, info, fmt.Errorf("journal: %w", err)
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, info, fmt.Errorf("journal: %w", err)
	}
	var nums []uint64
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, nil, info, fmt.Errorf("journal: remove unfinished compaction: %w", err)
			}
			info.RemovedFiles = append(info.RemovedFiles, name)
			continue
		}
		if n, ok := parseSegmentName(name); ok && de.Type().IsRegular() {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	if len(nums) == 0 {
		seg, err := createSegment(dir, 1, nil, noSync)
		if err != nil {
			return nil, nil, info, err
		}
		info.Segment, info.Created = segmentName(1), true
		return seg, nil, info, nil
	}
	live := nums[len(nums)-1]
	for _, n := range nums[:len(nums)-1] {
		if err := os.Remove(filepath.Join(dir, segmentName(n))); err != nil {
			return nil, nil, info, fmt.Errorf("journal: remove superseded segment: %w", err)
		}
		info.RemovedFiles = append(info.RemovedFiles, segmentName(n))
	}
	if len(info.RemovedFiles) > 0 {
		if err := syncDir(dir, noSync); err != nil {
			return nil, nil, info, err
		}
	}
	s := &segment{dir: dir, num: live, noSync: noSync}
	info.Segment = segmentName(live)
	f, err := os.OpenFile(s.path(), os.O_RDWR, 0)
	if err != nil {
		return nil, nil, info, fmt.Errorf("journal: %w", err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, nil, info, fmt.Errorf("journal: read %s: %w", s.path(), err)
	}
	entries, torn, err := DecodeSegment(b)
	if err != nil {
		f.Close()
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.File = s.path()
		}
		return nil, nil, info, err
	}
	s.f, s.size = f, int64(len(b))
	if torn > 0 {
		s.size -= int64(torn)
		if err := f.Truncate(s.size); err != nil {
			f.Close()
			return nil, nil, info, fmt.Errorf("journal: truncate torn tail of %s: %w", s.path(), err)
		}
		if err := s.sync(); err != nil {
			f.Close()
			return nil, nil, info, err
		}
		info.TornBytes = torn
	}
	return s, entries, info, nil
}

// createSegment writes a new segment numbered num holding payloads, durably:
// temp file, fsync, rename, directory fsync. It returns it open for appends.
func createSegment(dir string, num uint64, payloads [][]byte, noSync bool) (*segment, error) {
	s := &segment{dir: dir, num: num, noSync: noSync}
	final := s.path()
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	fail := func(err error) (*segment, error) {
		f.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("journal: write segment %s: %w", final, err)
	}
	buf := append([]byte(nil), segmentMagic[:]...)
	for _, p := range payloads {
		buf = appendRecord(buf, p)
	}
	if _, err := f.Write(buf); err != nil {
		return fail(err)
	}
	s.f, s.size = f, int64(len(buf))
	if err := s.sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	if err := syncDir(dir, noSync); err != nil {
		// The rename happened; the segment is valid but maybe not durable yet.
		f.Close()
		return nil, err
	}
	return s, nil
}

// append writes payloads as records at the end and fsyncs. On a failed write
// it cuts the file back so no partial record is followed by later ones.
func (s *segment) append(payloads [][]byte) error {
	var buf []byte
	for _, p := range payloads {
		buf = appendRecord(buf, p)
	}
	if _, err := s.f.WriteAt(buf, s.size); err != nil {
		if terr := s.f.Truncate(s.size); terr != nil {
			return fmt.Errorf("%w: write %s: %w (and cutting back failed: %v)", errBroken, s.path(), err, terr)
		}
		return fmt.Errorf("journal: write %s: %w", s.path(), err)
	}
	if err := s.sync(); err != nil {
		// After a failed fsync the kernel may have dropped the dirty pages:
		// what is on disk is unknown, so stop writing to this file.
		return fmt.Errorf("%w: %w", errBroken, err)
	}
	s.size += int64(len(buf))
	return nil
}

func (s *segment) sync() error {
	if s.noSync {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("journal: fsync %s: %w", s.path(), err)
	}
	return nil
}

func (s *segment) close() error { return s.f.Close() }

func syncDir(dir string, noSync bool) error {
	if noSync {
		return nil
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

func removeFile(path string) error { return os.Remove(path) }
