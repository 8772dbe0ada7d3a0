package mbanq

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// Defaults for the optional Config fields.
const (
	DefaultMaxAttempts    = 4
	DefaultBaseBackoff    = 200 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
	DefaultMaxRetryAfter  = 30 * time.Second
	DefaultRequestTimeout = 15 * time.Second
	// DefaultConnectTimeout bounds dialling the bank, and
	// DefaultTLSHandshakeTimeout its TLS handshake, in the default
	// HTTPClient.
	DefaultConnectTimeout      = 5 * time.Second
	DefaultTLSHandshakeTimeout = 10 * time.Second
)

// Config holds the settings shared by every Session of a Client.
type Config struct {
	// BaseURL of the API, e.g. https://api.cloud.mbanq.com. A path prefix is
	// kept; a trailing slash is ignored.
	BaseURL string
	// TenantID is sent as the tenantId header on every call.
	TenantID string
	// ClientID and ClientSecret are the OAuth client credentials used with
	// both grants.
	ClientID     string
	ClientSecret secret.String

	// HTTPClient is optional. The default reuses connections (64 idle per
	// host, because one cardbridge process talks to one host at high
	// concurrency) and bounds dialling and TLS handshakes; the per-attempt
	// deadline comes from RequestTimeout, not from http.Client.Timeout.
	HTTPClient *http.Client
	// Logger is optional; nothing is logged when it is nil. Request bodies
	// are never logged because they may carry passwords.
	Logger *slog.Logger
	// Observer sees every attempt and token grant, for metrics and
	// tracing (package observe); optional.
	Observer Observer

	// MaxAttempts is the number of tries of one call, the first included,
	// for failures that are safe to retry (default 4; 1 disables retries).
	MaxAttempts int
	// BaseBackoff and MaxBackoff bound the exponential backoff between
	// attempts (defaults 200ms and 5s); a random jitter of up to half the
	// delay is subtracted so that many callers do not retry in lockstep.
	BaseBackoff time.Duration
	MaxBackoff  time.Duration
	// MaxRetryAfter is the longest Retry-After the client waits for inside a
	// call (default 30s). A longer one ends the call with an error whose
	// RetryAfter tells the caller when to try again, so a message can be
	// put back on its queue rather than holding a worker.
	MaxRetryAfter time.Duration
	// RequestTimeout bounds each attempt, the response body included
	// (default 15s). The time a call waits for the limiter is not part of
	// it. An attempt that runs out of it has an unknown outcome (the bank
	// may finish the work after we stop listening): it is retried under
	// the same Idempotency-Key, never taken as a refusal.
	RequestTimeout time.Duration
	// ConnectTimeout and TLSHandshakeTimeout bound dialling the bank and
	// the TLS handshake in the default HTTPClient (defaults 5s and 10s);
	// ignored when HTTPClient is set.
	ConnectTimeout      time.Duration
	TLSHandshakeTimeout time.Duration

	// DisableLimiter turns the adaptive limiter off (see limiter.go): every
	// call starts at once, whatever the bank answered before, as each
	// retries on its own. For comparison and for tests of the bare client.
	DisableLimiter bool
	// MaxConcurrency bounds the calls in flight at the bank whatever the
	// limiter learns (default DefaultMaxConcurrency).
	MaxConcurrency int
	// AllowPlainHTTP lets BaseURL be http:// on a host that is not the
	// loopback, for a sandbox on a private network: the client secret,
	// passwords and tokens then cross it in clear.
	AllowPlainHTTP bool
}

// withDefaults returns a copy of c with the optional fields filled in.
func (c Config) withDefaults() Config {
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.TLSHandshakeTimeout == 0 {
		c.TLSHandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if c.MaxConcurrency == 0 {
		c.MaxConcurrency = DefaultMaxConcurrency
	}
	if c.HTTPClient == nil {
		c.HTTPClient = defaultHTTPClient(c.ConnectTimeout, c.TLSHandshakeTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.BaseBackoff == 0 {
		c.BaseBackoff = DefaultBaseBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	return c
}

// validate reports every invalid field at once, naming each and what to
// set, so that a misconfigured process can be fixed in one go. It sees c
// with its defaults applied: a zero field is valid, a negative one is not.
func (c Config) validate() error {
	var errs []error
	if c.BaseURL == "" {
		errs = append(errs, errors.New("Config.BaseURL is required, e.g. https://api.cloud.mbanq.com"))
	} else if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("Config.BaseURL %q is not an http(s) URL", secret.RedactURL(c.BaseURL)))
	} else if u.User != nil {
		errs = append(errs, fmt.Errorf("Config.BaseURL %q carries credentials; MBanq takes them in the token request only: remove them from the URL", u.Redacted()))
	} else if u.Scheme == "http" && !loopback(u.Hostname()) && !c.AllowPlainHTTP {
		errs = append(errs, fmt.Errorf("Config.BaseURL %q is plain http to another host: the client secret, passwords and tokens would cross the network in clear; use https (or set AllowPlainHTTP for a sandbox)", u.Redacted()))
	}
	for _, f := range []struct {
		name  string
		empty bool
	}{{"TenantID", c.TenantID == ""}, {"ClientID", c.ClientID == ""}, {"ClientSecret", c.ClientSecret.IsZero()}} {
		if f.empty {
			errs = append(errs, fmt.Errorf("Config.%s is required", f.name))
		}
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("Config.MaxAttempts %d must be at least 1 (0 for the default, %d)", c.MaxAttempts, DefaultMaxAttempts))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		def  time.Duration
	}{
		{"BaseBackoff", c.BaseBackoff, DefaultBaseBackoff},
		{"MaxBackoff", c.MaxBackoff, DefaultMaxBackoff},
		{"MaxRetryAfter", c.MaxRetryAfter, DefaultMaxRetryAfter},
		{"RequestTimeout", c.RequestTimeout, DefaultRequestTimeout},
		{"ConnectTimeout", c.ConnectTimeout, DefaultConnectTimeout},
		{"TLSHandshakeTimeout", c.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("Config.%s %s must not be negative (0 for the default, %s)", d.name, d.v, d.def))
		}
	}
	if c.BaseBackoff >= 0 && c.MaxBackoff >= 0 && c.MaxBackoff < c.BaseBackoff {
		errs = append(errs, fmt.Errorf("Config.MaxBackoff %s is shorter than BaseBackoff %s; raise it or lower BaseBackoff", c.MaxBackoff, c.BaseBackoff))
	}
	if c.MaxConcurrency < 0 {
		errs = append(errs, fmt.Errorf("Config.MaxConcurrency %d must not be negative (0 for the default, %d)", c.MaxConcurrency, DefaultMaxConcurrency))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("mbanq: %w", errors.Join(errs...))
}

func defaultHTTPClient(connect, handshake time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = handshake
	// Every call goes to one host, with as many in flight as the consumer
	// allows: keep that many connections idle, or each burst closes and
	// redials them (the profile showed a tenth of the CPU in dialing).
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 1024
	tr.IdleConnTimeout = 90 * time.Second
	return &http.Client{
		Transport: tr,
		// A redirect is never followed: it could carry credentials and
		// tokens to another host, or turn a POST into a GET. The 3xx is
		// answered to the caller as a fault of the configuration.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// loopback reports whether host names this machine.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
