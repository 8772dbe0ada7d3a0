package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/relay"
	"github.com/cardbridge/cardbridge/store"
)

// streamLeader is the server leading stream now, or "" when it has none
// or does not answer within a second.
func streamLeader(js jetstream.JetStream, stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	if cl := st.CachedInfo().Cluster; cl != nil {
		return cl.Leader
	}
	return ""
}

// When the CARDS leader is killed while outcomes are being relayed, every
// outcome is stored exactly once, and the outcomes that waited resume as
// soon as a new leader is elected: no relay deadline (PublishWait 10s,
// SweepAge 5s) holds them past the election. The relay runs with its
// production defaults.
func TestOutcomesResumeWhenTheCardsLeaderIsKilled(t *testing.T) {
	leaderKilled(t, true)
}

// The same for rows left behind (by a process that died after its
// commits), which only the sweeps publish: a sweep is not held by the
// publishes its leader took down with it, nor backs off from a failed
// publish, so the rows it claims go out at the first poll after the
// election.
func TestSweepsResumeWhenTheCardsLeaderIsKilled(t *testing.T) {
	leaderKilled(t, false)
}

// leaderKilled is not run in parallel with other tests: it times how soon
// outcomes resume after the election, which their load would distort.
func leaderKilled(t *testing.T, handOff bool) {
	c := testenv.StartNATSCluster(t, 3)
	s := testenv.Store(t)
	_, setup := testenv.JetStream(t, c.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := broker.Ensure(ctx, setup, broker.DefaultTopology())
	require.NoError(t, err)
	leader := streamLeader(setup, "CARDS")
	require.NotEmpty(t, leader)

	// The connections are to the servers that survive, so that what is
	// measured is the relay, not a client's reconnection.
	var others []string
	for _, name := range c.Names() {
		if name != leader {
			others = append(others, name)
		}
	}
	survivors := c.URLOf(others...)
	_, admin := testenv.JetStream(t, survivors)
	nc, err := nats.Connect(survivors, nats.MaxReconnects(-1))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(relay.DefaultPublishWait))
	require.NoError(t, err)
	logs := &testenv.LogBuffer{}
	r := newRelay(t, s, js, relay.Config{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relay log:\n%s", logs.String())
		}
	})
	stop := start(r)

	// Outcomes are committed and handed to the relay every 10ms, as the
	// consumer does, before, during and after the election.
	var (
		mu        sync.Mutex
		committed []time.Time // by outcome number
	)
	produce := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-produce:
				return
			case <-tick.C:
			}
			o := outcome(i)
			_, err := s.Complete(context.Background(), o)
			if err != nil {
				t.Errorf("committing outcome %d: %v", i, err)
				return
			}
			mu.Lock()
			committed = append(committed, time.Now())
			mu.Unlock()
			if handOff {
				r.Committed(context.Background(), o.Event)
			}
		}
	}()
	stored := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := admin.Stream(ctx, "CARDS")
		if err != nil {
			return 0
		}
		return st.CachedInfo().State.Msgs
	}
	require.Eventually(t, func() bool { return stored() >= 30 }, 30*time.Second, 10*time.Millisecond, "outcomes flow before the kill")

	killed := time.Now()
	c.Kill(leader)
	// The election ends when the new leader says it began to lead (the
	// servers run on this machine, on its clock).
	var elected time.Time
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := admin.Stream(ctx, "CARDS")
		if err != nil {
			return false
		}
		cl := st.CachedInfo().Cluster
		if cl == nil || cl.Leader == "" || cl.Leader == leader || cl.LeaderSince == nil {
			return false
		}
		elected = *cl.LeaderSince
		return true
	}, 60*time.Second, 10*time.Millisecond, "a new CARDS leader is elected")
	election := elected.Sub(killed)
	// The fault landed: nothing could be stored while there was no leader.
	require.Greater(t, election, 500*time.Millisecond, "the kill left CARDS without a leader for a while")

	// Outcomes keep coming for 3 more seconds, then stop.
	afterElection := stored()
	require.Eventually(t, func() bool { return time.Since(elected) > 3*time.Second }, 10*time.Second, 10*time.Millisecond)
	close(produce)
	<-produced
	mu.Lock()
	n := len(committed)
	mu.Unlock()
	require.Eventually(t, func() bool { return stored() >= uint64(n) }, 30*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return backlogOf(t, s) == 0 }, 30*time.Second, 20*time.Millisecond, "every row deleted")

	// Each outcome is stored exactly once, and none waited for a relay
	// deadline: each was stored within 2 seconds of the later of the
	// election and when the relay takes it (at its commit; a row left
	// behind, at the first poll after it is SweepAge old).
	times := storedTimes(t, admin)
	require.Len(t, times, n, "no outcome lost or doubled")
	var worst time.Duration
	worstID := ""
	for i, at := range committed {
		id := fmt.Sprintf("ev-%d", i)
		st, ok := times[id]
		require.True(t, ok, "%s stored", id)
		from := at
		if !handOff {
			from = at.Add(relay.DefaultSweepAge + relay.DefaultPollInterval)
		}
		if from.Before(elected) {
			from = elected
		}
		if d := st.Sub(from); d > time.Second && testing.Verbose() {
			t.Logf("late: %s committed at kill%+v, stored at election%+v", id, at.Sub(killed).Round(time.Millisecond), st.Sub(elected).Round(time.Millisecond))
		}
		if d := st.Sub(from); d > worst {
			worst, worstID = d, id
		}
	}
	t.Logf("killed %s; election %s; %d outcomes stored when it was seen, %d committed in all; "+
		"worst delay past the later of the election and when the relay takes it: %s (%s)",
		leader, election.Round(time.Millisecond), afterElection, n, worst.Round(time.Millisecond), worstID)
	// Committed's events go within 2s of the election; rows left behind
	// at the first poll after it, and a second for the publish.
	bound := 2 * time.Second
	if !handOff {
		bound = relay.DefaultPollInterval + time.Second
	}
	require.Less(t, worst, bound, "outcomes resume as soon as the new leader answers")

	require.NoError(t, stop())
	c.Restart(leader)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := admin.Stream(ctx, "CARDS")
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, p := range info.Cluster.Replicas {
			if !p.Current {
				return false
			}
		}
		return info.State.Msgs == uint64(n)
	}, 60*time.Second, 50*time.Millisecond, "the restarted server catches up")
}

func backlogOf(t *testing.T, s *store.Store) int64 {
	n, _, err := s.OutboxBacklog(context.Background())
	require.NoError(t, err)
	return n
}

// storedTimes reads CARDS, message by message: when each event id was
// stored. An id stored twice fails the test.
func storedTimes(t *testing.T, js jetstream.JetStream) map[string]time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	state := st.CachedInfo().State
	out := map[string]time.Time{}
	for seq := state.FirstSeq; seq <= state.LastSeq && state.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		id := m.Header.Get(jetstream.MsgIDHeader)
		_, dup := out[id]
		require.False(t, dup, "%s stored twice", id)
		out[id] = m.Time
	}
	return out
}
