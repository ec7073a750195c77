package journal

import (
	"errors"
	"testing"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// FuzzDecodeSegment: arbitrary bytes give entries, a torn-tail length and/or
// an ErrCorrupt error, never a panic; whatever decodes re-encodes to records
// that decode to the same entries.
func FuzzDecodeSegment(f *testing.F) {
	m := wire.Message{ID: "m1", Chat: "+12025550123", Text: "hi"}
	good, _ := encodeEntries([]Entry{
		{Kind: KindOutQueued, Msg: &m, AtMS: 1},
		{Kind: KindOutAcked, ID: "m1", AtMS: 2},
		{Kind: KindInHanded, ID: "s1", State: wire.StateSent, AtMS: 3},
	}, MaxRecord)
	seg := append([]byte(nil), segmentMagic[:]...)
	for _, p := range good {
		seg = appendRecord(seg, p)
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-3])
	f.Add(append(append([]byte(nil), seg...), 0, 0, 0, 0, 1, 2))
	f.Add(segmentMagic[:])
	f.Add([]byte("rcsgJNL\x02"))
	f.Add(appendRecord(append([]byte(nil), segmentMagic[:]...), []byte(`[{"k":9,"id":"x"}]`)))
	f.Add(appendRecord(append([]byte(nil), segmentMagic[:]...), []byte(`[]`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, torn, err := DecodeSegment(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error is not ErrCorrupt: %v", err)
			}
			return
		}
		if torn < 0 || torn > len(data)-headerSize {
			t.Fatalf("torn %d of %d bytes", torn, len(data))
		}
		if len(es) == 0 {
			return
		}
		ps, err := encodeEntries(es, MaxRecord)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again := append([]byte(nil), segmentMagic[:]...)
		for _, p := range ps {
			again = appendRecord(again, p)
		}
		es2, torn2, err := DecodeSegment(again)
		if err != nil || torn2 != 0 || len(es2) != len(es) {
			t.Fatalf("re-decode: %d entries, torn %d, %v", len(es2), torn2, err)
		}
	})
}
