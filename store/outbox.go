package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// RelayBatch claims up to limit outbox rows at least minAge old that no
// other relay holds (FOR UPDATE SKIP LOCKED), hands them to publish, and
// deletes the ones publish reports as acknowledged, all in one transaction.
// A relay that crashes mid-way releases its rows by rolling back; they are
// published again, which JetStream drops as duplicates of the same
// Nats-Msg-Id. It returns how many rows were claimed.
//
// minAge leaves young rows to the process that committed them, which
// publishes them itself at once (see package relay); what is older was
// left behind by a crash or a failed publish.
func (s *Store) RelayBatch(ctx context.Context, limit int, minAge time.Duration, publish func(context.Context, []OutboxEvent) (acked []int64, err error)) (int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("claiming outbox rows: %w", err)
	}
	// Once events are published, ending ctx (a shutdown) must not undo the
	// deletes, or cut the transaction off with its locks still held by a
	// backend that has not noticed yet, where the shutdown's last sweep
	// would skip them: the end of the transaction has a bound of its own,
	// which starts when the end does (after the publish), so that a slow
	// publish does not leave the delete no time.
	// A deadline of ctx (the bound of a shutdown's last sweep) still holds:
	// past it the process is leaving, and the rows stay for the next sweep.
	finish := func() (context.Context, context.CancelFunc) {
		end := time.Now().Add(relayFinishTimeout)
		if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
			end = dl
		}
		return context.WithDeadline(context.WithoutCancel(ctx), end)
	}
	defer func() { // after a commit, a no-op
		end, cancel := finish()
		defer cancel()
		_ = tx.Rollback(end)
	}()
	rows, err := tx.Query(ctx, `
		SELECT id, event_id, subject, headers, data,
		       extract(epoch FROM now() - created_at)::float8 FROM outbox
		WHERE created_at <= now() - $2::interval
		ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, limit, minAge)
	if err != nil {
		return 0, fmt.Errorf("claiming outbox rows: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (OutboxEvent, error) {
		var e OutboxEvent
		var age float64
		err := r.Scan(&e.ID, &e.EventID, &e.Subject, &e.Header, &e.Data, &age)
		e.Age = time.Duration(age * float64(time.Second))
		return e, err
	})
	if err != nil {
		return 0, fmt.Errorf("claiming outbox rows: %w", err)
	}
	if len(events) == 0 {
		end, cancel := finish()
		defer cancel()
		return 0, tx.Commit(end)
	}
	acked, pubErr := publish(ctx, events)
	end, cancel := finish()
	defer cancel()
	if len(acked) > 0 {
		if _, err := tx.Exec(end, `DELETE FROM outbox WHERE id = ANY($1)`, acked); err != nil {
			return len(events), fmt.Errorf("deleting published outbox rows: %w", err)
		}
	}
	// Rows published before an error are still deleted: commit them and
	// report the error after.
	if err := tx.Commit(end); err != nil {
		return len(events), fmt.Errorf("deleting published outbox rows: %w", err)
	}
	if pubErr != nil {
		return len(events), fmt.Errorf("publishing outbox: %w", pubErr)
	}
	return len(events), nil
}

// relayFinishTimeout bounds the delete and commit that end a relay batch.
const relayFinishTimeout = 10 * time.Second

// DeletePublished deletes the outbox rows of events JetStream has
// acknowledged. Rows another relay holds are waited for; rows already gone
// are no error.
func (s *Store) DeletePublished(ctx context.Context, eventIDs []string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM outbox WHERE event_id = ANY($1)`, eventIDs); err != nil {
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
