package cli

import "runtime/debug"

// Garbage collector defaults for the long-running commands, measured with
// cardbridge bench (docs/performance.md): collecting at 400% heap growth
// instead of 100% cut cardbridge's CPU per request by 15-20% and raised
// burst throughput by about 15%, for a peak RSS of about 100 MiB instead of
// 62 MiB. The soft memory limit makes the collector work harder before the
// process nears the 150 MiB budget (peaks seen: about 100 MiB in a burst,
// 115 MiB with 512 requests in flight on a 200 ms bank); above 512 in
// flight the limit grows with the requests held (memoryLimitFor). GOGC and
// GOMEMLIMIT override both.
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = 100 << 20
)

// memoryLimitFor is run's soft memory limit for a process holding twice
// maxInFlight requests: defaultMemoryLimit up to 512 in flight, and in
// proportion above. At 1,024 in flight with a 200 ms bank, 100 MiB made
// the collector run without pause (2,200-3,400 req/s, 360-440 µs of CPU
// per request); 200 MiB gave 4,400-4,500 req/s at 177-188 µs, peaking
// at 207-213 MiB.
func memoryLimitFor(maxInFlight int) int64 {
	const base = 512
	if maxInFlight <= base {
		return defaultMemoryLimit
	}
	return defaultMemoryLimit * int64(maxInFlight) / base
}

// tuneGC applies the defaults; memoryLimit 0 sets no soft limit.
func tuneGC(env Env, memoryLimit int64) {
	if env.getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if env.getenv("GOMEMLIMIT") == "" && memoryLimit > 0 {
		debug.SetMemoryLimit(memoryLimit)
	}
}
