package bench

import (
	"fmt"
	"io"
	"time"
)

// progress prints one line a second while a run goes on: what an operator
// watching a long run wants to know is whether outcomes still flow, how
// fast, and whether anything goes wrong.
type progress struct {
	l  *load
	st *stack // nil for an external deployment
	w  io.Writer

	lastDone int64
	lastAt   time.Time
}

func (p *progress) print() {
	now := time.Now()
	done := p.l.completed.Load()
	pub := p.l.published.Load()
	if p.lastAt.IsZero() {
		p.lastAt = p.l.t0
	}
	rate := float64(done-p.lastDone) / now.Sub(p.lastAt).Seconds()
	p.lastDone, p.lastAt = done, now
	line := fmt.Sprintf("bench: %5.0fs  published %d  completed %d (%s/s)  in flight %d  failed %d  duplicates %d  publish errors %d",
		now.Sub(p.l.t0).Seconds(), pub, done, num(rate), pub-done,
		p.l.failedCount.Load(), p.l.duplicates.Load(), p.l.publishErrors.Load())
	if p.st != nil {
		var rss int64
		for _, c := range p.st.running() {
			rss += c.maxRSS.Load()
		}
		if rss > 0 {
			line += "  cardbridge RSS " + mib(rss)
		}
	}
	fmt.Fprintln(p.w, line)
}
