package consumer

import "time"

// SetAnsweredHoldLimit sets how long old requests wait for a check of the
// outcome stream that keeps failing.
func SetAnsweredHoldLimit(c *Consumer, d time.Duration) { c.answered.holdLimit = d }

// SetAnsweredSpellGap sets how far apart failed checks end a spell of
// failures.
func SetAnsweredSpellGap(c *Consumer, d time.Duration) { c.answered.spellGap = d }
