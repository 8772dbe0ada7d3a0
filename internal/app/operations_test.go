package app_test

import (
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/config"
	"github.com/cardbridge/cardbridge/internal/testenv"
)

// get fetches a path of the service's HTTP listener.
func (b *bundle) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + b.svc.HTTPAddr() + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// series returns the value of one series on a metrics page, or fails.
func series(t *testing.T, page, name string) string {
	t.Helper()
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	require.Failf(t, "series missing", "%s not on the metrics page", name)
	return ""
}

func TestMetricsAfterAFlow(t *testing.T) {
	logs := &testenv.LogBuffer{}
	b := setupWith(t, options{log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	issued := request(erp, 1)
	b.publish(t, issued, event.Binary)
	b.publish(t, request("urn:erp:stranger", 1), event.Structured)
	b.outcomes(t, 2)
	require.EqualValues(t, 2, b.settle(t))
	b.publish(t, issued, event.Structured) // a duplicate
	require.EqualValues(t, 2, b.settle(t))

	code, page := b.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Eventually(t, func() bool {
		// The duplicate's ack precedes its count by a hair.
		_, page = b.get(t, "/metrics")
		return strings.Contains(page, `cardbridge_requests_total{outcome="duplicate",type="employee.card.requested"} 1`)
	}, 5*time.Second, 20*time.Millisecond)
	for name, want := range map[string]string{
		`cardbridge_requests_total{outcome="issued",type="employee.card.requested"}`:              "1",
		`cardbridge_requests_total{outcome="failed",type="employee.card.requested"}`:              "1",
		`cardbridge_requests_total{outcome="retry",type="employee.card.requested"}`:               "0",
		`cardbridge_dead_letters_total{reason="unbound_source"}`:                                  "1",
		`cardbridge_dead_letters_pending{reason="unbound_source"}`:                                "1",
		`cardbridge_request_deliveries_count`:                                                     "3",
		`cardbridge_requests_in_flight`:                                                           "0",
		`cardbridge_self_service_users_provisioned_total`:                                         "1",
		`cardbridge_self_service_users{status="active"}`:                                          "1",
		`cardbridge_sealed_passwords{key="current"}`:                                              "1",
		`cardbridge_sealed_passwords{key="previous"}`:                                             "0",
		`cardbridge_mbanq_token_grants_total{grant="password",result="ok"}`:                       "2", // admin and self-service user
		`cardbridge_mbanq_request_duration_seconds_count{endpoint="POST /v1/cards",status="200"}`: "1",
		`cardbridge_relay_events_total{result="published"}`:                                       "2",
		`cardbridge_outbox_backlog`:                                                               "0",
		`cardbridge_outbox_oldest_age_seconds`:                                                    "0",
		`cardbridge_store_stats_up`:                                                               "1",
		`cardbridge_ready{check="postgres"}`:                                                      "1",
		`cardbridge_ready{check="nats"}`:                                                          "1",
		`cardbridge_consumer_pending`:                                                             "0",
		`cardbridge_consumer_ack_pending`:                                                         "0",
	} {
		require.Equal(t, want, series(t, page, name), name)
	}
	require.Equal(t, "1", series(t, page, `cardbridge_request_duration_seconds_count{outcome="issued"}`))
	require.Contains(t, page, "go_goroutines ")

	// Every cardbridge series an alert rule uses exists.
	rules, err := os.ReadFile("../../deploy/alerts.yml")
	require.NoError(t, err)
	names := regexp.MustCompile(`cardbridge_[a-z_]+`).FindAllString(string(rules), -1)
	require.NotEmpty(t, names)
	for _, n := range names {
		family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")
		require.Contains(t, page, "# TYPE "+family+" ", "deploy/alerts.yml uses %s", n)
	}

	// The MBanq client's own log lines name the request they work for.
	var bankLines int
	for _, l := range logs.Lines() {
		if l["msg"] == "mbanq call" && l["path"] == "/v1/cards" {
			bankLines++
			require.Equal(t, issued.ID, l["request_id"])
			require.Equal(t, erp, l["request_source"])
			require.Equal(t, "E-42", l["employee_id"])
			require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", l["trace_id"])
		}
	}
	require.Equal(t, 1, bankLines)

	// Health endpoints are still there.
	code, _ = b.get(t, "/healthz")
	require.Equal(t, http.StatusOK, code)
	code, _ = b.get(t, "/readyz")
	require.Equal(t, http.StatusOK, code)
}

// otlpReceiver is a minimal OTLP/HTTP traces endpoint that keeps the spans.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil || req.URL.Path != "/v1/traces" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	var export coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &export); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range export.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			r.spans = append(r.spans, ss.Spans...)
		}
	}
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (r *otlpReceiver) named(name string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func TestTraceContinuesThroughMBanqOntoTheOutcome(t *testing.T) {
	// Export promptly rather than every 5s.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	t.Cleanup(collector.Close)

	var mu sync.Mutex
	bankParents := map[string]string{} // path -> traceparent seen by the bank
	b := setupWith(t, options{
		cfg: func(c *config.Config) { c.Operations.TracesURL = collector.URL + "/v1/traces" },
		bank: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				bankParents[r.Method+" "+r.URL.Path] = r.Header.Get("traceparent")
				mu.Unlock()
				next.ServeHTTP(w, r)
			})
		},
	})
	req := request(erp, 1) // traceparent 00-4bf9...-00f067aa0ba902b7-01
	b.publish(t, req, event.Binary)
	out := b.outcomes(t, 1)[0]
	require.Equal(t, event.TypeCardIssued, out.Type)

	var handling *tracepb.Span
	require.Eventually(t, func() bool {
		hs := recv.named("process employee.card.requested")
		if len(hs) == 0 || len(recv.named("POST /v1/cards")) == 0 {
			return false
		}
		handling = hs[0]
		return true
	}, 15*time.Second, 50*time.Millisecond)

	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	require.Equal(t, trace, hex.EncodeToString(handling.TraceId), "cardbridge joins the ERP's trace")
	require.Equal(t, "00f067aa0ba902b7", hex.EncodeToString(handling.ParentSpanId), "as a child of the ERP's span")
	require.Equal(t, tracepb.Span_SPAN_KIND_CONSUMER, handling.Kind)
	handlingID := hex.EncodeToString(handling.SpanId)

	// Tracing is observation: what is published is the same with it on
	// (here) as off (TestRequestBecomesCardIssuedInEachMode), the
	// request's own trace context, so a subscriber's spans join the same
	// trace beside cardbridge's.
	require.Equal(t, req.TraceParent, out.TraceParent, "the outcome carries the request's trace context, tracing on or off")

	order := recv.named("POST /v1/cards")[0]
	require.Equal(t, handlingID, hex.EncodeToString(order.ParentSpanId), "the card order is a child of the handling span")
	require.Equal(t, tracepb.Span_SPAN_KIND_CLIENT, order.Kind)
	mu.Lock()
	seen := bankParents["POST /v1/cards"]
	mu.Unlock()
	require.Equal(t, "00-"+trace+"-"+hex.EncodeToString(order.SpanId)+"-01", seen, "MBanq gets the call span's context")
	var publish *tracepb.Span
	require.Eventually(t, func() bool {
		ps := recv.named("publish card.issued")
		if len(ps) == 0 {
			return false
		}
		publish = ps[0]
		return true
	}, 15*time.Second, 50*time.Millisecond)
	require.Equal(t, handlingID, hex.EncodeToString(publish.ParentSpanId), "the outcome's publish is a child of the handling span")
	require.Equal(t, tracepb.Span_SPAN_KIND_PRODUCER, publish.Kind)
	for _, s := range recv.named("POST /oauth/token") {
		require.Equal(t, trace, hex.EncodeToString(s.TraceId), "token fetches belong to the request's trace too")
	}
}
