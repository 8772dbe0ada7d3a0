package consumer

import "time"

// SetAnsweredHoldLimit sets how long old requests wait for a check of the
// outcome stream that keeps failing.
func SetAnsweredHoldLimit(c *Consumer, d time.Duration) { c.answered.holdLimit = d }

// SetAnsweredSpellGap sets how far apart failed checks end a spell of
// failures.
func SetAnsweredSpellGap(c *Consumer, d time.Duration) { c.answered.spellGap = d }

// SetAnsweredClock sets the clock by which the hold limit and the spell
// gap are measured.
func SetAnsweredClock(c *Consumer, now func() time.Time) { c.answered.now = now }
