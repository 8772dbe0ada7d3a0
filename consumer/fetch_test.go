package consumer

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

// countingObserver counts the deliveries a process started and settled.
type countingObserver struct {
	nopObserver
	started, settled atomic.Int64
}

func (o *countingObserver) Delivery(context.Context, uint64) Observation { o.started.Add(1); return o }
func (o *countingObserver) Settled(string, error)                        { o.settled.Add(1) }
func (o *countingObserver) held() int64                                  { return o.started.Load() - o.settled.Load() }

// Two processes with free handlers each take a share of the work, and a
// process takes only as many messages as it has free handlers: what it
// cannot start stays in the stream for whoever frees a handler first,
// rather than waiting in a buffer (where nothing keeps it alive).
func TestWorkIsSharedAndOnlyFreeHandlersFetch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const source = "urn:erp:split"
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns.URL())
	cons, err := broker.Ensure(ctx, js, broker.DefaultTopology())
	require.NoError(t, err)
	st := testenv.Store(t)
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: source, ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))

	seed := sandbox.DefaultSeed()
	sb := sandbox.New(seed)
	release := make(chan struct{}) // the bank answers card orders once closed
	box, err := secret.NewBox(testenv.SecretKey(t))
	require.NoError(t, err)

	// Each process has its own door to the bank, which counts its orders.
	type proc struct {
		obs     countingObserver
		ordered atomic.Int64
		done    chan error
	}
	runCtx, stop := context.WithCancel(ctx)
	start := func() *proc {
		p := &proc{done: make(chan error, 1)}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" {
				p.ordered.Add(1)
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			sb.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		bank, err := mbanq.New(mbanq.Config{BaseURL: srv.URL, TenantID: seed.TenantID,
			ClientID: seed.OAuthClient.ID, ClientSecret: seed.OAuthClient.Secret})
		require.NoError(t, err)
		c, err := New(Config{Source: "urn:cardbridge", MaxInFlight: 2, OfficeID: 1, Observer: &p.obs,
			Admin: mbanq.Credentials{Username: seed.Admin.Username, Password: seed.Admin.Password}}, st, bank, box)
		require.NoError(t, err)
		go func() { p.done <- c.Run(runCtx, cons) }()
		return p
	}
	a, b := start(), start() // 2 at the bank and 4 held, each
	const perProcess = 4

	const n = 3 * perProcess
	for range n {
		r := event.Request{ID: uuid.NewString(), Source: source, Subject: "E-1", Time: time.Now().UTC(),
			Data: event.RequestData{Employee: event.Employee{ID: "E-1", FirstName: "Ada", LastName: "Lovelace"}, ClientID: 1}}
		m, err := event.EncodeRequest(r, event.Binary)
		require.NoError(t, err)
		_, err = js.PublishMsg(ctx, m.NATS())
		require.NoError(t, err)
	}

	// Each process fills its handlers, and then has no pull request open:
	// it asked for no more than it could start.
	// (NumPending is the server's running estimate; Delivered counts.)
	info := func() (ackPending, delivered uint64, waiting int) {
		i, err := cons.Info(ctx)
		require.NoError(t, err)
		return uint64(i.NumAckPending), i.Delivered.Consumer, i.NumWaiting
	}
	require.Eventually(t, func() bool {
		_, _, waiting := info()
		return a.obs.held() == perProcess && b.obs.held() == perProcess && waiting == 0
	}, 20*time.Second, 10*time.Millisecond, "each process holds %d (a %d, b %d) and has no pull request open", perProcess, a.obs.held(), b.obs.held())
	ackPending, delivered, _ := info()
	require.EqualValues(t, 2*perProcess, ackPending, "nothing held beyond the handlers")
	require.EqualValues(t, 2*perProcess, delivered, "the rest waits in the stream")
	require.Eventually(t, func() bool { return a.ordered.Load() == 2 && b.ordered.Load() == 2 }, 20*time.Second, 10*time.Millisecond,
		"MaxInFlight of each at the bank (a %d, b %d)", a.ordered.Load(), b.ordered.Load())
	ackPending, delivered, _ = info()
	require.EqualValues(t, 2*perProcess, ackPending)
	require.EqualValues(t, 2*perProcess, delivered)

	// Once the bank answers, the rest is fetched as handlers free up, and
	// every request is answered.
	close(release)
	require.Eventually(t, func() bool {
		ackPending, delivered, _ := info()
		return ackPending == 0 && delivered == n && a.obs.settled.Load()+b.obs.settled.Load() == n
	}, 30*time.Second, 20*time.Millisecond, "every request handled once")
	var rows int
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FROM processed_requests WHERE outcome = 'issued'`).Scan(&rows))
	require.Equal(t, n, rows)
	require.Equal(t, n, sb.CardCount(1))
	stop()
	require.NoError(t, <-a.done)
	require.NoError(t, <-b.done)
}
