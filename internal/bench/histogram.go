package bench

import (
	"math/bits"
	"time"
)

// A Histogram counts latencies in fixed log-linear buckets: every power of
// two (in microseconds) is split into histSub equal buckets, so a bucket is
// never wider than 1/histSub (6.25%) of the values it holds, from 1µs to
// centuries, in a fixed array of under 8 KB. Recording is a few
// instructions and never allocates, so it can sit on the receive path;
// merging two histograms is adding arrays. The zero value is ready to use.
// A Histogram is not safe for concurrent use.
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      uint64 // µs
	min, max uint64 // µs, exact
}

const (
	histSubBits = 4
	histSub     = 1 << histSubBits // buckets per power of two
	// histBuckets covers every uint64: values below 2*histSub have a bucket
	// each; above, the bucket index grows by histSub per power of two.
	histBuckets = (64-histSubBits)*histSub + histSub
)

// bucketOf returns the index of the bucket holding v (µs).
func bucketOf(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	// shift drops all but the leading 1 and the histSubBits bits after it;
	// those five bits (16..31) say where v sits within its power of two.
	shift := bits.Len64(v) - histSubBits - 1
	return shift*histSub + int(v>>uint(shift))
}

// bucketBounds returns the half-open range [lo, hi) of values (µs) in
// bucket i. hi of the last bucket saturates at the largest uint64.
func bucketBounds(i int) (lo, hi uint64) {
	if i < 2*histSub {
		return uint64(i), uint64(i) + 1
	}
	shift := uint(i/histSub - 1)
	m := uint64(i%histSub + histSub)
	lo = m << shift
	hi = (m + 1) << shift
	if hi == 0 { // (m+1)<<shift overflowed: the very last bucket
		hi = ^uint64(0)
	}
	return lo, hi
}

// Record adds one latency. Negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	var v uint64
	if d > 0 {
		v = uint64(d / time.Microsecond)
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// Merge adds o's counts to h, e.g. to combine per-worker histograms.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of latencies recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Min is the smallest latency recorded (0 when empty).
func (h *Histogram) Min() time.Duration { return usDuration(h.min) }

// Max is the largest latency recorded (0 when empty).
func (h *Histogram) Max() time.Duration { return usDuration(h.max) }

// Mean is the exact mean of the latencies recorded (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(float64(h.sum) / float64(h.n) * float64(time.Microsecond))
}

// Quantile returns an upper estimate of the q-quantile (0 <= q <= 1): the
// upper edge of the bucket holding the value of rank ceil(q*n), capped at
// the exact maximum. The estimate is at most one bucket width (6.25%)
// above the true value, never below it, which is the safe side for
// latency targets.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := quantileRank(q, h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketBounds(i)
			v := hi - 1 // the largest value the bucket can hold
			if v > h.max {
				v = h.max
			}
			if v < h.min {
				v = h.min
			}
			return usDuration(v)
		}
	}
	return usDuration(h.max)
}

// quantileRank is the 1-based rank of the q-quantile among n sorted values
// (nearest-rank definition), clamped to [1, n].
func quantileRank(q float64, n uint64) uint64 {
	switch {
	case q <= 0:
		return 1
	case q >= 1:
		return n
	}
	r := uint64(q*float64(n) + 0.999999999)
	if r < 1 {
		r = 1
	}
	if r > n {
		r = n
	}
	return r
}

// Bucket is one non-empty histogram bucket: Count latencies in [Lo, Hi).
type Bucket struct {
	Lo, Hi time.Duration
	Count  uint64
}

// Buckets returns the non-empty buckets in increasing order.
func (h *Histogram) Buckets() []Bucket {
	var out []Bucket
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		lo, hi := bucketBounds(i)
		out = append(out, Bucket{Lo: usDuration(lo), Hi: usDuration(hi), Count: c})
	}
	return out
}

// usDuration turns microseconds into a Duration, saturating instead of
// overflowing for the absurd values the top buckets can represent.
func usDuration(us uint64) time.Duration {
	const maxUS = uint64(1<<63-1) / uint64(time.Microsecond)
	if us > maxUS {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(us) * time.Microsecond
}
