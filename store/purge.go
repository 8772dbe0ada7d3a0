package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Retention says how long the store keeps what it records.
type Retention struct {
	// Rows: inbox rows, card orders, dead letters and retry records older
	// than this are deleted.
	Rows time.Duration
	// DeadLetterBodies: the original message a dead letter keeps (headers
	// and body, which carry employees' names and emails) is cleared after
	// this; the dead letter itself (ids, reason, message) stays until Rows.
	DeadLetterBodies time.Duration
}

// Purged counts what one Purge removed.
type Purged struct {
	Requests, DeadLetters, Bodies, Retries int64
}

// purgeBatch bounds one statement of a purge, so that it holds its locks
// for a short time and never competes for long with commits.
const purgeBatch = 1000

// purgeStatementTimeout replaces the request path's statement timeout for
// a statement of a purge: finding a batch of old rows may read far more
// than a request ever does.
const purgeStatementTimeout = 5 * time.Minute

// Purge deletes what r says is too old, a batch at a time, until nothing
// is left or ctx ends. Several processes may purge at once; they share the
// work (SKIP LOCKED).
//
// The invariant that keeps a purged request from being ordered twice: a
// request is redelivered only while it has no committed outcome (the
// request stream is a work queue; an outcome's commit comes before its
// acknowledgement, and a lost acknowledgement brings the message back
// within AckWait), so its inbox row is minutes old, never as old as Rows;
// and a request an ERP publishes again later is refused as
// request_expired once its CloudEvent time is older than Rows less a day
// (consumer.Config.Retention), before its inbox row can be gone.
func (s *Store) Purge(ctx context.Context, r Retention) (Purged, error) {
	var p Purged
	steps := []struct {
		n   *int64
		sql string
		age time.Duration
	}{
		{&p.Requests, `
			WITH old AS (
			    SELECT source, request_id FROM processed_requests
			    WHERE processed_at < now() - $1::interval LIMIT $2 FOR UPDATE SKIP LOCKED
			), orders AS (
			    DELETE FROM card_orders c USING old WHERE c.source = old.source AND c.request_id = old.request_id
			)
			DELETE FROM processed_requests p USING old WHERE p.source = old.source AND p.request_id = old.request_id`, r.Rows},
		{&p.DeadLetters, `
			DELETE FROM dead_letters WHERE id IN (
			    SELECT id FROM dead_letters d WHERE recorded_at < now() - $1::interval
			    -- not while a replay of it has no outcome: it is the request's last record
			    AND NOT (replayed_at IS NOT NULL AND NOT EXISTS (
			        SELECT 1 FROM processed_requests p WHERE p.source = d.source AND p.request_id = d.request_id))
			    LIMIT $2 FOR UPDATE SKIP LOCKED)`, r.Rows},
		{&p.Bodies, `
			UPDATE dead_letters SET msg_data = '', msg_headers = '{}', body_purged_at = now() WHERE id IN (
			    SELECT id FROM dead_letters WHERE recorded_at < now() - $1::interval AND body_purged_at IS NULL
			    LIMIT $2 FOR UPDATE SKIP LOCKED)`, r.DeadLetterBodies},
		// A retry record goes with its request's outcome. While the
		// request has none, its message is still in the stream and will be
		// delivered, however long the wait (a pause, an outage): its record
		// of an unknown answer is what keeps that delivery from sending the
		// order again to a bank that forgot the key. A record whose message
		// was terminated without a record (Drop) has no outcome ever; it is
		// purged after twice the retention.
		{&p.Retries, `
			DELETE FROM bank_retries WHERE (source, request_id) IN (
			    SELECT source, request_id FROM bank_retries r WHERE last_at < now() - $1::interval
			    AND (last_at < now() - 2 * $1::interval OR EXISTS (
			        SELECT 1 FROM processed_requests p WHERE p.source = r.source AND p.request_id = r.request_id))
			    LIMIT $2 FOR UPDATE SKIP LOCKED)`, r.Rows},
	}
	for _, st := range steps {
		if st.age <= 0 {
			continue
		}
		for {
			var n int64
			err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL statement_timeout = %d", purgeStatementTimeout.Milliseconds())); err != nil {
					return err
				}
				tag, err := tx.Exec(ctx, st.sql, st.age, purgeBatch)
				n = tag.RowsAffected()
				return err
			})
			if err != nil {
				return p, fmt.Errorf("purging: %w", err)
			}
			*st.n += n
			if n < purgeBatch {
				break
			}
		}
	}
	return p, nil
}
