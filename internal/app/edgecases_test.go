package app_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/consumer"
	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

// ordersCounted is a stack whose bank counts card orders (POST /v1/cards).
func ordersCounted(t *testing.T) (*stack, *atomic.Int64) {
	var orders atomic.Int64
	s := newStack(t, func(sb http.Handler) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" {
				orders.Add(1)
			}
			sb.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	})
	return s, &orders
}

// The retention's invariant says a message is redelivered only while its
// outcome is not committed. That holds for a request stream cardbridge
// creates now (interest retention), not for one an earlier version created
// (limits retention, no limits: every request ever published is still in
// it), which the README says is kept as it is. The README's upgrade step for
// per-ERP subjects is to delete the consumer and let cardbridge recreate it,
// DeliverAll: every old request comes back. One whose records were purged
// must not reach the bank again (a bank keeps an Idempotency-Key for
// CARDBRIDGE_BANK_KEY_RETENTION, not 90 days), with or without a CloudEvent
// time.
//
// The retention here is a day and 5 seconds, so that "older than the
// retention less a day" is 5 seconds of real time: the wait below is the
// passing of time the test is about, not a synchronisation.
func TestOldRequestRedeliveredAfterItsRecordsWerePurgedIsNotOrderedAgain(t *testing.T) {
	ctx := context.Background()
	s, orders := ordersCounted(t)
	// The request stream as an earlier version created it: limits
	// retention, no limits.
	_, err := s.js.CreateStream(ctx, jetstream.StreamConfig{Name: "ERP", Subjects: []string{"employee.>"},
		Storage: jetstream.FileStorage, Duplicates: broker.DuplicateWindow})
	require.NoError(t, err)
	cfg := s.cfg
	const limit = 5 * time.Second
	cfg.Retention, cfg.DeadLetterBodyRetention = 24*time.Hour+limit, 24*time.Hour
	p := s.start(t, cfg)
	st := p.svc.Store()
	s.bind(t, st, 1)

	withTime := request(erp, 1)
	noTime := request(erp, 1)
	noTime.Time = time.Time{} // optional in CloudEvents
	published := time.Now()
	for _, r := range []event.Request{withTime, noTime} {
		m, err := event.EncodeRequest(r, event.Binary)
		require.NoError(t, err)
		_, err = s.js.PublishMsg(ctx, m.NATS())
		require.NoError(t, err)
	}
	requireIssuedOnce(t, s.sb, s.outcomes(t, 2), []event.Request{withTime, noTime})
	(&bundle{js: s.js, store: st}).settle(t)
	require.EqualValues(t, 2, orders.Load())

	// Time goes by: the requests are older than the retention less a day,
	// and their records are purged.
	time.Sleep(time.Until(published.Add(limit + time.Second)))
	_, err = st.Pool().Exec(ctx, `UPDATE processed_requests SET processed_at = now() - interval '49 hours'`)
	require.NoError(t, err)
	purged, err := st.Purge(ctx, store.Retention{Rows: cfg.Retention, DeadLetterBodies: cfg.DeadLetterBodyRetention})
	require.NoError(t, err)
	require.EqualValues(t, 2, purged.Requests)
	p.stop()

	// The README's upgrade step: delete the consumer (no request waits)
	// to have it recreated with the per-ERP subjects.
	require.NoError(t, s.js.DeleteConsumer(ctx, "ERP", "cardbridge"))
	p = s.start(t, cfg)
	st = p.svc.Store()
	(&bundle{js: s.js, store: st}).settle(t)

	require.EqualValues(t, 2, orders.Load(), "a request whose records were purged was sent to the bank again")
	for _, r := range []event.Request{withTime, noTime} {
		row, err := st.ProcessedRequest(ctx, erp, r.ID)
		require.NoError(t, err)
		require.Equal(t, store.OutcomeFailed, row.Outcome, "request %s", r.ID)
		require.Equal(t, event.ReasonRequestExpired, row.Reason, "request %s", r.ID)
	}
	require.Len(t, s.sb.Cards(), 2)
}

// An order whose answer was lost, then a pause (or an outage) longer than
// the retention. The purge must not delete the request's record of the
// unknown answer while the request has no outcome: a later delivery would
// send the order again long after the bank forgot its key (a second card),
// or (with an old time) answer request_expired, telling the ERP to send a
// new request while a card may exist. The right answer is
// bank_outcome_unknown, with no new order.
func TestUnknownAnswerOutlivesAPauseLongerThanTheRetention(t *testing.T) {
	ctx := context.Background()
	var cut atomic.Bool
	var orders atomic.Int64
	s := newStack(t, func(sb http.Handler) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" {
				orders.Add(1)
				if cut.Load() {
					panic(http.ErrAbortHandler) // the connection is lost, no answer
				}
			}
			sb.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	})
	cfg := s.cfg
	cfg.Retention, cfg.DeadLetterBodyRetention = 48*time.Hour, 24*time.Hour
	cfg.RetryDelayMax, cfg.MBanq.MaxAttempts = time.Minute, 1
	p := s.start(t, cfg)
	st := p.svc.Store()
	s.bind(t, st, 1)
	cut.Store(true)
	reqs := s.publish(t, 1)
	require.Eventually(t, func() bool {
		adm, err := st.Admit(ctx, store.AdmissionQuery{Source: erp, RequestID: reqs[0].ID, ClientID: 1})
		return err == nil && adm.Retries != nil && adm.Retries.Unknown
	}, 20*time.Second, 20*time.Millisecond, "the order's answer was lost")
	sent := orders.Load()
	// The process stays away (a pause, an outage) for 49 hours: the
	// record's clock is moved back by that much, and the hourly purge runs.
	_, err := st.Pool().Exec(ctx, `UPDATE bank_retries SET last_at = last_at - interval '49 hours', unknown_since = unknown_since - interval '49 hours'`)
	require.NoError(t, err)
	_, err = st.Purge(ctx, store.Retention{Rows: cfg.Retention, DeadLetterBodies: cfg.DeadLetterBodyRetention})
	require.NoError(t, err)
	p.stop()
	cut.Store(false)
	s.start(t, cfg)
	outs := s.outcomes(t, 1)
	require.Equal(t, event.TypeCardFailed, outs[0].Type, "outcome %+v", outs[0].Data)
	require.Equal(t, event.ReasonBankOutcomeUnknown, outs[0].Data.(event.Failed).Reason)
	require.Equal(t, sent, orders.Load(), "not sent again 49 hours after its answer was lost")
}

// composeNATS starts a NATS server with deploy/nats.conf's users and
// permissions, and a cardbridge stack that connects as its cardbridge user.
// as(user) is the server's URL with that user's demo password.
func composeNATS(t *testing.T) (s *stack, as func(user string) string) {
	opts, err := server.ProcessConfigFile("../../deploy/nats.conf")
	require.NoError(t, err)
	return natsWithUsers(t, func(o *server.Options) { o.Users, o.Authorization = opts.Users, opts.Authorization },
		func(user string) string { return user + "-demo" })
}

// natsWithUsers starts a NATS server that configure gives its users, and
// a cardbridge stack that connects as user cardbridge. as(user) is the
// server's URL with that user's password.
func natsWithUsers(t *testing.T, configure func(*server.Options), password func(user string) string) (s *stack, as func(user string) string) {
	ns, err := broker.StartEmbeddedWith(t.TempDir(), 0, configure)
	require.NoError(t, err)
	t.Cleanup(ns.Stop)
	as = func(user string) string {
		u, err := url.Parse(ns.URL())
		require.NoError(t, err)
		u.User = url.UserPassword(user, password(user))
		return u.String()
	}
	seed := sandbox.DefaultSeed()
	sb := sandbox.New(seed)
	bank := httptest.NewServer(sb)
	t.Cleanup(bank.Close)
	s = &stack{ns: ns, sb: sb, bank: bank.URL, cfg: testenv.Config(t, as("cardbridge"), bank.URL, seed)}
	s.nc, s.js = testenv.JetStream(t, as("cardbridge"))
	return s, as
}

// With deploy/nats.conf, every ERP's user may subscribe to _INBOX.>, where
// JetStream delivers cardbridge's pull requests' messages (and every other
// JetStream API answer). Acme then reads globex's requests (employees' names
// and emails) as cardbridge receives them.
func TestComposeNATSConfigurationKeepsOneERPsRequestsFromAnother(t *testing.T) {
	ctx := context.Background()
	s, as := composeNATS(t)
	p := s.start(t, s.cfg)
	require.NoError(t, p.svc.Store().AddBinding(ctx, store.Binding{Source: "urn:erp:globex", ClientID: 1, SavingsAccountID: 1, CardProductID: 1, Publisher: "globex"}))

	// Acme listens where it is allowed to.
	acme, _ := erpJetStream(t, as("acme"), "acme")
	seen := make(chan *nats.Msg, 1024)
	sub, err := acme.ChanSubscribe("_INBOX.>", seen)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, acme.Flush())

	_, globex := erpJetStream(t, as("globex"), "globex")
	r := request("urn:erp:globex", 1)
	r.Data.Employee = event.Employee{ID: "E-7", FirstName: "Grace", LastName: "Hopper", Email: "grace@globex.example"}
	r.Subject = "E-7"
	m, err := event.EncodeRequest(r, event.Binary)
	require.NoError(t, err)
	msg := m.NATS()
	msg.Subject = "employee.card.requested.globex"
	_, err = globex.PublishMsg(ctx, msg)
	require.NoError(t, err)
	require.Equal(t, event.TypeCardIssued, s.outcomes(t, 1)[0].Type)
	require.NoError(t, acme.Flush())

	var leaked []string
	for len(seen) > 0 {
		m := <-seen
		if strings.Contains(string(m.Data), "grace@globex.example") || strings.Contains(string(m.Data), "cardToken") {
			leaked = append(leaked, m.Subject)
		}
	}
	require.Empty(t, leaked, "acme read globex's request or card as cardbridge received it")
}

// erpJetStream connects as an ERP does to deploy/nats.conf: with the inbox
// prefix its user may subscribe to.
func erpJetStream(t *testing.T, url, erp string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(15*time.Second), nats.CustomInboxPrefix("_INBOX_"+erp))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// JetStream's duplicate window is per stream, keyed by Nats-Msg-Id alone,
// whatever the subject or the publisher. A replay's Nats-Msg-Id is
// cardbridge-replay-<dead letter id>-<generation>: guessable. Acme, on its
// own subject, publishes first with the id of the replay an operator is
// about to make of globex's dead letter; JetStream then drops the replay as
// a duplicate, One reports success, and globex's request is released in the
// store and never answered.
func TestAnotherERPCannotSwallowAReplay(t *testing.T) {
	ctx := context.Background()
	s, as := composeNATS(t)
	p := s.start(t, s.cfg)
	st := p.svc.Store()
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: "urn:erp:globex", ClientID: 2, SavingsAccountID: 2, CardProductID: 1, Publisher: "globex"}))
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: "urn:erp:acme", ClientID: 1, SavingsAccountID: 1, CardProductID: 1, Publisher: "acme"}))
	_, acme := erpJetStream(t, as("acme"), "acme")
	_, globex := erpJetStream(t, as("globex"), "globex")

	// Globex asks for a client it is not bound to yet: a dead letter.
	r := request("urn:erp:globex", 1)
	m, err := event.EncodeRequest(r, event.Binary)
	require.NoError(t, err)
	msg := m.NATS()
	msg.Subject = "employee.card.requested.globex"
	_, err = globex.PublishMsg(ctx, msg)
	require.NoError(t, err)
	require.Equal(t, event.ReasonUnboundSource, s.outcomes(t, 1)[0].Data.(event.Failed).Reason)
	dls, err := st.DeadLetters(ctx, store.DeadLetterFilter{Source: "urn:erp:globex"})
	require.NoError(t, err)
	require.Len(t, dls, 1)
	dl := dls[0]
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: "urn:erp:globex", ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))

	// Acme guesses the replay's Nats-Msg-Id.
	junk := nats.NewMsg("employee.card.requested.acme")
	junk.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("cardbridge-replay-%d-%d", dl.ID, dl.ReplayCount+1))
	junk.Data = []byte("junk")
	_, err = acme.PublishMsg(ctx, junk)
	require.NoError(t, err)

	_, err = consumer.Replay(ctx, st, s.js, dl.ID)
	if err == nil {
		outs := s.outcomes(t, 2)
		require.Equal(t, event.TypeCardIssued, outs[1].Type, "the replay succeeded, so its request is answered")
	}
}

// A request that failed on the contract's subject while its source was
// trusted there (no publisher yet), replayed after the operator bound the
// source to its publisher (as the README recommends), is handled, not
// refused as not its publisher's: otherwise its request is released, never
// answered, and its dead letter pending for ever.
func TestReplayAfterTheSourceWasBoundToItsPublisherIsHandled(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	st := p.svc.Store()
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: erp, ClientID: 2, SavingsAccountID: 2, CardProductID: 1}))
	r := request(erp, 1) // client 1 is not bound yet
	m, err := event.EncodeRequest(r, event.Binary)
	require.NoError(t, err)
	_, err = s.js.PublishMsg(ctx, m.NATS())
	require.NoError(t, err)
	require.Equal(t, event.ReasonUnboundSource, s.outcomes(t, 1)[0].Data.(event.Failed).Reason)
	dls, err := st.DeadLetters(ctx, store.DeadLetterFilter{Source: erp})
	require.NoError(t, err)
	require.Len(t, dls, 1)

	// The operator binds the client, and the source to its publisher.
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: erp, ClientID: 1, SavingsAccountID: 1, CardProductID: 1, Publisher: "acme"}))
	_, err = consumer.Replay(ctx, st, s.js, dls[0].ID)
	require.NoError(t, err)
	outs := s.outcomes(t, 2)
	require.Equal(t, event.TypeCardIssued, outs[1].Type, "the replay is answered: %+v", outs[1].Data)
	require.Len(t, s.sb.Cards(), 1)
}

// A message that names no request (or is refused as another ERP's) is kept
// under its place in the stream. Sequences start again at 1 in a recreated
// stream (the README's way to give an earlier version's stream its limits):
// the next junk message at the same place collided with the old record and
// was acknowledged without any.
func TestPoisonInARecreatedStreamLeavesARecordOfItsOwn(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, nil)
	p := s.start(t, s.cfg)
	st := p.svc.Store()
	count := func() int {
		t.Helper()
		var n int
		require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&n))
		return n
	}
	_, err := s.js.PublishMsg(ctx, raw(nil, []byte("junk one")))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return count() == 1 }, 20*time.Second, 20*time.Millisecond)
	p.stop()
	// The README: a stream's retention cannot be changed in place: recreate it while no requests wait.
	require.NoError(t, s.js.DeleteStream(ctx, "ERP"))
	p = s.start(t, s.cfg)
	st = p.svc.Store()
	_, err = s.js.PublishMsg(ctx, raw(nil, []byte("junk two")))
	require.NoError(t, err)
	(&bundle{js: s.js, store: st}).settle(t)
	require.Equal(t, 2, count(), "the second junk message, at the same place in the new stream, left no record")
}

// A bank (or a proxy before it) that refuses an order with an error code
// longer than card.failed's schema allows (256) must not leave the request
// retrying for ever, sending the order again on every delivery: it is
// answered bank_rejected like any refusal.
func TestRefusalWithAnOverlongBankCodeIsAnswered(t *testing.T) {
	var orders atomic.Int64
	s := newStack(t, func(sb http.Handler) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" {
				orders.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = fmt.Fprintf(w, `{"httpStatusCode":"400","defaultUserMessage":"refused","userMessageGlobalisationCode":%q}`,
					"error.msg.card."+strings.Repeat("x", 300))
				return
			}
			sb.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	})
	defer func() { t.Logf("orders sent: %d", orders.Load()) }()
	cfg := s.cfg
	cfg.RetryDelayMax = 100 * time.Millisecond
	p := s.start(t, cfg)
	s.bind(t, p.svc.Store(), 1)
	s.publish(t, 1)
	f := s.outcomes(t, 1)[0].Data.(event.Failed)
	require.Equal(t, event.ReasonBankRejected, f.Reason)
	require.LessOrEqual(t, utf8.RuneCountInString(f.BankErrorCode), 256, "the schema's maxLength, in characters")
	require.True(t, strings.HasPrefix(f.BankErrorCode, "error.msg.card.x"))
	require.EqualValues(t, 1, orders.Load(), "ordered once, answered")
}
