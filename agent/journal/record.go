package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// On-disk format of one segment file:
//
//	header  8 bytes  "rcsgJNL" then format version 0x01
//	record  4 bytes  payload length n, little endian, 1 <= n <= MaxRecord
//	        4 bytes  CRC-32C (Castagnoli) of the 4 length bytes and the payload
//	        n bytes  payload: a JSON array of entries (one append = one record)
//	record  ...
//
// A payload is JSON, so it never holds a zero byte, and a record whose length
// fits MaxRecord always has a zero byte in its length field: text from a
// contact can never look like a record boundary.
const (
	headerSize       = 8
	recordHeaderSize = 8
	// MaxRecord bounds one record's payload. An append bigger than this is
	// split into several records.
	MaxRecord = 4 << 20
)

var segmentMagic = [headerSize]byte{'r', 'c', 's', 'g', 'J', 'N', 'L', 1}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt marks a journal that cannot be read without losing data: a bad
// record followed by good ones, a record that does not decode, or a file that
// is not a journal. The agent refuses to start rather than guess.
var ErrCorrupt = errors.New("journal: corrupt")

// CorruptError says where a journal is damaged.
type CorruptError struct {
	File   string // segment file name ("" when decoding bytes)
	Offset int64  // byte offset in the file of the bad record
	Reason string
}

func (e *CorruptError) Error() string {
	where := fmt.Sprintf("offset %d", e.Offset)
	if e.File != "" {
		where = e.File + " at " + where
	}
	return fmt.Sprintf("journal: corrupt record in %s: %s (good records follow it, so this is not a torn write from a crash; move the file aside to start over, which loses what it holds)", where, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// appendRecord appends one framed record holding payload to dst.
func appendRecord(dst, payload []byte) []byte {
	var hdr [recordHeaderSize]byte
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(payload)))
	crc := crc32.Update(0, castagnoli, hdr[0:4])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(hdr[4:8], crc)
	dst = append(dst, hdr[:]...)
	return append(dst, payload...)
}

// recordAt checks the record starting at b[off:] and returns its payload.
// ok is false when no whole, intact record starts there.
func recordAt(b []byte, off int) (payload []byte, ok bool) {
	if len(b)-off < recordHeaderSize {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(b[off : off+4])
	if n == 0 || n > MaxRecord || uint64(len(b)-off-recordHeaderSize) < uint64(n) {
		return nil, false
	}
	payload = b[off+recordHeaderSize : off+recordHeaderSize+int(n)]
	if payload[0] != '[' { // every payload is a JSON array; cheap filter before the CRC
		return nil, false
	}
	crc := crc32.Update(0, castagnoli, b[off:off+4])
	crc = crc32.Update(crc, castagnoli, payload)
	if crc != binary.LittleEndian.Uint32(b[off+4:off+8]) {
		return nil, false
	}
	return payload, true
}

// scanRecords splits b (a segment without its header) into record payloads.
// good is the length of the intact prefix. When good < len(b) and err is nil,
// the rest is a torn tail: a record that was being written when the process
// or the machine died, which the caller truncates. A bad record followed by
// any intact one is corruption, reported with its offset (relative to b).
func scanRecords(b []byte) (payloads [][]byte, good int, err error) {
	off := 0
	for off < len(b) {
		p, ok := recordAt(b, off)
		if !ok {
			if next := findRecord(b, off+1); next >= 0 {
				return payloads, off, &CorruptError{Offset: int64(off),
					Reason: fmt.Sprintf("bad length or checksum, yet an intact record starts at offset %d", next)}
			}
			return payloads, off, nil
		}
		payloads = append(payloads, p)
		off += recordHeaderSize + len(p)
	}
	return payloads, off, nil
}

// findRecord returns the first offset >= from where an intact record starts,
// or -1. A record's length field has a zero high byte, which narrows the
// candidates before any checksum is computed.
func findRecord(b []byte, from int) int {
	for p := from; p+recordHeaderSize < len(b); p++ {
		i := bytes.IndexByte(b[p+3:len(b)-recordHeaderSize+3], 0)
		if i < 0 {
			return -1
		}
		p += i
		if _, ok := recordAt(b, p); ok {
			return p
		}
	}
	return -1
}

// checkHeader reports whether b starts with a segment header.
func checkHeader(b []byte) error {
	if len(b) < headerSize {
		return fmt.Errorf("%d bytes, shorter than the %d-byte header", len(b), headerSize)
	}
	if !bytes.Equal(b[:headerSize-1], segmentMagic[:headerSize-1]) {
		return errors.New("not an rcsgate journal segment (bad magic)")
	}
	if b[headerSize-1] != segmentMagic[headerSize-1] {
		return fmt.Errorf("journal format version %d, this agent reads %d", b[headerSize-1], segmentMagic[headerSize-1])
	}
	return nil
}

// DecodeSegment parses a whole segment file's bytes into entries. It is the
// decoder the journal uses on open, exposed for tools and fuzzing: any input
// gives entries and/or an error, never a panic. torn is how many bytes at the
// end form a torn record (dropped, not an error).
func DecodeSegment(b []byte) (entries []Entry, torn int, err error) {
	if err := checkHeader(b); err != nil {
		return nil, 0, &CorruptError{Reason: err.Error()}
	}
	payloads, good, err := scanRecords(b[headerSize:])
	for i, p := range payloads {
		es, derr := decodePayload(p)
		if derr != nil {
			return entries, 0, &CorruptError{Offset: int64(headerSize + recordOffset(payloads, i)), Reason: derr.Error()}
		}
		entries = append(entries, es...)
	}
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.Offset += headerSize
		}
		return entries, 0, err
	}
	return entries, len(b) - headerSize - good, nil
}

// recordOffset is the offset of payload i's record relative to the first.
func recordOffset(payloads [][]byte, i int) int {
	off := 0
	for _, p := range payloads[:i] {
		off += recordHeaderSize + len(p)
	}
	return off
}
