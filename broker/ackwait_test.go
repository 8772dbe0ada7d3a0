package broker_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/broker"
	"github.com/cardbridge/cardbridge/internal/testenv"
)

// An existing consumer with cardbridge's earlier default ack wait (a minute)
// is brought to the new default; one set by hand is kept unless the operator
// chose an ack wait (CARDBRIDGE_ACK_WAIT).
func TestAlignAckWait(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		existing time.Duration
		want     time.Duration
		chosen   bool
		after    time.Duration
	}{
		{"earlier default", broker.LegacyAckWait, broker.DefaultAckWait, false, broker.DefaultAckWait},
		{"set by hand", 30 * time.Second, broker.DefaultAckWait, false, 30 * time.Second},
		{"chosen by the operator", 30 * time.Second, 20 * time.Second, true, 20 * time.Second},
		{"chosen, the earlier default", broker.LegacyAckWait, broker.LegacyAckWait, true, broker.LegacyAckWait},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := testenv.NATS(t)
			_, js := testenv.JetStream(t, ns.URL())
			top := broker.DefaultTopology()
			top.AckWait = tc.existing
			_, err := broker.Ensure(ctx, js, top) // as an earlier version, or an operator, made it
			require.NoError(t, err)

			top.AckWait = tc.want
			cons, err := broker.Ensure(ctx, js, top)
			require.NoError(t, err)
			require.Equal(t, tc.existing, cons.CachedInfo().Config.AckWait, "Ensure leaves an existing consumer as it is")
			cons, err = broker.AlignAckWait(ctx, js, cons, top, tc.chosen)
			require.NoError(t, err)
			require.Equal(t, tc.after, cons.CachedInfo().Config.AckWait)
			info, err := cons.Info(ctx)
			require.NoError(t, err)
			require.Equal(t, tc.after, info.Config.AckWait, "on the server")
			require.Equal(t, -1, info.Config.MaxDeliver, "the rest of the configuration unchanged")
			require.Equal(t, top.MaxAckPending, info.Config.MaxAckPending)
		})
	}
}
