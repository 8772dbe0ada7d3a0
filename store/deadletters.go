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

// ErrBodyPurged is returned by Replay for a dead letter whose original
// message was purged (Retention.DeadLetterBodies): there is nothing left to
// republish; the ERP must send the request again.
var ErrBodyPurged = errors.New("the dead letter's message was purged after its retention; the ERP must send the request again")

// ErrNotReplayable is returned by Replay for a dead letter that is not a
// request's outcome: a duplicate_conflict records a second message that
// reused a request id with other data; the first request stands, and the
// second must be sent again under an id of its own.
var ErrNotReplayable = errors.New("a duplicate_conflict is not replayable: the first request with this id stands; publish the new one under a new id")

// ErrNoRequest is returned by Replay for a dead letter kept under its
// place in the stream: its message named no request, or one its publisher
// may not speak for. Replayed, it would be refused again and recorded under
// the new copy's place, and the dead letter would wait for an outcome for
// ever.
var ErrNoRequest = errors.New("this dead letter names no request it may speak for (it is kept under its place in the stream): a replay would be refused again; the ERP must send a valid request")

// DeadLetterFilter selects dead letters. Zero fields match everything.
type DeadLetterFilter struct {
	ID     int64
	Reason string
	Source string
	Since  time.Time // recorded at or after
	Until  time.Time // recorded before
	// Kind selects one kind (DeadLetterOutcome, DeadLetterConflict); ""
	// selects both.
	Kind string
	// IncludeReplayed also selects dead letters already replayed whose
	// replay reached an outcome. A replay that has not (its republish
	// failed, or it is being handled) is selected either way, so that it
	// stays in sight and can be replayed again.
	IncludeReplayed bool
	Limit           int // default 1000
}

const deadLetterColumns = `id, source, request_id, reason, message, coalesce(bank_code, ''), msg_subject,
	msg_headers, msg_data, stream_seq, deliveries, first_seen_at, recorded_at, replayed_at, replay_count,
	kind, order_key_generation, body_purged_at`

func scanDeadLetter(row interface{ Scan(...any) error }) (DeadLetter, error) {
	var d DeadLetter
	err := row.Scan(&d.ID, &d.Source, &d.RequestID, &d.Reason, &d.Message, &d.BankCode, &d.Subject,
		&d.Header, &d.Data, &d.StreamSeq, &d.Deliveries, &d.FirstSeen, &d.RecordedAt, &d.ReplayedAt, &d.ReplayCount,
		&d.Kind, &d.OrderKeyGeneration, &d.BodyPurgedAt)
	return d, err
}

// pendingDeadLetter is the condition of a dead letter that still needs a
// person: never replayed, or replayed without an outcome since (the inbox
// row its replay released is not back).
const pendingDeadLetter = `(replayed_at IS NULL OR NOT EXISTS (
	SELECT 1 FROM processed_requests p WHERE p.source = dead_letters.source AND p.request_id = dead_letters.request_id))`

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
	if f.Kind != "" {
		add("kind = $%d", f.Kind)
	}
	if !f.Since.IsZero() {
		add("recorded_at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		add("recorded_at < $%d", f.Until)
	}
	if !f.IncludeReplayed && f.ID == 0 {
		where = append(where, pendingDeadLetter)
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

// Replay prepares dead letter id for re-driving: it releases the request's
// failed inbox row, so the request is processed again, resets its retry
// budget, and counts the replay. It returns the dead letter with
// ReplayCount already increased: the generation of the outcome the replay
// will produce. A request that has a card is refused with
// ErrAlreadyIssued, a duplicate_conflict with ErrNotReplayable.
//
// The card order's Idempotency-Key moves to a new generation only when the
// released outcome was a definite refusal by the bank (bank_rejected) and
// no try under the key ever had an unknown answer (bank_retries): the bank
// remembers the refusal under the old key, and no card exists under it. After any other outcome the key is kept, so that a card whose
// order had an unknown outcome is found, not ordered again. A replay of a
// request whose earlier replay has no outcome yet releases nothing and
// keeps the key, so two replays in flight order under one key: at most
// one card.
func (s *Store) Replay(ctx context.Context, id int64) (DeadLetter, error) {
	var d DeadLetter
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		d, err = scanDeadLetter(tx.QueryRow(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return fmt.Errorf("replaying dead letter %d: %w", id, notFound(err))
		}
		if d.Kind != DeadLetterOutcome {
			return fmt.Errorf("replaying dead letter %d: %w", id, ErrNotReplayable)
		}
		if d.Source == "" {
			return fmt.Errorf("replaying dead letter %d: %w", id, ErrNoRequest)
		}
		if d.BodyPurgedAt != nil {
			return fmt.Errorf("replaying dead letter %d: %w", id, ErrBodyPurged)
		}
		var outcome, reason string
		err = tx.QueryRow(ctx, `SELECT outcome, coalesce(reason, '') FROM processed_requests
			WHERE source = $1 AND request_id = $2 FOR UPDATE`, d.Source, d.RequestID).Scan(&outcome, &reason)
		newKey := false
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			// Released by an earlier replay that has no outcome yet (its
			// republish failed, or it is being handled).
		case err != nil:
			return fmt.Errorf("replaying dead letter %d: %w", id, err)
		case outcome == OutcomeIssued:
			return fmt.Errorf("replaying dead letter %d: %w", id, ErrAlreadyIssued)
		default:
			if _, err := tx.Exec(ctx, `DELETE FROM processed_requests WHERE source = $1 AND request_id = $2`, d.Source, d.RequestID); err != nil {
				return fmt.Errorf("replaying dead letter %d: %w", id, err)
			}
			newKey = reason == reasonBankRejected
		}
		// A fresh retry budget; whether some try's answer under the key was
		// unknown stays, and forbids a new key: a card may exist under it.
		var unknown bool
		err = tx.QueryRow(ctx, `UPDATE bank_retries SET spent_ms = 0, attempts = 0, last_at = now()
			WHERE source = $1 AND request_id = $2 RETURNING unknown`, d.Source, d.RequestID).Scan(&unknown)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("replaying dead letter %d: %w", id, err)
		}
		newKey = newKey && !unknown
		err = tx.QueryRow(ctx, `UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1,
				order_key_generation = order_key_generation + CASE WHEN $2 THEN 1 ELSE 0 END
			WHERE id = $1 RETURNING replayed_at, replay_count, order_key_generation`, id, newKey).
			Scan(&d.ReplayedAt, &d.ReplayCount, &d.OrderKeyGeneration)
		if err != nil {
			return fmt.Errorf("replaying dead letter %d: %w", id, err)
		}
		err = tx.QueryRow(ctx, `SELECT coalesce((SELECT publisher FROM source_bindings
			WHERE source = $1 AND publisher IS NOT NULL LIMIT 1), '')`, d.Source).Scan(&d.Publisher)
		if err != nil {
			return fmt.Errorf("replaying dead letter %d: %w", id, err)
		}
		return nil
	})
	return d, err
}

// reasonBankRejected is event.ReasonBankRejected; the store does not import
// package event, and a test keeps the two equal.
const reasonBankRejected = "bank_rejected"

// AddConflict records a message refused without an outcome of its own: a
// second request reusing an id with other data (kind DeadLetterConflict).
// Each such message is kept, whatever dead letters its request id has; a
// redelivery of the same message (same stream sequence) adds nothing.
func (s *Store) AddConflict(caller context.Context, d DeadLetter) error {
	ctx, cancel := bound(caller)
	defer cancel()
	h, err := headerJSON(d.Header)
	if err != nil {
		return fmt.Errorf("recording dead letter: %w", err)
	}
	if d.Data == nil {
		d.Data = []byte{}
	}
	_, err = s.pool.Exec(ctx, `
		INSERT INTO dead_letters (kind, source, request_id, reason, message, bank_code, msg_subject,
			msg_headers, msg_data, stream_seq, deliveries, first_seen_at)
		VALUES ('conflict', $1, $2, $3, $4, nullif($5, ''), $6, $7::jsonb, $8, $9, $10, $11)
		ON CONFLICT (source, request_id, stream_seq) WHERE kind = 'conflict' DO NOTHING`,
		cleanText(d.Source), cleanText(d.RequestID), d.Reason, cleanText(d.Message), cleanText(d.BankCode),
		cleanText(d.Subject), h, d.Data, int64(d.StreamSeq), int64(d.Deliveries), d.FirstSeen)
	if err != nil {
		return fmt.Errorf("recording dead letter: %w", unanswered(caller, err))
	}
	return nil
}
