package app_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/app"
	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/observe"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

const erp = "urn:erp:acme"

// bundle is one running cardbridge with its own database schema, NATS
// server and MBanq sandbox.
type bundle struct {
	svc     *app.Service
	store   *store.Store
	sandbox *sandbox.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     config.Config
}

// options vary a bundle.
type options struct {
	log  *slog.Logger                    // default: discard
	bank func(http.Handler) http.Handler // wraps the sandbox
	seed *sandbox.Seed                   // default: sandbox.DefaultSeed()
	cfg  func(*config.Config)            // adjusts the configuration
}

func setup(t *testing.T) *bundle { return setupWith(t, options{}) }

func setupWith(t *testing.T, o options) *bundle {
	t.Helper()
	ns := testenv.NATS(t)
	seed := sandbox.DefaultSeed()
	if o.seed != nil {
		seed = *o.seed
	}
	sb := sandbox.New(seed)
	var h http.Handler = sb
	if o.bank != nil {
		h = o.bank(sb)
	}
	bank := httptest.NewServer(h)
	t.Cleanup(bank.Close)
	if o.log == nil {
		o.log = observe.DiscardLogger()
	}

	cfg := testenv.Config(t, ns.URL(), bank.URL, seed)
	if o.cfg != nil {
		o.cfg(&cfg)
	}

	ctx, cancel := context.WithCancel(context.Background())
	svc, err := app.Start(ctx, cfg, o.log)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	require.NoError(t, svc.Store().AddBinding(ctx, store.Binding{Source: erp, ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))

	nc, js := testenv.JetStream(t, ns.URL())
	return &bundle{svc: svc, store: svc.Store(), sandbox: sb, nc: nc, js: js, cfg: cfg}
}

func request(source string, clientID int64) event.Request {
	return event.Request{
		ID: uuid.NewString(), Source: source, Subject: "E-42", Time: time.Now().UTC(),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Data: event.RequestData{
			Employee:  event.Employee{ID: "E-42", FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com"},
			ClientID:  clientID,
			Reference: "PO-7",
		},
	}
}

func (b *bundle) publish(t *testing.T, r event.Request, mode event.Mode) {
	t.Helper()
	m, err := event.EncodeRequest(r, mode)
	require.NoError(t, err)
	_, err = b.js.PublishMsg(context.Background(), m.NATS())
	require.NoError(t, err)
}

// outcomes reads every event on the CARDS stream, from the start.
func (b *bundle) outcomes(t *testing.T, want int) []event.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := b.js.OrderedConsumer(ctx, "CARDS", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	var out []event.Outcome
	for len(out) < want {
		msg, err := cons.Next(jetstream.FetchMaxWait(15 * time.Second))
		require.NoError(t, err, "waiting for outcome %d of %d", len(out)+1, want)
		o, err := event.DecodeOutcome(msg.Headers(), msg.Data())
		require.NoError(t, err)
		require.Equal(t, o.ID, msg.Headers().Get("Nats-Msg-Id"), "Nats-Msg-Id is the event id")
		out = append(out, o)
	}
	return out
}

// settle waits until the consumer has acknowledged every request and the
// relay has emptied the outbox, then returns the number of outcome events.
func (b *bundle) settle(t *testing.T) uint64 {
	t.Helper()
	ctx := context.Background()
	require.Eventually(t, func() bool {
		stream, err := b.js.Stream(ctx, "ERP")
		if err != nil {
			return false
		}
		cons, err := stream.Consumer(ctx, "cardbridge")
		if err != nil {
			return false
		}
		// The ack floor, not NumPending: right after a publish the
		// consumer's pending count can lag the stream for a moment.
		sinfo, err := stream.Info(ctx)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false
		}
		n, _, err := b.store.OutboxBacklog(ctx)
		return err == nil && info.AckFloor.Stream >= sinfo.State.LastSeq && info.NumAckPending == 0 && n == 0
	}, 20*time.Second, 20*time.Millisecond)
	stream, err := b.js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	return info.State.Msgs
}

func TestRequestBecomesCardIssuedInEachMode(t *testing.T) {
	for _, mode := range []event.Mode{event.Structured, event.Binary} {
		t.Run(mode.String(), func(t *testing.T) {
			b := setup(t)
			req := request(erp, 1)
			b.publish(t, req, mode)

			outs := b.outcomes(t, 1)
			o := outs[0]
			require.Equal(t, event.TypeCardIssued, o.Type)
			require.Equal(t, event.OutcomeID(erp, req.ID), o.ID)
			require.Equal(t, config.DefaultSource, o.Source)
			require.Equal(t, "E-42", o.Subject)
			require.Equal(t, req.TraceParent, o.TraceParent, "traceparent is carried onto the outcome")
			require.NoError(t, o.Validate())
			d := o.Data.(event.Issued)
			require.Equal(t, req.ID, d.RequestID)
			require.Equal(t, erp, d.RequestSource)
			require.Equal(t, "E-42", d.EmployeeID)
			require.EqualValues(t, 1, d.ClientID)
			require.EqualValues(t, 1, d.ProductID)
			require.Equal(t, "PO-7", d.Reference)
			require.NotEmpty(t, d.CardToken)
			require.NotZero(t, d.CardID)
			require.Equal(t, "ACTIVE", d.Status)

			cards := b.sandbox.Cards()
			require.Len(t, cards, 1)
			require.Equal(t, d.CardID, cards[0].ID)
			require.Equal(t, d.CardToken, cards[0].CardToken)
			require.EqualValues(t, 1, b.settle(t))
		})
	}
}

func TestDuplicateDeliveryYieldsNoSecondCardOrEvent(t *testing.T) {
	b := setup(t)
	req := request(erp, 1)
	b.publish(t, req, event.Binary)
	b.outcomes(t, 1)
	// The same request again, in the other mode, as an ERP retrying would.
	b.publish(t, req, event.Structured)
	require.EqualValues(t, 1, b.settle(t), "one outcome event")
	require.Equal(t, 1, b.sandbox.CardCount(1), "one card at the bank")

	// A second, different request of the same client reuses its
	// self-service user and gets its own card.
	b.publish(t, request(erp, 1), event.Binary)
	require.EqualValues(t, 2, b.settle(t))
	require.Equal(t, 2, b.sandbox.CardCount(1))
	users, err := b.store.SelfServiceUsers(context.Background())
	require.NoError(t, err)
	require.Len(t, users, 1)
	require.Equal(t, store.UserActive, users[0].Status)
}

func TestUnboundSourceGetsCardFailedWithoutBankCall(t *testing.T) {
	for name, tc := range map[string]struct {
		source   string
		clientID int64
	}{
		"unknown source":           {"urn:erp:stranger", 1},
		"client not of the source": {erp, 2},
	} {
		t.Run(name, func(t *testing.T) {
			b := setup(t)
			req := request(tc.source, tc.clientID)
			b.publish(t, req, event.Binary)
			o := b.outcomes(t, 1)[0]
			require.Equal(t, event.TypeCardFailed, o.Type)
			require.Equal(t, event.OutcomeID(tc.source, req.ID), o.ID)
			require.NoError(t, o.Validate())
			d := o.Data.(event.Failed)
			require.Equal(t, event.ReasonUnboundSource, d.Reason)
			require.Equal(t, req.ID, d.RequestID)
			require.Equal(t, tc.source, d.RequestSource)
			require.Equal(t, tc.clientID, d.ClientID)
			require.NotEmpty(t, d.Message)
			require.EqualValues(t, 1, b.settle(t))
			require.Empty(t, b.sandbox.Cards(), "no card")
			users, err := b.store.SelfServiceUsers(context.Background())
			require.NoError(t, err)
			require.Empty(t, users, "no self-service user was provisioned")
		})
	}
}

func TestStartRefusesPendingMigrations(t *testing.T) {
	ns := testenv.NATS(t)
	cfg := config.Defaults()
	cfg.DatabaseURL = secret.New(testenv.DatabaseURL(t))
	cfg.NATSURL = ns.URL()
	cfg.MBanq = config.MBanq{BaseURL: "http://127.0.0.1:1", TenantID: "t", ClientID: "c", OfficeID: 1}
	cfg.SecretKey = testenv.SecretKey(t)
	cfg.HTTPAddr = "127.0.0.1:0"
	_, err := app.Start(context.Background(), cfg, observe.DiscardLogger())
	require.ErrorIs(t, err, store.ErrPendingMigrations)
	require.Contains(t, err.Error(), "cardbridge migrate up")
}
