package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds the read-only queries of the operations console and the
// metrics. None of them selects a secret: no sealed password, no message
// body.

// RequestSummary is one processed request as an operator sees it: its
// outcome, the card when one was issued, and why it failed otherwise.
type RequestSummary struct {
	Source      string
	RequestID   string
	Outcome     string // OutcomeIssued or OutcomeFailed
	Reason      string // failure reason; empty when issued
	ProcessedAt time.Time
	// Card fields; zero unless issued.
	ClientID   int64
	EmployeeID string
	CardID     int64
	CardStatus string
	// DeadLetterID and Message describe a failure; zero when issued.
	DeadLetterID int64
	Message      string
}

// recentWindows are the spans RecentRequests looks back over in turn, until
// one holds limit requests; the last, zero, is the whole inbox. A bounded
// span reads only the recent end of the table through the BRIN index on
// processed_at (migration 00004) instead of sorting all of it.
var recentWindows = []time.Duration{time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 0}

// RecentRequests returns the last limit processed requests, newest first.
func (s *Store) RecentRequests(ctx context.Context, limit int) ([]RequestSummary, error) {
	var out []RequestSummary
	for _, w := range recentWindows {
		var err error
		if out, err = s.recentRequests(ctx, limit, w); err != nil {
			return nil, err
		}
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

const recentRequestsSQL = `
SELECT p.source, p.request_id, p.outcome, coalesce(p.reason, ''), p.processed_at,
       coalesce(c.client_id, 0), coalesce(c.employee_id, ''), coalesce(c.card_id, 0), coalesce(c.status, ''),
       coalesce(d.id, 0), coalesce(d.message, '')
FROM processed_requests p
LEFT JOIN card_orders c ON c.source = p.source AND c.request_id = p.request_id
LEFT JOIN dead_letters d ON p.outcome = 'failed' AND d.source = p.source AND d.request_id = p.request_id
`

const recentRequestsOrder = `
ORDER BY p.processed_at DESC, p.request_id
LIMIT $1`

// recentRequests returns the last limit requests processed within window
// (0: ever), newest first.
func (s *Store) recentRequests(ctx context.Context, limit int, window time.Duration) ([]RequestSummary, error) {
	// Two statements rather than one with an OR: the pool's generic plans
	// could not use the index for a condition that may be switched off.
	query, args := recentRequestsSQL+recentRequestsOrder, []any{limit}
	if window > 0 {
		query, args = recentRequestsSQL+`WHERE p.processed_at > now() - $2::interval`+recentRequestsOrder, []any{limit, window}
	}
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing recent requests: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (RequestSummary, error) {
		var q RequestSummary
		err := r.Scan(&q.Source, &q.RequestID, &q.Outcome, &q.Reason, &q.ProcessedAt,
			&q.ClientID, &q.EmployeeID, &q.CardID, &q.CardStatus, &q.DeadLetterID, &q.Message)
		return q, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing recent requests: %w", err)
	}
	return out, nil
}

// DeadLetterSummary is a dead letter without its message body, and the
// request's outcome now (after a replay it may have been issued).
type DeadLetterSummary struct {
	ID          int64
	Source      string
	RequestID   string
	Reason      string
	Message     string
	BankCode    string
	Deliveries  uint64
	RecordedAt  time.Time
	ReplayedAt  *time.Time
	ReplayCount int
	// Outcome is the request's inbox outcome now: OutcomeFailed, or
	// OutcomeIssued after a successful replay, or "" while a replay is
	// being handled.
	Outcome string
}

// RecentDeadLetters returns the last limit dead letters, newest first,
// replayed ones included.
func (s *Store) RecentDeadLetters(ctx context.Context, limit int) ([]DeadLetterSummary, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT d.id, d.source, d.request_id, d.reason, d.message, coalesce(d.bank_code, ''), d.deliveries,
		       d.recorded_at, d.replayed_at, d.replay_count, coalesce(p.outcome, '')
		FROM dead_letters d
		LEFT JOIN processed_requests p ON p.source = d.source AND p.request_id = d.request_id
		ORDER BY d.id DESC
		LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeadLetterSummary, error) {
		var d DeadLetterSummary
		err := r.Scan(&d.ID, &d.Source, &d.RequestID, &d.Reason, &d.Message, &d.BankCode, &d.Deliveries,
			&d.RecordedAt, &d.ReplayedAt, &d.ReplayCount, &d.Outcome)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing dead letters: %w", err)
	}
	return out, nil
}

// pendingDeadLettersSQL counts through the partial indexes of migration
// 00007: the never-replayed dead letters, and the replayed ones probed for
// an outcome; it reads neither all of the table nor all of the inbox.
const pendingDeadLettersSQL = `
SELECT reason, count(*) FROM (
    SELECT reason FROM dead_letters WHERE replayed_at IS NULL
    UNION ALL
    SELECT d.reason FROM dead_letters d WHERE d.replayed_at IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM processed_requests p WHERE p.source = d.source AND p.request_id = d.request_id)
) pending GROUP BY reason`

// PendingDeadLetters counts the dead letters that still need a person
// (never replayed, or replayed without an outcome since), by reason.
func (s *Store) PendingDeadLetters(ctx context.Context) (map[string]int64, error) {
	return s.countBy(ctx, "counting dead letters",
		pendingDeadLettersSQL)
}

// SelfServiceUserCounts counts the self-service users, by status.
func (s *Store) SelfServiceUserCounts(ctx context.Context) (map[string]int64, error) {
	return s.countBy(ctx, "counting self-service users",
		`SELECT status, count(*) FROM self_service_users GROUP BY status`)
}

func (s *Store) countBy(ctx context.Context, what, query string) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var k string
		var n int64
		if err := rows.Scan(&k, &n); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out[k] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// UserSummary is a self-service user without its password.
type UserSummary struct {
	ClientID    int64
	Username    string
	MBanqUserID int64 // 0 while provisioning
	Status      string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// SelfServiceUserSummaries lists every self-service user, by client; the
// sealed password is never read.
func (s *Store) SelfServiceUserSummaries(ctx context.Context) ([]UserSummary, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT client_id, username, coalesce(mbanq_user_id, 0), status, created_at, updated_at
		FROM self_service_users ORDER BY client_id`)
	if err != nil {
		return nil, fmt.Errorf("listing self-service users: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (UserSummary, error) {
		var u UserSummary
		err := r.Scan(&u.ClientID, &u.Username, &u.MBanqUserID, &u.Status, &u.CreatedAt, &u.UpdatedAt)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing self-service users: %w", err)
	}
	return out, nil
}
