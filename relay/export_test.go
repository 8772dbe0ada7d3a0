package relay

import "time"

// SetHoldLimit shortens how long old rows wait for a check of their
// stream that keeps failing, for tests.
func SetHoldLimit(r *Relay, d time.Duration) { r.stale.holdLimit = d }

// SetSpellGap sets how far apart failed checks end a spell of failures.
func SetSpellGap(r *Relay, d time.Duration) { r.stale.spellGap = d }

// SetLease sets how long a sweep's lease lasts, how often it is renewed,
// and how long before it could run out the sweep stops.
func SetLease(r *Relay, term, renew, margin time.Duration) {
	r.lease = leasePolicy{term: term, renew: renew, margin: margin}
}

// SetClock sets the clock by which the hold limit and the spell gap are
// measured.
func SetClock(r *Relay, now func() time.Time) { r.stale.now = now }
