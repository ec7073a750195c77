package chanbench

import (
	"context"
	"testing"
)

// BenchmarkServerCost pipelines b.N messages on loopback through each
// transport and reports the server handler's p50 and p99 per message (frame
// read to ack written) besides the client-side ns/op.
func BenchmarkServerCost(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tr := range transports(b, ctx, loopback()) {
		b.Run(tr.name(), func(b *testing.B) {
			led := newLedger(tr.name())
			_, s, err := firstMessage(ctx, tr, led)
			if err != nil {
				b.Fatal(err)
			}
			defer s.close()
			before := len(tr.stats().costs())
			b.ResetTimer()
			if _, err := flood(ctx, s, b.N, 256); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			costs := tr.stats().costs()[before:]
			b.ReportMetric(float64(pct(costs, 50).Nanoseconds()), "srv-p50-ns/msg")
			b.ReportMetric(float64(pct(costs, 99).Nanoseconds()), "srv-p99-ns/msg")
		})
	}
}
