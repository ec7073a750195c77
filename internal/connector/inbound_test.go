package connector

import (
	"bytes"
	"testing"
)

// The last keep bytes of a stream reach the destination only on flush,
// whatever the write sizes.
func TestHoldbackWriter(t *testing.T) {
	data := make([]byte, 10_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, tc := range []struct {
		name        string
		keep, chunk int
	}{
		{"small writes", 100, 7},
		{"writes larger than the tail", 100, 1000},
		{"tail larger than the file", 20_000, 512},
		{"one write", 64, len(data)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dst bytes.Buffer
			h := &holdbackWriter{w: &dst, keep: tc.keep}
			for off := 0; off < len(data); off += tc.chunk {
				end := min(off+tc.chunk, len(data))
				if n, err := h.Write(data[off:end]); err != nil || n != end-off {
					t.Fatalf("write: %d, %v", n, err)
				}
				if want := max(0, end-tc.keep); dst.Len() != want {
					t.Fatalf("after %d bytes in, %d out; want %d", end, dst.Len(), want)
				}
			}
			if err := h.flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dst.Bytes(), data) {
				t.Fatal("flushed stream differs from what was written")
			}
		})
	}
}
