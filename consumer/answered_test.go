package consumer_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/relay"
	"github.com/cardbridge/cardbridge/store"
)

const erp = "urn:erp:acme"

// outcomeWindow is the outcome stream's duplicate window in these tests:
// short, so that a copy published seconds later is stored, as one
// published minutes later would be with the default; long enough that the
// relay publishes a fresh outcome as young (within three quarters of it)
// rather than looking for it in the stream first (relay/stale.go).
const outcomeWindow = time.Second

// failover is one consumer and relay on a database schema, NATS server and
// bank of their own.
type failover struct {
	st     *store.Store
	db     *pgx.Conn
	js     jetstream.JetStream
	orders atomic.Int64 // card orders that reached the bank
	scans  atomic.Int64
	failed atomic.Int64 // scans that failed
	read   atomic.Int64 // messages the scans read
}

type failoverOptions struct {
	check         bool             // look for outcomes on the stream
	answeredAfter time.Duration    // 0: the default
	outcomeStream string           // "": CARDS
	holdLimit     time.Duration    // 0: the default
	spellGap      time.Duration    // 0: the default
	clock         func() time.Time // of the hold limit; nil: the real one
	logs          *testenv.LogBuffer
}

func startFailover(t testing.TB, o failoverOptions) *failover {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns.URL())
	top := broker.DefaultTopology()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: top.OutcomeStream, Subjects: top.OutcomeSubjects,
		Storage: jetstream.FileStorage, Duplicates: outcomeWindow})
	require.NoError(t, err)
	durable, err := broker.Ensure(ctx, js, top) // the outcome stream exists: left as it is
	require.NoError(t, err)

	dbURL := testenv.DatabaseURL(t)
	st, err := store.Open(ctx, store.Options{URL: secret.New(dbURL)})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	require.NoError(t, st.MigrateUp(ctx, discardWriter{}))
	db, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: erp, ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))

	f := &failover{st: st, db: db, js: js}
	seed := sandbox.DefaultSeed()
	sb := sandbox.New(seed)
	bankSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" {
			f.orders.Add(1)
		}
		sb.ServeHTTP(w, r)
	}))
	t.Cleanup(bankSrv.Close)
	bank, err := mbanq.New(mbanq.Config{BaseURL: bankSrv.URL, TenantID: seed.TenantID, ClientID: seed.OAuthClient.ID,
		ClientSecret: seed.OAuthClient.Secret, AllowPlainHTTP: true})
	require.NoError(t, err)
	box, err := secret.NewBox(testenv.SecretKey(t))
	require.NoError(t, err)

	rel, err := relay.New(st, js, relay.Config{})
	require.NoError(t, err)
	cfg := consumer.Config{
		Source:        "urn:cardbridge:test",
		Logger:        logger(o.logs),
		Admin:         mbanq.Credentials{Username: seed.Admin.Username, Password: seed.Admin.Password},
		Outcomes:      rel,
		Observer:      scanCounter{f},
		AnsweredAfter: o.answeredAfter,
		OutcomeStream: o.outcomeStream,
	}
	if o.check {
		cfg.Stream = js
	}
	c, err := consumer.New(cfg, st, bank, box)
	require.NoError(t, err)
	if o.holdLimit > 0 {
		consumer.SetAnsweredHoldLimit(c, o.holdLimit)
	}
	if o.spellGap > 0 {
		consumer.SetAnsweredSpellGap(c, o.spellGap)
	}
	if o.clock != nil {
		consumer.SetAnsweredClock(c, o.clock)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = rel.Run(ctx) }()
	go func() { defer wg.Done(); _ = c.Run(ctx, durable) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return f
}

func logger(logs *testenv.LogBuffer) *slog.Logger {
	if logs == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewJSONHandler(logs, nil))
}

// logged counts the log lines with the message.
func logged(logs *testenv.LogBuffer, msg string) int {
	n := 0
	for _, l := range logs.Lines() {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

func (f *failover) publish(t testing.TB, r event.Request) {
	t.Helper()
	m, err := event.EncodeRequest(r, event.Binary)
	require.NoError(t, err)
	_, err = f.js.PublishMsg(context.Background(), m.NATS())
	require.NoError(t, err)
}

// inbox is the request's inbox outcome, "" when it has no row.
func (f *failover) inbox(t *testing.T, id string) string {
	t.Helper()
	var outcome string
	err := f.db.QueryRow(context.Background(), "SELECT outcome FROM processed_requests WHERE request_id = $1", id).Scan(&outcome)
	if err == pgx.ErrNoRows {
		return ""
	}
	require.NoError(t, err)
	return outcome
}

// settle waits until every request is acknowledged and the outbox is
// empty, and returns the outcome events on the stream.
func (f *failover) settle(t testing.TB) []event.Outcome {
	t.Helper()
	ctx := context.Background()
	require.Eventually(t, func() bool {
		s, err := f.js.Stream(ctx, "ERP")
		if err != nil {
			return false
		}
		si, err := s.Info(ctx)
		if err != nil {
			return false
		}
		c, err := s.Consumer(ctx, "cardbridge")
		if err != nil {
			return false
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return false
		}
		n, _, err := f.st.OutboxBacklog(ctx)
		return err == nil && ci.AckFloor.Stream >= si.State.LastSeq && ci.NumAckPending == 0 && n == 0
	}, 30*time.Second, 20*time.Millisecond)
	cons, err := f.js.OrderedConsumer(ctx, "CARDS", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	s, err := f.js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []event.Outcome
	for range info.State.Msgs {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		require.NoError(t, err)
		o, err := event.DecodeOutcome(m.Headers(), m.Data())
		require.NoError(t, err)
		out = append(out, o)
	}
	return out
}

// loseCommits deletes what the request's commit wrote, as a failover to a
// standby that had not received it does.
func (f *failover) loseCommits(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		"DELETE FROM outbox WHERE $1 <> ''", // this test's only request
		"DELETE FROM card_orders WHERE request_id = $1",
		"DELETE FROM dead_letters WHERE request_id = $1",
		"DELETE FROM bank_retries WHERE request_id = $1",
		"DELETE FROM processed_requests WHERE request_id = $1",
	} {
		_, err := f.db.Exec(ctx, q, id)
		require.NoError(t, err)
	}
	require.Empty(t, f.inbox(t, id))
}

// outcomeAged waits until the outcome stream's last message is older than
// twice its duplicate window, by the server's own time stamp: a copy
// published now is stored, not dropped as a duplicate.
func (f *failover) outcomeAged(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	s, err := f.js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(ctx, "card.>")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return time.Since(m.Time) > 2*outcomeWindow }, 10*time.Second, 10*time.Millisecond)
}

func oldRequest(age time.Duration) event.Request {
	return event.Request{
		ID: uuid.NewString(), Source: erp, Subject: "E-42", Time: time.Now().Add(-age).UTC(),
		Data: event.RequestData{
			Employee: event.Employee{ID: "E-42", FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com"},
			ClientID: 1,
		},
	}
}

// A request answered before the database lost its commit, sent again by
// the ERP as a new message long after: its outcome is found on the stream,
// its inbox row rebuilt from it, and neither the bank nor the stream sees
// it a second time. Without the check (the control), it is answered twice.
func TestRequestAnsweredBeforeLostCommitsIsNotAnsweredAgain(t *testing.T) {
	t.Parallel()
	for _, check := range []bool{true, false} {
		name := map[bool]string{true: "checked", false: "unchecked control"}[check]
		t.Run(name, func(t *testing.T) {
			f := startFailover(t, failoverOptions{check: check})
			// Older than the default threshold (a minute) when sent again.
			req := oldRequest(5 * time.Minute)
			f.publish(t, req)
			first := f.settle(t)
			require.Len(t, first, 1)
			require.Equal(t, event.TypeCardIssued, first[0].Type)
			require.EqualValues(t, 1, f.orders.Load())
			card := first[0].Data.(event.Issued)

			f.loseCommits(t, req.ID)
			f.outcomeAged(t)
			f.publish(t, req) // a new message: the ERP's own duplicate window has passed
			outcomes := f.settle(t)
			require.Equal(t, store.OutcomeIssued, f.inbox(t, req.ID))

			if !check {
				require.Len(t, outcomes, 2, "without the check the request is answered twice")
				require.EqualValues(t, 2, f.orders.Load(), "and ordered twice at the bank")
				return
			}
			require.Len(t, outcomes, 1, "no second outcome event")
			require.EqualValues(t, 1, f.orders.Load(), "no second card order at the bank")
			var cardID int64
			var key string
			require.NoError(t, f.db.QueryRow(context.Background(),
				"SELECT card_id, idempotency_key FROM card_orders WHERE request_id = $1", req.ID).Scan(&cardID, &key))
			require.Equal(t, card.CardID, cardID, "the card order is rebuilt from the event")
			require.Equal(t, consumer.IdempotencyKey(req.Source, req.ID, 0), key)
			require.GreaterOrEqual(t, f.scans.Load(), int64(2), "both deliveries were old enough to be checked")
			require.Zero(t, f.failed.Load())

			// A third copy finds the rebuilt inbox row: no scan at all.
			scans := f.scans.Load()
			f.publish(t, req)
			require.Len(t, f.settle(t), 1)
			require.Equal(t, scans, f.scans.Load())
		})
	}
}

// A failed request answered before its commit was lost is recorded as
// failed again, with its reason, from the card.failed on the stream.
func TestFailedRequestAnsweredBeforeLostCommitsIsNotAnsweredAgain(t *testing.T) {
	t.Parallel()
	f := startFailover(t, failoverOptions{check: true})
	req := oldRequest(5 * time.Minute)
	req.Data.ClientID = 2 // the source is not bound to client 2: unbound_source
	f.publish(t, req)
	require.Len(t, f.settle(t), 1)
	f.loseCommits(t, req.ID)
	f.outcomeAged(t)
	f.publish(t, req)
	outcomes := f.settle(t)
	require.Len(t, outcomes, 1)
	require.Equal(t, event.TypeCardFailed, outcomes[0].Type)
	var reason string
	require.NoError(t, f.db.QueryRow(context.Background(),
		"SELECT reason FROM processed_requests WHERE request_id = $1", req.ID).Scan(&reason))
	require.Equal(t, event.ReasonUnboundSource, reason)
	var dls int
	require.NoError(t, f.db.QueryRow(context.Background(),
		"SELECT count(*) FROM dead_letters WHERE request_id = $1", req.ID).Scan(&dls))
	require.Equal(t, 1, dls, "the dead letter is kept again, for replay")
	require.Zero(t, f.orders.Load())
}

// A backlog of old requests is served by scans that each read only what
// the stream took since the last: every outcome message is read once, not
// once per request.
func TestOneScanServesABacklog(t *testing.T) {
	t.Parallel()
	f := startFailover(t, failoverOptions{check: true})
	const n = 30
	at := time.Now().Add(-5 * time.Minute).UTC() // one time, so no check reaches further back than the first
	reqs := make([]event.Request, n)
	for i := range reqs {
		reqs[i] = oldRequest(0)
		reqs[i].Time = at
		f.publish(t, reqs[i])
	}
	require.Len(t, f.settle(t), n)
	require.EqualValues(t, n, f.orders.Load())
	for _, r := range reqs {
		f.loseCommits(t, r.ID)
	}
	f.outcomeAged(t)
	for _, r := range reqs {
		f.publish(t, r)
	}
	require.Len(t, f.settle(t), n, "no second outcome")
	require.EqualValues(t, n, f.orders.Load(), "no second order")
	for _, r := range reqs {
		require.Equal(t, store.OutcomeIssued, f.inbox(t, r.ID))
	}
	require.Zero(t, f.failed.Load())
	require.LessOrEqual(t, f.read.Load(), int64(n), "each outcome message read once over %d scans", f.scans.Load())
	t.Logf("%d checks, %d scans, %d messages read", 2*n, f.scans.Load(), f.read.Load())
}

// The reader's consumer is kept between checks, and one that went (the
// server deletes it after a minute unused, or loses it) is replaced
// without failing a check.
func TestCheckSurvivesItsConsumerGoing(t *testing.T) {
	t.Parallel()
	f := startFailover(t, failoverOptions{check: true})
	ctx := context.Background()
	f.publish(t, oldRequest(5*time.Minute))
	require.Len(t, f.settle(t), 1)
	require.EqualValues(t, 1, f.scans.Load())
	s, err := f.js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	dropReader := func() {
		var names []string // the reader's: headers only (the test's own readers of CARDS are not)
		for info := range s.ListConsumers(ctx).Info() {
			if info.Config.HeadersOnly {
				names = append(names, info.Name)
			}
		}
		require.Len(t, names, 1, "the reader's consumer is kept for the next check")
		require.NoError(t, s.DeleteConsumer(ctx, names[0]))
	}
	dropReader()

	f.publish(t, oldRequest(4*time.Minute)) // starts later than the first: the ids kept serve
	require.Len(t, f.settle(t), 2)
	require.EqualValues(t, 2, f.scans.Load())
	require.Zero(t, f.failed.Load(), "the reader was opened again")
	require.EqualValues(t, 1, f.read.Load(), "the first outcome, read once (by the second scan: the stream was empty at the first)")

	// Opened again after a message was read, it starts after that one.
	dropReader()
	f.publish(t, oldRequest(3*time.Minute))
	require.Len(t, f.settle(t), 3)
	require.EqualValues(t, 3, f.scans.Load())
	require.Zero(t, f.failed.Load())
	require.EqualValues(t, 2, f.read.Load(), "the second outcome only: the first is not read again")
}

// Fresh requests, the steady state, never scan the stream.
func TestFreshRequestsDoNotScan(t *testing.T) {
	t.Parallel()
	f := startFailover(t, failoverOptions{check: true})
	for range 20 {
		f.publish(t, oldRequest(0))
	}
	require.Len(t, f.settle(t), 20)
	require.Zero(t, f.scans.Load(), "no request was old enough to be checked")

	// The counter counts: an old request is checked.
	f.publish(t, oldRequest(5*time.Minute))
	require.Len(t, f.settle(t), 21)
	require.EqualValues(t, 1, f.scans.Load())
}

// While the outcome stream cannot be read, an old request is not ordered
// blindly: it is retried, and ordered unchecked (with a warning) only once
// checks have failed for the hold limit.
func TestUnreadableStreamHoldsOldRequestsForTheHoldLimit(t *testing.T) {
	t.Parallel()
	t.Run("within the hold limit", func(t *testing.T) {
		f := startFailover(t, failoverOptions{check: true, outcomeStream: "MISSING", holdLimit: time.Hour})
		f.publish(t, oldRequest(5*time.Minute))
		require.Eventually(t, func() bool { return f.failed.Load() >= 2 }, 30*time.Second, 10*time.Millisecond,
			"the request comes back and is checked again")
		require.Zero(t, f.orders.Load(), "not ordered while the check fails")
	})
	t.Run("past the hold limit", func(t *testing.T) {
		logs := &testenv.LogBuffer{}
		f := startFailover(t, failoverOptions{check: true, outcomeStream: "MISSING", holdLimit: time.Nanosecond, logs: logs})
		req := oldRequest(5 * time.Minute)
		f.publish(t, req)
		require.Len(t, f.settle(t), 1)
		require.EqualValues(t, 1, f.orders.Load())
		require.Positive(t, f.failed.Load(), "ordered after checks that failed")
		require.Equal(t, store.OutcomeIssued, f.inbox(t, req.ID))
		require.Equal(t, 1, logged(logs, "request ordered without looking for an earlier outcome: the outcome stream could not be read; it may be answered twice"),
			"the request ordered unchecked is named in a warning")
		require.Contains(t, logs.String(), req.ID)
	})
}

// scanCounter counts the consumer's scans of the outcome stream.
type scanCounter struct{ f *failover }

func (s scanCounter) Delivery(context.Context, uint64) consumer.Observation { return nopObservation{} }
func (s scanCounter) UserProvisioned(int64)                                 {}
func (s scanCounter) Paused(string)                                         {}
func (s scanCounter) AnsweredScan(read uint64, err error) {
	s.f.scans.Add(1)
	s.f.read.Add(int64(read))
	if err != nil {
		s.f.failed.Add(1)
	}
}

type nopObservation struct{}

func (nopObservation) Request(ctx context.Context, _ string, _ event.RequestRef) context.Context {
	return ctx
}
func (nopObservation) Outcome(string, string) {}
func (nopObservation) Dropped()               {}
func (nopObservation) Settled(string, error)  {}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkBacklog handles b.N requests published at once, all fresh or
// all older than the threshold (so each is looked for on the stream,
// which the earlier ones fill as they are answered): the cost of the look
// in a backlog. Run with -benchtime=5000x, say.
func BenchmarkBacklog(b *testing.B) {
	for _, age := range []time.Duration{0, 5 * time.Minute} {
		name := map[bool]string{true: "fresh", false: "old"}[age == 0]
		b.Run(name, func(b *testing.B) {
			f := startFailover(b, failoverOptions{check: true})
			at := time.Now().Add(-age).UTC()
			// One request first: the bank's session and the stack warm up.
			warm := oldRequest(0)
			f.publish(b, warm)
			f.settle(b)
			reqs := make([]event.Request, b.N)
			for i := range reqs {
				reqs[i] = oldRequest(0)
				reqs[i].Time = at
			}
			b.ResetTimer()
			for _, r := range reqs {
				f.publish(b, r)
			}
			require.Len(b, f.settle(b), b.N+1)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			b.ReportMetric(float64(f.scans.Load()), "scans")
			b.ReportMetric(float64(f.read.Load()), "msgs-read")
		})
	}
}

// The hold limit runs from the start of a spell of failed checks, not from
// a failure long ago: after one failed check whose request then went away
// (answered by another process, say), a check that fails much later holds
// its request again for the hold limit rather than ordering it unchecked
// at once.
func TestHoldLimitRunsFromTheStartOfAFailingSpell(t *testing.T) {
	t.Parallel()
	const hold = 2 * time.Second
	clk := testenv.NewClock()
	f := startFailover(t, failoverOptions{check: true, outcomeStream: "MISSING", holdLimit: hold, spellGap: hold / 2, clock: clk.Now})
	first := oldRequest(5 * time.Minute)
	f.publish(t, first)
	require.Eventually(t, func() bool { return f.failed.Load() >= 1 }, 30*time.Second, 10*time.Millisecond)
	// The request is answered elsewhere: its next delivery finds an inbox
	// row and makes no check.
	_, err := f.db.Exec(context.Background(),
		`INSERT INTO processed_requests (source, request_id, payload_hash, outcome, reason) VALUES ($1, $2, '\x00', 'failed', 'test')`,
		first.Source, first.ID)
	require.NoError(t, err)
	f.settle(t)
	failed := f.failed.Load()
	// Long after, with no check in between, another old request's checks fail.
	clk.Advance(2 * hold)
	f.publish(t, oldRequest(5*time.Minute))
	// Either it is ordered (unchecked) or it comes back for another check.
	require.Eventually(t, func() bool { return f.orders.Load() > 0 || f.failed.Load() >= failed+2 }, 30*time.Second, 10*time.Millisecond)
	require.Zero(t, f.orders.Load(), "ordered unchecked at its first failed check: the hold limit ran from a failure %s before", 2*hold)
}

// A replay (republished by cardbridge, with its original CloudEvent time)
// first appears when it is republished: its outcome, of a new generation,
// cannot be older. It is not looked for from the original time, which
// would read the outcome stream back to a request days old on every replay
// (and, past a million messages, order it unchecked after the hold limit).
func TestReplayIsNotLookedForFromItsOriginalTime(t *testing.T) {
	t.Parallel()
	f := startFailover(t, failoverOptions{check: true})
	ctx := context.Background()
	req := oldRequest(5 * time.Minute)
	req.Data.ClientID = 2 // the source is not bound to client 2: unbound_source
	f.publish(t, req)
	require.Len(t, f.settle(t), 1)
	scans := f.scans.Load()
	require.EqualValues(t, 1, scans, "the first delivery is old: checked")

	require.NoError(t, f.st.AddBinding(ctx, store.Binding{Source: erp, ClientID: 2, SavingsAccountID: 2, CardProductID: 1}))
	dls, err := f.st.DeadLetters(ctx, store.DeadLetterFilter{Source: erp})
	require.NoError(t, err)
	require.Len(t, dls, 1)
	_, err = consumer.Replay(ctx, f.st, f.js, dls[0].ID)
	require.NoError(t, err)
	outcomes := f.settle(t)
	require.Len(t, outcomes, 2)
	require.Equal(t, event.TypeCardIssued, outcomes[1].Type, "the replay is ordered: %+v", outcomes[1].Data)
	require.Equal(t, scans, f.scans.Load(), "the replay, republished just now, is not looked for on the outcome stream")
}
