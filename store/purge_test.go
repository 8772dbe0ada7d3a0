package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/store"
)

// Purge removes what is older than the retention, and only that: the inbox
// with its card orders, dead letters and retry records after Rows, the
// messages dead letters keep (personal data) after DeadLetterBodies.
func TestPurgeKeepsOnlyWhatTheRetentionAllows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Store(t)
	age := func(table, column, id string, d time.Duration) {
		_, err := s.Pool().Exec(ctx, `UPDATE `+table+` SET `+column+` = now() - $1::interval WHERE request_id = $2`, d, id)
		require.NoError(t, err)
	}
	for _, id := range []string{"old-issued", "young-issued"} {
		c := completion("urn:erp:acme", id, true)
		_, err := s.Complete(ctx, c)
		require.NoError(t, err)
	}
	for _, id := range []string{"old-failed", "mid-failed", "young-failed"} {
		_, err := s.Complete(ctx, failed(id, event.ReasonUnboundSource))
		require.NoError(t, err)
	}
	_, err := s.RecordBankFailure(ctx, store.BankFailure{Source: "urn:erp:acme", RequestID: "old-retry", Error: "503"}, time.Minute)
	require.NoError(t, err)
	_, err = s.Complete(ctx, failed("old-retry", event.ReasonRetriesExhausted)) // its outcome
	require.NoError(t, err)
	_, err = s.RecordBankFailure(ctx, store.BankFailure{Source: "urn:erp:acme", RequestID: "orphan-retry", Error: "503"}, time.Minute)
	require.NoError(t, err)
	age("bank_retries", "last_at", "orphan-retry", 181*24*time.Hour) // no outcome for twice the retention
	age("processed_requests", "processed_at", "old-issued", 100*24*time.Hour)
	age("processed_requests", "processed_at", "old-failed", 100*24*time.Hour)
	age("dead_letters", "recorded_at", "old-failed", 100*24*time.Hour)
	age("dead_letters", "recorded_at", "mid-failed", 40*24*time.Hour)
	age("bank_retries", "last_at", "old-retry", 100*24*time.Hour)

	p, err := s.Purge(ctx, store.Retention{Rows: 90 * 24 * time.Hour, DeadLetterBodies: 30 * 24 * time.Hour})
	require.NoError(t, err)
	require.Equal(t, store.Purged{Requests: 2, DeadLetters: 1, Bodies: 1, Retries: 2}, p)

	_, err = s.ProcessedRequest(ctx, "urn:erp:acme", "old-issued")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.CardOrder(ctx, "urn:erp:acme", "old-issued")
	require.ErrorIs(t, err, store.ErrNotFound, "the card order went with its request")
	_, err = s.CardOrder(ctx, "urn:erp:acme", "young-issued")
	require.NoError(t, err)
	for _, id := range []string{"mid-failed", "young-failed", "old-retry"} {
		_, err = s.ProcessedRequest(ctx, "urn:erp:acme", id)
		require.NoError(t, err, id)
	}
	mid := deadLetterOf(t, s, "mid-failed")
	require.NotNil(t, mid.BodyPurgedAt)
	require.Empty(t, mid.Data, "personal data cleared")
	require.Empty(t, mid.Header)
	require.Equal(t, event.ReasonUnboundSource, mid.Reason, "the dead letter itself stays")
	require.NotEmpty(t, deadLetterOf(t, s, "young-failed").Data)
	_, err = s.Replay(ctx, mid.ID)
	require.ErrorIs(t, err, store.ErrBodyPurged)

	again, err := s.Purge(ctx, store.Retention{Rows: 90 * 24 * time.Hour, DeadLetterBodies: 30 * 24 * time.Hour})
	require.NoError(t, err)
	require.Equal(t, store.Purged{}, again, "nothing left to purge")
}

// The record of an order whose answer is unknown is the only thing that
// stops a late delivery of its request from being sent to the bank again (or
// refused as request_expired, which tells the ERP to send a new request,
// while a card may exist). While the request has no outcome, its message is
// still in the stream and will be delivered (after a pause or an outage
// longer than the retention, say): the record must outlive the wait,
// whatever its age.
func TestPurgeKeepsTheRetryRecordOfARequestWithoutOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Store(t)
	_, err := s.RecordBankFailure(ctx, store.BankFailure{Source: "urn:erp:acme", RequestID: "in-flight", Unknown: true, Error: "connection reset"}, time.Minute)
	require.NoError(t, err)
	_, err = s.Pool().Exec(ctx, `UPDATE bank_retries SET last_at = now() - interval '100 days', unknown_since = now() - interval '100 days'`)
	require.NoError(t, err)

	p, err := s.Purge(ctx, store.Retention{Rows: 90 * 24 * time.Hour, DeadLetterBodies: 30 * 24 * time.Hour})
	require.NoError(t, err)
	require.Zero(t, p.Retries, "the request has no outcome yet: its record of an unknown answer stays")
	adm, err := s.Admit(ctx, store.AdmissionQuery{Source: "urn:erp:acme", RequestID: "in-flight", ClientID: 1})
	require.NoError(t, err)
	require.NotNil(t, adm.Retries)
	require.True(t, adm.Retries.Unknown)
}

// A dead letter kept under its place in the stream (a message that names no
// request, or one refused as not its publisher's) has no request for a
// replay to give an outcome: its replay is recorded again under the new
// copy's place. Replayed, it must not stay pending for ever, nor escape the
// purge.
func TestReplayedDeadLetterKeyedByItsPlaceInTheStreamIsNotPendingForEver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Store(t)
	c := completion("", "ERP/5", false)
	c.Event = store.OutboxEvent{} // nobody to answer
	c.DeadLetter = &store.DeadLetter{Reason: "invalid_event", Message: "not JSON", Subject: "employee.card.requested",
		Header: map[string][]string{}, Data: []byte("junk"), StreamSeq: 5, Deliveries: 1, FirstSeen: time.Now()}
	_, err := s.Complete(ctx, c)
	require.NoError(t, err)
	all, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Len(t, all, 1)
	dl := all[0]
	_, err = s.Replay(ctx, dl.ID)
	require.ErrorIs(t, err, store.ErrNoRequest, "replayed, it would be pending for ever: the copy is recorded under its own place")
	pending, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Len(t, pending, 1, "it stays in sight, as a dead letter never replayed")
	require.Nil(t, pending[0].ReplayedAt)
	_, err = s.Pool().Exec(ctx, `UPDATE dead_letters SET recorded_at = now() - interval '100 days'`)
	require.NoError(t, err)
	p, err := s.Purge(ctx, store.Retention{Rows: 90 * 24 * time.Hour, DeadLetterBodies: 30 * 24 * time.Hour})
	require.NoError(t, err)
	require.EqualValues(t, 1, p.DeadLetters, "purged after the retention")
}
