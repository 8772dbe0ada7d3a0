package app_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/store"
)

func TestReplayRedrivesAFailedRequestOnceAndNeverAnIssuedOne(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	req := request("urn:erp:late", 1)
	b.publish(t, req, event.Binary)
	first := b.outcomes(t, 1)[0]
	require.Equal(t, event.ReasonUnboundSource, first.Data.(event.Failed).Reason)

	// The operator fixes the cause, then replays.
	require.NoError(t, b.store.AddBinding(ctx, store.Binding{Source: "urn:erp:late", ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))
	results, err := consumer.ReplayMatching(ctx, b.store, b.js, store.DeadLetterFilter{Reason: event.ReasonUnboundSource})
	require.NoError(t, err)
	require.Len(t, results, 1)
	require.NoError(t, results[0].Err)
	require.Equal(t, req.ID, results[0].DeadLetter.RequestID)

	outs := b.outcomes(t, 2)
	second := outs[1]
	require.Equal(t, event.TypeCardIssued, second.Type)
	require.NotEqual(t, first.ID, second.ID, "a replay's outcome has an id of its own")
	require.Equal(t, req.ID, second.Data.(event.Issued).RequestID, "the original CloudEvent id is kept")
	require.EqualValues(t, 2, b.settle(t))
	require.Equal(t, 1, b.sandbox.CardCount(1))

	// Replaying again is refused: the request has its card.
	_, err = consumer.Replay(ctx, b.store, b.js, results[0].DeadLetter.ID)
	require.ErrorIs(t, err, store.ErrAlreadyIssued)
	require.True(t, consumer.ReplayRefused(err))
	require.EqualValues(t, 2, b.settle(t))
	require.Equal(t, 1, b.sandbox.CardCount(1))

	// Nothing is left to replay by filter.
	left, err := b.store.DeadLetters(ctx, store.DeadLetterFilter{Reason: event.ReasonUnboundSource})
	require.NoError(t, err)
	require.Empty(t, left)
}
