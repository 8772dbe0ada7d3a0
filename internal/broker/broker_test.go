package broker_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/testenv"
)

func ensure(t *testing.T, js jetstream.JetStream, replicas int) (*testenv.LogBuffer, error) {
	t.Helper()
	logs := &testenv.LogBuffer{}
	topo := broker.DefaultTopology()
	topo.Replicas = replicas
	topo.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := broker.Ensure(ctx, js, topo)
	return logs, err
}

// replicasOf reads the replicas of the streams and the durable consumer,
// and checks that a clustered stream really has that many copies placed.
func replicasOf(t *testing.T, js jetstream.JetStream) (erp, cards, consumer int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topo := broker.DefaultTopology()
	streamReplicas := func(name string) int {
		st, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info := st.CachedInfo()
		if info.Cluster != nil && info.Cluster.Leader != "" {
			require.Len(t, info.Cluster.Replicas, info.Config.Replicas-1, "%s: followers placed besides the leader", name)
		}
		return info.Config.Replicas
	}
	cons, err := js.Consumer(ctx, topo.RequestStream, topo.Consumer)
	require.NoError(t, err)
	return streamReplicas(topo.RequestStream), streamReplicas(topo.OutcomeStream), cons.CachedInfo().Config.Replicas
}

func warnings(logs *testenv.LogBuffer) []map[string]any {
	var out []map[string]any
	for _, l := range logs.Lines() {
		if l["level"] == "WARN" {
			out = append(out, l)
		}
	}
	return out
}

func TestEnsureReplicatesStreamsOnACluster(t *testing.T) {
	t.Parallel()
	c := testenv.StartNATSCluster(t, 3)
	_, js := testenv.JetStream(t, c.URL())
	logs, err := ensure(t, js, 0)
	require.NoError(t, err)
	erp, cards, cons := replicasOf(t, js)
	require.Equal(t, 3, erp)
	require.Equal(t, 3, cards)
	require.Equal(t, 3, cons, "the durable consumer follows its stream")
	require.Empty(t, warnings(logs), logs.String())

	// A second start finds them as they are, and says nothing.
	logs, err = ensure(t, js, 0)
	require.NoError(t, err)
	require.Empty(t, warnings(logs), logs.String())
}

func TestEnsureOnOneServerKeepsOneCopy(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv.URL())
	logs, err := ensure(t, js, 0)
	require.NoError(t, err)
	erp, cards, cons := replicasOf(t, js)
	require.Equal(t, []int{1, 1, 1}, []int{erp, cards, cons})
	require.Empty(t, warnings(logs), "one copy is all a single server has: "+logs.String())
}

func TestEnsureReplicasSettingOverrides(t *testing.T) {
	t.Parallel()
	c := testenv.StartNATSCluster(t, 3)
	_, js := testenv.JetStream(t, c.URL())
	_, err := ensure(t, js, 1)
	require.NoError(t, err)
	erp, cards, cons := replicasOf(t, js)
	require.Equal(t, []int{1, 1, 1}, []int{erp, cards, cons})

	// A single server cannot keep the copies the setting asks for: the
	// start fails and says which setting asked.
	srv := testenv.NATS(t)
	_, single := testenv.JetStream(t, srv.URL())
	_, err = ensure(t, single, 3)
	require.ErrorContains(t, err, "with 3 replicas (CARDBRIDGE_STREAM_REPLICAS)")
}

func TestEnsureOnATwoServerClusterFallsBackToOneCopy(t *testing.T) {
	t.Parallel()
	c := testenv.StartNATSCluster(t, 2)
	_, js := testenv.JetStream(t, c.URL())
	logs, err := ensure(t, js, 0)
	require.NoError(t, err)
	erp, cards, cons := replicasOf(t, js)
	require.Equal(t, []int{1, 1, 1}, []int{erp, cards, cons})
	w := warnings(logs)
	require.Len(t, w, 2, logs.String())
	for i, name := range []string{"ERP", "CARDS"} {
		require.Equal(t, name, w[i]["stream"])
		require.Contains(t, w[i]["msg"], "cannot keep 3 copies")
	}
}

func TestEnsureLeavesAnExistingStreamWithAWarning(t *testing.T) {
	t.Parallel()
	c := testenv.StartNATSCluster(t, 3)
	_, js := testenv.JetStream(t, c.URL())
	topo := broker.DefaultTopology()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: topo.OutcomeStream, Subjects: topo.OutcomeSubjects, Replicas: 1})
	require.NoError(t, err)

	logs, err := ensure(t, js, 0)
	require.NoError(t, err)
	erp, cards, cons := replicasOf(t, js)
	require.Equal(t, 3, erp, "a missing stream is created replicated")
	require.Equal(t, 1, cards, "an existing stream is left as it is")
	require.Equal(t, 3, cons)
	w := warnings(logs)
	require.Len(t, w, 1, logs.String())
	require.Equal(t, "CARDS", w[0]["stream"])
	require.Contains(t, w[0]["msg"], "not replicated on a NATS cluster")
}

// The request stream forgets a Nats-Msg-Id almost at once: an ERP that
// publishes another ERP's Nats-Msg-Id first does not get that ERP's request
// dropped as a duplicate (cardbridge deduplicates on source and id itself).
func TestRequestStreamDoesNotLetOneERPSwallowAnothersRequest(t *testing.T) {
	t.Parallel()
	srv := testenv.NATS(t)
	_, js := testenv.JetStream(t, srv.URL())
	_, err := ensure(t, js, 0)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, broker.DefaultTopology().RequestStream)
	require.NoError(t, err)
	require.Equal(t, broker.RequestDuplicateWindow, st.CachedInfo().Config.Duplicates)

	_, err = js.Publish(ctx, "employee.card.requested.acme", []byte("junk"), jetstream.WithMsgID("PO-2026-0042"))
	require.NoError(t, err)
	// Globex publishes its request with the same Nats-Msg-Id: stored as
	// soon as the window has passed (with a 2-minute window, never within
	// this test).
	require.Eventually(t, func() bool {
		ack, err := js.Publish(ctx, "employee.card.requested.globex", []byte("request"), jetstream.WithMsgID("PO-2026-0042"))
		return err == nil && !ack.Duplicate
	}, 5*time.Second, 20*time.Millisecond)
}
