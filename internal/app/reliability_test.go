package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

func TestTransientFailuresEndInRetriesExhausted(t *testing.T) {
	b := setupWith(t, options{cfg: func(c *config.Config) {
		c.RetryFor = 2 * time.Second
		c.RetryDelayMax = 100 * time.Millisecond
		c.MBanq.MaxAttempts = 1
	}})
	require.NoError(t, b.sandbox.SetFaults(sandbox.Faults{ServerErrorRate: 1, ServerErrorStatus: 503, Paths: []string{"/v1/cards"}}))
	req := request(erp, 1)
	b.publish(t, req, event.Binary)

	o := b.outcomes(t, 1)[0]
	require.Equal(t, event.TypeCardFailed, o.Type)
	f := o.Data.(event.Failed)
	require.Equal(t, event.ReasonRetriesExhausted, f.Reason)
	require.Contains(t, f.Message, "the retry budget")
	dls, err := b.store.DeadLetters(context.Background(), store.DeadLetterFilter{Reason: event.ReasonRetriesExhausted})
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Greater(t, dls[0].Deliveries, uint64(1), "tried more than once")
	require.Empty(t, b.sandbox.Cards())
}

func TestSlowBankCallIsKeptAliveNotRedelivered(t *testing.T) {
	b := setupWith(t, options{cfg: func(c *config.Config) { c.NATS.AckWait = 2 * time.Second }})
	require.NoError(t, b.sandbox.SetFaults(sandbox.Faults{Latency: sandbox.Duration(5 * time.Second), Paths: []string{"/v1/cards"}}))
	b.publish(t, request(erp, 1), event.Binary)
	require.EqualValues(t, 1, b.settle(t))

	stream, err := b.js.Stream(context.Background(), "ERP")
	require.NoError(t, err)
	cons, err := stream.Consumer(context.Background(), "cardbridge")
	require.NoError(t, err)
	info, err := cons.Info(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 1, info.Delivered.Consumer, "InProgress kept the message from being redelivered during a 5s call with a 2s AckWait")
	require.Equal(t, 1, b.sandbox.CardCount(1))
}
