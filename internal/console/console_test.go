package console_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/console"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/store"
)

const token = "correct-horse-battery-staple"

type fakeData struct{ failRequests bool }

func (f fakeData) RecentRequests(context.Context, int) ([]store.RequestSummary, error) {
	if f.failRequests {
		return nil, errors.New("database down")
	}
	now := time.Now()
	return []store.RequestSummary{
		{Source: "urn:erp:acme", RequestID: "r-issued", Outcome: store.OutcomeIssued, ProcessedAt: now, ClientID: 1, EmployeeID: "E-1", CardID: 77, CardStatus: "ACTIVE"},
		{Source: "urn:erp:acme", RequestID: "<script>alert(1)</script>", Outcome: store.OutcomeFailed, Reason: "schema_invalid", ProcessedAt: now, DeadLetterID: 5, Message: "bad <b>data</b>"},
	}, nil
}

func (fakeData) RecentDeadLetters(context.Context, int) ([]store.DeadLetterSummary, error) {
	return []store.DeadLetterSummary{
		{ID: 5, Source: "urn:erp:acme", RequestID: "r-failed", Reason: "unbound_source", Message: "not bound", RecordedAt: time.Now(), Outcome: store.OutcomeFailed},
		{ID: 4, Source: "urn:erp:acme", RequestID: "r-replayed", Reason: "unbound_source", RecordedAt: time.Now(), Outcome: store.OutcomeIssued, ReplayCount: 1},
	}, nil
}

func (fakeData) Bindings(context.Context) ([]store.Binding, error) {
	return []store.Binding{{Source: "urn:erp:acme", ClientID: 1, SavingsAccountID: 2, CardProductID: 3, CreatedAt: time.Now()}}, nil
}

func (fakeData) SelfServiceUserSummaries(context.Context) ([]store.UserSummary, error) {
	return []store.UserSummary{{ClientID: 1, Username: "cardbridge-1-abc", MBanqUserID: 9, Status: store.UserActive}}, nil
}

func (fakeData) OutboxBacklog(context.Context) (int64, time.Duration, error) {
	return 3, 42 * time.Second, nil
}

type bundle struct {
	srv      *httptest.Server
	console  *console.Console
	replayed []int64
}

func newConsole(t *testing.T, tok string, data console.Data, hosts ...string) *bundle {
	t.Helper()
	b := &bundle{}
	b.console = console.New(console.Config{
		Data: data,
		Live: func(context.Context) console.Live {
			return console.Live{Time: time.Now(), OutcomesPublished: 12, InFlight: 2, Handled: map[string]int64{"issued": 10}}
		},
		Replay: func(_ context.Context, id int64) (store.DeadLetter, error) {
			b.replayed = append(b.replayed, id)
			switch id {
			case 4:
				return store.DeadLetter{}, store.ErrAlreadyIssued
			case 404:
				return store.DeadLetter{}, store.ErrNotFound
			}
			return store.DeadLetter{ID: id, ReplayCount: 1}, nil
		},
		Token:    secret.New(tok),
		Hosts:    hosts,
		Instance: "host-a",
	})
	// Mounted as app mounts it, beside an endpoint of its own.
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, b.console)
	mux.Handle("GET /{$}", b.console)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	b.srv = httptest.NewServer(mux)
	t.Cleanup(b.srv.Close)
	return b
}

// do sends a request; auth is "basic", "bearer", "wrong" or "".
func (b *bundle) do(t *testing.T, method, path, auth string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, b.srv.URL+path, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	if h := header.Get("Host"); h != "" {
		req.Host = h // net/http sends req.Host, not a Host header
	}
	switch auth {
	case "basic":
		req.SetBasicAuth("operator", token)
	case "bearer":
		req.Header.Set("Authorization", "Bearer "+token)
	case "wrong":
		req.SetBasicAuth("operator", token+"x")
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func TestReadOnlyWithoutToken(t *testing.T) {
	t.Parallel()
	b := newConsole(t, "", fakeData{})
	resp, page := b.do(t, http.MethodGet, "/console/", "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, "r-issued")
	require.Contains(t, page, "read-only")
	require.NotContains(t, page, "<button", "no actions without a token")
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
	require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
	require.Equal(t, "no-store", resp.Header.Get("Cache-Control"))

	resp, _ = b.do(t, http.MethodPost, "/console/dead-letters/5/replay", "", nil)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Empty(t, b.replayed)
}

func TestTokenGuardsEverything(t *testing.T) {
	t.Parallel()
	b := newConsole(t, token, fakeData{})
	for _, path := range []string{"/console/", "/console/api/live", "/console/static/console.js"} {
		for _, auth := range []string{"", "wrong"} {
			resp, _ := b.do(t, http.MethodGet, path, auth, nil)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, path)
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")
		}
		for _, auth := range []string{"basic", "bearer"} {
			resp, _ := b.do(t, http.MethodGet, path, auth, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode, path+" "+auth)
		}
	}
	resp, _ := b.do(t, http.MethodPost, "/console/dead-letters/5/replay", "wrong", nil)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Empty(t, b.replayed)
}

func TestPageShowsEverySectionEscaped(t *testing.T) {
	t.Parallel()
	b := newConsole(t, token, fakeData{})
	resp, page := b.do(t, http.MethodGet, "/console/", "basic", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, want := range []string{
		`data-request-id="r-issued"`, ">issued<", "77",
		"&lt;script&gt;alert(1)&lt;/script&gt;", "bad &lt;b&gt;data&lt;/b&gt;",
		`id="dead-letter-5"`, `action="/console/dead-letters/5/replay"`,
		"cardbridge-1-abc", "urn:erp:acme", "operator: replay enabled", "host-a",
		`<span class="value" id="outbox">3</span>`, "42s",
	} {
		require.Contains(t, page, want)
	}
	require.NotContains(t, page, "<script>alert")
	require.NotContains(t, page, `action="/console/dead-letters/4/replay"`, "an issued request offers no replay")
	require.NotContains(t, page, "http://", "nothing is loaded from elsewhere")
	require.NotContains(t, page, "https://")
}

func TestAFailingSectionLeavesTheRest(t *testing.T) {
	t.Parallel()
	b := newConsole(t, "", fakeData{failRequests: true})
	resp, page := b.do(t, http.MethodGet, "/console/", "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, "Could not read: recent requests")
	require.Contains(t, page, "cardbridge-1-abc")
	require.NotContains(t, page, "database down", "errors go to the log, not the page")
}

func TestReplayIsSameOriginAndRedirects(t *testing.T) {
	t.Parallel()
	b := newConsole(t, token, fakeData{})
	origin := b.srv.URL

	// Another site's form, posted by the operator's browser.
	resp, _ := b.do(t, http.MethodPost, "/console/dead-letters/5/replay", "basic",
		http.Header{"Origin": {"https://evil.example"}, "Sec-Fetch-Site": {"cross-site"}})
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Empty(t, b.replayed)

	resp, _ = b.do(t, http.MethodPost, "/console/dead-letters/5/replay", "basic",
		http.Header{"Origin": {origin}, "Sec-Fetch-Site": {"same-origin"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, []int64{5}, b.replayed)
	loc, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, "/console/", loc.Path)
	require.Equal(t, "5", loc.Query().Get("replayed"))

	_, page := b.do(t, http.MethodGet, loc.String(), "basic", nil)
	require.Contains(t, page, "Dead letter 5 replayed (replay 1)")

	for id, want := range map[string]string{
		"4":   "Dead letter 4 was not replayed: its request already has a card.",
		"404": "Dead letter 404 does not exist.",
	} {
		resp, _ = b.do(t, http.MethodPost, "/console/dead-letters/"+id+"/replay", "bearer", nil)
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		_, page = b.do(t, http.MethodGet, resp.Header.Get("Location"), "basic", nil)
		require.Contains(t, page, want)
	}
	resp, _ = b.do(t, http.MethodPost, "/console/dead-letters/x/replay", "basic", nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// The flash is built from codes and numbers only.
	_, page = b.do(t, http.MethodGet, "/console/?replay_failed=7&why=<b>pwned</b>", "basic", nil)
	require.Contains(t, page, "Replaying dead letter 7 failed")
	require.NotContains(t, page, "pwned")
}

func TestLive(t *testing.T) {
	t.Parallel()
	b := newConsole(t, "", fakeData{})
	resp, body := b.do(t, http.MethodGet, "/console/api/live", "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var l console.Live
	require.NoError(t, json.Unmarshal([]byte(body), &l))
	require.EqualValues(t, 12, l.OutcomesPublished)
	require.EqualValues(t, 2, l.InFlight)
	require.Equal(t, "host-a", l.Instance)

	resp, js := b.do(t, http.MethodGet, "/console/static/console.js", "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.Contains(resp.Header.Get("Content-Type"), "javascript"), resp.Header.Get("Content-Type"))
	require.Contains(t, js, "/console/api/live")
}

// fromElsewhere serves one request to the console as if it had come from
// remote to the address local of this machine, as http.Server would.
func (b *bundle) fromElsewhere(t *testing.T, method, path, remote, local, auth string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, "http://"+local+path, nil)
	req.RemoteAddr = remote
	la, err := net.ResolveTCPAddr("tcp", local)
	require.NoError(t, err)
	req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, la))
	if auth == "basic" {
		req.SetBasicAuth("operator", token)
	}
	rec := httptest.NewRecorder()
	b.console.ServeHTTP(rec, req)
	return rec
}

// Without a token the console is private: only this machine, on a
// loopback connection and not through a proxy, sees it.
func TestWithoutTokenOnlyThisMachine(t *testing.T) {
	t.Parallel()
	b := newConsole(t, "", fakeData{})
	for _, path := range []string{"/console/", "/console/api/live", "/console/static/console.js"} {
		rec := b.fromElsewhere(t, http.MethodGet, path, "203.0.113.7:50000", "192.0.2.10:8080", "")
		require.Equal(t, http.StatusForbidden, rec.Code, path)
		require.Contains(t, rec.Body.String(), "Set CARDBRIDGE_CONSOLE_TOKEN")
		require.Contains(t, rec.Body.String(), "http://127.0.0.1:8080/console/")
		require.NotContains(t, rec.Body.String(), "r-issued")
		require.NotContains(t, rec.Body.String(), "urn:erp:acme")
		requireSecurityHeaders(t, rec.Result(), path)
	}
	// Another machine's connection, whatever name it uses.
	rec := b.fromElsewhere(t, http.MethodGet, "/console/", "192.0.2.77:50000", "127.0.0.1:8080", "")
	require.Equal(t, http.StatusForbidden, rec.Code)
	// A loopback client of an address that is not: not a loopback connection.
	rec = b.fromElsewhere(t, http.MethodGet, "/console/", "127.0.0.1:50000", "192.0.2.10:8080", "")
	require.Equal(t, http.StatusForbidden, rec.Code)

	// A proxy on this machine is not this machine's operator.
	for _, h := range []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip", "X-Forwarded-Host"} {
		resp, body := b.do(t, http.MethodGet, "/console/", "", http.Header{h: {"203.0.113.7"}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode, h)
		require.NotContains(t, body, "r-issued")
	}
	// This machine, directly: the page.
	resp, page := b.do(t, http.MethodGet, "/console/", "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, "r-issued")
}

// With a token, the network may reach the console, with the token only.
func TestTokenOpensTheConsoleToTheNetwork(t *testing.T) {
	t.Parallel()
	b := newConsole(t, token, fakeData{})
	rec := b.fromElsewhere(t, http.MethodGet, "/console/", "203.0.113.7:50000", "192.0.2.10:8080", "")
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	requireSecurityHeaders(t, rec.Result(), "401")
	rec = b.fromElsewhere(t, http.MethodGet, "/console/", "203.0.113.7:50000", "192.0.2.10:8080", "basic")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Contains(t, rec.Body.String(), "r-issued")
}

// A page of another site whose name was rebound to this machine (DNS
// rebinding) names its own site in Host: refused, token or not.
func TestHostIsChecked(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", token} {
		b := newConsole(t, tok, fakeData{}, "console.internal", "Ops.Example:8443", "[2001:DB8::1]")
		auth := ""
		if tok != "" {
			auth = "basic"
		}
		_, srvPort, err := net.SplitHostPort(b.srv.Listener.Addr().String())
		require.NoError(t, err)
		for host, want := range map[string]int{
			"evil.example":            http.StatusForbidden,
			"evil.example:" + srvPort: http.StatusForbidden,
			"localhost.evil.example":  http.StatusForbidden,
			"127.0.0.1.evil.example":  http.StatusForbidden,
			"ops.example:" + srvPort:  http.StatusForbidden, // that name on another port only
			"console.internal.evil":   http.StatusForbidden,
			"localhost:" + srvPort:    http.StatusOK,
			"LOCALHOST.":              http.StatusOK,
			"127.0.0.1:" + srvPort:    http.StatusOK,
			"127.0.0.2":               http.StatusOK,
			"[::1]:" + srvPort:        http.StatusOK,
			"console.internal":        http.StatusOK,
			"Console.Internal.:8080":  http.StatusOK,
			"ops.example:8443":        http.StatusOK,
			"[2001:db8::1]:8080":      http.StatusOK,
			"[2001:db8::2]":           http.StatusForbidden,
		} {
			for _, path := range []string{"/console/", "/console/api/live", "/"} {
				resp, body := b.doHost(t, path, host, auth)
				if want == http.StatusOK && path == "/" {
					require.Equal(t, http.StatusFound, resp.StatusCode, "%q %s", host, path)
					continue
				}
				require.Equal(t, want, resp.StatusCode, "token %v, Host %q, %s", tok != "", host, path)
				if want == http.StatusForbidden {
					require.Contains(t, body, "CARDBRIDGE_CONSOLE_HOSTS")
					require.NotContains(t, body, "r-issued")
					requireSecurityHeaders(t, resp, host)
				}
			}
		}
	}
	// A request that names no host at all (HTTP/1.0).
	b := newConsole(t, "", fakeData{})
	req := httptest.NewRequest(http.MethodGet, "/console/", nil)
	req.Host, req.RemoteAddr = "", "127.0.0.1:50000"
	req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}))
	rec := httptest.NewRecorder()
	b.console.ServeHTTP(rec, req)
	require.Equal(t, http.StatusForbidden, rec.Code)

	// The health endpoints beside the console are not the console's.
	resp, _ := b.doHost(t, "/healthz", "cardbridge:8080", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// doHost sends a GET naming host in the Host header.
func (b *bundle) doHost(t *testing.T, path, host, auth string) (*http.Response, string) {
	t.Helper()
	return b.do(t, http.MethodGet, path, auth, http.Header{"Host": {host}})
}

func requireSecurityHeaders(t *testing.T, resp *http.Response, what string) {
	t.Helper()
	h := resp.Header
	require.Equal(t, "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
		h.Get("Content-Security-Policy"), what)
	require.Equal(t, "nosniff", h.Get("X-Content-Type-Options"), what)
	require.Equal(t, "DENY", h.Get("X-Frame-Options"), what)
	require.Equal(t, "no-referrer", h.Get("Referrer-Policy"), what)
	require.Equal(t, "no-store", h.Get("Cache-Control"), what)
}

// Every answer of the console carries the security headers: pages,
// refusals (401, 403), redirects and paths it does not have.
func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	t.Parallel()
	withToken := newConsole(t, token, fakeData{})
	without := newConsole(t, "", fakeData{})
	for _, tc := range []struct {
		b            *bundle
		method, path string
		auth         string
		header       http.Header
		status       int
	}{
		{withToken, http.MethodGet, "/console/", "", nil, http.StatusUnauthorized},
		{withToken, http.MethodGet, "/console/", "wrong", nil, http.StatusUnauthorized},
		{withToken, http.MethodGet, "/console/static/console.css", "", nil, http.StatusUnauthorized},
		{withToken, http.MethodPost, "/console/dead-letters/5/replay", "basic", http.Header{"Sec-Fetch-Site": {"cross-site"}}, http.StatusForbidden},
		{withToken, http.MethodGet, "/console/", "basic", nil, http.StatusOK},
		{withToken, http.MethodGet, "/console/static/console.js", "basic", nil, http.StatusOK},
		{withToken, http.MethodGet, "/console/nothing-here", "basic", nil, http.StatusNotFound},
		{withToken, http.MethodGet, "/", "", nil, http.StatusFound},
		{without, http.MethodPost, "/console/dead-letters/5/replay", "", nil, http.StatusForbidden},
		{without, http.MethodGet, "/console/", "", http.Header{"X-Forwarded-For": {"203.0.113.7"}}, http.StatusForbidden},
		{without, http.MethodGet, "/console/api/live", "", nil, http.StatusOK},
		{without, http.MethodGet, "/console/static/console.css", "", nil, http.StatusOK},
	} {
		resp, _ := tc.b.do(t, tc.method, tc.path, tc.auth, tc.header)
		what := tc.method + " " + tc.path + " " + tc.auth
		require.Equal(t, tc.status, resp.StatusCode, what)
		requireSecurityHeaders(t, resp, what)
	}
}

// "/" leads to the console, token or not (the console then asks for it).
func TestRootLeadsToTheConsole(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", token} {
		b := newConsole(t, tok, fakeData{})
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, _ := b.do(t, method, "/", "", nil)
			require.Equal(t, http.StatusFound, resp.StatusCode)
			require.Equal(t, "/console/", resp.Header.Get("Location"))
		}
		resp, _ := b.do(t, http.MethodGet, "/elsewhere", "", nil)
		require.Equal(t, http.StatusNotFound, resp.StatusCode, "only / itself")
	}
	// A browser that follows it lands on the page.
	b := newConsole(t, "", fakeData{})
	resp, err := http.Get(b.srv.URL + "/")
	require.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(page), "r-issued")
}
