package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// outboxChannel is the LISTEN/NOTIFY channel that wakes relays. It carries
// the schema so that stores in separate schemas (tests) do not wake each
// other.
func (s *Store) outboxChannel() string { return "cardbridge_outbox_" + s.schema }

// RelayBatch claims up to limit outbox rows that no other relay holds
// (FOR UPDATE SKIP LOCKED), hands them to publish, and deletes the ones
// publish reports as acknowledged, all in one transaction. A relay that
// crashes mid-way releases its rows by rolling back; they are published
// again, which JetStream drops as duplicates of the same Nats-Msg-Id.
// It returns how many rows were claimed.
func (s *Store) RelayBatch(ctx context.Context, limit int, publish func(context.Context, []OutboxEvent) (acked []int64, err error)) (int, error) {
	var claimed int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT id, event_id, subject, headers, data FROM outbox
			ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
		if err != nil {
			return fmt.Errorf("claiming outbox rows: %w", err)
		}
		events, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (OutboxEvent, error) {
			var e OutboxEvent
			err := r.Scan(&e.ID, &e.EventID, &e.Subject, &e.Header, &e.Data)
			return e, err
		})
		if err != nil {
			return fmt.Errorf("claiming outbox rows: %w", err)
		}
		claimed = len(events)
		if claimed == 0 {
			return nil
		}
		acked, pubErr := publish(ctx, events)
		if len(acked) > 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM outbox WHERE id = ANY($1)`, acked); err != nil {
				return fmt.Errorf("deleting published outbox rows: %w", err)
			}
		}
		// Rows published before an error are still deleted: commit them and
		// report the error after.
		if pubErr != nil {
			if err := tx.Commit(ctx); err != nil {
				return fmt.Errorf("deleting published outbox rows: %w", err)
			}
			return fmt.Errorf("publishing outbox: %w", pubErr)
		}
		return nil
	})
	return claimed, err
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

// OutboxListener waits for outbox commits (a NOTIFY on the outbox channel)
// on a connection of its own, held for as long as it listens.
type OutboxListener struct {
	conn *pgx.Conn
	s    *Store
}

// ListenOutbox opens a dedicated connection listening for outbox commits.
func (s *Store) ListenOutbox(ctx context.Context) (*OutboxListener, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("listening for outbox: %w", err)
	}
	conn := c.Hijack()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.outboxChannel()}.Sanitize()); err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("listening for outbox: %w", err)
	}
	return &OutboxListener{conn: conn, s: s}, nil
}

// Wait returns when a notification arrives (true) or after timeout (false).
// An error means the connection is broken; open a new listener.
func (l *OutboxListener) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := l.conn.WaitForNotification(ctx)
	if err == nil {
		return true, nil
	}
	if ctx.Err() != nil {
		return false, nil
	}
	return false, err
}

// Close releases the connection.
func (l *OutboxListener) Close() { _ = l.conn.Close(context.Background()) }
