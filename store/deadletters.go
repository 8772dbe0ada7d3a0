package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrAlreadyIssued is returned by Replay for a request that has a card: it
// must never be ordered twice.
var ErrAlreadyIssued = errors.New("request already has a card")

// DeadLetterFilter selects dead letters. Zero fields match everything.
type DeadLetterFilter struct {
	ID     int64
	Reason string
	Source string
	Since  time.Time // recorded at or after
	Until  time.Time // recorded before
	// IncludeReplayed also selects dead letters already replayed (and not
	// failed again since).
	IncludeReplayed bool
	Limit           int // default 1000
}

const deadLetterColumns = `id, source, request_id, reason, message, coalesce(bank_code, ''), msg_subject,
	msg_headers, msg_data, stream_seq, deliveries, first_seen_at, recorded_at, replayed_at, replay_count`

func scanDeadLetter(row interface{ Scan(...any) error }) (DeadLetter, error) {
	var d DeadLetter
	err := row.Scan(&d.ID, &d.Source, &d.RequestID, &d.Reason, &d.Message, &d.BankCode, &d.Subject,
		&d.Header, &d.Data, &d.StreamSeq, &d.Deliveries, &d.FirstSeen, &d.RecordedAt, &d.ReplayedAt, &d.ReplayCount)
	return d, err
}

// DeadLetters lists the dead letters matching f, oldest first.
func (s *Store) DeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.ID != 0 {
		add("id = $%d", f.ID)
	}
	if f.Reason != "" {
		add("reason = $%d", f.Reason)
	}
	if f.Source != "" {
		add("source = $%d", f.Source)
	}
	if !f.Since.IsZero() {
		add("recorded_at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		add("recorded_at < $%d", f.Until)
	}
	if !f.IncludeReplayed && f.ID == 0 {
		where = append(where, "replayed_at IS NULL")
	}
	q := `SELECT ` + deadLetterColumns + ` FROM dead_letters`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY id LIMIT $%d", len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err != nil {
			return nil, fmt.Errorf("listing dead letters: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Replay prepares dead letter id for re-driving: it removes the request's
// failed inbox row, so the request is processed again, and counts the
// replay. It returns the dead letter with ReplayCount already increased:
// the generation the caller stamps on the message it republishes. A
// request that has a card is refused with ErrAlreadyIssued.
func (s *Store) Replay(ctx context.Context, id int64) (DeadLetter, error) {
	var d DeadLetter
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		d, err = scanDeadLetter(tx.QueryRow(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return fmt.Errorf("replaying dead letter %d: %w", id, notFound(err))
		}
		var outcome string
		err = tx.QueryRow(ctx, `SELECT outcome FROM processed_requests WHERE source = $1 AND request_id = $2 FOR UPDATE`,
			d.Source, d.RequestID).Scan(&outcome)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			// Already released by an earlier replay whose publish failed.
		case err != nil:
			return fmt.Errorf("replaying dead letter %d: %w", id, err)
		case outcome == OutcomeIssued:
			return fmt.Errorf("replaying dead letter %d: %w", id, ErrAlreadyIssued)
		default:
			if _, err := tx.Exec(ctx, `DELETE FROM processed_requests WHERE source = $1 AND request_id = $2`, d.Source, d.RequestID); err != nil {
				return fmt.Errorf("replaying dead letter %d: %w", id, err)
			}
		}
		err = tx.QueryRow(ctx, `UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1
			WHERE id = $1 RETURNING replayed_at, replay_count`, id).Scan(&d.ReplayedAt, &d.ReplayCount)
		if err != nil {
			return fmt.Errorf("replaying dead letter %d: %w", id, err)
		}
		return nil
	})
	return d, err
}

// AddDeadLetter records a message that was refused without an outcome of
// its own, such as a second request reusing an id with other data. A dead
// letter that already exists for (source, request id) is left as it is.
func (s *Store) AddDeadLetter(ctx context.Context, d DeadLetter) error {
	if d.Header == nil {
		d.Header = map[string][]string{}
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO dead_letters (source, request_id, reason, message, bank_code, msg_subject,
			msg_headers, msg_data, stream_seq, deliveries, first_seen_at)
		VALUES ($1, $2, $3, $4, nullif($5, ''), $6, $7, $8, $9, $10, $11)
		ON CONFLICT (source, request_id) DO NOTHING`,
		cleanText(d.Source), cleanText(d.RequestID), d.Reason, cleanText(d.Message), cleanText(d.BankCode),
		cleanText(d.Subject), d.Header, d.Data, d.StreamSeq, d.Deliveries, d.FirstSeen)
	if err != nil {
		return fmt.Errorf("recording dead letter: %w", err)
	}
	return nil
}
