package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// OutboxLease is a sweep's hold on the outbox rows it claimed: no other
// sweep takes them until the lease runs out or is released. It is held
// without a transaction, so a sweep talks to NATS with no database
// connection or row lock in its hands.
type OutboxLease struct {
	// ID names the lease in the rows it holds.
	ID string
	// Events are the rows claimed, in commit order.
	Events []OutboxEvent
}

// ClaimOutbox leases up to limit outbox rows at least minAge old that no
// live lease holds, for term. A sweep that dies holding a lease leaves its
// rows to the next sweep after term; they are published again, which
// JetStream drops as duplicates of the same Nats-Msg-Id.
//
// minAge leaves young rows to the process that committed them, which
// publishes them itself at once (see package relay); what is older was
// left behind by a crash or a failed publish.
func (s *Store) ClaimOutbox(ctx context.Context, limit int, minAge, term time.Duration) (OutboxLease, error) {
	l := OutboxLease{ID: uuid.NewString()}
	// SKIP LOCKED: two sweeps claiming at once take different rows rather
	// than one waiting for the other.
	rows, err := s.pool.Query(ctx, `
		UPDATE outbox o SET lease_id = $4::uuid, leased_until = now() + $3::interval
		FROM (SELECT id FROM outbox
		      WHERE created_at <= now() - $2::interval
		        AND (leased_until IS NULL OR leased_until <= now())
		      ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) c
		WHERE o.id = c.id
		RETURNING o.id, o.event_id, o.subject, o.headers, o.data,
		          extract(epoch FROM now() - o.created_at)::float8`, limit, minAge, term, l.ID)
	if err != nil {
		return OutboxLease{}, fmt.Errorf("claiming outbox rows: %w", err)
	}
	l.Events, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (OutboxEvent, error) {
		var e OutboxEvent
		var age float64
		err := r.Scan(&e.ID, &e.EventID, &e.Subject, &e.Header, &e.Data, &age)
		e.Age = time.Duration(age * float64(time.Second))
		return e, err
	})
	if err != nil {
		return OutboxLease{}, fmt.Errorf("claiming outbox rows: %w", err)
	}
	slices.SortFunc(l.Events, func(a, b OutboxEvent) int { return cmp.Compare(a.ID, b.ID) })
	return l, nil
}

// RenewOutboxLease extends the lease to term from now, for a sweep whose
// work takes longer than its first term. It reports false when the lease
// holds no row any more: it ran out (then another sweep may have taken
// some of its rows, and none is renewed), or its rows were deleted.
func (s *Store) RenewOutboxLease(ctx context.Context, l OutboxLease, term time.Duration) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE outbox SET leased_until = now() + $2::interval
		WHERE id IN (SELECT id FROM outbox WHERE lease_id = $1::uuid AND leased_until > now() ORDER BY id FOR UPDATE)`, l.ID, term)
	if err != nil {
		return false, fmt.Errorf("renewing the outbox lease: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// SettleOutbox ends a lease: it deletes the rows whose events JetStream
// acknowledged (whoever holds them now: the event is stored) and releases
// the lease's other rows for the next sweep, in one transaction.
func (s *Store) SettleOutbox(ctx context.Context, l OutboxLease, acked []int64) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Rows are locked in id order, as DeletePublished locks them, so
		// that the two cannot wait on each other.
		if _, err := tx.Exec(ctx, `SELECT id FROM outbox WHERE lease_id = $1::uuid OR id = ANY($2) ORDER BY id FOR UPDATE`, l.ID, acked); err != nil {
			return err
		}
		if len(acked) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM outbox WHERE id = ANY($1)`, acked); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `UPDATE outbox SET lease_id = NULL, leased_until = NULL WHERE lease_id = $1::uuid`, l.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting published outbox rows: %w", err)
	}
	return nil
}

// DeletePublished deletes the outbox rows of events JetStream has
// acknowledged, leased by a sweep or not (their events are stored); rows
// already gone are no error.
func (s *Store) DeletePublished(ctx context.Context, eventIDs []string) error {
	// Rows are locked in id order, as SettleOutbox locks them, so that the
	// two cannot wait on each other.
	if _, err := s.pool.Exec(ctx, `DELETE FROM outbox WHERE id IN
		(SELECT id FROM outbox WHERE event_id = ANY($1) ORDER BY id FOR UPDATE)`, eventIDs); err != nil {
		return fmt.Errorf("deleting published outbox rows: %w", err)
	}
	return nil
}

// OutboxBacklog reports how many events wait and the age of the oldest.
func (s *Store) OutboxBacklog(ctx context.Context) (int64, time.Duration, error) {
	var n int64
	var oldest *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT count(*), min(created_at) FROM outbox`).Scan(&n, &oldest); err != nil {
		return 0, 0, fmt.Errorf("reading outbox backlog: %w", err)
	}
	if oldest == nil {
		return n, 0, nil
	}
	return n, time.Since(*oldest), nil
}
