package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// BankFailure is one delivery of a request that reached the bank and failed
// there without an outcome: a transient failure, or one whose outcome at
// the bank is unknown.
type BankFailure struct {
	Source, RequestID string
	// Took is how long this delivery spent at the bank.
	Took time.Duration
	// Unknown says the bank may have acted on it without the answer being
	// learnt.
	Unknown bool
	// Error describes the failure, for the dead letter and for operators.
	Error string
}

// BankRetries is what the store knows of a request's failed tries at the
// bank, this one included.
type BankRetries struct {
	// Spent is the time spent trying the bank: the sum of the deliveries'
	// own time at the bank and of the waits between them, each wait
	// counted up to MaxGap, so that time the request spent waiting for
	// reasons of ours (a paused process, a backlog) is not counted.
	Spent time.Duration
	// Attempts is the number of failed deliveries at the bank.
	Attempts int
	// Unknown says some failed delivery may have been acted on by the bank.
	Unknown bool
	// UnknownFor is how long ago the first such delivery was sent, by the
	// database's clock: the bank must still remember its key. A record
	// outlives a failed outcome (only an issued card deletes it) and a
	// replay keeps it, so the unknown is never forgotten while it matters.
	UnknownFor time.Duration
}

// RecordBankFailure adds f to the request's retry record and returns the
// record. maxGap bounds how much of the wait since the previous failure is
// counted as time spent trying (the longest retry delay, plus a margin).
// The clock is the database's, so processes with skewed clocks agree.
func (s *Store) RecordBankFailure(caller context.Context, f BankFailure, maxGap time.Duration) (BankRetries, error) {
	ctx, cancel := bound(caller)
	defer cancel()
	r, err := scanRetries(s.pool.QueryRow(ctx, `
		INSERT INTO bank_retries AS r (source, request_id, spent_ms, attempts, unknown, unknown_since, last_error)
		VALUES ($1, $2, $3, 1, $4, CASE WHEN $4 THEN now() - make_interval(secs => $3::bigint / 1000.0) END, $5)
		ON CONFLICT (source, request_id) DO UPDATE SET
			spent_ms = r.spent_ms + least(greatest((extract(epoch FROM now() - r.last_at) * 1000)::bigint, 0), $6::bigint),
			last_at = now(), attempts = r.attempts + 1,
			unknown = r.unknown OR EXCLUDED.unknown,
			unknown_since = coalesce(r.unknown_since, EXCLUDED.unknown_since),  -- when the first unknown try was sent
			last_error = EXCLUDED.last_error
		RETURNING `+retriesColumns,
		cleanText(f.Source), cleanText(f.RequestID), f.Took.Milliseconds(), f.Unknown, cleanText(f.Error), maxGap.Milliseconds()))
	if err != nil {
		return BankRetries{}, fmt.Errorf("recording a failed try at the bank: %w", unanswered(caller, err))
	}
	return r, nil
}

const retriesColumns = `spent_ms, attempts, unknown,
	coalesce((extract(epoch FROM now() - unknown_since) * 1000)::bigint, 0)`

func scanRetries(row pgx.Row) (BankRetries, error) {
	var r BankRetries
	var spentMS, unknownMS int64
	if err := row.Scan(&spentMS, &r.Attempts, &r.Unknown, &unknownMS); err != nil {
		return BankRetries{}, err
	}
	r.Spent = time.Duration(spentMS) * time.Millisecond
	r.UnknownFor = time.Duration(unknownMS) * time.Millisecond
	return r, nil
}
