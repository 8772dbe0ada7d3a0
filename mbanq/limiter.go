package mbanq

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// The adaptive limiter paces every call the Client makes to the bank (token
// requests, users, cards): MBanq limits calls per tenant, and the limit is
// shared with the NeoBank's own applications, so cardbridge learns what it
// may use instead of being told. It is the Client's: one per process and
// tenant.
//
// It bounds two things, each learnt by AIMD (additive increase,
// multiplicative decrease), the scheme TCP and adaptive-concurrency
// limiters (Netflix's concurrency-limits, Envoy's adaptive concurrency) are
// built on:
//
//   - the start rate, calls per second, a token bucket. It starts
//     unbounded; the first refusal sets it to a little under the rate at
//     which calls were started in the last second. After a refusal (429,
//     503) it is cut by overloadCut; while it is what holds calls back it
//     grows, by a share of itself per second that grows the longer the
//     bank refused nothing (congestion avoidance), or doubling each second
//     below the slow-start threshold (slow start);
//   - the calls in flight, a limit that doubles per round of answers
//     until the first cut, then grows by one per limit's worth of answers,
//     while calls wait for it; it is cut on the same signals and when
//     answers (on average) take far longer than the shortest seen (the
//     gradient signal of the latency-based limiters).
//
// A Retry-After pauses the whole tenant: no call starts before the time the
// bank asked for. One decrease per episode: answers to calls started before
// the last cut do not cut again (they were sent at the old pace).
//
// A bank that fails (no answer, timeouts, 5xx other than 503) several times
// in a row is in an outage: each further failure halves the rate and the
// limit, down to minRate and one call in flight. When the bank comes back,
// the backlog is let through slowly at first: the rate doubles each second
// from minRate, and the limit each round of answers from one, so the bank
// is not met by every waiting call at once; they slow-start up to a little
// under the pace the bank last refused for load, or without a ceiling when
// it never did.
//
// The limiter is growth-limited only by what it is asked: a rate or limit
// grows only while calls wait for it (recently pressed), so a quiet process
// does not "learn" a capacity it never tried.

// Tuning of the limiter. They are not settings: they shape how fast it
// learns, not what it may use.
const (
	// overloadCut multiplies the rate and the limit on a refusal. Close to
	// one: the bank's own bucket absorbs a slight overshoot, and a deep cut
	// leaves capacity unused while the rate climbs back.
	overloadCut = 0.9
	// failureCut multiplies them on each failure of an outage.
	failureCut = 0.5
	// outageStreak is how many failures in a row (no answer, 5xx) make an
	// outage; fewer are passing errors and leave the pace alone.
	outageStreak = 5
	// growthPerSecond is the share by which the rate grows per second of
	// calls at that rate in congestion avoidance (at least minRate per
	// second).
	growthPerSecond = 0.02
	// probeAccel: each probeAccel since the last cut adds growthPerSecond
	// to the growth.
	probeAccel = 5 * time.Second
	// pressWindow: a rate or limit grows only when calls waited for it this
	// recently.
	pressWindow = time.Second
	// minRate is the least start rate, calls per second.
	minRate = 1.0
	// initialLimit is the first limit on calls in flight; it doubles per
	// round of answers while pressed (slow start).
	initialLimit = 16
	// burstWindow sizes the token bucket: a rate's worth of this long may
	// start at once.
	burstWindow = 50 * time.Millisecond
	// Latency signal: an answer slower than latencyFactor times the
	// shortest answer seen in the last minRTTWindow, plus latencySlack
	// (so that a loaded machine's noise on a fast bank does not count),
	// cuts the limit on calls in flight.
	latencyFactor = 2.0
	latencySlack  = 100 * time.Millisecond
	minRTTWindow  = 30 * time.Second
	// latencyCutEvery spaces the cuts of the latency signal: a bank that
	// became slower for good is accepted as such when minRTTWindow moves
	// on, after a few cuts rather than a collapse to one call.
	latencyCutEvery = 5 * time.Second
	// minTimerWait bounds how often the dispatcher wakes at high rates.
	minTimerWait = time.Millisecond
)

// DefaultMaxConcurrency bounds the calls in flight at the bank whatever the
// limiter learns.
const DefaultMaxConcurrency = 1024

// outcome is what an answer says of the bank's capacity.
type outcome int

const (
	outcomeOK       outcome = iota // the bank answered (a success or a refusal of the request)
	outcomeOverload                // the bank refused for load: 429, 503
	outcomeFailed                  // no answer, a timeout, another 5xx
	outcomeIgnore                  // the caller gave up: says nothing of the bank
)

// outcomeOf sorts the result of one attempt.
func outcomeOf(err error) outcome {
	if err == nil {
		return outcomeOK
	}
	var e *Error
	if errors.As(err, &e) && e.HTTPStatus != 0 {
		switch {
		case e.HTTPStatus == 429 || e.HTTPStatus == 503:
			return outcomeOverload
		case e.HTTPStatus >= 500:
			return outcomeFailed
		}
		return outcomeOK
	}
	if Classify(err) == ClassCanceled {
		return outcomeIgnore
	}
	return outcomeFailed
}

// LimiterState is a snapshot of the limiter, for metrics.
type LimiterState struct {
	// Rate is the start rate in calls per second; +Inf before the bank
	// first refused a call.
	Rate float64
	// Limit is the limit on calls in flight, InFlight how many are.
	Limit    int
	InFlight int
	// Waiting is how many calls wait for the limiter.
	Waiting int
	// Paused is how much is left of a pause the bank asked for.
	Paused time.Duration
	// Cuts counts decreases since the start.
	Cuts int64
}

// pacer is the limiter's logic without its waiting: a pure function of the
// times it is given, so that it can be tested with an injected clock.
type pacer struct {
	maxLimit float64

	rate     float64 // calls/s; +Inf until the first cut
	ssthresh float64 // slow start below this rate
	tokens   float64
	refilled time.Time

	limit       float64
	limitThresh float64 // the limit doubles per round below this
	// outageLimitThresh is limitThresh when the current outage began.
	outageLimitThresh float64
	inflight          int

	pauseUntil time.Time
	lastCut    time.Time
	cuts       int64
	streak     int // failures in a row

	pressedRate, pressedLimit time.Time

	// starts counts the calls started in the current and the previous
	// second, to measure the start rate on the first cut.
	startsNow, startsPrev int
	startsSec             int64

	// rtts are the answer times by operation: a card order and a token
	// request take different times, and only like is compared with like.
	rtts map[string]*rttStat

	lastLatencyCut time.Time
}

func newPacer(maxConcurrency int) *pacer {
	if maxConcurrency <= 0 {
		maxConcurrency = DefaultMaxConcurrency
	}
	return &pacer{
		maxLimit:    float64(maxConcurrency),
		rate:        math.Inf(1),
		ssthresh:    math.Inf(1),
		limit:       math.Min(initialLimit, float64(maxConcurrency)),
		limitThresh: math.Inf(1),
		rtts:        map[string]*rttStat{},
		tokens:      1,
	}
}

// why a call may not start now.
type blocked int

const (
	notBlocked blocked = iota
	byPause
	byLimit
	byRate
)

// admit starts a call at now if the pace allows it. Otherwise it says what
// holds it back and, for a pause or the rate, how long until it may be
// asked again (the limit is freed by a release).
func (p *pacer) admit(now time.Time) (blocked, time.Duration) {
	if now.Before(p.pauseUntil) {
		return byPause, p.pauseUntil.Sub(now)
	}
	if p.inflight >= int(math.Max(1, p.limit)) {
		p.pressedLimit = now
		return byLimit, 0
	}
	if !math.IsInf(p.rate, 1) {
		burst := math.Max(1, p.rate*burstWindow.Seconds())
		if el := now.Sub(p.refilled).Seconds(); el > 0 {
			p.tokens = math.Min(burst, p.tokens+el*p.rate)
		}
		p.refilled = now
		if p.tokens < 1 {
			p.pressedRate = now
			return byRate, time.Duration((1 - p.tokens) / p.rate * float64(time.Second))
		}
		p.tokens--
	}
	p.inflight++
	p.countStart(now)
	return notBlocked, 0
}

func (p *pacer) countStart(now time.Time) {
	sec := now.Unix()
	switch {
	case sec == p.startsSec:
	case sec == p.startsSec+1:
		p.startsPrev, p.startsNow = p.startsNow, 0
	default:
		p.startsPrev, p.startsNow = 0, 0
	}
	p.startsSec = sec
	p.startsNow++
}

// startRate estimates the calls started per second over the last second.
func (p *pacer) startRate(now time.Time) float64 {
	sec := now.Unix()
	frac := float64(now.Nanosecond()) / 1e9
	switch sec {
	case p.startsSec:
		return float64(p.startsNow) + float64(p.startsPrev)*(1-frac)
	case p.startsSec + 1:
		return float64(p.startsNow) * (1 - frac)
	}
	return 0
}

// release ends a call started at start, answered at now after rtt, with
// what its answer says of the bank and the Retry-After it carried.
func (p *pacer) release(now, start time.Time, op string, o outcome, rtt, retryAfter time.Duration) {
	p.inflight--
	if retryAfter > 0 && (o == outcomeOverload || o == outcomeFailed) {
		if until := now.Add(retryAfter); until.After(p.pauseUntil) {
			p.pauseUntil = until
		}
	}
	fresh := start.After(p.lastCut) // sent at the current pace
	switch o {
	case outcomeOK:
		p.streak = 0
		p.grow(now)
		if p.slow(now, op, rtt) && fresh && now.Sub(p.lastLatencyCut) >= latencyCutEvery {
			p.lastLatencyCut = now
			p.cutLimit(now, overloadCut)
		}
	case outcomeOverload:
		p.streak = 0
		if fresh {
			p.cut(now, overloadCut)
			p.ssthresh = p.rate
		}
	case outcomeFailed:
		p.streak++
		if p.streak == outageStreak {
			// Once the bank is back, slow start climbs to a little under
			// the pace it last refused for load: its limit is likely the
			// same. A bank that never refused for load had no limit
			// found, and slow start has no ceiling: the pace calls were
			// started at before the outage was the demand then, not the
			// bank's capacity, and the backlog the outage left wants more.
			p.ssthresh = math.Inf(1)
			if !math.IsInf(p.rate, 1) {
				p.ssthresh = math.Max(minRate, math.Min(p.rate, p.startRate(now))*overloadCut)
			}
			p.outageLimitThresh = p.limitThresh
		}
		if p.streak >= outageStreak && fresh {
			p.cut(now, failureCut)
			// An outage says nothing of how many calls the bank takes at
			// once: the limit slow-starts back to where it was.
			p.limitThresh = p.outageLimitThresh
		}
	}
}

// grow raises the rate and the limit that calls recently waited for.
func (p *pacer) grow(now time.Time) {
	if !math.IsInf(p.rate, 1) && now.Sub(p.pressedRate) <= pressWindow {
		if p.rate < p.ssthresh {
			p.rate++ // a rate's worth of answers a second: doubles each second
		} else {
			// The longer the bank took everything, the faster the rate
			// probes upwards (as CUBIC does away from its last loss): a
			// share freed by another process or the portal is taken up
			// in seconds, while just after a cut the rate stays close.
			gain := growthPerSecond * (1 + now.Sub(p.lastCut).Seconds()/probeAccel.Seconds())
			p.rate += math.Max(minRate/p.rate, gain)
		}
	}
	if p.limit < p.maxLimit && now.Sub(p.pressedLimit) <= pressWindow {
		if p.limit < p.limitThresh {
			p.limit++
		} else {
			p.limit += 1 / p.limit
		}
		p.limit = math.Min(p.limit, p.maxLimit)
	}
}

// rttStat is what is known of the answer times of one operation.
type rttStat struct {
	min   time.Duration // the shortest in the last minRTTWindow
	minAt time.Time
	avg   time.Duration // a moving average
}

// slow reports whether answers to op lately (a moving average, so that one
// slow answer does not count) take far longer than the shortest lately.
func (p *pacer) slow(now time.Time, op string, rtt time.Duration) bool {
	if rtt <= 0 {
		return false
	}
	st := p.rtts[op]
	if st == nil {
		if len(p.rtts) >= 64 {
			return false // a bounded set of operations; not expected
		}
		st = &rttStat{avg: rtt}
		p.rtts[op] = st
	}
	st.avg += (rtt - st.avg) / 8
	if st.min == 0 || rtt < st.min || now.Sub(st.minAt) > minRTTWindow {
		st.min, st.minAt = rtt, now
		return false
	}
	return float64(st.avg) > latencyFactor*float64(st.min)+float64(latencySlack)
}

// cut decreases the rate and the limit by factor, once per episode.
func (p *pacer) cut(now time.Time, factor float64) {
	base := p.rate
	if measured := p.startRate(now); math.IsInf(base, 1) || measured < base {
		base = math.Max(measured, minRate)
	}
	p.rate = math.Max(minRate, base*factor)
	p.tokens = 0
	p.refilled = now
	p.cutLimit(now, factor)
}

func (p *pacer) cutLimit(now time.Time, factor float64) {
	p.limit = math.Max(1, p.limit*factor)
	p.limitThresh = p.limit
	p.lastCut = now
	p.cuts++
}

func (p *pacer) state(now time.Time) LimiterState {
	s := LimiterState{Rate: p.rate, Limit: int(math.Max(1, p.limit)), InFlight: p.inflight, Cuts: p.cuts}
	if now.Before(p.pauseUntil) {
		s.Paused = p.pauseUntil.Sub(now)
	}
	return s
}

// clock is the limiter's time; tests replace it.
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d; stop cancels it.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// limiter makes callers wait, first come first served, for the pacer.
type limiter struct {
	clk      clock
	maxPause time.Duration // a longer pause fails the call at once

	mu     sync.Mutex
	p      *pacer
	queue  []*waiter
	timer  func() bool // stops the armed timer
	timeAt time.Time   // when it fires
	timeID uint64      // bumped to disown stale timers
}

type waiter struct {
	ch      chan struct{}
	granted bool
	start   time.Time
	paused  *Error // set instead of granted: the call may not wait (pausedTooLongLocked)
}

func newLimiter(clk clock, maxConcurrency int, maxPause time.Duration) *limiter {
	return &limiter{clk: clk, p: newPacer(maxConcurrency), maxPause: maxPause}
}

// errBankPaused: the bank asked the tenant to pause for longer than a call
// waits (Config.MaxRetryAfter); the call was not made.
var errBankPaused = errors.New("the bank asked for a pause (Retry-After); not called")

// errBankBusy: the call waited its turn for as long as a call waits
// (Config.MaxRetryAfter) and the pace the bank allows had no room for it;
// the call was not made. Its request goes back with its retry delay rather
// than being held, kept alive, in a queue that does not move (after an
// outage the limiter starts at one call at a time).
var errBankBusy = errors.New("no room at the pace the bank allows within the wait; not called")

// acquire waits until a call may start and returns when it started. It
// fails when ctx ends first, or at once with an *Error carrying RetryAfter
// when the bank asked for a pause longer than maxPause.
func (l *limiter) acquire(ctx context.Context, op string) (time.Time, error) {
	l.mu.Lock()
	now := l.clk.Now()
	if err := l.pausedTooLongLocked(now); err != nil {
		l.mu.Unlock()
		return time.Time{}, &Error{Op: op, RetryAfter: err.RetryAfter, Err: err.Err}
	}
	if len(l.queue) == 0 {
		if b, _ := l.p.admit(now); b == notBlocked {
			l.mu.Unlock()
			return now, nil
		}
	}
	w := &waiter{ch: make(chan struct{})}
	l.queue = append(l.queue, w)
	l.dispatchLocked(now)
	l.mu.Unlock()

	var waited chan struct{}
	if l.maxPause > 0 {
		waited = make(chan struct{})
		stop := l.clk.AfterFunc(l.maxPause, func() { close(waited) })
		defer stop()
	}
	giveUp := ctx.Err
	select {
	case <-w.ch:
		if w.paused != nil {
			return time.Time{}, &Error{Op: op, RetryAfter: w.paused.RetryAfter, Err: w.paused.Err}
		}
		return w.start, nil
	case <-ctx.Done():
	case <-waited:
		giveUp = func() error {
			return &Error{Op: op, Err: fmt.Errorf("%w (waited %s)", errBankBusy, l.maxPause)}
		}
	}
	l.mu.Lock()
	if w.paused != nil {
		l.mu.Unlock()
		if ctx.Err() == nil {
			return time.Time{}, &Error{Op: op, RetryAfter: w.paused.RetryAfter, Err: w.paused.Err}
		}
		return time.Time{}, ctx.Err()
	}
	if w.granted {
		if ctx.Err() == nil {
			// Granted as the wait ran out: take the call.
			l.mu.Unlock()
			return w.start, nil
		}
		l.mu.Unlock()
		l.release(w.start, op, outcomeIgnore, 0, 0)
		return time.Time{}, ctx.Err()
	}
	for i, q := range l.queue {
		if q == w {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			break
		}
	}
	l.mu.Unlock()
	return time.Time{}, giveUp()
}

// release ends a call of op that acquire started.
func (l *limiter) release(start time.Time, op string, o outcome, rtt, retryAfter time.Duration) {
	l.mu.Lock()
	now := l.clk.Now()
	l.p.release(now, start, op, o, rtt, retryAfter)
	l.dispatchLocked(now)
	l.mu.Unlock()
}

// pausedTooLongLocked returns the error of a call that may not wait: the
// bank asked for a pause longer than maxPause. Its Op is left to the caller.
func (l *limiter) pausedTooLongLocked(now time.Time) *Error {
	left := l.p.pauseUntil.Sub(now)
	if l.maxPause <= 0 || left <= l.maxPause {
		return nil
	}
	return &Error{RetryAfter: left, Err: fmt.Errorf("%w for %s", errBankPaused, left.Round(time.Second))}
}

// dispatchLocked starts the waiting calls the pace allows, in order, and
// arms a timer for when the next may start. When the bank asked for a
// pause longer than a call waits, the waiting calls fail at once, as a new
// one would: a call waiting out a long pause holds its request, kept
// alive, while nothing happens.
func (l *limiter) dispatchLocked(now time.Time) {
	if err := l.pausedTooLongLocked(now); err != nil {
		for _, w := range l.queue {
			w.paused = err
			close(w.ch)
		}
		clear(l.queue)
		l.queue = l.queue[:0]
		return
	}
	for len(l.queue) > 0 {
		b, wait := l.p.admit(now)
		if b != notBlocked {
			if b != byLimit {
				l.armLocked(now, max(wait, minTimerWait))
			}
			return
		}
		w := l.queue[0]
		l.queue[0] = nil
		l.queue = l.queue[1:]
		w.granted, w.start = true, now
		close(w.ch)
	}
}

func (l *limiter) armLocked(now time.Time, wait time.Duration) {
	at := now.Add(wait)
	if l.timer != nil && !l.timeAt.After(at) && l.timeAt.After(now) {
		return // an earlier timer will dispatch
	}
	if l.timer != nil {
		l.timer()
	}
	l.timeID++
	id := l.timeID
	l.timeAt = at
	l.timer = l.clk.AfterFunc(wait, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.timeID != id {
			return
		}
		l.timer = nil
		l.dispatchLocked(l.clk.Now())
	})
}

func (l *limiter) state() LimiterState {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.p.state(l.clk.Now())
	s.Waiting = len(l.queue)
	return s
}
