package mbanq_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func isErr(err, target error) bool { return errors.Is(err, target) }

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// newServerFor serves a sandbox with a particular seed.
func newServerFor(t *testing.T, seed sandbox.Seed, opts ...sandbox.Option) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(sandbox.New(seed, opts...))
	t.Cleanup(srv.Close)
	return srv
}

// clientFor returns a client for a sandbox at url with the test secrets.
func clientFor(t *testing.T, url string, change ...func(*mbanq.Config)) *mbanq.Client {
	t.Helper()
	cfg := mbanq.Config{
		BaseURL:      url,
		TenantID:     sandbox.DefaultTenantID,
		ClientID:     sandbox.DefaultOAuthClientID,
		ClientSecret: secret.New(clientSecret),
		BaseBackoff:  time.Millisecond,
		MaxBackoff:   4 * time.Millisecond,
	}
	for _, c := range change {
		c(&cfg)
	}
	c, err := mbanq.New(cfg)
	must(t, err)
	return c
}
