package observe_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/observe"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/store"
)

const (
	callerTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan   = "00f067aa0ba902b7"
	callerParent = "00-" + callerTrace + "-" + callerSpan + "-01"
)

func TestRouteReplacesIDs(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/v1/cards":              "/v1/cards",
		"/v1/cards/17":           "/v1/cards/{id}",
		"/v1/users/3/pwd":        "/v1/users/{id}/pwd",
		"/oauth/token":           "/oauth/token",
		"/api/v1/cardproducts/9": "/api/v1/cardproducts/{id}",
		"/v1/users/Ada.Lovelace": "/v1/users/{id}",
		"/v1/x/0b6f1c2e-7d9a-4f3e-9a7b-1c2d3e4f5a6b": "/v1/x/{id}",
		"": "",
	} {
		require.Equal(t, want, observe.Route(in), in)
	}
}

func newTelemetry(t *testing.T, tracing bool) (*observe.Telemetry, *tracetest.InMemoryExporter) {
	t.Helper()
	var cfg observe.Config
	var exp *tracetest.InMemoryExporter
	if tracing {
		exp = tracetest.NewInMemoryExporter()
		cfg.Exporter = exp
	}
	tel, err := observe.New(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel, exp
}

// scrape returns the metrics page.
func scrape(t *testing.T, tel *observe.Telemetry) string {
	t.Helper()
	rec := httptest.NewRecorder()
	tel.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	return rec.Body.String()
}

// requireSeries checks that the page has the series with the value.
func requireSeries(t *testing.T, page, series, value string) {
	t.Helper()
	for _, line := range strings.Split(page, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			require.Equal(t, value, rest, series)
			return
		}
	}
	require.Failf(t, "series missing", "%s not in:\n%s", series, page)
}

func TestConsumerObservationCountsAndTraces(t *testing.T) {
	t.Parallel()
	tel, exp := newTelemetry(t, true)
	obs := tel.Consumer()
	ctx := context.Background()

	// An issued request, on its second delivery.
	d := obs.Delivery(ctx, 2)
	require.EqualValues(t, 1, tel.Snapshot().InFlight)
	ref := event.RequestRef{ID: "r-1", Source: "urn:erp:acme", EmployeeID: "E-1", ClientID: 1, TraceParent: callerParent, TraceState: "vendor=x"}
	hctx := d.Request(ctx, event.TypeCardRequested, ref)
	span := trace.SpanContextFromContext(hctx)
	require.Equal(t, callerTrace, span.TraceID().String(), "the handling span continues the caller's trace")
	require.NotEqual(t, callerSpan, span.SpanID().String())
	require.False(t, span.IsRemote(), "a span of this process, which the outcome continues from")
	require.Equal(t, "vendor=x", span.TraceState().String())
	d.Outcome(observe.OutcomeIssued, "")
	d.Settled("ack", nil)

	// A failed one and one handed back; then a duplicate, with no Outcome.
	for _, c := range []struct{ outcome, reason, disp string }{
		{observe.OutcomeFailed, event.ReasonUnboundSource, "term"},
		{"", "", "retry"},
		{"", "", "ack"},
	} {
		d := obs.Delivery(ctx, 1)
		d.Request(ctx, event.TypeCardRequested, event.RequestRef{ID: "r-2", Source: "urn:erp:acme"})
		if c.outcome != "" {
			d.Outcome(c.outcome, c.reason)
		}
		d.Settled(c.disp, nil)
	}
	// A message of another type: its type does not become a label value.
	d = obs.Delivery(ctx, 1)
	d.Request(ctx, "com.example.<script>", event.RequestRef{ID: "r-3", Source: "urn:erp:acme"})
	d.Outcome(observe.OutcomeFailed, event.ReasonUnsupportedEvent)
	d.Settled("term", nil)
	obs.UserProvisioned(1)

	page := scrape(t, tel)
	requireSeries(t, page, `cardbridge_requests_total{outcome="issued",type="employee.card.requested"}`, "1")
	requireSeries(t, page, `cardbridge_requests_total{outcome="failed",type="employee.card.requested"}`, "1")
	requireSeries(t, page, `cardbridge_requests_total{outcome="retry",type="employee.card.requested"}`, "1")
	requireSeries(t, page, `cardbridge_requests_total{outcome="duplicate",type="employee.card.requested"}`, "1")
	requireSeries(t, page, `cardbridge_requests_total{outcome="failed",type="other"}`, "1")
	requireSeries(t, page, `cardbridge_dead_letters_total{reason="unbound_source"}`, "1")
	requireSeries(t, page, `cardbridge_dead_letters_total{reason="unsupported_event"}`, "1")
	requireSeries(t, page, `cardbridge_dead_letters_total{reason="bank_rejected"}`, "0")
	requireSeries(t, page, `cardbridge_requests_in_flight`, "0")
	requireSeries(t, page, `cardbridge_request_deliveries_count`, "4")
	requireSeries(t, page, `cardbridge_request_deliveries_sum`, "5")
	requireSeries(t, page, `cardbridge_request_duration_seconds_count{outcome="failed"}`, "2")
	requireSeries(t, page, `cardbridge_self_service_users_provisioned_total`, "1")
	require.Equal(t, observe.Snapshot{InFlight: 0, Handled: map[string]int64{"issued": 1, "failed": 2, "retry": 1, "duplicate": 1}}, tel.Snapshot())

	require.NoError(t, tel.Flush(ctx))
	spans := exp.GetSpans()
	require.Len(t, spans, 5)
	first := spans[0]
	require.Equal(t, "process employee.card.requested", first.Name)
	require.Equal(t, trace.SpanKindConsumer, first.SpanKind)
	require.Equal(t, callerSpan, first.Parent.SpanID().String())
	require.True(t, first.Parent.IsRemote())
	require.Equal(t, "process message", spans[4].Name)
}

func TestWithoutTracingTheCallersContextGoesOnUnchanged(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, false)
	require.False(t, tel.Tracing())
	d := tel.Consumer().Delivery(context.Background(), 1)
	ref := event.RequestRef{ID: "r-1", Source: "urn:erp:acme", TraceParent: callerParent, TraceState: "vendor=x"}
	ctx := d.Request(context.Background(), event.TypeCardRequested, ref)
	sc := trace.SpanContextFromContext(ctx)
	require.Equal(t, callerSpan, sc.SpanID().String(), "MBanq calls forward the caller's context")
	require.True(t, sc.IsRemote(), "no span of this process: the outcome carries the caller's context as it came")
	d.Settled("ack", nil)

	// And with no trace context at all, none is invented.
	d = tel.Consumer().Delivery(context.Background(), 1)
	ctx = d.Request(context.Background(), event.TypeCardRequested, event.RequestRef{ID: "r-2", Source: "s"})
	require.False(t, trace.SpanContextFromContext(ctx).IsValid())
	d.Settled("ack", nil)
}

func TestBankTransportTimesAndPropagates(t *testing.T) {
	t.Parallel()
	tel, exp := newTelemetry(t, true)
	var got http.Header
	bank := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.WriteHeader(http.StatusCreated)
	}))
	defer bank.Close()
	client := &http.Client{Transport: tel.MBanq().Transport(http.DefaultTransport)}

	d := tel.Consumer().Delivery(context.Background(), 1)
	ctx := d.Request(context.Background(), event.TypeCardRequested, event.RequestRef{ID: "r-1", Source: "s", TraceParent: callerParent})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, bank.URL+"/v1/cards", nil)
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Empty(t, req.Header.Get("traceparent"), "the caller's request is not changed")
	d.Settled("ack", nil)

	// A call that gets no answer.
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:1/v1/cards/42", nil)
	require.NoError(t, err)
	_, err = client.Do(req)
	require.Error(t, err)

	tel.MBanq().TokenGranted("password", nil)
	tel.MBanq().TokenGranted("refresh_token", errors.New("refused"))

	require.NoError(t, tel.Flush(context.Background()))
	spans := exp.GetSpans()
	var call, handling sdktrace.ReadOnlySpan
	for _, s := range spans.Snapshots() {
		switch s.Name() {
		case "POST /v1/cards":
			call = s
		case "process employee.card.requested":
			handling = s
		}
	}
	require.NotNil(t, call)
	require.NotNil(t, handling)
	require.Equal(t, handling.SpanContext().SpanID(), call.Parent().SpanID(), "the call is a child of the handling span")
	require.Equal(t, trace.SpanKindClient, call.SpanKind())
	require.Equal(t, "00-"+callerTrace+"-"+call.SpanContext().SpanID().String()+"-01", got.Get("traceparent"))

	page := scrape(t, tel)
	requireSeries(t, page, `cardbridge_mbanq_request_duration_seconds_count{endpoint="POST /v1/cards",status="201"}`, "1")
	requireSeries(t, page, `cardbridge_mbanq_request_duration_seconds_count{endpoint="GET /v1/cards/{id}",status="error"}`, "1")
	requireSeries(t, page, `cardbridge_mbanq_token_grants_total{grant="password",result="ok"}`, "1")
	requireSeries(t, page, `cardbridge_mbanq_token_grants_total{grant="refresh_token",result="error"}`, "1")
}

func TestRelayObserver(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, false)
	tel.Relay().Published(3, 2, 20*time.Millisecond, errors.New("one timed out"))
	page := scrape(t, tel)
	requireSeries(t, page, `cardbridge_relay_events_total{result="published"}`, "2")
	requireSeries(t, page, `cardbridge_relay_events_total{result="failed"}`, "1")
	requireSeries(t, page, `cardbridge_relay_publish_duration_seconds_count`, "1")
}

// A committed outcome's publish is a producer span under the request's
// handling span, ended with the publish's result; without tracing there
// is nothing to end.
func TestRelayPublishSpan(t *testing.T) {
	t.Parallel()
	off, _ := newTelemetry(t, false)
	require.Nil(t, off.Relay().Publishing(context.Background(), store.OutboxEvent{EventID: "ev-0", Message: event.Message{Subject: "card.issued"}}))

	tel, exp := newTelemetry(t, true)
	ctx := context.Background()
	d := tel.Consumer().Delivery(ctx, 1)
	hctx := d.Request(ctx, event.TypeCardRequested, event.RequestRef{ID: "r-1", Source: "urn:erp:acme", TraceParent: callerParent})
	handling := trace.SpanContextFromContext(hctx)

	tel.Relay().Publishing(hctx, store.OutboxEvent{EventID: "ev-1", Message: event.Message{Subject: "card.issued"}})(nil)
	tel.Relay().Publishing(hctx, store.OutboxEvent{EventID: "ev-2", Message: event.Message{Subject: "card.failed"}})(errors.New("no responders"))
	d.Settled("ack", nil)
	require.NoError(t, tel.Flush(ctx))

	byName := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		byName[s.Name] = s
	}
	ok := byName["publish card.issued"]
	require.Equal(t, trace.SpanKindProducer, ok.SpanKind)
	require.Equal(t, handling.SpanID(), ok.Parent.SpanID(), "a child of the handling span")
	require.Equal(t, callerTrace, ok.SpanContext.TraceID().String())
	require.Equal(t, codes.Unset, ok.Status.Code)
	failed := byName["publish card.failed"]
	require.Equal(t, codes.Error, failed.Status.Code)
	require.Equal(t, "no responders", failed.Status.Description)
}

// A request's admission and the commit of its outcome are each a span
// under its handling span, covering the store's batch they went in; a
// call whose context has no span records nothing. Without tracing there
// is nothing to record.
func TestStoreBatchSpans(t *testing.T) {
	off, _ := newTelemetry(t, false)
	require.Nil(t, off.Store().Batch("admit", []context.Context{context.Background()}))

	tel, exp := newTelemetry(t, true)
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{URL: secret.New(testenv.DatabaseURL(t)), Observer: tel.Store()})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	require.NoError(t, s.MigrateUp(ctx, io.Discard))

	d := tel.Consumer().Delivery(ctx, 1)
	hctx := d.Request(ctx, event.TypeCardRequested, event.RequestRef{ID: "r-1", Source: "urn:erp:acme", TraceParent: callerParent})
	handling := trace.SpanContextFromContext(hctx)
	_, err = s.Admit(hctx, store.AdmissionQuery{Source: "urn:erp:acme", RequestID: "r-1", ClientID: 1})
	require.NoError(t, err)
	inserted, err := s.Complete(hctx, store.Completion{Source: "urn:erp:acme", RequestID: "r-1", PayloadHash: []byte{1},
		Outcome: store.OutcomeFailed, Reason: event.ReasonUnboundSource})
	require.NoError(t, err)
	require.True(t, inserted)
	_, err = s.Admit(ctx, store.AdmissionQuery{Source: "urn:erp:acme", RequestID: "r-2", ClientID: 1})
	require.NoError(t, err)
	require.NoError(t, tel.Flush(ctx))

	byName := map[string][]tracetest.SpanStub{}
	for _, sp := range exp.GetSpans() {
		byName[sp.Name] = append(byName[sp.Name], sp)
	}
	for _, op := range []string{"admit", "commit"} {
		spans := byName["store "+op]
		require.Len(t, spans, 1, op)
		sp := spans[0]
		require.Equal(t, trace.SpanKindClient, sp.SpanKind)
		require.Equal(t, handling.SpanID(), sp.Parent.SpanID(), "a child of the handling span")
		require.Equal(t, callerTrace, sp.SpanContext.TraceID().String())
		require.Equal(t, codes.Unset, sp.Status.Code)
		require.Contains(t, sp.Attributes, attribute.String("db.operation.name", op))
	}

	// In a batch of several, each call's span ends with its own result.
	exp.Reset()
	other := tel.Consumer().Delivery(ctx, 1)
	octx := other.Request(ctx, event.TypeCardRequested, event.RequestRef{ID: "r-3", Source: "urn:erp:acme"})
	end := tel.Store().Batch("commit", []context.Context{hctx, ctx, octx})
	end([]error{errors.New("refused"), nil, nil})
	other.Settled("ack", nil)
	d.Settled("term", nil)
	require.NoError(t, tel.Flush(ctx))
	var batch []tracetest.SpanStub
	for _, sp := range exp.GetSpans() {
		if sp.Name == "store commit" {
			batch = append(batch, sp)
		}
	}
	require.Len(t, batch, 2, "none for the call without a span")
	for _, sp := range batch {
		require.Contains(t, sp.Attributes, attribute.Int("db.operation.batch.size", 3))
		if sp.Parent.SpanID() == handling.SpanID() {
			require.Equal(t, codes.Error, sp.Status.Code)
			require.Equal(t, "refused", sp.Status.Description)
		} else {
			require.Equal(t, trace.SpanContextFromContext(octx).SpanID(), sp.Parent.SpanID())
			require.Equal(t, codes.Unset, sp.Status.Code)
		}
	}
}

type fakeStats struct {
	err      error
	previous int64
}

func (f fakeStats) OutboxBacklog(context.Context) (int64, time.Duration, error) {
	return 4, 90 * time.Second, f.err
}
func (f fakeStats) PendingDeadLetters(context.Context) (map[string]int64, error) {
	return map[string]int64{"bank_rejected": 2}, f.err
}
func (f fakeStats) SelfServiceUserCounts(context.Context) (map[string]int64, error) {
	return map[string]int64{"active": 3}, f.err
}
func (f fakeStats) SealedPasswordCounts(context.Context) (int64, int64, error) {
	return 3, f.previous, f.err
}

func TestWatchStore(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, false)
	require.NoError(t, tel.WatchStore(fakeStats{}))
	page := scrape(t, tel)
	requireSeries(t, page, `cardbridge_store_stats_up`, "1")
	requireSeries(t, page, `cardbridge_outbox_backlog`, "4")
	requireSeries(t, page, `cardbridge_outbox_oldest_age_seconds`, "90")
	requireSeries(t, page, `cardbridge_dead_letters_pending{reason="bank_rejected"}`, "2")
	requireSeries(t, page, `cardbridge_dead_letters_pending{reason="unbound_source"}`, "0")
	requireSeries(t, page, `cardbridge_self_service_users{status="active"}`, "3")
	requireSeries(t, page, `cardbridge_self_service_users{status="provisioning"}`, "0")
	requireSeries(t, page, `cardbridge_sealed_passwords{key="current"}`, "3")
	requireSeries(t, page, `cardbridge_sealed_passwords{key="previous"}`, "0")
	tel, _ = newTelemetry(t, false)
	require.NoError(t, tel.WatchStore(fakeStats{previous: 5}))
	requireSeries(t, scrape(t, tel), `cardbridge_sealed_passwords{key="previous"}`, "5")

	// A database that does not answer costs its own series, not the scrape.
	tel, _ = newTelemetry(t, false)
	require.NoError(t, tel.WatchStore(fakeStats{err: errors.New("down")}))
	page = scrape(t, tel)
	requireSeries(t, page, `cardbridge_store_stats_up`, "0")
	require.NotContains(t, page, "cardbridge_outbox_backlog ")
	require.Contains(t, page, "cardbridge_requests_in_flight 0")
}

// The sealed-password counts come from the store, against the key the
// store was told is current; a rotation shows as previous > 0 until the
// passwords are resealed.
func TestWatchStoreCountsSealedPasswordsFromTheStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testenv.DatabaseURL(t)
	open := func(keyID string) *store.Store {
		s, err := store.Open(ctx, store.Options{URL: secret.New(url), SealingKey: keyID})
		require.NoError(t, err)
		t.Cleanup(s.Close)
		return s
	}
	s := open("k-old")
	require.NoError(t, s.MigrateUp(ctx, io.Discard))
	tel, _ := newTelemetry(t, false)
	require.NoError(t, tel.WatchStore(s))
	page := scrape(t, tel)
	requireSeries(t, page, `cardbridge_sealed_passwords{key="current"}`, "0")
	requireSeries(t, page, `cardbridge_sealed_passwords{key="previous"}`, "0")

	for i, key := range []string{"k-old", "k-old", "", "k-new"} {
		_, err := s.RecordProvisioning(ctx, store.SelfServiceUser{ClientID: int64(i + 1), Username: fmt.Sprint("u", i), PasswordSealed: []byte("x"), SealingKey: key})
		require.NoError(t, err)
	}
	page = scrape(t, tel)
	requireSeries(t, page, `cardbridge_sealed_passwords{key="current"}`, "2")
	requireSeries(t, page, `cardbridge_sealed_passwords{key="previous"}`, "2")

	// After the rotation to k-new.
	tel, _ = newTelemetry(t, false)
	require.NoError(t, tel.WatchStore(open("k-new")))
	page = scrape(t, tel)
	requireSeries(t, page, `cardbridge_sealed_passwords{key="current"}`, "1")
	requireSeries(t, page, `cardbridge_sealed_passwords{key="previous"}`, "3")
	requireSeries(t, page, `cardbridge_store_stats_up`, "1")
}

func TestWatchProbes(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, false)
	require.NoError(t, tel.WatchProbes(observe.Probes{
		Ready:    func(context.Context) map[string]bool { return map[string]bool{"postgres": true, "nats": false} },
		Consumer: func(context.Context) (uint64, int, error) { return 12, 3, nil },
	}))
	page := scrape(t, tel)
	requireSeries(t, page, `cardbridge_ready{check="postgres"}`, "1")
	requireSeries(t, page, `cardbridge_ready{check="nats"}`, "0")
	requireSeries(t, page, `cardbridge_consumer_pending`, "12")
	requireSeries(t, page, `cardbridge_consumer_ack_pending`, "3")
}

func TestLoggerAddsTheRequestAndTrace(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := observe.Logger(slog.New(slog.NewJSONHandler(&buf, nil))).With("component", "mbanq")
	tel, _ := newTelemetry(t, false)
	d := tel.Consumer().Delivery(context.Background(), 1)
	ctx := d.Request(context.Background(), event.TypeCardRequested,
		event.RequestRef{ID: "r-1", Source: "urn:erp:acme", EmployeeID: "E-7", TraceParent: callerParent})
	log.InfoContext(ctx, "mbanq call", "op", "order card")
	log.Info("not about a request")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	for _, want := range []string{`"request_source":"urn:erp:acme"`, `"request_id":"r-1"`, `"employee_id":"E-7"`, `"trace_id":"` + callerTrace + `"`, `"component":"mbanq"`} {
		require.Contains(t, lines[0], want)
	}
	require.NotContains(t, lines[1], "request_id")
	require.Same(t, log, observe.Logger(log), "wrapping twice adds nothing")
}

func TestNewRefusesABadEndpoint(t *testing.T) {
	t.Parallel()
	_, err := observe.New(context.Background(), observe.Config{TracesURL: "::not a url"})
	require.Error(t, err)
}

// The bank client's limiter is exported once a client is made with the
// observer, as the client sees it.
func TestLimiterMetrics(t *testing.T) {
	t.Parallel()
	tel, _ := newTelemetry(t, false)
	require.NotContains(t, scrape(t, tel), "cardbridge_mbanq_limiter_", "nothing before a client")
	bank := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer bank.Close()
	c, err := mbanq.New(mbanq.Config{BaseURL: bank.URL, TenantID: "t", ClientID: "c", ClientSecret: secret.New("s"),
		MaxAttempts: 1, Observer: tel.MBanq()})
	require.NoError(t, err)
	page := scrape(t, tel)
	requireSeries(t, page, `cardbridge_mbanq_limiter_rate`, "+Inf")
	requireSeries(t, page, `cardbridge_mbanq_limiter_cuts_total`, "0")
	_, err = c.As(mbanq.Credentials{Username: "u", Password: secret.New("p")}).Token(context.Background())
	require.Error(t, err, "refused with 429")
	page = scrape(t, tel)
	requireSeries(t, page, `cardbridge_mbanq_limiter_cuts_total`, "1")
	requireSeries(t, page, `cardbridge_mbanq_limiter_in_flight`, "0")
	require.Contains(t, page, "cardbridge_mbanq_limiter_pause_seconds 29.", "the bank's pause")
}
