package broker_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/testenv"
)

// An existing consumer with cardbridge's earlier default ack wait (a minute)
// is brought to the new default; one set by hand is kept unless the operator
// chose an ack wait (CARDBRIDGE_ACK_WAIT).
func TestAlignAckWait(t *testing.T) {
	t.Parallel()
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

// A process whose NATS user may not update the consumer (a deployment
// that locked cardbridge's permissions down after an earlier version
// created it) still starts: bringing an earlier default to the new one is
// not what it was asked for, so it keeps the ack wait in force and says
// why, rather than refusing to run.
func TestAlignAckWaitKeepsTheAckWaitWhenTheConsumerCannotBeUpdated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns, err := broker.StartEmbeddedWith(t.TempDir(), 0, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "admin", Password: "admin-secret"},
			{Username: "cardbridge", Password: "cardbridge-secret", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{">"},
					Deny: []string{"$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>"}},
			}},
		}
	})
	require.NoError(t, err)
	t.Cleanup(ns.Stop)
	as := func(user string) string {
		u, err := url.Parse(ns.URL())
		require.NoError(t, err)
		u.User = url.UserPassword(user, user+"-secret")
		return u.String()
	}
	_, admin := testenv.JetStream(t, as("admin"))
	top := broker.DefaultTopology()
	top.AckWait = broker.LegacyAckWait
	_, err = broker.Ensure(ctx, admin, top) // as an earlier version made it
	require.NoError(t, err)

	_, js := testenv.JetStream(t, as("cardbridge"))
	top.AckWait = broker.DefaultAckWait
	cons, err := broker.Ensure(ctx, js, top)
	require.NoError(t, err)
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kept, err := broker.AlignAckWait(actx, js, cons, top, false)
	require.ErrorIs(t, err, broker.ErrAckWaitKept, "not fatal: the ack wait in force is kept")
	require.NotNil(t, kept)
	require.Equal(t, broker.LegacyAckWait, kept.CachedInfo().Config.AckWait)

	// Chosen by the operator (CARDBRIDGE_ACK_WAIT), it must be set.
	_, err = broker.AlignAckWait(actx, js, cons, top, true)
	require.Error(t, err)
	require.NotErrorIs(t, err, broker.ErrAckWaitKept)
}
