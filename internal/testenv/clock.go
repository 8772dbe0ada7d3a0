package testenv

import (
	"sync"
	"time"
)

// Clock is a clock that moves only when told, for code that takes a
// `now func() time.Time`: a test advances it instead of sleeping.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a Clock set to the real time now.
func NewClock() *Clock { return NewClockAt(time.Now()) }

// NewClockAt returns a Clock set to t0.
func NewClockAt(t0 time.Time) *Clock { return &Clock{now: t0} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
