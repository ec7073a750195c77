package journal

import (
	"fmt"
	"strings"
	"testing"

	"github.com/rcsgate/rcsgate/internal/wire"
)

// BenchmarkAppend measures one durable append of a typical message (queue
// then ack, as the channel does it) with fsync, against the same code with
// fsync skipped. Run: go test -bench Append -run '^$' ./agent/journal/
func BenchmarkAppend(b *testing.B) {
	for _, sync := range []bool{true, false} {
		name := "fsync"
		if !sync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			j, err := Open(b.TempDir(), Options{NoSync: !sync, MaxOut: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			m := wire.Message{Chat: "+12025550123", From: "+12025550123", Text: strings.Repeat("x", 160), TSMS: 1}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m.ID = fmt.Sprintf("ph-%032x", i)
				if _, err := j.QueueOut(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReceiveBatch: server messages arriving together share one fsync.
func BenchmarkReceiveBatch(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			j, err := Open(b.TempDir(), Options{MaxIn: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			msgs := make([]wire.Message, n)
			b.ResetTimer()
			for i := range b.N {
				for k := range msgs {
					msgs[k] = wire.Message{ID: fmt.Sprintf("$ev%d-%d", i, k), Chat: "+12025550123", Text: strings.Repeat("y", 160)}
				}
				if _, err := j.ReceiveIn(msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
		})
	}
}
