package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/config"
)

// TestConsoleIsPrivateByDefault: a process started without
// CARDBRIDGE_CONSOLE_TOKEN shows its console to this machine only and by
// its own names; "/" leads there; the health endpoints and /metrics answer
// as before, to Prometheus under any name.
func TestConsoleIsPrivateByDefault(t *testing.T) {
	b := setupWith(t, options{cfg: func(c *config.Config) { c.Operations.ConsoleHosts = []string{"ops.example"} }})
	req := request(erp, 1)
	b.publish(t, req, event.Binary)
	b.outcomes(t, 1)
	require.EqualValues(t, 1, b.settle(t))
	addr := b.svc.HTTPAddr()

	send := func(path, host string, header http.Header) (*http.Response, string) {
		t.Helper()
		r, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		require.NoError(t, err)
		r.Host = host
		for k, v := range header {
			r.Header[k] = v
		}
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(r)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		return resp, string(body)
	}

	// This machine, by one of its names: the page, with the request on it.
	for _, host := range []string{addr, strings.Replace(addr, "127.0.0.1", "localhost", 1), "ops.example"} {
		resp, page := send("/console/", host, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, host)
		require.Contains(t, page, req.ID, host)
		require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	}
	// Another site's name rebound to this machine; a proxy's visitor.
	for _, tc := range []struct {
		host   string
		header http.Header
		want   string
	}{
		{"attacker.example", nil, "CARDBRIDGE_CONSOLE_HOSTS"},
		{addr, http.Header{"X-Forwarded-For": {"203.0.113.7"}}, "CARDBRIDGE_CONSOLE_TOKEN"},
	} {
		resp, body := send("/console/", tc.host, tc.header)
		require.Equal(t, http.StatusForbidden, resp.StatusCode, tc.host)
		require.Contains(t, body, tc.want)
		require.NotContains(t, body, req.ID)
		require.NotContains(t, body, "E-42")
		require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
		require.Contains(t, resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'")
	}
	// "/" leads to the console.
	resp, _ := send("/", addr, nil)
	require.Equal(t, http.StatusFound, resp.StatusCode)
	require.Equal(t, "/console/", resp.Header.Get("Location"))

	// Prometheus scrapes by the service's name, with no token; probes too.
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		resp, body := send(path, "cardbridge:8080", http.Header{"X-Forwarded-For": {"203.0.113.7"}})
		require.Equal(t, http.StatusOK, resp.StatusCode, path)
		require.NotEmpty(t, body)
	}
}
