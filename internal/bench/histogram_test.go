package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketsTileTheValuesWithBoundedWidth(t *testing.T) {
	t.Parallel()
	// Every bucket starts where the previous one ended, and none is wider
	// than 1/histSub of its lower edge (beyond the exact small buckets).
	var prevHi uint64
	for i := range histBuckets {
		lo, hi := bucketBounds(i)
		if lo != prevHi {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if hi <= lo {
			t.Fatalf("bucket %d is empty: [%d, %d)", i, lo, hi)
		}
		if lo >= 2*histSub && float64(hi-lo) > float64(lo)/histSub+1 {
			t.Fatalf("bucket %d [%d, %d) is wider than 1/%d of its values", i, lo, hi, histSub)
		}
		prevHi = hi
	}
	if prevHi != math.MaxUint64 {
		t.Fatalf("the last bucket ends at %d, want the largest uint64", prevHi)
	}
}

func TestBucketOfAgreesWithBounds(t *testing.T) {
	t.Parallel()
	values := []uint64{0, 1, 15, 16, 31, 32, 33, 47, 48, 63, 64, 1000, 999_999, 1 << 40, math.MaxUint64 - 1, math.MaxUint64}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		values = append(values, r.Uint64()>>r.IntN(64))
	}
	for _, v := range values {
		i := bucketOf(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d, outside [0, %d)", v, i, histBuckets)
		}
		lo, hi := bucketBounds(i)
		if v < lo || (v >= hi && !(hi == math.MaxUint64 && v == hi)) {
			t.Fatalf("value %d put in bucket %d = [%d, %d)", v, i, lo, hi)
		}
	}
}

func TestQuantileIsAnUpperEstimateWithinOneBucket(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	var h Histogram
	var exact []time.Duration
	for range 100_000 {
		// Log-normal-ish latencies from ~100µs to tens of seconds.
		d := time.Duration(math.Exp(r.NormFloat64()*2+9)) * time.Microsecond
		h.Record(d)
		exact = append(exact, d.Truncate(time.Microsecond))
	}
	slices.Sort(exact)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		want := exact[quantileRank(q, uint64(len(exact)))-1]
		got := h.Quantile(q)
		if got < want {
			t.Errorf("Quantile(%v) = %v, below the exact %v", q, got, want)
		}
		if float64(got-want) > float64(want)/histSub+float64(time.Microsecond) {
			t.Errorf("Quantile(%v) = %v, more than a bucket above the exact %v", q, got, want)
		}
	}
	if h.Min() != exact[0] || h.Max() != exact[len(exact)-1] {
		t.Errorf("Min, Max = %v, %v; want %v, %v", h.Min(), h.Max(), exact[0], exact[len(exact)-1])
	}
	if h.Count() != uint64(len(exact)) {
		t.Errorf("Count = %d, want %d", h.Count(), len(exact))
	}
}

func TestHistogramSmallCases(t *testing.T) {
	t.Parallel()
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 || len(h.Buckets()) != 0 {
		t.Fatal("an empty histogram must report zeros and no buckets")
	}
	h.Record(-time.Second) // a clock step must not panic or wrap around
	h.Record(3 * time.Millisecond)
	h.Record(3 * time.Millisecond)
	if got := h.Quantile(1); got != 3*time.Millisecond {
		t.Errorf("Quantile(1) = %v, want the exact max 3ms", got)
	}
	if got := h.Quantile(0); got != 0 {
		t.Errorf("Quantile(0) = %v, want the exact min 0", got)
	}
	if got := h.Mean(); got != 2*time.Millisecond {
		t.Errorf("Mean = %v, want 2ms", got)
	}
	var total uint64
	for _, b := range h.Buckets() {
		total += b.Count
	}
	if total != 3 {
		t.Errorf("buckets hold %d values, want 3", total)
	}
}

func TestMergeEqualsRecordingEverything(t *testing.T) {
	t.Parallel()
	var a, b, all Histogram
	for i := range 5000 {
		d := time.Duration(i*i) * time.Microsecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	if a != all {
		t.Fatal("merging two halves differs from recording everything in one")
	}
	var empty Histogram
	empty.Merge(&Histogram{})
	if empty.Count() != 0 {
		t.Fatal("merging empties must stay empty")
	}
}
