// Package relay publishes the outbox: outcome events committed to Postgres
// become binary-mode CloudEvents on JetStream.
//
// Rows are claimed in batches with FOR UPDATE SKIP LOCKED, so several
// relays (one per `cardbridge run`) share the work without publishing a row
// twice at once; every message carries Nats-Msg-Id = event id, so a row that
// is published again after a crash between publish and delete is dropped by
// JetStream's duplicate window. A relay sleeps until Postgres NOTIFYs it of
// a commit, with a polling fallback for notifications lost to a reconnect.
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
	BatchSize    int           // rows per transaction (default 500)
	PollInterval time.Duration // fallback when no NOTIFY arrives (default 1s)
	PublishWait  time.Duration // how long to wait for JetStream's acks (default 10s)
	Logger       *slog.Logger
	// Observer times each batch (package observe); nil observes nothing.
	Observer Observer
}

// Relay moves outbox rows to JetStream.
type Relay struct {
	store *store.Store
	js    jetstream.JetStream
	cfg   Config
	log   *slog.Logger
}

// New returns a relay; Run starts it.
func New(s *store.Store, js jetstream.JetStream, cfg Config) *Relay {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.PublishWait <= 0 {
		cfg.PublishWait = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Relay{store: s, js: js, cfg: cfg, log: cfg.Logger.With("component", "relay")}
}

// Run relays until ctx ends, then makes one last pass (bounded by
// PublishWait) so that outcomes committed just before shutdown go out now
// rather than at the next start.
func (r *Relay) Run(ctx context.Context) error {
	// A listener goroutine turns commit notifications into wake-ups. The
	// wake channel holds at most one, so the notifications of every commit
	// made while a flush runs coalesce into one more flush, instead of one
	// (mostly empty) outbox transaction each.
	wake := make(chan struct{}, 1)
	listenCtx, stopListening := context.WithCancel(ctx)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		r.listen(listenCtx, wake)
	}()
	defer func() {
		stopListening()
		<-listening
	}()

	failures := 0
	poll := time.NewTimer(0) // flush at once: rows may wait from before the start
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.PublishWait)
			defer cancel()
			if _, err := r.Flush(final); err != nil {
				return fmt.Errorf("final outbox flush: %w", err)
			}
			return nil
		case <-wake:
		case <-poll.C:
		}
		_, err := r.Flush(ctx)
		next := r.cfg.PollInterval
		if err != nil && ctx.Err() == nil {
			failures++
			r.log.Warn("relaying outbox failed", "err", err, "attempt", failures)
			next = backoff(failures)
		} else {
			failures = 0
		}
		poll.Reset(next)
	}
}

// listen keeps a LISTEN connection open and signals wake on every commit
// notification, reconnecting after a failure (the poll covers the gap).
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	for ctx.Err() == nil {
		l, err := r.store.ListenOutbox(ctx)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("cannot listen for outbox commits; polling", "err", err)
			}
			wait(ctx, r.cfg.PollInterval)
			continue
		}
		signal() // a commit may have landed before LISTEN took effect
		for ctx.Err() == nil {
			got, err := l.Wait(ctx, time.Minute)
			if err != nil {
				break
			}
			if got {
				signal()
			}
		}
		l.Close()
	}
}

// Flush relays every row that is waiting and not held by another relay,
// batch after batch. It returns how many rows it published.
func (r *Relay) Flush(ctx context.Context) (int, error) {
	total := 0
	for {
		n, err := r.store.RelayBatch(ctx, r.cfg.BatchSize, r.publishObserved)
		total += n
		if err != nil || n < r.cfg.BatchSize {
			return total, err
		}
	}
}

// publish sends the batch asynchronously and waits for every ack. It
// returns the ids of the rows JetStream stored (or recognised as
// duplicates); the others stay in the outbox for the next pass.
func (r *Relay) publish(ctx context.Context, events []store.OutboxEvent) ([]int64, error) {
	futures := make([]jetstream.PubAckFuture, len(events))
	var firstErr error
	for i, e := range events {
		msg := &nats.Msg{Subject: e.Subject, Header: nats.Header(e.Header), Data: e.Data}
		f, err := r.js.PublishMsgAsync(msg, jetstream.WithMsgID(e.EventID))
		if err != nil {
			firstErr = fmt.Errorf("publishing %s: %w", e.EventID, err)
			break
		}
		futures[i] = f
	}
	timeout := time.NewTimer(r.cfg.PublishWait)
	defer timeout.Stop()
	acked := make([]int64, 0, len(events))
	for i, f := range futures {
		if f == nil {
			break
		}
		select {
		case <-f.Ok():
			acked = append(acked, events[i].ID)
		case err := <-f.Err():
			if firstErr == nil {
				firstErr = fmt.Errorf("publishing %s: %w", events[i].EventID, err)
			}
		case <-timeout.C:
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

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
