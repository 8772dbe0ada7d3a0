package mbanq

import "time"

// SetClock replaces the clock of c's token caches, so tests move time on
// instead of sleeping.
func SetClock(c *Client, now func() time.Time) { c.now = now }
