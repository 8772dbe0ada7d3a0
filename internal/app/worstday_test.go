package app_test

// Issue 11's worst days, each injected for real against the real Postgres,
// an embedded NATS server and the MBanq sandbox: operator faults pause and
// fail nothing, outcomes never claim what is not known, and nothing
// vanishes.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/consumer/decision"
	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/app"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

// stack is what outlives one cardbridge process: NATS, the bank and a
// configuration (its database schema included), so a test can stop a
// process and start another, as an operator restarting after a fix would.
type stack struct {
	ns   *broker.Embedded
	sb   *sandbox.Server
	bank string
	cfg  config.Config
	nc   *nats.Conn
	js   jetstream.JetStream
}

func newStack(t *testing.T, bankURL func(http.Handler) string) *stack {
	t.Helper()
	ns := testenv.NATS(t)
	seed := sandbox.DefaultSeed()
	sb := sandbox.New(seed)
	var url string
	if bankURL != nil {
		url = bankURL(sb)
	} else {
		srv := httptest.NewServer(sb)
		t.Cleanup(srv.Close)
		url = srv.URL
	}
	cfg := testenv.Config(t, ns.URL(), url, seed)
	nc, js := testenv.JetStream(t, ns.URL())
	return &stack{ns: ns, sb: sb, bank: url, cfg: cfg, nc: nc, js: js}
}

// process is one running cardbridge.
type process struct {
	svc  *app.Service
	logs *testenv.LogBuffer
	stop func()
}

// start runs a cardbridge process with cfg until stop (or the test's end).
func (s *stack) start(t *testing.T, cfg config.Config) *process {
	t.Helper()
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	svc, err := app.Start(ctx, cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	stopped := false
	p := &process{svc: svc, logs: logs}
	p.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(t, <-done)
	}
	t.Cleanup(p.stop)
	return p
}

func (s *stack) bind(t *testing.T, st *store.Store, productID int64) {
	t.Helper()
	require.NoError(t, st.AddBinding(context.Background(), store.Binding{Source: erp, ClientID: 1, SavingsAccountID: 1, CardProductID: productID}))
}

func (s *stack) publish(t *testing.T, n int) []event.Request {
	return publishRequests(t, s.js, n)
}

// publishRequests publishes n new requests of erp for client 1.
func publishRequests(t *testing.T, js jetstream.JetStream, n int) []event.Request {
	t.Helper()
	reqs := make([]event.Request, n)
	for i := range reqs {
		reqs[i] = request(erp, 1)
		m, err := event.EncodeRequest(reqs[i], event.Binary)
		require.NoError(t, err)
		_, err = js.PublishMsg(context.Background(), m.NATS())
		require.NoError(t, err)
	}
	return reqs
}

// outcomes reads every event on CARDS, waiting until there are want.
func (s *stack) outcomes(t *testing.T, want int) []event.Outcome {
	b := bundle{js: s.js}
	return b.outcomes(t, want)
}

// outcomeCount is the number of events on CARDS now.
func (s *stack) outcomeCount(t *testing.T) uint64 {
	t.Helper()
	st, err := s.js.Stream(context.Background(), "CARDS")
	require.NoError(t, err)
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

func (s *stack) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := s.js.Consumer(context.Background(), "ERP", "cardbridge")
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	return info
}

// readyz returns /readyz's status and checks.
func (p *process) readyz(t *testing.T) (int, map[string]string) {
	t.Helper()
	return readyzAt(t, p.svc.HTTPAddr())
}

// metrics returns the text of /metrics.
func (p *process) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + p.svc.HTTPAddr() + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

// waitPaused waits until the process reports itself paused for fault, on
// /readyz and in the metric, and returns the readiness check's text.
func (p *process) waitPaused(t *testing.T, fault string) string {
	t.Helper()
	var check string
	require.Eventually(t, func() bool {
		status, checks := p.readyz(t)
		check = checks["consumer"]
		return status == http.StatusServiceUnavailable && strings.Contains(check, fault)
	}, 20*time.Second, 20*time.Millisecond, "paused for %s", fault)
	require.Contains(t, p.metrics(t), `cardbridge_consumer_paused{reason="`+fault+`"} 1`)
	return check
}

// waitIdle waits until the process holds no message.
func (p *process) waitIdle(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		return strings.Contains(p.metrics(t), "\ncardbridge_requests_in_flight 0\n")
	}, 20*time.Second, 20*time.Millisecond, "the process holds no message")
}

func (p *process) logLines(msg string) int {
	n := 0
	for _, l := range p.logs.Lines() {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

func inboxRows(t *testing.T, st *store.Store) int {
	t.Helper()
	var n int
	require.NoError(t, st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM processed_requests`).Scan(&n))
	return n
}

// requireIssuedOnce checks that every request got exactly one card.issued
// naming a card the bank has, and that the bank has one card per request.
func requireIssuedOnce(t *testing.T, sb *sandbox.Server, outs []event.Outcome, reqs []event.Request) {
	t.Helper()
	cards := map[int64]sandbox.Card{}
	for _, c := range sb.Cards() {
		cards[c.ID] = c
	}
	require.Len(t, cards, len(reqs), "one card per request at the bank")
	issued := map[string]event.Issued{}
	for _, o := range outs {
		if o.Type != event.TypeCardIssued {
			continue
		}
		d := o.Data.(event.Issued)
		_, dup := issued[d.RequestID]
		require.False(t, dup, "a second card.issued for %s", d.RequestID)
		issued[d.RequestID] = d
		c, ok := cards[d.CardID]
		require.True(t, ok, "card.issued names card %d, which the bank has", d.CardID)
		require.Equal(t, c.CardToken, d.CardToken, "the bank's token")
	}
	for _, r := range reqs {
		require.Contains(t, issued, r.ID)
	}
}

// A typo in MBANQ_TENANT_ID fails nothing: the process pauses, says why on
// /readyz, in a metric and in one log line, and hands every request back.
// Restarted with the right tenant, it issues each request once.
func TestWrongTenantFailsNothingAndResumesAfterTheFix(t *testing.T) {
	s := newStack(t, nil)
	bad := s.cfg
	bad.MBanq.TenantID = "typo"
	p := s.start(t, bad)
	s.bind(t, p.svc.Store(), 1)
	reqs := s.publish(t, 50)

	check := p.waitPaused(t, mbanq.FaultInvalidTenant)
	require.Contains(t, check, "error.msg.invalid.tenant.identifier")
	// Everything it held is handed back, and nothing was answered.
	p.waitIdle(t)
	require.Zero(t, s.outcomeCount(t), "no outcome event")
	require.Zero(t, inboxRows(t, p.svc.Store()), "nothing committed")
	require.Equal(t, 1, p.logLines("consumer paused: a fault of the deployment, not of the requests; nothing is failed, messages are handed back and the fault is probed until it clears"),
		"one log line for the change of state, not one per request")
	require.Empty(t, s.sb.Cards())
	p.stop()

	good := s.start(t, s.cfg)
	outs := s.outcomes(t, len(reqs))
	requireIssuedOnce(t, s.sb, outs, reqs)
	status, _ := good.readyz(t)
	require.Equal(t, http.StatusOK, status)
}

// A bank that cannot be reached (connection refused) pauses the process;
// when it is back, the process finds out by itself and issues the backlog.
func TestUnreachableBankPausesAndResumesByItself(t *testing.T) {
	var addr string
	var srv *http.Server
	serve := func(h http.Handler) {
		ln, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		addr = ln.Addr().String()
		srv = &http.Server{Handler: h}
		go func() { _ = srv.Serve(ln) }()
	}
	addr = "127.0.0.1:0"
	var bank http.Handler
	s := newStack(t, func(h http.Handler) string {
		bank = h
		serve(h)
		return "http://" + addr
	})
	t.Cleanup(func() { _ = srv.Close() })
	p := s.start(t, s.cfg)
	s.bind(t, p.svc.Store(), 1)
	// A first request provisions the client's user while the bank is up.
	first := s.publish(t, 1)
	s.outcomes(t, 1)

	require.NoError(t, srv.Close()) // the bank goes away: connections are refused
	reqs := append(first, s.publish(t, 10)...)
	p.waitPaused(t, mbanq.FaultUnreachable)
	require.EqualValues(t, 1, s.outcomeCount(t), "nothing failed while the bank was away")

	serve(bank) // back, on the same address
	outs := s.outcomes(t, len(reqs))
	requireIssuedOnce(t, s.sb, outs, reqs)
	require.Eventually(t, func() bool { status, _ := p.readyz(t); return status == http.StatusOK }, 20*time.Second, 20*time.Millisecond)
	require.NotContains(t, p.metrics(t), `cardbridge_consumer_paused{reason="bank_unreachable"} 1`)
	require.Equal(t, 1, p.logLines("consumer resumed: the fault of the deployment cleared, or is to be tried again"))
}

// Rejected OAuth client credentials, a refused admin login, a bank whose
// certificate is not trusted: each pauses the process, fails nothing, and
// is named.
func TestDeploymentFaultsPauseAndFailNothing(t *testing.T) {
	for name, tc := range map[string]struct {
		fault  string
		change func(*config.Config)
		tls    bool
	}{
		"OAuth client refused": {mbanq.FaultOAuthClient, func(c *config.Config) { c.MBanq.ClientSecret = secret.New("not-the-secret") }, false},
		"admin login refused":  {decision.FaultAdminLogin, func(c *config.Config) { c.MBanq.AdminPassword = secret.New("not-the-password") }, false},
		"untrusted TLS":        {mbanq.FaultTLS, nil, true},
		"role missing":         {decision.FaultProvisioning, func(c *config.Config) { c.MBanq.SelfServiceRoleID = 999 }, false},
	} {
		t.Run(name, func(t *testing.T) {
			var bankURL func(http.Handler) string
			if tc.tls {
				bankURL = func(h http.Handler) string {
					srv := httptest.NewTLSServer(h) // its certificate is trusted by nobody
					t.Cleanup(srv.Close)
					return srv.URL
				}
			}
			s := newStack(t, bankURL)
			cfg := s.cfg
			if tc.change != nil {
				tc.change(&cfg)
			}
			p := s.start(t, cfg)
			s.bind(t, p.svc.Store(), 1)
			s.publish(t, 5)
			p.waitPaused(t, tc.fault)
			p.waitIdle(t)
			require.Zero(t, s.outcomeCount(t))
			require.Zero(t, inboxRows(t, p.svc.Store()))
			require.Empty(t, s.sb.Cards())
			require.NotContains(t, p.logs.String(), "not-the-secret")
			require.NotContains(t, p.logs.String(), "not-the-password")
		})
	}
}

// A stored password that the configured key cannot open (the key was
// rotated and the old one dropped) pauses the process; restarted with the
// old key among the previous ones, it issues the waiting requests.
func TestSecretKeyThatCannotOpenPasswordsPauses(t *testing.T) {
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	s.bind(t, p.svc.Store(), 1)
	first := s.publish(t, 1)
	s.outcomes(t, 1) // the client's user now has a password sealed under the key
	p.stop()

	rotated := s.cfg
	oldKey := s.cfg.SecretKey
	rotated.SecretKey = testenv.SecretKey(t)
	p = s.start(t, rotated)
	reqs := s.publish(t, 3)
	p.waitPaused(t, decision.FaultSecretKey)
	require.EqualValues(t, 1, s.outcomeCount(t), "nothing failed")
	p.stop()

	rotated.PreviousSecretKeys = [][]byte{oldKey}
	s.start(t, rotated)
	outs := s.outcomes(t, 4)
	requireIssuedOnce(t, s.sb, outs, append(first, reqs...))
}

// A 200 to POST /v1/cards whose body does not name the card is never
// committed as a card: it is asked again under the same Idempotency-Key,
// and every card.issued names the bank's real card, one per request.
func TestGarbledAnswersGiveOnlyRealCards(t *testing.T) {
	s := newStack(t, nil)
	require.NoError(t, s.sb.SetFaults(sandbox.Faults{GarbledResponseRate: 0.1, Paths: []string{"/v1/cards"}}))
	p := s.start(t, s.cfg)
	s.bind(t, p.svc.Store(), 1)
	reqs := s.publish(t, 300)
	outs := s.outcomes(t, len(reqs))
	requireIssuedOnce(t, s.sb, outs, reqs)
	require.Greater(t, s.sb.Stats().GarbledResponses, int64(10), "the fault landed")
	for _, o := range outs {
		require.NoError(t, o.Validate())
	}
}

// Requests the bank refused because their binding named an inactive card
// product are issued once after the fix and a replay, although the bank
// remembers each refusal under its Idempotency-Key; a second replay orders
// nothing more.
func TestRejectedRequestsReplayedAfterTheFixAreIssuedOnce(t *testing.T) {
	for name, fix := range map[string]func(*testing.T, *stack, *store.Store){
		"the bank activates the product": func(t *testing.T, s *stack, _ *store.Store) {
			require.NoError(t, s.sb.SetCardProductActive(2, true))
		},
		"the binding names another product": func(t *testing.T, s *stack, st *store.Store) { s.bind(t, st, 1) },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := newStack(t, nil)
			p := s.start(t, s.cfg)
			st := p.svc.Store()
			s.bind(t, st, 2) // "Legacy Virtual Debit Card", inactive
			reqs := s.publish(t, 5)
			for _, o := range s.outcomes(t, 5) {
				require.Equal(t, event.ReasonBankRejected, o.Data.(event.Failed).Reason)
			}
			require.Empty(t, s.sb.Cards())

			fix(t, s, st)
			results, err := consumer.ReplayMatching(ctx, st, s.js, store.DeadLetterFilter{Reason: event.ReasonBankRejected})
			require.NoError(t, err)
			require.Len(t, results, 5)
			// Each replayed again at once, most before the first replay
			// is handled: both order under one key, or the second is
			// refused because the first has its card.
			for _, r := range results {
				require.NoError(t, r.Err)
				_, err := consumer.Replay(ctx, st, s.js, r.DeadLetter.ID)
				if err != nil {
					require.True(t, consumer.ReplayRefused(err), "%v", err)
				}
			}
			outs := s.outcomes(t, 10)
			requireIssuedOnce(t, s.sb, outs[5:], reqs)
			bundle := &bundle{js: s.js, store: st}
			require.EqualValues(t, 10, bundle.settle(t), "one new outcome per request, not two")

			// A third replay is refused: the requests have their cards.
			results, err = consumer.ReplayMatching(ctx, st, s.js, store.DeadLetterFilter{Reason: event.ReasonBankRejected, IncludeReplayed: true})
			require.NoError(t, err)
			for _, r := range results {
				require.True(t, consumer.ReplayRefused(r.Err))
			}
			require.Len(t, s.sb.Cards(), 5)
		})
	}
}

// A bank outage longer than the old budget of 20 deliveries fails nothing
// while the time budget lasts: the backlog is issued when the bank is back.
func TestBankOutageLongerThanTwentyDeliveriesFailsNothing(t *testing.T) {
	s := newStack(t, nil)
	cfg := s.cfg
	cfg.RetryDelayMax = 20 * time.Millisecond // a shortened clock
	cfg.MBanq.MaxAttempts = 1
	cfg.RetryFor = time.Hour
	p := s.start(t, cfg)
	s.bind(t, p.svc.Store(), 1)
	first := s.publish(t, 1)
	s.outcomes(t, 1)

	require.NoError(t, s.sb.SetFaults(sandbox.Faults{ServerErrorRate: 1, ServerErrorStatus: 503, Paths: []string{"/v1/cards"}}))
	reqs := s.publish(t, 5)
	require.Eventually(t, func() bool { return s.sb.Stats().InjectedServerErrors >= 5*25 }, 60*time.Second, 10*time.Millisecond,
		"each request tried at least 25 times")
	require.EqualValues(t, 1, s.outcomeCount(t), "none given up")
	require.NoError(t, s.sb.SetFaults(sandbox.Faults{}))
	outs := s.outcomes(t, 6)
	requireIssuedOnce(t, s.sb, outs, append(first, reqs...))
	var left int
	require.NoError(t, p.svc.Store().Pool().QueryRow(context.Background(), `SELECT count(*) FROM bank_retries`).Scan(&left))
	require.Zero(t, left, "the retry records went with the outcomes")
}

// When the bank's answer to the last try is unknown (the connection was
// lost after it created the card) and the budget is spent, the request
// ends as bank_outcome_unknown, not retries_exhausted; its replay asks
// again under the same key and finds the card the bank made.
func TestUnknownOutcomeEndsAsSuchAndItsReplayFindsTheCard(t *testing.T) {
	ctx := context.Background()
	// The first order's answer is lost after the bank made the card; every
	// later try meets a 503 in front of the bank, which says nothing of
	// the first.
	var orders atomic.Int64
	var healed atomic.Bool
	s := newStack(t, func(sb http.Handler) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" && orders.Add(1) > 1 && !healed.Load() {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"httpStatusCode":"503","defaultUserMessage":"Service unavailable","userMessageGlobalisationCode":"error.msg.platform.service.unavailable"}`)
				return
			}
			sb.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	})
	cfg := s.cfg
	cfg.RetryFor, cfg.RetryDelayMax, cfg.MBanq.MaxAttempts = time.Second, 50*time.Millisecond, 1
	p := s.start(t, cfg)
	st := p.svc.Store()
	s.bind(t, st, 1)
	require.NoError(t, s.sb.SetFaults(sandbox.Faults{LostResponseNext: 1, Paths: []string{"/v1/cards"}}))
	reqs := s.publish(t, 1)
	o := s.outcomes(t, 1)[0]
	f := o.Data.(event.Failed)
	require.Equal(t, event.ReasonBankOutcomeUnknown, f.Reason)
	require.Contains(t, f.Message, "a card may exist")
	require.Len(t, s.sb.Cards(), 1, "the bank made the card; nobody heard")
	require.Greater(t, orders.Load(), int64(2), "tried again after the lost answer")

	healed.Store(true)
	results, err := consumer.ReplayMatching(ctx, st, s.js, store.DeadLetterFilter{Reason: event.ReasonBankOutcomeUnknown})
	require.NoError(t, err)
	require.Len(t, results, 1)
	require.NoError(t, results[0].Err)
	outs := s.outcomes(t, 2)
	requireIssuedOnce(t, s.sb, outs[1:], reqs)
}

// A replay whose republish fails leaves its dead letter in sight and
// replayable.
func TestReplayWhoseRepublishFailsStaysVisible(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	st := p.svc.Store()
	reqs := s.publish(t, 1) // no binding yet: unbound_source
	require.Equal(t, event.ReasonUnboundSource, s.outcomes(t, 1)[0].Data.(event.Failed).Reason)
	dls, err := st.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Len(t, dls, 1)

	require.NoError(t, s.js.DeleteStream(ctx, "ERP")) // the republish has nowhere to go
	_, err = consumer.Replay(ctx, st, s.js, dls[0].ID)
	require.Error(t, err)
	left, err := st.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Len(t, left, 1, "still listed")
	require.Equal(t, reqs[0].ID, left[0].RequestID)
	pending, err := st.PendingDeadLetters(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, pending[event.ReasonUnboundSource], "still counted as pending")
}

// A conflicting duplicate is recorded even when its request id already has
// a dead letter, and it is not replayable.
func TestConflictingDuplicateIsRecordedBesideADeadLetter(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	st := p.svc.Store()
	req := request("urn:erp:nobody", 1)
	publishReq := func(r event.Request) {
		m, err := event.EncodeRequest(r, event.Binary)
		require.NoError(t, err)
		_, err = s.js.PublishMsg(ctx, m.NATS())
		require.NoError(t, err)
	}
	publishReq(req)
	s.outcomes(t, 1)
	other := req
	other.Data.Reference = "PO-other"
	publishReq(other)
	publishReq(other) // the same conflicting message again: one more record
	var conflicts []store.DeadLetter
	require.Eventually(t, func() bool {
		dls, err := st.DeadLetters(ctx, store.DeadLetterFilter{Reason: event.ReasonDuplicateConflict})
		require.NoError(t, err)
		conflicts = dls
		return len(dls) == 2
	}, 20*time.Second, 20*time.Millisecond)
	(&bundle{js: s.js, store: st}).settle(t)
	all, err := st.DeadLetters(ctx, store.DeadLetterFilter{})
	require.NoError(t, err)
	require.Len(t, all, 3, "the request's own dead letter and two conflicts")
	_, err = consumer.Replay(ctx, st, s.js, conflicts[0].ID)
	require.ErrorIs(t, err, store.ErrNotReplayable)
	require.EqualValues(t, 1, s.outcomeCount(t), "the first request's one outcome")
}

// A Cardbridge-Replay header written by an ERP changes nothing: the
// outcome's id is the request's own.
func TestReplayHeaderFromAnERPIsIgnored(t *testing.T) {
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	s.bind(t, p.svc.Store(), 1)
	req := request(erp, 1)
	m, err := event.EncodeRequest(req, event.Binary)
	require.NoError(t, err)
	msg := m.NATS()
	msg.Header.Set(consumer.ReplayHeader, "7")
	_, err = s.js.PublishMsg(context.Background(), msg)
	require.NoError(t, err)
	o := s.outcomes(t, 1)[0]
	require.Equal(t, event.TypeCardIssued, o.Type)
	require.Equal(t, event.OutcomeID(erp, req.ID), o.ID)
}

// A message that fails validation and carries a NUL byte in a header value
// gets its one outcome on its first delivery (jsonb cannot store NUL).
func TestNULInAHeaderOfABadMessageGetsOneOutcome(t *testing.T) {
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	s.bind(t, p.svc.Store(), 1)
	id := fmt.Sprintf("nul-%d", time.Now().UnixNano())
	msg := raw(map[string]string{
		"ce-specversion": "1.0", "ce-id": id, "ce-source": erp, "ce-type": event.TypeCardRequested,
		"content-type": "application/json", "x-junk": "a\x00b",
	}, []byte(`{"employee":{"id":"E-1"},"clientId":1}`)) // names are missing: schema_invalid
	_, err := s.js.PublishMsg(context.Background(), msg)
	require.NoError(t, err)
	o := s.outcomes(t, 1)[0]
	require.Equal(t, event.TypeCardFailed, o.Type)
	require.Equal(t, id, o.Data.(event.Failed).RequestID)
	(&bundle{js: s.js, store: p.svc.Store()}).settle(t)
	require.EqualValues(t, 1, s.consumerInfo(t).Delivered.Consumer, "on its first delivery")
}

// The review's double card: an order's answer is garbled (the card exists
// under its key), the operator edits the binding, and the next try sends
// the key with another body. The bank's "key reused" is no refusal of the
// order: the request ends as bank_outcome_unknown, never bank_rejected, and
// its replay (with the binding restored) finds the one card.
func TestKeyReusedWithAnotherBodyIsNotARefusal(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, nil)
	cfg := s.cfg
	cfg.RetryFor, cfg.RetryDelayMax, cfg.MBanq.MaxAttempts = 2*time.Second, 50*time.Millisecond, 1
	p := s.start(t, cfg)
	st := p.svc.Store()
	s.bind(t, st, 1)
	first := s.publish(t, 1) // provisions the user
	s.outcomes(t, 1)

	require.NoError(t, s.sb.SetFaults(sandbox.Faults{GarbledResponseNext: 1, Paths: []string{"/v1/cards"}}))
	reqs := s.publish(t, 1)
	require.Eventually(t, func() bool { return s.sb.Stats().GarbledResponses == 1 }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: erp, ClientID: 1, SavingsAccountID: 1, CardProductID: 3}))

	f := s.outcomes(t, 2)[1].Data.(event.Failed)
	require.Equal(t, event.ReasonBankOutcomeUnknown, f.Reason, f.Message)
	require.Len(t, s.sb.Cards(), 2, "the garbled order's card exists")
	require.Greater(t, s.sb.Stats().IdempotencyConflicts, int64(0), "the key came back with another body")

	s.bind(t, st, 1) // the operator restores the binding, then replays
	results, err := consumer.ReplayMatching(ctx, st, s.js, store.DeadLetterFilter{Reason: event.ReasonBankOutcomeUnknown})
	require.NoError(t, err)
	require.Len(t, results, 1)
	require.NoError(t, results[0].Err)
	outs := s.outcomes(t, 3)
	requireIssuedOnce(t, s.sb, append(outs[:1], outs[2]), append(first, reqs...))
}

// A request naming a client the bank does not have fails as bank_rejected:
// it does not pause the process for everyone else.
func TestUnknownClientFailsItsRequestWithoutPausing(t *testing.T) {
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	st := p.svc.Store()
	s.bind(t, st, 1)
	require.NoError(t, st.AddBinding(context.Background(), store.Binding{Source: erp, ClientID: 99, SavingsAccountID: 1, CardProductID: 1}))
	bad := request(erp, 99)
	m, err := event.EncodeRequest(bad, event.Binary)
	require.NoError(t, err)
	_, err = s.js.PublishMsg(context.Background(), m.NATS())
	require.NoError(t, err)
	good := s.publish(t, 3)
	outs := s.outcomes(t, 4)
	var failed []event.Failed
	for _, o := range outs {
		if o.Type == event.TypeCardFailed {
			failed = append(failed, o.Data.(event.Failed))
		}
	}
	require.Len(t, failed, 1)
	require.Equal(t, event.ReasonBankRejected, failed[0].Reason)
	require.Equal(t, bad.ID, failed[0].RequestID)
	requireIssuedOnce(t, s.sb, outs, good)
	require.Zero(t, p.logLines("consumer paused: a fault of the deployment, not of the requests; nothing is failed, messages are handed back and the fault is probed until it clears"))
}

// Time the process spends paused does not spend the retry budget: a
// request that failed at the bank, waited out a pause longer than its
// budget, and fails once more is still retried, and issued.
func TestPauseDoesNotSpendTheRetryBudget(t *testing.T) {
	var addr string
	var srv *http.Server
	var orders atomic.Int64
	var bank http.Handler
	serve := func() {
		ln, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		addr = ln.Addr().String()
		srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The first two orders that reach the bank get a 503.
			if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" && orders.Add(1) <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"httpStatusCode":"503","userMessageGlobalisationCode":"error.msg.platform.service.unavailable"}`)
				return
			}
			bank.ServeHTTP(w, r)
		})}
		go func() { _ = srv.Serve(ln) }()
	}
	addr = "127.0.0.1:0"
	s := newStack(t, func(h http.Handler) string {
		bank = h
		serve()
		return "http://" + addr
	})
	t.Cleanup(func() { _ = srv.Close() })
	cfg := s.cfg
	// The budget (3s) is shorter than the pause (5s); a wait between two
	// tries counts for at most 2*(RetryDelayMax+AckWait) = 2.2s.
	cfg.RetryFor, cfg.RetryDelayMax, cfg.NATS.AckWait, cfg.MBanq.MaxAttempts = 3*time.Second, 100*time.Millisecond, time.Second, 1
	p := s.start(t, cfg)
	s.bind(t, p.svc.Store(), 1)
	reqs := s.publish(t, 1)
	require.Eventually(t, func() bool { return orders.Load() == 1 }, 20*time.Second, 5*time.Millisecond, "the first try met a 503")
	require.NoError(t, srv.Close())
	p.waitPaused(t, mbanq.FaultUnreachable)
	pausedAt := time.Now()
	// The outage itself: the bank stays away for longer than the budget.
	time.Sleep(5 * time.Second)
	serve()
	outs := s.outcomes(t, 1)
	require.Greater(t, time.Since(pausedAt), cfg.RetryFor, "the request outlived its budget in wall time")
	require.EqualValues(t, 3, orders.Load(), "a second 503 after the pause, then the card")
	requireIssuedOnce(t, s.sb, outs, reqs)
}

// A message whose failure Postgres refuses to store is tried three times,
// then terminated with an error line and a metric: it cannot hold its place
// for ever, and the requests behind it are issued.
func TestUnstorableMessageIsDroppedAfterThreeDeliveries(t *testing.T) {
	s := newStack(t, nil)
	cfg := s.cfg
	cfg.RetryDelayMax = 50 * time.Millisecond
	p := s.start(t, cfg)
	st := p.svc.Store()
	s.bind(t, st, 1)
	// A value the database refuses, injected for real: a constraint that
	// this one request id breaks.
	_, err := st.Pool().Exec(context.Background(), `ALTER TABLE processed_requests ADD CONSTRAINT refuse_one CHECK (request_id <> 'unstorable-1')`)
	require.NoError(t, err)
	_, err = s.js.PublishMsg(context.Background(), structured(with(validEvent("unstorable-1"), "data", map[string]any{"clientId": "one"})))
	require.NoError(t, err)
	reqs := s.publish(t, 3)
	outs := s.outcomes(t, 3)
	requireIssuedOnce(t, s.sb, outs, reqs)
	require.Eventually(t, func() bool {
		return strings.Contains(p.metrics(t), "\ncardbridge_messages_dropped_total 1\n")
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, p.logLines("message terminated without a record: Postgres refuses what it carries"))
	(&bundle{js: s.js, store: st}).settle(t)
	require.EqualValues(t, 3, s.outcomeCount(t), "no outcome for the dropped message")
	require.EqualValues(t, 3+3, s.consumerInfo(t).Delivered.Consumer, "three deliveries of it, one of each request")
}

// A flood of poison of every kind ahead of valid requests: every poison
// message is recorded, answered when it names a request, and the valid
// requests behind them are issued.
func TestPoisonFloodIsRecordedAndDoesNotStopIssuance(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	st := p.svc.Store()
	s.bind(t, st, 1)
	const n = 1000
	answered := 0
	for i := range n {
		id := fmt.Sprintf("poison-%d", i)
		var msg *nats.Msg
		switch i % 8 {
		case 0:
			msg = raw(map[string]string{"content-type": "application/cloudevents+json"}, []byte("junk \x00\xff"))
		case 1:
			msg = raw(map[string]string{"ce-specversion": "1.0", "ce-id": id, "ce-source": erp, "ce-type": event.TypeCardRequested,
				"content-type": "application/json", "x-junk": "a\x00b"}, []byte(`{"clientId":1}`))
			answered++
		case 2:
			msg = raw(map[string]string{"ce-specversion": "1.0", "ce-id": "\xff\xfe", "ce-source": erp, "ce-type": event.TypeCardRequested}, []byte(`{}`))
		case 3:
			msg = raw(map[string]string{"ce-specversion": "1.0", "ce-id": id, "ce-source": erp, "ce-type": event.TypeCardRequested,
				"content-type": "application/json"}, []byte(`{"pad":"`+strings.Repeat("x", 70<<10)+`"}`))
			answered++
		case 4:
			msg = structured(without(validEvent(id), "id"))
		case 5:
			msg = structured(with(validEvent(id), "type", "employee.card.cancelled"))
			answered++
		case 6:
			msg = structured(with(validEvent(id), "data", map[string]any{"clientId": "one"}))
			answered++
		case 7:
			msg = raw(nil, []byte(strings.Repeat("{", 1000)))
		}
		_, err := s.js.PublishMsg(ctx, msg)
		require.NoError(t, err)
	}
	reqs := s.publish(t, 20)
	outs := s.outcomes(t, answered+len(reqs))
	requireIssuedOnce(t, s.sb, outs, reqs)
	(&bundle{js: s.js, store: st}).settle(t)
	require.EqualValues(t, answered+len(reqs), s.outcomeCount(t))
	var dead int
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&dead))
	require.Equal(t, n, dead, "every poison message is recorded")
	require.EqualValues(t, n+len(reqs), s.consumerInfo(t).Delivered.Consumer, "each on its first delivery")
}

// The streams cardbridge creates keep what waits and let go of what is
// done: the request stream keeps a message only while a consumer wants it,
// is bounded, and refuses new
// requests when full rather than dropping waiting ones, the outcome stream
// keeps events for the configured retention.
func TestStreamsHaveLimitsThatNeverDropAWaitingRequest(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, nil)
	cfg := s.cfg
	cfg.NATS.RequestMaxBytes, cfg.NATS.OutcomeRetention = 64<<10, 48*time.Hour
	p := s.start(t, cfg)
	s.bind(t, p.svc.Store(), 1)
	reqs := s.publish(t, 5)
	requireIssuedOnce(t, s.sb, s.outcomes(t, 5), reqs)
	(&bundle{js: s.js, store: p.svc.Store()}).settle(t)

	requests, err := s.js.Stream(ctx, "ERP")
	require.NoError(t, err)
	info, err := requests.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, jetstream.InterestPolicy, info.Config.Retention)
	require.Equal(t, jetstream.DiscardNew, info.Config.Discard)
	require.Zero(t, info.Config.MaxAge, "no age limit: a request waits as long as it must")
	require.Zero(t, info.State.Msgs, "processed requests have left the stream")
	// A message on a subject no consumer takes is not kept to fill it.
	_, err = s.js.Publish(ctx, "employee.created", []byte(`{}`))
	require.NoError(t, err)
	info, err = requests.Info(ctx)
	require.NoError(t, err)
	require.Zero(t, info.State.Msgs, "nobody's message is kept")
	cards, err := s.js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	cinfo, err := cards.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 48*time.Hour, cinfo.Config.MaxAge)
	require.EqualValues(t, 5, cinfo.State.Msgs)

	// Paused (a wrong tenant), requests wait; when the stream is full, a
	// new publish is refused and nothing waiting is dropped.
	p.stop()
	bad := cfg
	bad.MBanq.TenantID = "typo"
	p = s.start(t, bad)
	pad := strings.Repeat("x", 4<<10)
	published := 0
	for {
		r := request(erp, 1)
		r.Data.Reference = "" // keep the schema happy; the pad goes in a header
		m, err := event.EncodeRequest(r, event.Binary)
		require.NoError(t, err)
		msg := m.NATS()
		msg.Header.Set("x-pad", pad)
		if _, err := s.js.PublishMsg(ctx, msg); err != nil {
			require.ErrorContains(t, err, "maximum bytes exceeded")
			break
		}
		published++
		require.Less(t, published, 100, "the stream never filled")
	}
	info, err = requests.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, published, info.State.Msgs, "every waiting request kept")
	p.stop()
	s.start(t, cfg)
	require.Len(t, s.outcomes(t, 5+published), 5+published, "each waiting request answered")
}

// The retention's invariant, end to end: a request is issued, its records
// age past CARDBRIDGE_RETENTION and are purged, then the ERP publishes the
// same request again (the same source, id and data, and the CloudEvent
// time it had, by then older than the retention). It is refused as
// request_expired: no second card.
func TestPurgedRequestSentAgainIsRefusedNotOrderedTwice(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, nil)
	cfg := s.cfg
	cfg.Retention, cfg.DeadLetterBodyRetention = 48*time.Hour, 24*time.Hour
	p := s.start(t, cfg)
	st := p.svc.Store()
	s.bind(t, st, 1)
	req := request(erp, 1)
	req.Time = time.Now().Add(-time.Hour)
	m, err := event.EncodeRequest(req, event.Binary)
	require.NoError(t, err)
	_, err = s.js.PublishMsg(ctx, m.NATS())
	require.NoError(t, err)
	require.Equal(t, event.TypeCardIssued, s.outcomes(t, 1)[0].Type)
	(&bundle{js: s.js, store: st}).settle(t)

	// Two days and more go by: the records age past the retention.
	_, err = st.Pool().Exec(ctx, `UPDATE processed_requests SET processed_at = now() - interval '49 hours'`)
	require.NoError(t, err)
	purged, err := st.Purge(ctx, store.Retention{Rows: cfg.Retention, DeadLetterBodies: cfg.DeadLetterBodyRetention})
	require.NoError(t, err)
	require.EqualValues(t, 1, purged.Requests)

	req.Time = req.Time.Add(-49 * time.Hour) // as old as it would be by then
	m, err = event.EncodeRequest(req, event.Binary)
	require.NoError(t, err)
	again := m.NATS()
	// Days later, JetStream's duplicate window (2 minutes) has long passed.
	again.Header.Set(jetstream.MsgIDHeader, "resent-"+req.ID)
	_, err = s.js.PublishMsg(ctx, again)
	require.NoError(t, err)
	// Its card.failed has the request's own event id, which JetStream
	// drops here as a duplicate of the card.issued (days later it would
	// not, and subscribers deduplicating by id keep the first answer):
	// the record says what happened.
	var row store.ProcessedRequest
	require.Eventually(t, func() bool {
		row, err = st.ProcessedRequest(ctx, erp, req.ID)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, store.OutcomeFailed, row.Outcome)
	require.Equal(t, event.ReasonRequestExpired, row.Reason)
	(&bundle{js: s.js, store: st}).settle(t)
	require.Len(t, s.sb.Cards(), 1, "one card")
}

// An order whose answer was lost is not sent again once the bank may have
// forgotten its key: checked before the next delivery's order, whenever
// that delivery comes, not only after a try fails.
func TestUnknownAnswerOlderThanTheKeyRetentionIsNotAskedAgain(t *testing.T) {
	var (
		mu        sync.Mutex
		cut       bool        // orders are cut off without an answer
		cutOrders []time.Time // when each cut order arrived
	)
	s := newStack(t, func(sb http.Handler) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			drop := cut && r.Method == http.MethodPost && r.URL.Path == "/v1/cards"
			if drop {
				cutOrders = append(cutOrders, time.Now())
			}
			mu.Unlock()
			if drop {
				panic(http.ErrAbortHandler) // the connection is lost, no answer
			}
			sb.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	})
	cfg := s.cfg
	// The margin is 2*(2s+1s) = 6s; a key kept 6.5s is given up 0.5s after
	// the lost answer, before the retry a second later.
	cfg.RetryDelayMax, cfg.NATS.AckWait, cfg.BankKeyRetention, cfg.MBanq.MaxAttempts = 2*time.Second, time.Second, 6500*time.Millisecond, 1
	p := s.start(t, cfg)
	s.bind(t, p.svc.Store(), 1)
	s.publish(t, 1)
	s.outcomes(t, 1)
	mu.Lock()
	cut = true
	mu.Unlock()
	s.publish(t, 1)
	f := s.outcomes(t, 2)[1].Data.(event.Failed)
	require.Equal(t, event.ReasonBankOutcomeUnknown, f.Reason)
	require.Contains(t, f.Message, "not asked again")
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, cutOrders)
	for _, at := range cutOrders {
		require.Less(t, at.Sub(cutOrders[0]), 500*time.Millisecond,
			"every order was sent in the first delivery (net/http may resend once at once); none a second later")
	}
}

// A request dated more than an hour ahead is refused: a time that never
// grows old would escape the retention's invariant.
func TestRequestFromTheFutureIsRefused(t *testing.T) {
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	s.bind(t, p.svc.Store(), 1)
	req := request(erp, 1)
	req.Time = time.Now().Add(2 * time.Hour)
	m, err := event.EncodeRequest(req, event.Binary)
	require.NoError(t, err)
	_, err = s.js.PublishMsg(context.Background(), m.NATS())
	require.NoError(t, err)
	f := s.outcomes(t, 1)[0].Data.(event.Failed)
	require.Equal(t, event.ReasonInvalidEvent, f.Reason)
	require.Contains(t, f.Message, "in the future")
	require.Empty(t, s.sb.Cards())
}
