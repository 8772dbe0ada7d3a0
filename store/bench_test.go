package store_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/cardbridge/cardbridge/internal/testenv"
)

// BenchmarkComplete measures the group commit: each op is one request's
// completion (inbox row, card order, outbox row). With one caller every
// completion pays a whole commit; with many concurrent callers they share
// commits, which is the point of the batcher. Compare the sub-benchmarks.
func BenchmarkComplete(b *testing.B) {
	for _, p := range []int{1, 8, 128} {
		b.Run(fmt.Sprintf("callers=%d", p*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			s := testenv.Store(b)
			ctx := context.Background()
			var n atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(p) // RunParallel starts GOMAXPROCS × p goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					if _, err := s.Complete(ctx, completion("urn:erp:bench", fmt.Sprint(i), true)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkAdmit measures the batched inbox-and-binding lookup.
func BenchmarkAdmit(b *testing.B) {
	s := testenv.Store(b)
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := s.Admit(ctx, admissionQuery(i)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
