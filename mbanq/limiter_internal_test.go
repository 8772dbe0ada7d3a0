package mbanq

import (
	"context"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The limiter's logic is tested on simulated time: a bank with a per-tenant
// token bucket (as the sandbox's --rate-limit fault) and a client with
// more work than the bank takes, stepped a millisecond at a time.

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// simBank is a token bucket of rate calls/s with a burst of one second's
// worth (MBanq limits "calls per interval"), answering 429 with
// Retry-After: 1 (whole seconds, as HTTP sends it) when it is empty. While
// down it answers nothing (every call fails).
type simBank struct {
	rate   float64
	tokens float64
	last   time.Time
	down   bool
	// flying are the calls not answered yet, kept from one simulate to the
	// next.
	flying []simCall
}

func (b *simBank) answer(now time.Time) (outcome, time.Duration) {
	if b.down {
		return outcomeFailed, 0
	}
	b.tokens = math.Min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < 1 {
		return outcomeOverload, time.Second
	}
	b.tokens--
	return outcomeOK, 0
}

type simCall struct {
	start, done time.Time
}

type simResult struct {
	ok, refused, failed int
	startsPerSecond     map[int]int // by whole second of the run
}

// simulate runs a client with unbounded demand against bank for d, calls
// answered after latency, and returns what the bank saw from `from` on.
func simulate(t *testing.T, p *pacer, bank *simBank, now *time.Time, d, latency time.Duration, during func(elapsed time.Duration)) simResult {
	t.Helper()
	res := simResult{startsPerSecond: map[int]int{}}
	flying := bank.flying
	defer func() { bank.flying = flying }()
	begin := *now
	for end := now.Add(d); now.Before(end); *now = now.Add(time.Millisecond) {
		if during != nil {
			during(now.Sub(begin))
		}
		// Answers due now.
		kept := flying[:0]
		for _, c := range flying {
			if c.done.After(*now) {
				kept = append(kept, c)
				continue
			}
			o, ra := bank.answer(c.done)
			switch o {
			case outcomeOK:
				res.ok++
			case outcomeOverload:
				res.refused++
			case outcomeFailed:
				res.failed++
			}
			p.release(*now, c.start, "op", o, latency, ra)
		}
		flying = kept
		// Start whatever the pace allows.
		for {
			if b, _ := p.admit(*now); b != notBlocked {
				break
			}
			flying = append(flying, simCall{start: *now, done: now.Add(latency)})
			res.startsPerSecond[int(now.Sub(begin)/time.Second)]++
		}
	}
	return res
}

func TestPacerFindsTheBanksRateLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		limit   float64
		latency time.Duration
	}{
		{100, 2 * time.Millisecond},
		{100, 50 * time.Millisecond},
		{20, 200 * time.Millisecond},
		{1000, 20 * time.Millisecond},
	} {
		t.Run("", func(t *testing.T) {
			p := newPacer(DefaultMaxConcurrency)
			now := epoch
			bank := &simBank{rate: tc.limit, tokens: tc.limit, last: now}
			// Learning: the first seconds include the bank's burst and the
			// client finding the limit.
			simulate(t, p, bank, &now, 30*time.Second, tc.latency, nil)
			const measure = 5 * time.Minute
			r := simulate(t, p, bank, &now, measure, tc.latency, nil)
			calls := r.ok + r.refused
			goodput := float64(r.ok) / measure.Seconds()
			refused := float64(r.refused) / float64(calls)
			t.Logf("limit %v/s, latency %v: goodput %.1f/s (%.1f%% of the limit), %d of %d calls refused (%.2f%%), %d cuts",
				tc.limit, tc.latency, goodput, 100*goodput/tc.limit, r.refused, calls, 100*refused, p.cuts)
			assert.GreaterOrEqual(t, goodput, 0.95*tc.limit, "goodput")
			assert.LessOrEqual(t, refused, 0.05, "share of calls refused")
		})
	}
}

// Without a limiter (each call retried on its own) the same bank refuses
// most calls: this is what the limiter is for, and shows the simulation
// can fail.
func TestSimulatedBankRefusesAnUnpacedClient(t *testing.T) {
	t.Parallel()
	p := newPacer(256)
	p.limit = 256
	now := epoch
	bank := &simBank{rate: 100, tokens: 100, last: now}
	// Never cut: a pacer that ignores every answer.
	unpaced := &unpacedPacer{pacer: p}
	r := unpaced.run(bank, &now, time.Minute, 50*time.Millisecond)
	refused := float64(r.refused) / float64(r.ok+r.refused)
	t.Logf("unpaced: %d ok, %d refused (%.0f%%)", r.ok, r.refused, 100*refused)
	assert.Greater(t, refused, 0.5)
}

type unpacedPacer struct{ pacer *pacer }

func (u *unpacedPacer) run(bank *simBank, now *time.Time, d, latency time.Duration) simResult {
	var res simResult
	inflight := []time.Time{}
	for end := now.Add(d); now.Before(end); *now = now.Add(time.Millisecond) {
		kept := inflight[:0]
		for _, done := range inflight {
			if done.After(*now) {
				kept = append(kept, done)
				continue
			}
			if o, _ := bank.answer(done); o == outcomeOK {
				res.ok++
			} else {
				res.refused++
			}
		}
		inflight = kept
		for len(inflight) < 256 {
			inflight = append(inflight, now.Add(latency))
		}
	}
	return res
}

func TestPacerRampsUpAfterAnOutage(t *testing.T) {
	t.Parallel()
	const limit = 100.0
	p := newPacer(DefaultMaxConcurrency)
	now := epoch
	bank := &simBank{rate: limit, tokens: limit, last: now}
	simulate(t, p, bank, &now, 30*time.Second, 20*time.Millisecond, nil)
	before := p.rate

	bank.down = true
	r := simulate(t, p, bank, &now, 60*time.Second, 20*time.Millisecond, nil)
	assert.Equal(t, minRate, p.rate, "an outage brings the rate down to the least")
	assert.Equal(t, 1, int(p.limit), "and the calls in flight to one")
	assert.LessOrEqual(t, r.startsPerSecond[59], 2, "a bank that is down is probed, not hammered")

	bank.down = false
	bank.tokens, bank.last = limit, now
	r = simulate(t, p, bank, &now, 30*time.Second, 20*time.Millisecond, nil)
	var secs []int
	for s := range r.startsPerSecond {
		secs = append(secs, s)
	}
	sort.Ints(secs)
	ramp := make([]int, 0, 12)
	for _, s := range secs[:min(12, len(secs))] {
		ramp = append(ramp, r.startsPerSecond[s])
	}
	t.Logf("rate before the outage %.0f/s; calls per second after it: %v", before, ramp)
	assert.LessOrEqual(t, r.startsPerSecond[0], int(limit/10), "the first second after the outage sees a trickle, not the backlog")
	assert.Less(t, r.startsPerSecond[1], r.startsPerSecond[3], "and the calls ramp up")
	assert.GreaterOrEqual(t, float64(r.startsPerSecond[10]), 0.9*limit, "back near the limit within 10s")
}

// A bank that never refused for load, only went away, gets its pace back
// within seconds once it returns: neither the rate nor the calls in flight
// stop at what the demand was before the outage (the chaos test saw a
// backlog drain at 28/s where the bank took 470/s).
func TestPacerRegainsAnUnlimitedBankAfterAnOutage(t *testing.T) {
	t.Parallel()
	p := newPacer(DefaultMaxConcurrency)
	now := epoch
	bank := &simBank{rate: 1e6, tokens: 1e6, last: now}
	const latency = 300 * time.Millisecond
	r := simulate(t, p, bank, &now, 30*time.Second, latency, nil)
	before := r.startsPerSecond[25]

	bank.down = true
	simulate(t, p, bank, &now, 60*time.Second, latency, nil)
	require.Equal(t, 1, int(p.limit), "an outage brings the calls in flight down to one")

	bank.down = false
	bank.tokens, bank.last = 1e6, now
	r = simulate(t, p, bank, &now, 30*time.Second, latency, nil)
	t.Logf("calls per second before the outage %d; after it: %v", before, r.startsPerSecond)
	assert.LessOrEqual(t, r.startsPerSecond[0], 10, "the first second after the outage sees a trickle, not the backlog")
	assert.GreaterOrEqual(t, float64(r.startsPerSecond[12]), 0.9*float64(before), "back to the pace before the outage within 12s")
}

func TestPacerRetryAfterPausesEveryCall(t *testing.T) {
	t.Parallel()
	p := newPacer(DefaultMaxConcurrency)
	now := epoch
	b, _ := p.admit(now)
	require.Equal(t, notBlocked, b)
	p.release(now.Add(10*time.Millisecond), now, "op", outcomeOverload, 10*time.Millisecond, 3*time.Second)
	now = now.Add(10 * time.Millisecond)
	b, wait := p.admit(now)
	assert.Equal(t, byPause, b)
	assert.Equal(t, 3*time.Second, wait)
	b, _ = p.admit(now.Add(3 * time.Second))
	assert.Equal(t, notBlocked, b, "the pause ends when the bank said")
}

func TestPacerCutsOncePerEpisode(t *testing.T) {
	t.Parallel()
	p := newPacer(DefaultMaxConcurrency)
	p.limit = 200
	now := epoch
	// 100 calls start in the same second, then all are refused.
	for range 100 {
		b, _ := p.admit(now)
		require.Equal(t, notBlocked, b)
		now = now.Add(5 * time.Millisecond)
	}
	start := epoch
	for range 100 {
		p.release(now, start, "op", outcomeOverload, time.Millisecond, 0)
		start = start.Add(5 * time.Millisecond)
	}
	assert.EqualValues(t, 1, p.cuts, "the answers to calls sent before the cut do not cut again")
	assert.InDelta(t, 0.9*100, p.rate, 10, "the rate is set from the rate calls were started at")
	// A call started after the cut and refused cuts again.
	b, _ := p.admit(now.Add(time.Second))
	require.Equal(t, notBlocked, b)
	p.release(now.Add(time.Second+time.Millisecond), now.Add(time.Second), "op", outcomeOverload, time.Millisecond, 0)
	assert.EqualValues(t, 2, p.cuts)
}

func TestPacerGrowsOnlyWhenPressed(t *testing.T) {
	t.Parallel()
	p := newPacer(DefaultMaxConcurrency)
	p.rate, p.ssthresh = 50, 10
	now := epoch
	// A quiet client: one call a second, never waiting.
	for range 60 {
		b, _ := p.admit(now)
		require.Equal(t, notBlocked, b)
		p.release(now.Add(time.Millisecond), now, "op", outcomeOK, time.Millisecond, 0)
		now = now.Add(time.Second)
	}
	assert.Equal(t, 50.0, p.rate, "a rate nobody waits for does not grow")
	assert.Equal(t, float64(initialLimit), p.limit, "nor a limit")
}

func TestPacerSlowAnswersCutTheLimit(t *testing.T) {
	t.Parallel()
	p := newPacer(DefaultMaxConcurrency)
	p.limit = 40
	now := epoch
	answer := func(rtt time.Duration) {
		t.Helper()
		b, _ := p.admit(now)
		require.Equal(t, notBlocked, b)
		now = now.Add(rtt)
		p.release(now, now.Add(-rtt), "op", outcomeOK, rtt, 0)
	}
	for range 10 {
		answer(20 * time.Millisecond)
	}
	answer(300 * time.Millisecond)
	assert.Equal(t, 40.0, p.limit, "one slow answer is noise")
	for range 10 {
		answer(time.Second)
	}
	assert.Less(t, p.limit, 40.0, "answers that stay 50 times slower than the fastest cut the limit")
	assert.Greater(t, p.limit, 30.0, "at most once per latencyCutEvery, not once per answer")
	assert.True(t, math.IsInf(p.rate, 1), "but not the rate: the bank refused nothing")
}

func TestPacerPassingFailuresLeaveThePaceAlone(t *testing.T) {
	t.Parallel()
	p := newPacer(DefaultMaxConcurrency)
	p.rate, p.ssthresh = 80, 80
	now := epoch
	for i := range 100 {
		b, _ := p.admit(now)
		require.Equal(t, notBlocked, b)
		o := outcomeOK
		if i%10 == 0 {
			o = outcomeFailed // one 500 in ten
		}
		p.release(now.Add(time.Millisecond), now, "op", o, time.Millisecond, 0)
		now = now.Add(20 * time.Millisecond)
	}
	assert.Zero(t, p.cuts)
}

// fakeClock runs timers when the test moves it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

func TestLimiterWaitersStartInOrderWhenThePauseEnds(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: epoch}
	l := newLimiter(clk, DefaultMaxConcurrency, 30*time.Second)
	start, err := l.acquire(context.Background(), "t")
	require.NoError(t, err)
	l.release(start, "t", outcomeOverload, time.Millisecond, 2*time.Second)

	started := make(chan int, 3)
	for i := range 3 {
		ready := make(chan struct{})
		go func() {
			close(ready)
			if _, err := l.acquire(context.Background(), "t"); err == nil {
				started <- i
			}
		}()
		<-ready
		require.Eventually(t, func() bool { return l.state().Waiting == i+1 }, 5*time.Second, time.Millisecond)
	}
	clk.advance(time.Second)
	select {
	case i := <-started:
		t.Fatalf("call %d started during the pause", i)
	default:
	}
	// The cut rate lets one start at a time; step time until all three did.
	var order []int
	for len(order) < 3 {
		clk.advance(100 * time.Millisecond)
		select {
		case i := <-started:
			order = append(order, i)
		case <-time.After(10 * time.Millisecond):
		}
		require.Less(t, clk.Now().Sub(epoch), time.Minute, "waiters never started")
	}
	assert.Equal(t, []int{0, 1, 2}, order, "first come, first served")
}

func TestLimiterFailsAtOnceOnAPauseLongerThanACallWaits(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: epoch}
	l := newLimiter(clk, DefaultMaxConcurrency, 30*time.Second)
	start, err := l.acquire(context.Background(), "order card")
	require.NoError(t, err)
	l.release(start, "t", outcomeOverload, time.Millisecond, 2*time.Minute)
	_, err = l.acquire(context.Background(), "order card")
	require.Error(t, err)
	assert.Equal(t, ClassRetry, Classify(err), "not sent: retry later, nothing happened")
	assert.False(t, OutcomeUnknown(err))
	assert.Equal(t, 2*time.Minute, RetryAfter(err))
}

func TestLimiterWaiterLeavesWithItsContext(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: epoch}
	l := newLimiter(clk, 1, 30*time.Second)
	start, err := l.acquire(context.Background(), "t")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := l.acquire(ctx, "t"); done <- err }()
	require.Eventually(t, func() bool { return l.state().Waiting == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	assert.Zero(t, l.state().Waiting)
	l.release(start, "t", outcomeOK, time.Millisecond, 0)
	assert.Zero(t, l.state().InFlight, "the slot is free again")
}

// A token request answered in 2ms and card orders in 400ms are each as fast
// as they always are: no latency signal.
func TestPacerComparesAnswerTimesOfOneOperation(t *testing.T) {
	t.Parallel()
	p := newPacer(DefaultMaxConcurrency)
	p.limit = 40
	now := epoch
	for i := range 100 {
		op, rtt := "order card", 400*time.Millisecond
		if i%10 == 0 {
			op, rtt = "oauth token", 2*time.Millisecond
		}
		b, _ := p.admit(now)
		require.Equal(t, notBlocked, b)
		now = now.Add(rtt)
		p.release(now, now.Add(-rtt), op, outcomeOK, rtt, 0)
	}
	assert.Zero(t, p.cuts)
	assert.Equal(t, 40.0, p.limit)
}

// The tenant's limit is shared with the NeoBank's portal: when the portal
// takes half of it, cardbridge's share halves, and the pacer follows both
// ways.
func TestPacerFollowsAShareThatChanges(t *testing.T) {
	t.Parallel()
	p := newPacer(DefaultMaxConcurrency)
	now := epoch
	bank := &simBank{rate: 100, tokens: 100, last: now}
	simulate(t, p, bank, &now, 60*time.Second, 20*time.Millisecond, nil)
	for _, share := range []float64{50, 100} {
		bank.rate = share
		// Measured from the change, the adaptation included.
		r := simulate(t, p, bank, &now, time.Minute, 20*time.Millisecond, nil)
		goodput := float64(r.ok) / 60
		refused := float64(r.refused) / float64(r.ok+r.refused)
		t.Logf("share %v/s: goodput %.1f/s over the minute after the change, %.2f%% refused", share, goodput, 100*refused)
		assert.GreaterOrEqual(t, goodput, 0.95*share)
		assert.LessOrEqual(t, refused, 0.05)
	}
}

// A call already waiting for the limiter when the bank asks for a pause
// longer than a call waits fails at once, as a call that comes after it
// does: it must not hold its request (kept alive, doing nothing) for the
// whole pause.
func TestLimiterWaitersFailAtOnceWhenALongPauseComes(t *testing.T) {
	t.Parallel()
	_, l, start, done := limiterWithAWaiter(t)

	l.release(start, "order card", outcomeOverload, time.Millisecond, 10*time.Minute)
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Equal(t, ClassRetry, Classify(err), "not sent: retry later, nothing happened")
		assert.False(t, OutcomeUnknown(err))
		assert.Equal(t, 10*time.Minute, RetryAfter(err))
	case <-time.After(5 * time.Second):
		t.Fatalf("a waiting call waits out a pause of 10 minutes (limiter: %+v)", l.state())
	}
	assert.Zero(t, l.state().Waiting)
	assert.Zero(t, l.state().InFlight)
}

// A call waits its turn at most as long as a call waits for a pause
// (MaxRetryAfter): after an outage the limiter lets one call at a time, and
// a request waiting behind hundreds would be held, kept alive, for hours.
// It fails as not sent, not retried here, so its request goes back with its
// retry delay.
func TestLimiterWaitIsBounded(t *testing.T) {
	t.Parallel()
	clk, l, start, done := limiterWithAWaiter(t)

	clk.advance(29 * time.Second)
	select {
	case err := <-done:
		t.Fatalf("gave up before its wait ran out: %v", err)
	default:
	}
	clk.advance(time.Second)
	select {
	case err := <-done:
		require.ErrorIs(t, err, errBankBusy)
		assert.Equal(t, ClassRetry, Classify(err), "not sent: retry later, nothing happened")
		assert.False(t, OutcomeUnknown(err))
		assert.False(t, retryInCall(err), "the request goes back; the call does not wait again")
	case <-time.After(5 * time.Second):
		t.Fatalf("a waiting call outlives its wait (limiter: %+v)", l.state())
	}
	assert.Zero(t, l.state().Waiting)
	l.release(start, "order card", outcomeOK, time.Millisecond, 0)
	assert.Zero(t, l.state().InFlight)
}

// limiterWithAWaiter returns a limiter on a fake clock that lets one call
// in flight and waits 30s at most, with one call started (at start) and a
// second waiting for it, whose result comes on done.
func limiterWithAWaiter(t *testing.T) (*fakeClock, *limiter, time.Time, <-chan error) {
	t.Helper()
	clk := &fakeClock{now: epoch}
	l := newLimiter(clk, 1, 30*time.Second)
	start, err := l.acquire(context.Background(), "order card")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { _, err := l.acquire(context.Background(), "order card"); done <- err }()
	require.Eventually(t, func() bool { return l.state().Waiting == 1 }, 5*time.Second, time.Millisecond)
	return clk, l, start, done
}
