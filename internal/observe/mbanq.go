package observe

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/cardbridge/cardbridge/mbanq"
)

// MBanq returns the MBanq client's Observer.
func (t *Telemetry) MBanq() mbanq.Observer { return bankObserver{t} }

type bankObserver struct{ t *Telemetry }

func (o bankObserver) Transport(next http.RoundTripper) http.RoundTripper {
	return &bankTransport{t: o.t, next: next}
}

func (o bankObserver) TokenGranted(grant string, err error) {
	switch grant {
	case "password", "refresh_token":
	default:
		grant = "other"
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	o.t.m.tokenGrants.WithLabelValues(grant, result).Inc()
}

// bankTransport times every attempt at MBanq and, as a child span of the
// caller's, passes the trace context on in the traceparent header.
type bankTransport struct {
	t    *Telemetry
	next http.RoundTripper
}

func (b *bankTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	endpoint := req.Method + " " + Route(req.URL.Path)
	ctx := req.Context()
	var span trace.Span
	if b.t.tracing {
		ctx, span = b.t.tracer.Start(ctx, endpoint, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			attribute.String("http.request.method", req.Method),
			attribute.String("url.template", Route(req.URL.Path)),
			attribute.String("server.address", req.URL.Hostname()),
		))
	}
	// A RoundTripper must not change the caller's request: add the header
	// to a copy. With tracing off this forwards the request's own context.
	req = req.Clone(ctx)
	propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))

	start := time.Now()
	resp, err := b.next.RoundTrip(req)
	status := "error"
	if err == nil {
		status = strconv.Itoa(resp.StatusCode)
	}
	b.t.m.bankDuration.WithLabelValues(endpoint, status).Observe(seconds(time.Since(start)))
	if span != nil {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
			if resp.StatusCode >= 400 {
				span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
			}
		}
		span.End()
	}
	return resp, err
}

// Route is path with its ids replaced by {id}, e.g. /v1/cards/17 becomes
// /v1/cards/{id}: a metric label and span name that does not grow a new
// series per card. A segment is kept only if it looks like the API's
// resource names (lower-case letters, hyphens, underscores) or a version
// (v1).
func Route(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if s != "" && !isName(s) && !isVersion(s) {
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

func isName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isVersion(s string) bool {
	if len(s) < 2 || len(s) > 3 || s[0] != 'v' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
