package consumer

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/testenv"
)

// The ids kept between checks are bounded, and the bound is on what a
// check needs, not on what checks read over a long backlog: once the ids
// kept reach the bound, a check whose request is recent starts afresh from
// its own first appearance instead of failing (and, a minute later,
// ordering every old request unchecked).
func TestIDsKeptDoNotFailARecentCheckOnceTheyReachTheirBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns.URL())
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CARDS", Subjects: []string{"card.>"}})
	require.NoError(t, err)
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			_, err := js.Publish(ctx, "card.issued", []byte("{}"), jetstream.WithMsgID(fmt.Sprintf("ev-%d", i)))
			require.NoError(t, err)
		}
	}
	a := &answered{js: js, stream: "CARDS", holdLimit: defaultAnsweredHold, spellGap: answeredSpellGap, now: time.Now,
		log: slog.New(slog.DiscardHandler), obs: nopObserver{}, seed: maphash.MakeSeed(),
		maxIDs: 8, slack: 0} // a bound of 8 ids, and no slack for clocks (one clock here)
	t.Cleanup(func() {
		a.idsMu.Lock()
		defer a.idsMu.Unlock()
		if a.idle != nil {
			a.idle.Stop()
		}
		a.closeReader()
	})

	begin := time.Now()
	publish(1, 6)
	_, found, err := a.check(ctx, "ev-1", begin)
	require.NoError(t, err)
	require.True(t, found)

	// Requests that appeared after those six outcomes, checked during a
	// backlog: the ids kept go on from the first check's start.
	middle := time.Now()
	publish(7, 12)
	_, found, err = a.check(ctx, "ev-12", middle)
	require.NoError(t, err, "a check of a request that needs 6 ids read fails because 6 others are kept")
	require.True(t, found)
}
