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

// failed is the completion of a request that failed with reason, with its
// dead letter.
func failed(id, reason string) store.Completion {
	c := completion("urn:erp:acme", id, false)
	c.Reason = reason
	c.DeadLetter = &store.DeadLetter{Reason: reason, Message: "m", Subject: "employee.card.requested",
		Header: map[string][]string{"ce-id": {id}}, Data: []byte(`{}`), StreamSeq: 1, Deliveries: 1, FirstSeen: time.Now()}
	return c
}

func deadLetterOf(t *testing.T, s *store.Store, id string) store.DeadLetter {
	t.Helper()
	dls, err := s.DeadLetters(context.Background(), store.DeadLetterFilter{Source: "urn:erp:acme", Kind: store.DeadLetterOutcome, IncludeReplayed: true})
	require.NoError(t, err)
	for _, d := range dls {
		if d.RequestID == id {
			return d
		}
	}
	t.Fatalf("no dead letter for %s", id)
	return store.DeadLetter{}
}

func admit(t *testing.T, s *store.Store, id string) store.Admission {
	t.Helper()
	a, err := s.Admit(context.Background(), store.AdmissionQuery{Source: "urn:erp:acme", RequestID: id, ClientID: 1})
	require.NoError(t, err)
	return a
}

// The order's key moves on only after a definite refusal, once per
// released refusal: a second replay while the first has no outcome keeps
// it, so the two order under one key.
func TestReplayMovesTheOrderKeyOnlyAfterARefusal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Store(t)
	require.Equal(t, event.ReasonBankRejected, "bank_rejected", "store's copy of the reason")
	for _, reason := range []string{event.ReasonBankRejected, event.ReasonBankOutcomeUnknown, event.ReasonRetriesExhausted, event.ReasonUnboundSource} {
		_, err := s.Complete(ctx, failed(reason, reason))
		require.NoError(t, err)
	}

	d := deadLetterOf(t, s, event.ReasonBankRejected)
	r, err := s.Replay(ctx, d.ID)
	require.NoError(t, err)
	require.Equal(t, 1, r.ReplayCount)
	require.Equal(t, 1, r.OrderKeyGeneration, "a refusal is remembered under the old key")
	a := admit(t, s, event.ReasonBankRejected)
	require.Nil(t, a.Processed, "released")
	require.Equal(t, 1, a.Generation)
	require.Equal(t, 1, a.OrderKeyGeneration)

	r, err = s.Replay(ctx, d.ID) // again, before the first has an outcome
	require.NoError(t, err)
	require.Equal(t, 2, r.ReplayCount, "a new outcome generation")
	require.Equal(t, 1, r.OrderKeyGeneration, "the same key: two replays in flight order one card")

	// It fails again as bank_rejected: the next replay moves the key on.
	again := failed(event.ReasonBankRejected, event.ReasonBankRejected)
	again.Event.EventID = "ev-replay-2"
	_, err = s.Complete(ctx, again)
	require.NoError(t, err)
	r, err = s.Replay(ctx, d.ID)
	require.NoError(t, err)
	require.Equal(t, 2, r.OrderKeyGeneration)

	for _, reason := range []string{event.ReasonBankOutcomeUnknown, event.ReasonRetriesExhausted, event.ReasonUnboundSource} {
		r, err := s.Replay(ctx, deadLetterOf(t, s, reason).ID)
		require.NoError(t, err)
		require.Zero(t, r.OrderKeyGeneration, "%s keeps the key, so an existing card is found", reason)
	}

	// Issued now: refused.
	c := completion("urn:erp:acme", event.ReasonBankRejected, true)
	c.Event.EventID = "ev-replay-3"
	_, err = s.Complete(ctx, c)
	require.NoError(t, err)
	_, err = s.Replay(ctx, d.ID)
	require.ErrorIs(t, err, store.ErrAlreadyIssued)
}

// A replay without an outcome stays listed and counted as pending.
func TestReplayWithoutAnOutcomeStaysPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Store(t)
	_, err := s.Complete(ctx, failed("r1", event.ReasonUnboundSource))
	require.NoError(t, err)
	d := deadLetterOf(t, s, "r1")
	_, err = s.Replay(ctx, d.ID)
	require.NoError(t, err)
	pending, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Len(t, pending, 1, "released, no outcome yet: still listed")
	counts, err := s.PendingDeadLetters(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, counts[event.ReasonUnboundSource])

	// Its outcome arrives: no longer pending.
	c := completion("urn:erp:acme", "r1", true)
	c.Event.EventID = "ev-replay-1"
	_, err = s.Complete(ctx, c)
	require.NoError(t, err)
	pending, err = s.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Empty(t, pending)
}

// Conflicts are kept beside the request's own dead letter, one per message,
// and are not replayable.
func TestConflictsAreKeptBesideTheDeadLetter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Store(t)
	_, err := s.Complete(ctx, failed("r1", event.ReasonUnboundSource))
	require.NoError(t, err)
	conflict := store.DeadLetter{Source: "urn:erp:acme", RequestID: "r1", Reason: event.ReasonDuplicateConflict, Message: "other data",
		Subject: "employee.card.requested", Header: map[string][]string{"x-junk": {"a\x00b"}, "bad\x00name": {"\xff"}},
		Data: []byte(`{}`), StreamSeq: 7, Deliveries: 1, FirstSeen: time.Now()}
	require.NoError(t, s.AddConflict(ctx, conflict))
	require.NoError(t, s.AddConflict(ctx, conflict), "a redelivery of the same message")
	conflict.StreamSeq = 8
	require.NoError(t, s.AddConflict(ctx, conflict), "another message")
	all, err := s.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Len(t, all, 3)
	conflicts, err := s.DeadLetters(ctx, store.DeadLetterFilter{Kind: store.DeadLetterConflict})
	require.NoError(t, err)
	require.Len(t, conflicts, 2)
	require.Equal(t, []string{"a\uFFFDb"}, conflicts[0].Header["x-junk"], "NUL made storable")
	_, err = s.Replay(ctx, conflicts[0].ID)
	require.ErrorIs(t, err, store.ErrNotReplayable)
}

// The time spent trying the bank adds up the deliveries' own time and the
// waits between them, each wait counted up to the gap.
func TestRecordBankFailureAddsTimeAndKeepsUnknown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Store(t)
	f := store.BankFailure{Source: "urn:erp:acme", RequestID: "r1", Took: 1500 * time.Millisecond, Error: "503"}
	r, err := s.RecordBankFailure(ctx, f, time.Hour)
	require.NoError(t, err)
	require.Equal(t, 1500*time.Millisecond, r.Spent)
	require.Equal(t, 1, r.Attempts)
	require.False(t, r.Unknown)

	// The last try was 10 minutes ago (as if the process had paused): only
	// the gap of 1 minute counts.
	_, err = s.Pool().Exec(ctx, `UPDATE bank_retries SET last_at = now() - interval '10 minutes'`)
	require.NoError(t, err)
	f.Unknown = true
	r, err = s.RecordBankFailure(ctx, f, time.Minute)
	require.NoError(t, err)
	require.Equal(t, 61500*time.Millisecond, r.Spent)
	require.True(t, r.Unknown)

	// A definite failure after an unknown one: still unknown.
	f.Unknown = false
	r, err = s.RecordBankFailure(ctx, f, time.Minute)
	require.NoError(t, err)
	require.True(t, r.Unknown)
	require.Equal(t, 3, r.Attempts)

	// Admission reads it.
	a := admit(t, s, "r1")
	require.NotNil(t, a.Retries)
	require.True(t, a.Retries.Unknown)
	require.Equal(t, 3, a.Retries.Attempts)

	// A failed outcome keeps the record (a replay must know of the unknown
	// answer); the replay resets the budget and keeps the unknown; an
	// issued card deletes it.
	c := failed("r1", event.ReasonBankOutcomeUnknown)
	c.HadRetries = true
	_, err = s.Complete(ctx, c)
	require.NoError(t, err)
	_, err = s.Replay(ctx, deadLetterOf(t, s, "r1").ID)
	require.NoError(t, err)
	a = admit(t, s, "r1")
	require.NotNil(t, a.Retries)
	require.True(t, a.Retries.Unknown, "the replay keeps the unknown")
	require.Zero(t, a.Retries.Spent, "and resets the budget")
	issued := completion("urn:erp:acme", "r1", true)
	issued.Event.EventID, issued.HadRetries = "ev-r1-issued", true
	_, err = s.Complete(ctx, issued)
	require.NoError(t, err)
	require.Nil(t, admit(t, s, "r1").Retries, "an issued card deletes the record")
}

// A bank_rejected after an unknown answer under the same key (it cannot be
// reported so by the consumer, but a record from an earlier delivery may
// say so) does not move the key on at replay.
func TestReplayKeepsTheKeyWhenAnAnswerWasUnknown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := testenv.Store(t)
	_, err := s.RecordBankFailure(ctx, store.BankFailure{Source: "urn:erp:acme", RequestID: "r2", Unknown: true, Error: "timeout"}, time.Minute)
	require.NoError(t, err)
	c := failed("r2", event.ReasonBankRejected)
	_, err = s.Complete(ctx, c)
	require.NoError(t, err)
	r, err := s.Replay(ctx, deadLetterOf(t, s, "r2").ID)
	require.NoError(t, err)
	require.Zero(t, r.OrderKeyGeneration, "a card may exist under the key")
}
