package mbanq

import "net/http"

// Observer sees the client's traffic, for metrics and tracing. Package
// observe implements it; a nil Config.Observer observes nothing.
type Observer interface {
	// Transport wraps the HTTP transport, so that it sees every attempt,
	// token requests included, with the caller's context (and so its
	// trace). It is called once, by New.
	Transport(next http.RoundTripper) http.RoundTripper
	// TokenGranted is told of every OAuth token request: its grant type
	// ("password" or "refresh_token") and its error, nil when a token
	// was issued.
	TokenGranted(grant string, err error)
}

// nopObserver observes nothing.
type nopObserver struct{}

func (nopObserver) Transport(next http.RoundTripper) http.RoundTripper { return next }
func (nopObserver) TokenGranted(string, error)                         {}

// observer is the configured Observer, or one that observes nothing.
func (c *Client) observer() Observer {
	if c.cfg.Observer == nil {
		return nopObserver{}
	}
	return c.cfg.Observer
}

// observed returns hc with its transport wrapped by o: a copy, so that a
// caller's client is left as it was.
func observed(hc *http.Client, o Observer) *http.Client {
	if o == nil {
		return hc
	}
	next := hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	cp := *hc
	cp.Transport = o.Transport(next)
	return &cp
}

// LimiterWatcher is an Observer that also exports the adaptive limiter's
// state (optional): New hands it a function that reads the state.
type LimiterWatcher interface {
	WatchLimiter(state func() LimiterState)
}
