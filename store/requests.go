package store

import (
	"context"
	"fmt"
	"time"

	"github.com/cardbridge/cardbridge/event"
)

// Request outcomes recorded in the inbox.
const (
	OutcomeIssued = "issued"
	OutcomeFailed = "failed"
)

// ProcessedRequest is the inbox row of a request that reached its outcome.
type ProcessedRequest struct {
	Source      string
	RequestID   string
	PayloadHash []byte
	Outcome     string
	Reason      string
	ProcessedAt time.Time
}

// CardOrder is a card MBanq issued for a request.
type CardOrder struct {
	ClientID         int64
	EmployeeID       string
	SavingsAccountID int64
	CardProductID    int64
	IdempotencyKey   string
	CardID           int64
	CardToken        string
	Status           string
	IssuedAt         time.Time
}

// OutboxEvent is an outbox row: an outcome event, encoded as the message
// the relay publishes byte for byte (a binary-mode CloudEvent), under its
// event id.
type OutboxEvent struct {
	ID      int64 // outbox row id; set when read back
	EventID string
	event.Message
	// Age is how long ago the row was committed, by the database's clock;
	// set when read back.
	Age time.Duration
}

// Completion is everything written when a request reaches its outcome: the
// inbox row, the card order (for an issued card) and the outcome event. It
// is written in one transaction or not at all.
type Completion struct {
	Source      string
	RequestID   string
	PayloadHash []byte
	Outcome     string // OutcomeIssued or OutcomeFailed
	Reason      string // failure reason code; empty when issued
	Card        *CardOrder
	// Event is the outcome event; none when its EventID is empty (a
	// message that named no request has no one to answer).
	Event OutboxEvent
	// DeadLetter keeps the original message of a request that failed.
	DeadLetter *DeadLetter
	// HadRetries says the request may have a bank_retries row (it failed
	// at the bank before, or was delivered more than once), which the
	// commit then deletes; a first delivery that succeeds skips the work.
	HadRetries bool
}

// DeadLetter is the original message of a failed request and why it failed.
type DeadLetter struct {
	ID         int64
	Source     string
	RequestID  string
	Reason     string
	Message    string
	BankCode   string
	Subject    string // the NATS subject it arrived on
	Header     map[string][]string
	Data       []byte
	StreamSeq  uint64
	Deliveries uint64
	FirstSeen  time.Time
	RecordedAt time.Time
	ReplayedAt *time.Time
	// ReplayCount is how often the request was replayed: its generation.
	ReplayCount int
	// Kind is DeadLetterOutcome or DeadLetterConflict.
	Kind string
	// OrderKeyGeneration is the generation of the card order's
	// Idempotency-Key; see Store.Replay.
	OrderKeyGeneration int
	// BodyPurgedAt is when the original message (Header, Data) was
	// cleared by the retention; nil while it is kept.
	BodyPurgedAt *time.Time
	// Publisher is the NATS identity its source is now bound to ("" for
	// none); set by Replay only, so that the replay is published where
	// that source is accepted (see consumer.ReplayMessage).
	Publisher string
}

// Kinds of dead letter.
const (
	// DeadLetterOutcome is a request's failed outcome: one per request.
	DeadLetterOutcome = "outcome"
	// DeadLetterConflict is a message refused without an outcome of its
	// own (a request id reused with other data): one per message.
	DeadLetterConflict = "conflict"
)

// ProcessedRequest returns the inbox row of (source, id), or ErrNotFound.
func (s *Store) ProcessedRequest(caller context.Context, source, id string) (ProcessedRequest, error) {
	ctx, cancel := bound(caller)
	defer cancel()
	p := ProcessedRequest{}
	err := s.pool.QueryRow(ctx, `
		SELECT source, request_id, payload_hash, outcome, coalesce(reason, ''), processed_at
		FROM processed_requests WHERE source = $1 AND request_id = $2`, cleanText(source), cleanText(id)).
		Scan(&p.Source, &p.RequestID, &p.PayloadHash, &p.Outcome, &p.Reason, &p.ProcessedAt)
	if err != nil {
		return ProcessedRequest{}, fmt.Errorf("reading processed request: %w", notFound(unanswered(caller, err)))
	}
	return p, nil
}

// Complete records c. It reports false, with no error and nothing written,
// when (source, id) had already been completed: the caller acknowledges
// the message and publishes nothing more.
//
// Concurrent calls are grouped into one transaction (group commit), so the
// cost of a commit is shared by every request waiting for one.
func (s *Store) Complete(ctx context.Context, c Completion) (bool, error) {
	return s.commit.do(ctx, c)
}

// CardOrder returns the card issued for (source, id), or ErrNotFound.
func (s *Store) CardOrder(ctx context.Context, source, id string) (CardOrder, error) {
	var o CardOrder
	err := s.pool.QueryRow(ctx, `
		SELECT client_id, employee_id, savings_account_id, card_product_id, idempotency_key,
		       card_id, card_token, status, issued_at
		FROM card_orders WHERE source = $1 AND request_id = $2`, cleanText(source), cleanText(id)).
		Scan(&o.ClientID, &o.EmployeeID, &o.SavingsAccountID, &o.CardProductID, &o.IdempotencyKey,
			&o.CardID, &o.CardToken, &o.Status, &o.IssuedAt)
	if err != nil {
		return CardOrder{}, fmt.Errorf("reading card order: %w", notFound(err))
	}
	return o, nil
}
