package console_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/console"
	"github.com/cardbridge/cardbridge/secret"
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
	replayed []int64
}

func newConsole(t *testing.T, tok string, data console.Data) *bundle {
	t.Helper()
	b := &bundle{}
	c := console.New(console.Config{
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
		Instance: "host-a",
	})
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, c)
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
	b := newConsole(t, "", fakeData{failRequests: true})
	resp, page := b.do(t, http.MethodGet, "/console/", "", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, "Could not read: recent requests")
	require.Contains(t, page, "cardbridge-1-abc")
	require.NotContains(t, page, "database down", "errors go to the log, not the page")
}

func TestReplayIsSameOriginAndRedirects(t *testing.T) {
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
