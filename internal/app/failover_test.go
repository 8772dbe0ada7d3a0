package app_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/testenv"
)

// The service looks for a request whose commit the database lost on the
// outcome stream, from half that stream's duplicate window (read at
// start): sent again long after, it is neither ordered nor answered again.
func TestServiceDoesNotAnswerTwiceAfterLostCommits(t *testing.T) {
	const window = time.Second // CARDS's duplicate window, made short before the service starts
	var orders atomic.Int64
	b := setupWith(t, options{
		bank: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" {
					orders.Add(1)
				}
				next.ServeHTTP(w, r)
			})
		},
		cfg: func(cfg *config.Config) {
			_, js := testenv.JetStream(t, cfg.NATSURL)
			_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "CARDS", Subjects: []string{"card.>"},
				Storage: jetstream.FileStorage, Duplicates: window})
			require.NoError(t, err)
		},
	})
	ctx := context.Background()

	// Two seconds old when it first comes: older than half the window.
	req := request(erp, 1)
	req.Time = time.Now().Add(-2 * window).UTC()
	b.publish(t, req, event.Binary)
	first := b.outcomes(t, 1)[0]

	// The failover loses the commit.
	for _, q := range []string{"DELETE FROM card_orders", "DELETE FROM outbox", "DELETE FROM processed_requests"} {
		_, err := b.store.Pool().Exec(ctx, q)
		require.NoError(t, err)
	}
	// Past the window, by the server's time of the outcome.
	s, err := b.js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	last, err := s.GetLastMsgForSubject(ctx, "card.>")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return time.Since(last.Time) > 2*window }, 10*time.Second, 10*time.Millisecond)

	b.publish(t, req, event.Structured) // sent again by the ERP, as a new message
	require.EqualValues(t, 1, b.settle(t), "one outcome event")
	require.EqualValues(t, 1, orders.Load(), "one card order at the bank")
	var outcome string
	var cardID int64
	require.NoError(t, b.store.Pool().QueryRow(ctx,
		"SELECT p.outcome, c.card_id FROM processed_requests p JOIN card_orders c USING (source, request_id) WHERE p.request_id = $1",
		req.ID).Scan(&outcome, &cardID))
	require.Equal(t, "issued", outcome)
	require.Equal(t, first.Data.(event.Issued).CardID, cardID)

	_, page := b.get(t, "/metrics")
	require.Equal(t, "2", series(t, page, `cardbridge_answered_scans_total{result="ok"}`), "both deliveries were looked for")
	require.Equal(t, "0", series(t, page, `cardbridge_answered_scans_total{result="failed"}`))
}
