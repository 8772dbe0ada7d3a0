package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Group commit: completions submitted while a transaction is in flight wait
// in a queue and are written together in the next one, by a single
// statement in a single round trip. A request's cost is then a share of a
// commit rather than a whole one, which is what lets throughput exceed the
// one-commit-per-request ceiling of Postgres.

const (
	maxCommitBatch = 512
	committers     = 1 // transactions in flight at once
)

func newCommitter(s *Store) *batcher[Completion, bool] {
	return newBatcher(committers, maxCommitBatch, CallTimeout, "commit", s.obs, s.writeCompletions)
}

// completeSQL writes a batch of completions in one statement, set-based,
// so Postgres starts its executor once per batch rather than once per row.
// The inbox insert gates the rest: a completion whose (source, id) is
// already in the inbox writes nothing, and its ordinal is not returned.
const completeSQL = `
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[],
        $6::bool[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::text[],
        $12::bigint[], $13::text[], $14::text[], $15::timestamptz[],
        $16::text[], $17::text[], $18::text[], $19::bytea[],
        $20::bool[], $21::text[], $22::text[], $23::text[], $24::text[], $25::bytea[],
        $26::bigint[], $27::bigint[], $28::timestamptz[], $29::bool[]
    ) WITH ORDINALITY AS t(source, request_id, payload_hash, outcome, reason,
        has_card, client_id, employee_id, savings_account_id, card_product_id, idempotency_key,
        card_id, card_token, card_status, issued_at,
        event_id, event_subject, event_headers, event_data,
        has_dl, dl_message, dl_bank_code, dl_subject, dl_headers, dl_data,
        dl_stream_seq, dl_deliveries, dl_first_seen, had_retries, i)
), inbox AS (
    INSERT INTO processed_requests (source, request_id, payload_hash, outcome, reason)
    SELECT source, request_id, payload_hash, outcome, nullif(reason, '') FROM input
    ON CONFLICT DO NOTHING
    RETURNING source, request_id
), won AS (
    SELECT input.* FROM input JOIN inbox USING (source, request_id)
), card AS (
    INSERT INTO card_orders (source, request_id, client_id, employee_id, savings_account_id,
        card_product_id, idempotency_key, card_id, card_token, status, issued_at)
    SELECT source, request_id, client_id, employee_id, savings_account_id,
        card_product_id, idempotency_key, card_id, card_token, card_status, issued_at
    FROM won WHERE has_card
), ob AS (
    INSERT INTO outbox (event_id, subject, headers, data)
    SELECT event_id, event_subject, event_headers::jsonb, event_data FROM won WHERE event_id <> ''
    ORDER BY i
), dl AS (
    INSERT INTO dead_letters (source, request_id, reason, message, bank_code, msg_subject,
        msg_headers, msg_data, stream_seq, deliveries, first_seen_at)
    SELECT source, request_id, reason, dl_message, nullif(dl_bank_code, ''), dl_subject,
        dl_headers::jsonb, dl_data, dl_stream_seq, dl_deliveries, dl_first_seen
    FROM won WHERE has_dl
    -- A replayed request that fails again updates its dead letter.
    ON CONFLICT (source, request_id) WHERE kind = 'outcome' DO UPDATE
    SET reason = EXCLUDED.reason, message = EXCLUDED.message, bank_code = EXCLUDED.bank_code,
        msg_headers = EXCLUDED.msg_headers, msg_data = EXCLUDED.msg_data,
        stream_seq = EXCLUDED.stream_seq, deliveries = EXCLUDED.deliveries,
        recorded_at = now(), replayed_at = NULL
), retries AS (
    -- A card was issued: the record of failed tries is done with. A failed
    -- outcome keeps it (whether some try's answer was unknown decides what
    -- a replay may do; see Replay); the purge removes it with age.
    DELETE FROM bank_retries r USING won
    WHERE won.had_retries AND won.outcome = 'issued' AND r.source = won.source AND r.request_id = won.request_id
)
SELECT i FROM won`

// writeCompletions commits a batch of completions in one transaction and
// one round trip.
func (s *Store) writeCompletions(ctx context.Context, batch []Completion) ([]bool, error) {
	n := len(batch)
	var (
		sources, ids, outcomes, reasons            = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		hashes                                     = make([][]byte, n)
		hasCard, hasDL                             = make([]bool, n), make([]bool, n)
		clients, accounts, products, cardIDs       = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		employees, keys, tokens, statuses          = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		issuedAt, firstSeen                        = make([]time.Time, n), make([]time.Time, n)
		eventIDs, eventSubjects, eventHeaders      = make([]string, n), make([]string, n), make([]string, n)
		eventData, dlData                          = make([][]byte, n), make([][]byte, n)
		dlMessages, dlCodes, dlSubjects, dlHeaders = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		dlSeqs, dlDeliveries                       = make([]int64, n), make([]int64, n)
		hadRetries                                 = make([]bool, n)
	)
	for i, c := range batch {
		sources[i], ids[i], hashes[i], outcomes[i], reasons[i] = cleanText(c.Source), cleanText(c.RequestID), c.PayloadHash, c.Outcome, c.Reason
		if hashes[i] == nil {
			hashes[i] = []byte{}
		}
		if o := c.Card; o != nil {
			hasCard[i] = true
			clients[i], employees[i], accounts[i], products[i] = o.ClientID, cleanText(o.EmployeeID), o.SavingsAccountID, o.CardProductID
			keys[i], cardIDs[i], tokens[i], statuses[i], issuedAt[i] = o.IdempotencyKey, o.CardID, cleanText(o.CardToken), cleanText(o.Status), o.IssuedAt
		}
		eventIDs[i], eventSubjects[i], eventData[i] = c.Event.EventID, c.Event.Subject, c.Event.Data
		h, err := headerJSON(c.Event.Header)
		if err != nil {
			return nil, err
		}
		eventHeaders[i] = h
		if d := c.DeadLetter; d != nil {
			hasDL[i] = true
			dlMessages[i], dlCodes[i], dlSubjects[i], dlData[i] = cleanText(d.Message), cleanText(d.BankCode), cleanText(d.Subject), d.Data
			dlSeqs[i], dlDeliveries[i], firstSeen[i] = int64(d.StreamSeq), int64(d.Deliveries), d.FirstSeen
			if dlHeaders[i], err = headerJSON(d.Header); err != nil {
				return nil, err
			}
		} else {
			dlHeaders[i] = "{}"
		}
		hadRetries[i] = c.HadRetries
		if eventData[i] == nil {
			eventData[i] = []byte{}
		}
		if dlData[i] == nil {
			dlData[i] = []byte{}
		}
	}
	// One statement is one transaction: no BEGIN and COMMIT round trips.
	rows, err := s.pool.Query(ctx, completeSQL, sources, ids, hashes, outcomes, reasons,
		hasCard, clients, employees, accounts, products, keys, cardIDs, tokens, statuses, issuedAt,
		eventIDs, eventSubjects, eventHeaders, eventData,
		hasDL, dlMessages, dlCodes, dlSubjects, dlHeaders, dlData, dlSeqs, dlDeliveries, firstSeen, hadRetries)
	if err != nil {
		return nil, fmt.Errorf("recording outcomes: %w", err)
	}
	defer rows.Close()
	inserted := make([]bool, n)
	for rows.Next() {
		var i int64
		if err := rows.Scan(&i); err != nil {
			return nil, fmt.Errorf("recording outcomes: %w", err)
		}
		inserted[i-1] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("recording outcomes: %w", err)
	}
	return inserted, nil
}

// headerJSON encodes NATS headers for a jsonb column. jsonb refuses the
// NUL character (\u0000) and JSON strings must be UTF-8, so names and
// values are made storable first (cleanText): a hostile header must not
// stop its message from being recorded.
func headerJSON(h map[string][]string) (string, error) {
	if len(h) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(cleanHeader(h))
	if err != nil {
		return "", fmt.Errorf("encoding headers: %w", err)
	}
	return string(b), nil
}

// cleanHeader returns h with every name and value made storable
// (cleanText), or h itself when nothing needed it.
func cleanHeader(h map[string][]string) map[string][]string {
	dirty := false
	for k, vs := range h {
		if cleanText(k) != k {
			dirty = true
		}
		for _, v := range vs {
			if cleanText(v) != v {
				dirty = true
			}
		}
	}
	if !dirty {
		return h
	}
	out := make(map[string][]string, len(h))
	for k, vs := range h {
		ck := cleanText(k)
		for _, v := range vs {
			out[ck] = append(out[ck], cleanText(v))
		}
	}
	return out
}
