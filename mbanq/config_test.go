package mbanq_test

import (
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
)

func TestNewRefusesAnInvalidFieldNamingIt(t *testing.T) {
	t.Parallel()
	with := func(mod func(*mbanq.Config)) mbanq.Config {
		c := mbanq.Config{BaseURL: "https://api.cloud.mbanq.com", TenantID: "t", ClientID: "c", ClientSecret: secret.New("s")}
		mod(&c)
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  mbanq.Config
		want string
	}{
		{"BaseURL", with(func(c *mbanq.Config) { c.BaseURL = "" }), "mbanq: Config.BaseURL is required, e.g. https://api.cloud.mbanq.com"},
		{"BaseURL scheme", with(func(c *mbanq.Config) { c.BaseURL = "ftp://bank" }), `mbanq: Config.BaseURL "ftp://bank" is not an http(s) URL`},
		{"TenantID", with(func(c *mbanq.Config) { c.TenantID = "" }), "mbanq: Config.TenantID is required"},
		{"ClientID", with(func(c *mbanq.Config) { c.ClientID = "" }), "mbanq: Config.ClientID is required"},
		{"ClientSecret", with(func(c *mbanq.Config) { c.ClientSecret = secret.String{} }), "mbanq: Config.ClientSecret is required"},
		{"MaxAttempts", with(func(c *mbanq.Config) { c.MaxAttempts = -1 }), "mbanq: Config.MaxAttempts -1 must be at least 1 (0 for the default, 4)"},
		{"BaseBackoff", with(func(c *mbanq.Config) { c.BaseBackoff = -time.Second }), "mbanq: Config.BaseBackoff -1s must not be negative (0 for the default, 200ms)"},
		{"MaxBackoff", with(func(c *mbanq.Config) { c.MaxBackoff = time.Millisecond }), "mbanq: Config.MaxBackoff 1ms is shorter than BaseBackoff 200ms; raise it or lower BaseBackoff"},
		{"MaxRetryAfter", with(func(c *mbanq.Config) { c.MaxRetryAfter = -time.Second }), "mbanq: Config.MaxRetryAfter -1s must not be negative (0 for the default, 30s)"},
		{"RequestTimeout", with(func(c *mbanq.Config) { c.RequestTimeout = -time.Second }), "mbanq: Config.RequestTimeout -1s must not be negative (0 for the default, 15s)"},
		{"ConnectTimeout", with(func(c *mbanq.Config) { c.ConnectTimeout = -time.Second }), "mbanq: Config.ConnectTimeout -1s must not be negative (0 for the default, 5s)"},
		{"TLSHandshakeTimeout", with(func(c *mbanq.Config) { c.TLSHandshakeTimeout = -time.Second }), "mbanq: Config.TLSHandshakeTimeout -1s must not be negative (0 for the default, 10s)"},
		{"MaxConcurrency", with(func(c *mbanq.Config) { c.MaxConcurrency = -1 }), "mbanq: Config.MaxConcurrency -1 must not be negative (0 for the default, 1024)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := mbanq.New(tc.cfg)
			equal(t, errString(err), tc.want, "error")
			equal(t, c == nil, true, "no client")
		})
	}
	_, err := mbanq.New(with(func(*mbanq.Config) {}))
	must(t, err)
}
