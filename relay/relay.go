// Package relay publishes the outbox: outcome events committed to Postgres
// become binary-mode CloudEvents on JetStream.
//
// The process that commits an outcome publishes it at once (Committed), as
// an asynchronous publish whose acknowledgement is collected in the
// background; the rows of acknowledged events are then deleted in batches.
// Nothing is lost if that process dies or the publish fails: the row stays,
// and a sweep (every PollInterval, in every process) publishes the rows
// older than SweepAge. A sweep leases the rows it takes (lease.go) and
// publishes them with no transaction open, so several relays (one per
// `cardbridge run`) share them without publishing a row twice at once; and
// every message carries Nats-Msg-Id = event id, so
// an event published twice (a crash between publish and delete, or a sweep
// overtaking a slow acknowledgement) is dropped by JetStream's duplicate
// window. A row that outlived the window is checked against the stream
// before it is published (stale.go).
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/store"
)

// Config tunes a Relay. A zero field takes its default (the Default
// constants below, applied by withDefaults); a negative one is refused by
// New.
type Config struct {
	BatchSize    int           // rows per sweep's lease and per delete (default DefaultBatchSize)
	PollInterval time.Duration // how often to sweep for rows left behind (default DefaultPollInterval)
	// SweepAge is how old a row must be before a sweep takes it; younger
	// rows are being published by the process that committed them
	// (default DefaultSweepAge). It must stay well under the JetStream
	// duplicate window.
	SweepAge    time.Duration
	PublishWait time.Duration // how long to wait for JetStream's acks (default DefaultPublishWait)
	// DrainLimit bounds what Run does after its context ends: collecting
	// the acknowledgements still due, deleting their rows and a last
	// sweep, together (default PublishWait). What it leaves stays in the
	// outbox for the next sweep, by any process, and is dropped by
	// JetStream as a duplicate if it was stored.
	DrainLimit time.Duration
	Logger     *slog.Logger
	// Observer times each publish (package observe); nil observes nothing.
	Observer Observer
}

// DefaultPublishWait is how long the relay waits for JetStream to
// acknowledge a publish. The JetStream context the relay publishes with
// should give up on an acknowledgement after as long
// (jetstream.WithPublishAsyncTimeout), or unanswered publishes pile up in
// the client until none can be sent.
const DefaultPublishWait = 10 * time.Second

// Defaults of Config.
const (
	DefaultBatchSize    = 500
	DefaultPollInterval = time.Second
	DefaultSweepAge     = 5 * time.Second
)

// withDefaults returns c with every zero field at its default: the one
// place the relay's defaults are applied.
func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.SweepAge == 0 {
		c.SweepAge = DefaultSweepAge
	}
	if c.PublishWait == 0 {
		c.PublishWait = DefaultPublishWait
	}
	if c.DrainLimit == 0 {
		c.DrainLimit = c.PublishWait
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate names every field that is out of range, and what to set. Zero
// means the default, so only negative values are refused.
func (c Config) validate() error {
	var errs []error
	if c.BatchSize < 0 {
		errs = append(errs, fmt.Errorf("Config.BatchSize %d must be positive (0 for the default, %d)", c.BatchSize, DefaultBatchSize))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		def  string
	}{
		{"PollInterval", c.PollInterval, DefaultPollInterval.String()},
		{"SweepAge", c.SweepAge, DefaultSweepAge.String()},
		{"PublishWait", c.PublishWait, DefaultPublishWait.String()},
		{"DrainLimit", c.DrainLimit, "PublishWait"},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("Config.%s %s must be positive (0 for the default, %s)", d.name, d.v, d.def))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("relay: %w", errors.Join(errs...))
}

// After a sweep that could not publish everything, while JetStream stored
// other messages meanwhile, the next sweep comes after quickSweep rather
// than PollInterval, at most maxQuickSweeps times in a row.
const (
	quickSweep     = 100 * time.Millisecond
	maxQuickSweeps = 3
)

// deleteDelay is how long the rows of acknowledged events may wait, to be
// deleted together. A row deleted late costs nothing: it is younger than
// SweepAge, and JetStream would drop a second publish of it anyway.
const deleteDelay = 50 * time.Millisecond

// Relay moves outbox rows to JetStream.
type Relay struct {
	store *store.Store
	js    jetstream.JetStream
	cfg   Config
	log   *slog.Logger
	// acks carries Committed's publishes to the collector that Run
	// starts; stopped is closed when Run returns.
	acks chan *flight
	// drainBy is when the drain after Run's context ended must be done
	// (unix nanoseconds; 0 until then): set once, by whoever sees the end
	// first (drainDeadline);
	// set by the collector before it returns.
	drainBy atomic.Int64
	stopped chan struct{}
	// stale is what the sweeps remember of rows that outlived their
	// stream's duplicate window (stale.go).
	stale staleState
	// answers is the evidence that JetStream answers (answers.go).
	answers answers
	// retry holds Committed's events whose publish failed or went
	// unanswered, to be published again at the next poll while they are
	// younger than SweepAge (then a sweep takes them).
	retryMu sync.Mutex
	retry   []*flight
	// retrying is len(retry), for the collector to read cheaply.
	retrying atomic.Int32
	// lease is how sweeps hold the rows they claim (lease.go).
	lease leasePolicy
}

// errUncollected ends the observation of a publish whose acknowledgement
// the relay had no room to collect.
var errUncollected = errors.New("acknowledgement not collected; a sweep confirms the outcome")

// New returns a relay; Run starts it. It refuses a Config with a negative
// field, naming it.
func New(s *store.Store, js jetstream.JetStream, cfg Config) (*Relay, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Relay{
		store: s, js: js, cfg: cfg,
		log:     cfg.Logger.With("component", "relay"),
		acks:    make(chan *flight, 4*cfg.BatchSize),
		stopped: make(chan struct{}),
		stale:   staleState{holdLimit: defaultHoldLimit, spellGap: defaultSpellGap, now: time.Now},
		answers: newAnswers(),
		lease:   defaultLeasePolicy(),
	}, nil
}

// Committed publishes an outcome event whose outbox row has just been
// committed. It does not wait for JetStream: Run collects the
// acknowledgement and then deletes the row. A publish that fails, or whose
// acknowledgement does not come, is published again at Run's next poll
// while the row is younger than SweepAge, and left to a sweep after, so
// Committed has nothing to report. It never blocks the caller: when more
// acknowledgements are pending than Run holds (Run is behind, or stopped),
// the row is left to a sweep too, and the sweep's publish is a duplicate
// that JetStream drops.
func (r *Relay) Committed(ctx context.Context, e store.OutboxEvent) {
	var end func(error)
	if o := r.cfg.Observer; o != nil {
		end = o.Publishing(ctx, e)
	}
	r.publishCommitted(&flight{eventID: e.EventID, event: e, end: end})
}

// publishCommitted publishes fl (again) and hands it to the collector.
func (r *Relay) publishCommitted(fl *flight) {
	if err := fl.publish(r.js, &r.answers); err != nil {
		r.log.Log(context.Background(), fl.logLevel(), "publishing an outcome failed; it is published again shortly", "event_id", fl.eventID, "err", err, "attempt", fl.attempts)
		fl.finish(err)
		r.retryLater(fl)
		return
	}
	select {
	case r.acks <- fl:
	default:
		r.log.Debug("acknowledgements pending beyond the relay's capacity; a sweep will confirm the outcome", "event_id", fl.eventID)
		fl.finish(errUncollected)
	}
}

// retryLater keeps fl for the next poll, if there is room.
func (r *Relay) retryLater(fl *flight) {
	r.retryMu.Lock()
	defer r.retryMu.Unlock()
	if len(r.retry) < 4*r.cfg.BatchSize {
		r.retry = append(r.retry, fl)
		r.retrying.Store(int32(len(r.retry)))
	}
}

// takeRetries returns Committed's events that failed or went unanswered,
// to publish again, except those old enough for a sweep to take.
func (r *Relay) takeRetries() []*flight {
	r.retryMu.Lock()
	failed := r.retry
	r.retry = nil
	r.retrying.Store(0)
	r.retryMu.Unlock()
	young := failed[:0]
	for _, fl := range failed {
		if time.Since(fl.first) < r.cfg.SweepAge {
			young = append(young, fl)
		}
	}
	return young
}

// Run collects the acknowledgements of Committed's publishes, and sweeps
// the outbox for rows left behind, until ctx ends. Then it collects the
// acknowledgements still due and makes one last sweep (bounded by
// PublishWait each), so that rows left behind need not wait for the next
// start.
func (r *Relay) Run(ctx context.Context) error {
	defer close(r.stopped)
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		r.collect(ctx)
	}()

	failures, quick := 0, 0
	poll := time.NewTimer(0) // sweep at once: rows may wait from before the start
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			<-collected
			// The last sweep takes young rows too, this process's among them:
			// outcomes whose acknowledgement it could not collect. Another
			// live process's young rows may be taken as well; a republish
			// now is sure to fall in JetStream's duplicate window.
			final, cancel := context.WithDeadline(context.WithoutCancel(ctx), r.drainDeadline())
			defer cancel()
			if _, err := r.sweep(final, 0); err != nil {
				// Not a failure of the stop: the rows stay in the outbox,
				// and the next sweep, by any process, publishes them.
				r.log.Warn("the last outbox sweep before stopping failed; its rows stay for the next sweep", "err", err)
			}
			return nil
		case <-poll.C:
		}
		began := r.answers.now()
		_, err := r.Flush(ctx)
		next := r.cfg.PollInterval
		var unpublished *publishError
		switch {
		case err == nil || ctx.Err() != nil:
			failures, quick = 0, 0
		case errors.As(err, &unpublished):
			// JetStream did not take every event (no stream leader, say):
			// the next poll tries again, without backing off, so that
			// the outcomes go as soon as a leader answers. A try costs a
			// round trip per event.
			failures = 0
			r.log.Warn("publishing outbox rows failed; they are published again at the next poll", "err", err)
			// JetStream stored a message meanwhile: what this sweep gave
			// up (lost with a leader that went) can go now. A few times
			// in a row at most, for a row that fails on its own.
			if r.answers.storedSince(began) && quick < maxQuickSweeps {
				quick++
				next = quickSweep
			}
		default:
			failures++
			r.log.Warn("sweeping the outbox failed", "err", err, "attempt", failures)
			next = backoff(failures)
		}
		poll.Reset(next)
	}
}

// collect takes the acknowledgements of Committed's publishes as they come
// and deletes the rows of the acknowledged events in batches. It waits for
// them in the order of the publishes, but never behind one that will not
// come: a publish is given up when a later one was answered (see
// answers.go), or PublishWait after it was sent, and its event is
// published again at the next poll. When ctx ends it drains what was
// already sent (the consumer has stopped by then). Neither a wait nor a
// delete is cut short by ctx: each has its own bound, so an event
// JetStream stored is not left in the outbox to be published again after
// a restart.
func (r *Relay) collect(ctx context.Context) {
	// After ctx ends, everything (this drain, the deletes and Run's last
	// sweep) must be done by the drain deadline; a delete still waiting on
	// the database then is cut short with it (its rows stay for a sweep).
	bg, stopDB := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDB()
	stopWatch := context.AfterFunc(ctx, func() {
		time.AfterFunc(time.Until(r.drainDeadline()), stopDB)
	})
	defer stopWatch()
	var drainEnd <-chan time.Time
	var q queue
	acked := make([]string, 0, r.cfg.BatchSize)
	deleteAcked := func() {
		if len(acked) == 0 {
			return
		}
		dctx, cancel := context.WithTimeout(bg, r.cfg.PublishWait)
		err := r.store.DeletePublished(dctx, acked)
		cancel()
		if err != nil {
			// Keep them for the next try, within bounds; rows given up
			// here are published again by a sweep and dropped by
			// JetStream as duplicates.
			r.log.Warn("deleting published outbox rows failed", "rows", len(acked), "err", err)
			if len(acked) < 4*r.cfg.BatchSize {
				return
			}
		}
		acked = acked[:0]
	}
	// Events that failed or went unanswered are published again each
	// PollInterval, and at once when a publish is answered again (a new
	// stream leader, say), not behind a sweep.
	answered := false
	lastRetry := time.Now()
	retry := func() {
		if r.retrying.Load() == 0 || (!answered && time.Since(lastRetry) < r.cfg.PollInterval) {
			return
		}
		answered, lastRetry = false, time.Now()
		for _, fl := range r.takeRetries() {
			if err := fl.publish(r.js, &r.answers); err != nil {
				r.log.Log(context.Background(), fl.logLevel(), "publishing an outcome failed; it is published again shortly", "event_id", fl.eventID, "err", err, "attempt", fl.attempts)
				r.retryLater(fl)
				continue
			}
			q.push(fl)
		}
	}
	settle := func(fl *flight) {
		r.observe(fl)
		if fl.err == nil {
			answered = true
			acked = append(acked, fl.eventID)
			if len(acked) >= r.cfg.BatchSize {
				deleteAcked()
			}
			return
		}
		r.log.Log(context.Background(), fl.logLevel(), "an outcome was not acknowledged; it is published again shortly", "event_id", fl.eventID, "err", fl.err, "attempt", fl.attempts)
		r.retryLater(fl)
	}
	deleteTimer := time.NewTimer(time.Hour)
	deleteTimer.Stop()
	armed := false
	arm := func() {
		if !armed && len(acked) > 0 {
			deleteTimer.Reset(deleteDelay)
			armed = true
		}
	}
	tick := time.NewTicker(evidenceTick)
	defer tick.Stop()
	done := ctx.Done()
	for {
		if done == nil { // stopping: take what was sent, wait for nothing new
			for drained := false; !drained; {
				select {
				case fl := <-r.acks:
					q.push(fl)
				default:
					drained = true
				}
			}
		}
		for fl := q.settled(&r.answers, r.cfg.PublishWait); fl != nil; fl = q.settled(&r.answers, r.cfg.PublishWait) {
			settle(fl)
		}
		q.probe(r.js, &r.answers)
		if done != nil {
			retry()
		}
		arm()
		if done == nil && (q.empty() || !time.Now().Before(r.drainDeadline())) {
			if !q.empty() {
				r.log.Warn("stopping with outcomes whose acknowledgement did not come in time; their rows stay in the outbox for the next sweep", "outcomes", len(q.fl))
			}
			break
		}
		w := q.waiting(r.cfg.PublishWait, tick.C)
		if w.tick == nil && done != nil && r.retrying.Load() > 0 {
			w.tick = tick.C
		}
		select {
		case fl := <-r.acks:
			q.push(fl)
		case ack := <-w.headOk:
			w.head.answer(ack, nil, &r.answers)
		case err := <-w.headErr:
			w.head.answer(nil, err, &r.answers)
		case ack := <-w.tailOk:
			w.tail.answer(ack, nil, &r.answers)
		case err := <-w.tailErr:
			w.tail.answer(nil, err, &r.answers)
		case <-w.deadline:
		case <-w.tick:
		case <-deleteTimer.C:
			armed = false
			deleteAcked()
		case <-drainEnd:
		case <-done:
			done = nil
			t := time.NewTimer(time.Until(r.drainDeadline()))
			defer t.Stop()
			drainEnd = t.C
		}
		w.stop()
	}
	deleteTimer.Stop()
	deleteAcked()
}

// drainDeadline is when what Run does after its context ended must be
// done: DrainLimit after the first call once it ended.
func (r *Relay) drainDeadline() time.Time {
	r.drainBy.CompareAndSwap(0, time.Now().Add(r.cfg.DrainLimit).UnixNano())
	return time.Unix(0, r.drainBy.Load())
}

// observe reports a settled publish to the Observer.
func (r *Relay) observe(fl *flight) {
	if o := r.cfg.Observer; o != nil {
		n := 0
		if fl.err == nil {
			n = 1
		}
		o.Published(1, n, time.Since(fl.sent), fl.err)
	}
	fl.finish(fl.err)
}

// Flush sweeps the outbox: it publishes every row older than SweepAge that
// no other relay holds, batch after batch. It returns how many rows it
// published.
func (r *Relay) Flush(ctx context.Context) (int, error) { return r.sweep(ctx, r.cfg.SweepAge) }

func (r *Relay) sweep(ctx context.Context, minAge time.Duration) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		if !leaseTimeLeft(ctx) {
			return total, nil // a shutdown's last sweep: no time for another batch
		}
		n, err := r.sweepBatch(ctx, minAge)
		total += n
		if err != nil || n < r.cfg.BatchSize {
			return total, err
		}
	}
}

// publish sends the batch asynchronously and waits for the acks. It
// returns the ids of the rows JetStream stored (or recognised as
// duplicates, or found in the stream already: see stale.go); the others
// stay in the outbox for the next pass. Rows the duplicate window covers
// are sent first, so that looking for older ones in the stream cannot
// delay them past the window. Each ack is waited for at most PublishWait
// from its own publish, and not at all once a later publish was answered
// (answers.go): one lost publish does not hold the claimed rows.
func (r *Relay) publish(ctx context.Context, claimed []store.OutboxEvent) ([]int64, error) {
	young, old, splitErr := r.split(ctx, claimed)
	var s sending
	s.send(ctx, r.js, &r.answers, young)
	var stored []store.OutboxEvent
	var screenErr error
	if len(old) > 0 {
		var checked []store.OutboxEvent
		checked, stored, screenErr = r.screen(ctx, old)
		s.send(ctx, r.js, &r.answers, checked)
	}
	acked := make([]int64, 0, len(claimed))
	for _, e := range stored {
		acked = append(acked, e.ID)
	}
	acked, err := s.wait(ctx, r.js, &r.answers, r.cfg.PublishWait, acked)
	return acked, errors.Join(err, splitErr, screenErr)
}

// publishError is a batch's failure to publish (JetStream refused or did
// not answer), as opposed to one of the database.
type publishError struct{ err error }

func (e *publishError) Error() string { return e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

// sending is a batch of asynchronous publishes.
type sending struct {
	q   queue
	ids map[*flight]int64
	err error // the publish that failed; the rows after it wait for the next pass
}

func (s *sending) send(ctx context.Context, js jetstream.JetStream, a *answers, events []store.OutboxEvent) {
	for _, e := range events {
		if s.err != nil {
			return
		}
		if ctx.Err() != nil {
			// The sweep was stopped (its lease ended, say): the rows
			// not sent yet are not its to publish.
			s.err = context.Cause(ctx)
			return
		}
		fl := &flight{eventID: e.EventID, event: e}
		if err := fl.publish(js, a); err != nil {
			s.err = &publishError{fmt.Errorf("publishing %s: %w", e.EventID, err)}
			return
		}
		if s.ids == nil {
			s.ids = map[*flight]int64{}
		}
		s.ids[fl] = e.ID
		s.q.push(fl)
	}
}

// wait collects the acknowledgements, appending the ids of the rows
// JetStream stored to acked.
func (s *sending) wait(ctx context.Context, js jetstream.JetStream, a *answers, timeout time.Duration, acked []int64) ([]int64, error) {
	firstErr := s.err
	tick := time.NewTicker(evidenceTick)
	defer tick.Stop()
	for {
		for fl := s.q.settled(a, timeout); fl != nil; fl = s.q.settled(a, timeout) {
			if fl.err == nil {
				acked = append(acked, s.ids[fl])
			} else if firstErr == nil {
				firstErr = &publishError{fmt.Errorf("publishing %s: %w", fl.eventID, fl.err)}
			}
		}
		if s.q.empty() {
			return acked, firstErr
		}
		s.q.probe(js, a)
		w := s.q.waiting(timeout, tick.C)
		select {
		case ack := <-w.headOk:
			w.head.answer(ack, nil, a)
		case err := <-w.headErr:
			w.head.answer(nil, err, a)
		case ack := <-w.tailOk:
			w.tail.answer(ack, nil, a)
		case err := <-w.tailErr:
			w.tail.answer(nil, err, a)
		case <-w.deadline:
		case <-w.tick:
		case <-ctx.Done():
			w.stop()
			if firstErr == nil {
				firstErr = context.Cause(ctx)
			}
			return acked, firstErr
		}
		w.stop()
	}
}

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 6)
	return min(d, 5*time.Second)
}
