package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Group commit: completions submitted while a transaction is in flight wait
// in a queue and are written together in the next one, in a single round
// trip (a pgx batch). A request's cost is then a share of a commit rather
// than a whole one, which is what lets throughput exceed the
// one-commit-per-request ceiling of Postgres.

const (
	maxCommitBatch = 512
	committers     = 2 // transactions in flight at once
)

func newCommitter(s *Store) *batcher[Completion, bool] {
	return newBatcher(committers, maxCommitBatch, s.writeCompletions)
}

// completeSQL writes one completion. The inbox insert gates the other two:
// on a duplicate (source, id) nothing at all is written and the statement
// returns 0.
const completeSQL = `
WITH inbox AS (
    INSERT INTO processed_requests (source, request_id, payload_hash, outcome, reason)
    VALUES ($1, $2, $3, $4, nullif($5, ''))
    ON CONFLICT DO NOTHING
    RETURNING 1
), card AS (
    INSERT INTO card_orders (source, request_id, client_id, employee_id, savings_account_id,
        card_product_id, idempotency_key, card_id, card_token, status, issued_at)
    SELECT $1, $2, $6, $7, $8, $9, $10, $11, $12, $13, $14 FROM inbox WHERE $15::bool
), ob AS (
    INSERT INTO outbox (event_id, subject, headers, data)
    SELECT $16, $17, $18, $19 FROM inbox WHERE $16 <> ''
), dl AS (
    INSERT INTO dead_letters (source, request_id, reason, message, bank_code, msg_subject,
        msg_headers, msg_data, stream_seq, deliveries, first_seen_at)
    SELECT $1, $2, $5, $21, nullif($22, ''), $23, $24, $25, $26, $27, $28 FROM inbox WHERE $20::bool
    -- A replayed request that fails again updates its dead letter.
    ON CONFLICT (source, request_id) DO UPDATE
    SET reason = EXCLUDED.reason, message = EXCLUDED.message, bank_code = EXCLUDED.bank_code,
        msg_headers = EXCLUDED.msg_headers, msg_data = EXCLUDED.msg_data,
        stream_seq = EXCLUDED.stream_seq, deliveries = EXCLUDED.deliveries,
        recorded_at = now(), replayed_at = NULL
)
SELECT count(*) FROM inbox`

// writeCompletions commits a batch of completions in one transaction and
// one round trip.
func (s *Store) writeCompletions(ctx context.Context, batch []Completion) ([]bool, error) {
	inserted := make([]bool, len(batch))
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, c := range batch {
			var card CardOrder
			if c.Card != nil {
				card = *c.Card
			}
			var dl DeadLetter
			if c.DeadLetter != nil {
				dl = *c.DeadLetter
			}
			if dl.Header == nil {
				dl.Header = map[string][]string{}
			}
			b.Queue(completeSQL,
				cleanText(c.Source), cleanText(c.RequestID), c.PayloadHash, c.Outcome, c.Reason,
				card.ClientID, cleanText(card.EmployeeID), card.SavingsAccountID, card.CardProductID,
				card.IdempotencyKey, card.CardID, cleanText(card.CardToken), cleanText(card.Status), card.IssuedAt,
				c.Card != nil,
				c.Event.EventID, c.Event.Subject, c.Event.Header, c.Event.Data,
				c.DeadLetter != nil,
				cleanText(dl.Message), cleanText(dl.BankCode), cleanText(dl.Subject), dl.Header, dl.Data,
				dl.StreamSeq, dl.Deliveries, dl.FirstSeen)
		}
		b.Queue(`SELECT pg_notify($1, '')`, s.outboxChannel())
		br := tx.SendBatch(ctx, b)
		for i := range batch {
			var n int
			if err := br.QueryRow().Scan(&n); err != nil {
				_ = br.Close()
				return fmt.Errorf("recording outcome: %w", err)
			}
			inserted[i] = n == 1
		}
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return fmt.Errorf("notifying relay: %w", err)
		}
		return br.Close()
	})
	if err != nil {
		return nil, err
	}
	return inserted, nil
}
