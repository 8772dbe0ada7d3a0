package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Faults are the failures the sandbox injects. The zero value injects none
// and answers at once. Rates are probabilities in [0, 1] drawn per request
// from the server's seedable random source (WithRandSeed); the ...Next
// counters make the next N eligible requests fail, for tests and demos that
// need an exact sequence.
type Faults struct {
	// Latency delays every API answer, plus a uniform random part of up to
	// LatencyJitter.
	Latency       Duration `json:"latency"`
	LatencyJitter Duration `json:"latencyJitter"`

	// ServerErrorRate of requests get ServerErrorStatus (default 500)
	// without being processed.
	ServerErrorRate   float64 `json:"serverErrorRate"`
	ServerErrorNext   int     `json:"serverErrorNext"`
	ServerErrorStatus int     `json:"serverErrorStatus,omitempty"`

	// RateLimitRate of requests get 429 with Retry-After: RetryAfter
	// (whole seconds, rounded up; 0 is sent as "0").
	RateLimitRate float64  `json:"rateLimitRate"`
	RateLimitNext int      `json:"rateLimitNext"`
	RetryAfter    Duration `json:"retryAfter"`

	// TenantRateLimit, when positive, is the tenant's limit in calls per
	// second, as MBanq configures one per tenant: a token bucket holding
	// one second's worth (MBanq counts calls per interval, so a second's
	// worth may come at once) that refills at this rate. A call of the
	// tenant (the token endpoint included) that finds it empty is answered
	// 429 with Retry-After: the whole seconds until a call is let through
	// again (at least 1). Unlike RateLimitRate it is not limited by Paths.
	TenantRateLimit float64 `json:"tenantRateLimit"`

	// LostResponseRate of successful POSTs under /v1/ (users and cards) are
	// processed, and remembered for their Idempotency-Key, and then the
	// connection is dropped without an answer.
	LostResponseRate float64 `json:"lostResponseRate"`
	LostResponseNext int     `json:"lostResponseNext"`

	// GarbledResponseRate of successful POSTs under /v1/ are processed, and
	// remembered with their real answer for their Idempotency-Key, but
	// answered 200 with a body that does not carry the result: in turn an
	// empty JSON object, the real JSON cut in half, and an empty body. A
	// retry under the same key gets the real answer from the cache, which
	// is how a client must find out what happened.
	GarbledResponseRate float64 `json:"garbledResponseRate"`
	GarbledResponseNext int     `json:"garbledResponseNext"`

	// Paths limits the faults above to requests whose path starts with one
	// of these prefixes (e.g. "/v1/cards"); empty means every API request.
	Paths []string `json:"paths,omitempty"`

	// TokenLifetime and RefreshTokenLifetime apply to tokens issued from now
	// on (defaults 1h and 24h; expires_in is whole seconds, at least 1).
	TokenLifetime        Duration `json:"tokenLifetime"`
	RefreshTokenLifetime Duration `json:"refreshTokenLifetime"`
}

// Default token lifetimes.
const (
	DefaultTokenLifetime        = time.Hour
	DefaultRefreshTokenLifetime = 24 * time.Hour
)

func (f Faults) validate() error {
	var errs []error
	for name, r := range map[string]float64{"serverErrorRate": f.ServerErrorRate, "rateLimitRate": f.RateLimitRate, "lostResponseRate": f.LostResponseRate, "garbledResponseRate": f.GarbledResponseRate} {
		if r < 0 || r > 1 {
			errs = append(errs, fmt.Errorf("%s %v is not in [0, 1]", name, r))
		}
	}
	if f.TenantRateLimit < 0 || math.IsNaN(f.TenantRateLimit) || math.IsInf(f.TenantRateLimit, 0) {
		errs = append(errs, fmt.Errorf("tenantRateLimit %v is not a number of calls per second (0 for no limit)", f.TenantRateLimit))
	}
	if f.ServerErrorStatus != 0 && (f.ServerErrorStatus < 500 || f.ServerErrorStatus > 599) {
		errs = append(errs, fmt.Errorf("serverErrorStatus %d is not a 5xx status", f.ServerErrorStatus))
	}
	if f.Latency < 0 || f.LatencyJitter < 0 || f.RetryAfter < 0 || f.TokenLifetime < 0 || f.RefreshTokenLifetime < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if f.ServerErrorNext < 0 || f.RateLimitNext < 0 || f.LostResponseNext < 0 || f.GarbledResponseNext < 0 {
		errs = append(errs, errors.New("...Next counters must not be negative"))
	}
	return errors.Join(errs...)
}

// Duration is a time.Duration written in JSON as a Go duration string
// ("250ms", "1h"); a bare number is read as milliseconds.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			*d = 0
			return nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var ms float64
	if err := json.Unmarshal(b, &ms); err != nil {
		return fmt.Errorf("duration must be a string like \"250ms\" or a number of milliseconds")
	}
	*d = Duration(ms * float64(time.Millisecond))
	return nil
}

// faultInjector holds the current Faults. enabled lets the hot path skip the
// lock entirely when no fault is configured, which is the load-test default.
type faultInjector struct {
	enabled atomic.Bool
	mu      sync.Mutex
	f       Faults
	rng     *rand.Rand
	garbled int // garbled answers so far, to rotate their form
	bucket  tenantBucket
}

func newFaultInjector(f Faults, seed uint64) *faultInjector {
	fi := &faultInjector{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	fi.set(f)
	return fi
}

func (fi *faultInjector) set(f Faults) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.f = f
	fi.refreshEnabled()
	fi.bucket.set(f.TenantRateLimit)
}

// tenantBucket is the token bucket of Faults.TenantRateLimit.
type tenantBucket struct {
	on     atomic.Bool
	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time
}

// set changes the limit; the bucket starts full.
func (b *tenantBucket) set(rate float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if rate != b.rate {
		b.rate, b.tokens, b.last = rate, rate, time.Time{}
	}
	b.on.Store(rate > 0)
}

// take lets one call through at now, or says how long until one would be.
func (b *tenantBucket) take(now time.Time) (ok bool, retryAfter time.Duration) {
	if !b.on.Load() {
		return true, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return true, 0
	}
	if !b.last.IsZero() {
		if el := now.Sub(b.last).Seconds(); el > 0 {
			b.tokens = math.Min(b.rate, b.tokens+el*b.rate)
		}
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

func (fi *faultInjector) get() Faults {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	f := fi.f
	f.Paths = append([]string(nil), f.Paths...)
	return f
}

func (fi *faultInjector) lifetimes() (access, refresh time.Duration) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	access, refresh = time.Duration(fi.f.TokenLifetime), time.Duration(fi.f.RefreshTokenLifetime)
	if access <= 0 {
		access = DefaultTokenLifetime
	}
	if refresh <= 0 {
		refresh = DefaultRefreshTokenLifetime
	}
	return access, refresh
}

// decision is what to do to one request before processing it.
type decision struct {
	delay      time.Duration
	status     int // 0, 429 or 5xx
	retryAfter time.Duration
}

func (fi *faultInjector) matches(path string) bool {
	if len(fi.f.Paths) == 0 {
		return true
	}
	for _, p := range fi.f.Paths {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// decide draws the faults of one API request. Counters are consumed before
// rates, 429 before 5xx.
func (fi *faultInjector) decide(path string) decision {
	if !fi.enabled.Load() {
		return decision{}
	}
	fi.mu.Lock()
	defer fi.mu.Unlock()
	if !fi.matches(path) {
		return decision{}
	}
	var d decision
	d.delay = time.Duration(fi.f.Latency)
	if j := time.Duration(fi.f.LatencyJitter); j > 0 {
		d.delay += time.Duration(fi.rng.Int64N(int64(j) + 1))
	}
	switch {
	case fi.f.RateLimitNext > 0:
		fi.f.RateLimitNext--
		d.status = 429
	case fi.f.ServerErrorNext > 0:
		fi.f.ServerErrorNext--
		d.status = fi.serverStatus()
	case fi.f.RateLimitRate > 0 && fi.rng.Float64() < fi.f.RateLimitRate:
		d.status = 429
	case fi.f.ServerErrorRate > 0 && fi.rng.Float64() < fi.f.ServerErrorRate:
		d.status = fi.serverStatus()
	}
	d.retryAfter = time.Duration(fi.f.RetryAfter)
	fi.refreshEnabled()
	return d
}

// loseResponse decides whether the answer to a processed POST is dropped.
func (fi *faultInjector) loseResponse(path string) bool {
	return fi.strike(path, &fi.f.LostResponseNext, &fi.f.LostResponseRate)
}

// strike decides whether a fault given by a counter (next, consumed first)
// and a rate strikes a request to path.
func (fi *faultInjector) strike(path string, next *int, rate *float64) bool {
	if !fi.enabled.Load() {
		return false
	}
	fi.mu.Lock()
	defer fi.mu.Unlock()
	if !fi.matches(path) {
		return false
	}
	hit := false
	switch {
	case *next > 0:
		*next--
		hit = true
	case *rate > 0:
		hit = fi.rng.Float64() < *rate
	}
	fi.refreshEnabled()
	return hit
}

// garbling is the form of a garbled answer.
type garbling int

const (
	garbleNone      garbling = iota
	garbleEmptyJSON          // {}
	garbleTruncated          // the real JSON cut in half
	garbleEmptyBody          // no body at all
)

func (g garbling) String() string {
	return [...]string{"none", "empty object", "truncated", "empty body"}[g]
}

// garble decides whether the answer to a processed POST is garbled, and
// how. The forms rotate rather than being drawn, so that GarbledResponseNext
// of 3 gives each form once, in a known order.
func (fi *faultInjector) garble(path string) garbling {
	if !fi.strike(path, &fi.f.GarbledResponseNext, &fi.f.GarbledResponseRate) {
		return garbleNone
	}
	fi.mu.Lock()
	defer fi.mu.Unlock()
	g := garbleEmptyJSON + garbling(fi.garbled%3)
	fi.garbled++
	return g
}

func (fi *faultInjector) serverStatus() int {
	if fi.f.ServerErrorStatus != 0 {
		return fi.f.ServerErrorStatus
	}
	return 500
}

// refreshEnabled turns the fast path back on once counters are used up.
// Called with mu held.
func (fi *faultInjector) refreshEnabled() {
	f := fi.f
	fi.enabled.Store(f.Latency > 0 || f.LatencyJitter > 0 || f.ServerErrorRate > 0 || f.ServerErrorNext > 0 ||
		f.RateLimitRate > 0 || f.RateLimitNext > 0 || f.LostResponseRate > 0 || f.LostResponseNext > 0 ||
		f.GarbledResponseRate > 0 || f.GarbledResponseNext > 0)
}

// Faults returns the faults in force, with the counters that are left.
func (s *Server) Faults() Faults { return s.faults.get() }

// SetFaults replaces the faults in force. It returns an error, and changes
// nothing, when a rate is outside [0, 1] or a value is negative.
func (s *Server) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("sandbox faults: %w", err)
	}
	s.faults.set(f)
	return nil
}
