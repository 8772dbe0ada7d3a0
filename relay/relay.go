// Package relay publishes the outbox: outcome events committed to Postgres
// become binary-mode CloudEvents on JetStream.
//
// The process that commits an outcome publishes it at once (Committed), as
// an asynchronous publish whose acknowledgement is collected in the
// background; the rows of acknowledged events are then deleted in batches.
// Nothing is lost if that process dies or the publish fails: the row stays,
// and a sweep (every PollInterval, in every process) publishes the rows
// older than SweepAge. Sweeps claim rows with FOR UPDATE SKIP LOCKED, so
// several relays (one per `cardbridge run`) share them without publishing a
// row twice at once; and every message carries Nats-Msg-Id = event id, so
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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/store"
)

// Config tunes a Relay.
type Config struct {
	BatchSize    int           // rows per sweep transaction and per delete (default 500)
	PollInterval time.Duration // how often to sweep for rows left behind (default 1s)
	// SweepAge is how old a row must be before a sweep takes it; younger
	// rows are being published by the process that committed them
	// (default 5s). It must stay well under the JetStream duplicate window.
	SweepAge    time.Duration
	PublishWait time.Duration // how long to wait for JetStream's acks (default DefaultPublishWait)
	Logger      *slog.Logger
	// Observer times each publish (package observe); nil observes nothing.
	Observer Observer
}

// DefaultPublishWait is how long the relay waits for JetStream to
// acknowledge a publish. The JetStream context the relay publishes with
// should give up on an acknowledgement after as long
// (jetstream.WithPublishAsyncTimeout), or unanswered publishes pile up in
// the client until none can be sent.
const DefaultPublishWait = 10 * time.Second

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
	// acks carries the pending acknowledgements of Committed's publishes
	// to the collector that Run starts; stopped is closed when Run returns.
	acks    chan pendingAck
	stopped chan struct{}
	// stale is what the sweeps remember of rows that outlived their
	// stream's duplicate window (stale.go).
	stale staleState
}

type pendingAck struct {
	eventID string
	ack     jetstream.PubAckFuture
	sent    time.Time
	end     func(error) // the Observer's, or nil
}

// errUncollected ends the observation of a publish whose acknowledgement
// the relay had no room to collect.
var errUncollected = errors.New("acknowledgement not collected; a sweep confirms the outcome")

// New returns a relay; Run starts it.
func New(s *store.Store, js jetstream.JetStream, cfg Config) *Relay {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.SweepAge <= 0 {
		cfg.SweepAge = 5 * time.Second
	}
	if cfg.PublishWait <= 0 {
		cfg.PublishWait = DefaultPublishWait
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Relay{
		store: s, js: js, cfg: cfg,
		log:     cfg.Logger.With("component", "relay"),
		acks:    make(chan pendingAck, 4*cfg.BatchSize),
		stopped: make(chan struct{}),
		stale:   staleState{holdLimit: defaultHoldLimit},
	}
}

// Committed publishes an outcome event whose outbox row has just been
// committed. It does not wait for JetStream: Run collects the
// acknowledgement and then deletes the row. A publish that fails leaves the
// row for a sweep, so Committed has nothing to report. It never blocks the
// caller: when more acknowledgements are pending than Run holds (Run is
// behind, or stopped), the row is left to a sweep too, and the sweep's
// publish is a duplicate that JetStream drops.
func (r *Relay) Committed(ctx context.Context, e store.OutboxEvent) {
	var end func(error)
	if o := r.cfg.Observer; o != nil {
		end = o.Publishing(ctx, e)
	}
	f, err := r.js.PublishMsgAsync(outboxMsg(e), jetstream.WithMsgID(e.EventID))
	if err != nil {
		r.log.Warn("publishing an outcome failed; a sweep will publish it", "event_id", e.EventID, "err", err)
		if end != nil {
			end(err)
		}
		return
	}
	select {
	case r.acks <- pendingAck{eventID: e.EventID, ack: f, sent: time.Now(), end: end}:
	default:
		r.log.Debug("acknowledgements pending beyond the relay's capacity; a sweep will confirm the outcome", "event_id", e.EventID)
		if end != nil {
			end(errUncollected)
		}
	}
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

	failures := 0
	poll := time.NewTimer(0) // sweep at once: rows may wait from before the start
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			<-collected
			// The last sweep takes young rows too: they are this process's
			// outcomes whose acknowledgement it could not collect, and a
			// republish now is sure to fall in JetStream's duplicate window.
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishWait)
			defer cancel()
			if _, err := r.sweep(final, 0); err != nil {
				return fmt.Errorf("final outbox sweep: %w", err)
			}
			return nil
		case <-poll.C:
		}
		_, err := r.Flush(ctx)
		next := r.cfg.PollInterval
		if err != nil && ctx.Err() == nil {
			failures++
			r.log.Warn("sweeping the outbox failed", "err", err, "attempt", failures)
			next = backoff(failures)
		} else {
			failures = 0
		}
		poll.Reset(next)
	}
}

// collect waits for each acknowledgement in turn and deletes the rows of
// the acknowledged events in batches. When ctx ends it drains what was
// already sent (the consumer has stopped by then). Neither a wait nor a
// delete is cut short by ctx: each has its own bound (PublishWait), so an
// event JetStream stored is not left in the outbox to be published again
// after a restart.
func (r *Relay) collect(ctx context.Context) {
	bg := context.WithoutCancel(ctx)
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
	take := func(p pendingAck) {
		if r.await(p) {
			acked = append(acked, p.eventID)
		}
		if len(acked) >= r.cfg.BatchSize {
			deleteAcked()
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	arm := func() {
		if !armed && len(acked) > 0 {
			timer.Reset(deleteDelay)
			armed = true
		}
	}
	for running := true; running; {
		select {
		case p := <-r.acks:
			take(p)
			arm()
		case <-timer.C:
			armed = false
			deleteAcked()
			arm() // what a failed delete kept
		case <-ctx.Done():
			running = false
		}
	}
	timer.Stop()
	for {
		select {
		case p := <-r.acks:
			take(p)
			continue
		default:
		}
		break
	}
	deleteAcked()
}

// await waits for one publish's acknowledgement, at most PublishWait after
// the publish, and reports whether JetStream stored the event (or
// recognised it as a duplicate).
func (r *Relay) await(p pendingAck) bool {
	var err error
	select {
	case <-p.ack.Ok(): // already there: the collector may be behind
	default:
		wait := time.NewTimer(r.cfg.PublishWait - time.Since(p.sent))
		select {
		case <-p.ack.Ok():
		case err = <-p.ack.Err():
		case <-wait.C:
			err = errors.New("timed out waiting for the JetStream ack")
		}
		wait.Stop()
	}
	if o := r.cfg.Observer; o != nil {
		n := 0
		if err == nil {
			n = 1
		}
		o.Published(1, n, time.Since(p.sent), err)
	}
	if p.end != nil {
		p.end(err)
	}
	if err != nil {
		r.log.Warn("an outcome was not acknowledged; a sweep will publish it", "event_id", p.eventID, "err", err)
		return false
	}
	return true
}

func outboxMsg(e store.OutboxEvent) *nats.Msg {
	return &nats.Msg{Subject: e.Subject, Header: nats.Header(e.Header), Data: e.Data}
}

// Flush sweeps the outbox: it publishes every row older than SweepAge that
// no other relay holds, batch after batch. It returns how many rows it
// published.
func (r *Relay) Flush(ctx context.Context) (int, error) { return r.sweep(ctx, r.cfg.SweepAge) }

func (r *Relay) sweep(ctx context.Context, minAge time.Duration) (int, error) {
	total := 0
	for {
		n, err := r.store.RelayBatch(ctx, r.cfg.BatchSize, minAge, r.publishObserved)
		total += n
		if err != nil || n < r.cfg.BatchSize {
			return total, err
		}
	}
}

// publish sends the batch asynchronously and waits for every ack. It
// returns the ids of the rows JetStream stored (or recognised as
// duplicates, or found in the stream already: see stale.go); the others stay in the
// outbox for the next pass. Rows the duplicate window covers are sent
// first, so that looking for older ones in the stream cannot delay them
// past the window.
func (r *Relay) publish(ctx context.Context, claimed []store.OutboxEvent) ([]int64, error) {
	young, old, splitErr := r.split(ctx, claimed)
	var s sending
	s.send(r.js, young)
	var stored []store.OutboxEvent
	var screenErr error
	if len(old) > 0 {
		var checked []store.OutboxEvent
		checked, stored, screenErr = r.screen(ctx, old)
		s.send(r.js, checked)
	}
	acked := make([]int64, 0, len(claimed))
	for _, e := range stored {
		acked = append(acked, e.ID)
	}
	acked, err := s.wait(ctx, r.cfg.PublishWait, acked)
	return acked, errors.Join(err, splitErr, screenErr)
}

// sending is a batch of asynchronous publishes.
type sending struct {
	events  []store.OutboxEvent
	futures []jetstream.PubAckFuture
	err     error // the publish that failed; the rows after it wait for the next pass
}

func (s *sending) send(js jetstream.JetStream, events []store.OutboxEvent) {
	for _, e := range events {
		if s.err != nil {
			return
		}
		f, err := js.PublishMsgAsync(outboxMsg(e), jetstream.WithMsgID(e.EventID))
		if err != nil {
			s.err = fmt.Errorf("publishing %s: %w", e.EventID, err)
			return
		}
		s.events = append(s.events, e)
		s.futures = append(s.futures, f)
	}
}

// wait collects the acknowledgements, within timeout, appending the ids of
// the rows JetStream stored to acked.
func (s *sending) wait(ctx context.Context, timeout time.Duration, acked []int64) ([]int64, error) {
	firstErr := s.err
	t := time.NewTimer(timeout)
	defer t.Stop()
	for i, f := range s.futures {
		select {
		case <-f.Ok():
			acked = append(acked, s.events[i].ID)
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("publishing %s: %w", s.events[i].EventID, err)
			}
		case <-t.C:
			if firstErr == nil {
				firstErr = errors.New("publishing outbox: timed out waiting for JetStream acks")
			}
			return acked, firstErr
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = ctx.Err()
			}
			return acked, firstErr
		}
	}
	return acked, firstErr
}

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 6)
	return min(d, 5*time.Second)
}
