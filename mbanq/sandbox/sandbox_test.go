package sandbox_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// harness serves a sandbox and talks to it without the mbanq client, to
// check the wire format itself.
type harness struct {
	t   testing.TB
	sb  *sandbox.Server
	srv *httptest.Server
}

func newHarness(t testing.TB, seed sandbox.Seed, opts ...sandbox.Option) *harness {
	t.Helper()
	h := &harness{t: t, sb: sandbox.New(seed, opts...)}
	h.srv = httptest.NewServer(h.sb)
	t.Cleanup(h.srv.Close)
	return h
}

func (h *harness) do(method, path, body string, header map[string]string) (*http.Response, string, error) {
	req, err := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func (h *harness) mustDo(method, path, body string, header map[string]string) (*http.Response, string) {
	h.t.Helper()
	resp, b, err := h.do(method, path, body, header)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, b
}

// adminToken gets a token with the form-encoded password grant.
func (h *harness) adminToken() string {
	h.t.Helper()
	form := url.Values{
		"grant_type": {"password"}, "username": {sandbox.DefaultAdminUsername}, "password": {sandbox.DefaultAdminPassword},
		"client_id": {sandbox.DefaultOAuthClientID}, "client_secret": {sandbox.DefaultOAuthClientSecret},
	}
	resp, body := h.mustDo(http.MethodPost, "/oauth/token", form.Encode(), map[string]string{
		"tenantId": sandbox.DefaultTenantID, "Content-Type": "application/x-www-form-urlencoded",
	})
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("token: %d %s", resp.StatusCode, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.Unmarshal([]byte(body), &tr); err != nil || tr.AccessToken == "" || tr.ExpiresIn <= 0 {
		h.t.Fatalf("token answer %s: %v", body, err)
	}
	return tr.AccessToken
}

func (h *harness) api(token string, extra ...string) map[string]string {
	m := map[string]string{"tenantId": sandbox.DefaultTenantID, "Authorization": "Bearer " + token, "Content-Type": "application/json"}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	return m
}

func equal[T any](t *testing.T, got, want T, what string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: got %#v, want %#v", what, got, want)
	}
}

func TestDefaultSeed(t *testing.T) {
	t.Parallel()
	s := sandbox.DefaultSeed()
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	equal(t, s.TenantID, "default", "tenant")
	equal(t, s.SavingsAccounts[0].ClientID, int64(1), "account 1 of client 1")
	equal(t, s.SavingsAccounts[1].ClientID, int64(2), "account 2 of client 2")
	equal(t, s.CardProducts[0].Active && s.CardProducts[0].Virtual && s.CardProducts[0].CardType == "DEBIT", true, "product 1")
	equal(t, s.CardProducts[1].Active, false, "product 2 inactive")
	equal(t, s.OAuthClient.Secret.Reveal(), sandbox.DefaultOAuthClientSecret, "secret")
}

func TestLoadSeed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := `{
	  "tenantId": "acme-bank",
	  "oauthClient": {"id": "c1", "secret": "s1"},
	  "admin": {"username": "root", "password": "pw", "firstname": "R", "lastname": "T", "officeId": 1, "roles": [1]},
	  "offices": [{"id": 1, "name": "HQ"}],
	  "roles": [{"id": 1, "name": "Super user", "permissions": ["ALL_FUNCTIONS"]}, {"id": 4, "name": "Self Service User", "isSelfService": true, "permissions": ["CREATE_CARD"]}],
	  "clients": [{"id": 10, "displayName": "Acme", "active": true, "officeId": 1, "legalForm": 2}],
	  "savingsAccounts": [{"id": 20, "clientId": 10, "currencyCode": "EUR", "active": true}],
	  "cardProducts": [{"id": 30, "name": "Virtual", "active": true, "cardType": "DEBIT", "virtual": true, "network": "MASTERCARD", "currencyCode": "EUR"}],
	  "users": [{"username": "acme-ss", "password": "pw2", "firstname": "A", "lastname": "S", "officeId": 1, "roles": [4], "isSelfServiceUser": true, "clients": [10]}]
	}`
	path := filepath.Join(dir, "seed.json")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := sandbox.LoadSeed(path)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, s.TenantID, "acme-bank", "tenant")
	equal(t, s.Admin.Password.Reveal(), "pw", "admin password")
	equal(t, s.OAuthClient.Secret.Reveal(), "s1", "client secret")
	equal(t, s.Users[0].Password.Reveal(), "pw2", "user password")
	equal(t, s.Users[0].Clients, []int64{10}, "user clients")
	sb := sandbox.New(s)
	u, ok := sb.UserByUsername("acme-ss")
	equal(t, ok && u.IsSelfServiceUser && u.ID == 2, true, "seeded self-service user")

	bad := strings.Replace(good, `"clientId": 10`, `"clientId": 11`, 1)
	bad = strings.Replace(bad, `"roles": [4]`, `"roles": [9]`, 1)
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = sandbox.LoadSeed(path)
	if err == nil || !strings.Contains(err.Error(), "savings account 20: client 11 does not exist") || !strings.Contains(err.Error(), "role 9 does not exist") {
		t.Errorf("want both problems named, got %v", err)
	}
	typo := strings.Replace(good, `"tenantId"`, `"tenant"`, 1)
	if err := os.WriteFile(path, []byte(typo), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.LoadSeed(path); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("want unknown field refused, got %v", err)
	}
}

func TestEveryAnswerHasRequestIDAndFineractErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	tok := h.adminToken()
	for _, tc := range []struct {
		method, path string
		header       map[string]string
		status       int
		code         string
	}{
		{"GET", "/v1/nothing", h.api(tok), 404, "error.msg.resource.not.found"},
		{"GET", "/v1/clients/abc", h.api(tok), 400, "validation.msg.invalid.id"},
		{"GET", "/v1/clients/99", h.api(tok), 404, "error.msg.client.id.invalid"},
		{"GET", "/v1/cardproducts", map[string]string{"tenantId": "nope"}, 401, "error.msg.invalid.tenant.identifier"},
		{"GET", "/v1/cardproducts", map[string]string{"tenantId": sandbox.DefaultTenantID}, 401, "error.msg.not.authenticated"},
		{"GET", "/_sandbox/stats", nil, 200, ""},
	} {
		resp, body := h.mustDo(tc.method, tc.path, "", tc.header)
		equal(t, resp.StatusCode, tc.status, tc.path+" status")
		if resp.Header.Get("x-request-id") == "" {
			t.Errorf("%s: no x-request-id", tc.path)
		}
		if tc.code == "" {
			continue
		}
		var e struct {
			DeveloperMessage             string            `json:"developerMessage"`
			HTTPStatusCode               string            `json:"httpStatusCode"`
			DefaultUserMessage           string            `json:"defaultUserMessage"`
			UserMessageGlobalisationCode string            `json:"userMessageGlobalisationCode"`
			Errors                       []json.RawMessage `json:"errors"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("%s: not JSON: %s", tc.path, body)
		}
		if e.HTTPStatusCode != strconv.Itoa(tc.status) || e.DefaultUserMessage == "" || e.DeveloperMessage == "" || e.Errors == nil {
			t.Errorf("%s: not the Fineract shape: %s", tc.path, body)
		}
		if !strings.Contains(body, `"`+tc.code+`"`) {
			t.Errorf("%s: code %s not in %s", tc.path, tc.code, body)
		}
	}
}

func TestFaultsOverHTTP(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	resp, body := h.mustDo(http.MethodPut, "/_sandbox/faults",
		`{"latency":"5ms","latencyJitter":2,"serverErrorRate":0.25,"rateLimitNext":1,"retryAfter":"2s","paths":["/v1/cards"],"tokenLifetime":"90s"}`, nil)
	equal(t, resp.StatusCode, http.StatusOK, "put: "+body)
	f := h.sb.Faults()
	equal(t, f, sandbox.Faults{
		Latency: sandbox.Duration(5 * time.Millisecond), LatencyJitter: sandbox.Duration(2 * time.Millisecond),
		ServerErrorRate: 0.25, RateLimitNext: 1, RetryAfter: sandbox.Duration(2 * time.Second),
		Paths: []string{"/v1/cards"}, TokenLifetime: sandbox.Duration(90 * time.Second),
	}, "faults")
	_, body = h.mustDo(http.MethodGet, "/_sandbox/faults", "", nil)
	equal(t, strings.Contains(body, `"retryAfter":"2s"`), true, "durations as text: "+body)

	// The rate limit applies to /v1/cards only, with Retry-After.
	tok := h.adminToken()
	resp, body = h.mustDo(http.MethodPost, "/v1/cards", `{"productId":1,"savingsAccountId":1,"clientId":1}`, h.api(tok))
	equal(t, resp.StatusCode, http.StatusTooManyRequests, "429: "+body)
	equal(t, resp.Header.Get("Retry-After"), "2", "Retry-After")
	equal(t, strings.Contains(body, "error.msg.rate.limit.exceeded"), true, "code")
	equal(t, h.sb.Faults().RateLimitNext, 0, "counter used up")

	for _, bad := range []string{`{"serverErrorRate":2}`, `{"unknown":1}`, `{"latency":"soon"}`, `{"serverErrorStatus":404}`} {
		resp, body = h.mustDo(http.MethodPut, "/_sandbox/faults", bad, nil)
		equal(t, resp.StatusCode, http.StatusBadRequest, bad+": "+body)
	}
	if err := h.sb.SetFaults(sandbox.Faults{LostResponseRate: -1}); err == nil {
		t.Error("SetFaults must refuse a negative rate")
	}
}

func TestTokenLifetimeAndExpiryOverHTTP(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed(), sandbox.WithFaults(sandbox.Faults{TokenLifetime: sandbox.Duration(1500 * time.Millisecond)}))
	form := url.Values{"grant_type": {"password"}, "username": {"mifos"}, "password": {"password"}, "client_id": {"cardbridge"}, "client_secret": {sandbox.DefaultOAuthClientSecret}}
	_, body := h.mustDo(http.MethodPost, "/oauth/token", form.Encode(), map[string]string{"tenantId": "default", "Content-Type": "application/x-www-form-urlencoded"})
	equal(t, strings.Contains(body, `"expires_in":2`), true, "whole seconds, rounded up: "+body)

	tok := h.adminToken()
	resp, _ := h.mustDo(http.MethodGet, "/v1/userdetails", "", h.api(tok))
	equal(t, resp.StatusCode, 200, "valid")
	resp, body = h.mustDo(http.MethodPost, "/_sandbox/tokens/expire", "", nil)
	equal(t, resp.StatusCode, 200, "expire: "+body)
	resp, body = h.mustDo(http.MethodGet, "/v1/userdetails", "", h.api(tok))
	equal(t, resp.StatusCode, 401, "expired")
	equal(t, strings.Contains(body, "token revoked"), true, body)
}

func TestInspectionNeverShowsPasswords(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	tok := h.adminToken()
	const pw = "Very-Secret-77"
	resp, body := h.mustDo(http.MethodPost, "/v1/users",
		`{"username":"acme-ss","firstname":"A","lastname":"S","officeId":1,"roles":["5"],"isSelfServiceUser":true,"clients":[1],"sendPasswordToEmail":false,"password":"`+pw+`","repeatPassword":"`+pw+`"}`,
		h.api(tok, "Idempotency-Key", "u1"))
	equal(t, resp.StatusCode, 200, "create: "+body)
	equal(t, strings.Contains(body, `"resourceId":2`), true, body)
	resp, body = h.mustDo(http.MethodPost, "/v1/cards", `{"productId":1,"savingsAccountId":1,"clientId":1}`, h.api(tok, "Idempotency-Key", "c1"))
	equal(t, resp.StatusCode, 200, "card: "+body)

	_, users := h.mustDo(http.MethodGet, "/_sandbox/users", "", nil)
	_, cards := h.mustDo(http.MethodGet, "/_sandbox/cards?clientId=1", "", nil)
	_, list := h.mustDo(http.MethodGet, "/v1/users", "", h.api(tok))
	for _, out := range []string{users, cards, list} {
		if strings.Contains(out, pw) || strings.Contains(out, sandbox.DefaultAdminPassword+`"`) || strings.Contains(strings.ToLower(out), "hash") {
			t.Errorf("password material shown: %s", out)
		}
	}
	equal(t, strings.Contains(users, `"total":2`) && strings.Contains(users, `"selfService":1`), true, "user counts: "+users)
	equal(t, strings.Contains(cards, `"total":1`) && strings.Contains(cards, `"byClient":{"1":1}`), true, "card counts: "+cards)
	equal(t, h.sb.CardCounts(), map[int64]int{1: 1}, "CardCounts")
}

func TestConcurrentRepeatsWithOneKeyCreateOneCard(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed(), sandbox.WithFaults(sandbox.Faults{Latency: sandbox.Duration(5 * time.Millisecond)}))
	tok := h.adminToken()
	var wg sync.WaitGroup
	type answer struct {
		status int
		cached bool
		body   string
	}
	answers := make(chan answer, 20)
	for range 20 {
		wg.Go(func() {
			resp, body := h.mustDo(http.MethodPost, "/v1/cards", `{"productId":1,"savingsAccountId":1,"clientId":1}`, h.api(tok, "Idempotency-Key", "one"))
			answers <- answer{resp.StatusCode, resp.Header.Get("x-served-from-cache") == "true", body}
		})
	}
	wg.Wait()
	close(answers)
	card, processed, early := "", 0, 0
	for a := range answers {
		switch {
		case a.status == http.StatusTooEarly:
			// As Fineract: the first is still being processed.
			early++
			equal(t, strings.Contains(a.body, "error.msg.idempotency.key.in.progress"), true, a.body)
			continue
		case a.status != http.StatusOK:
			t.Fatalf("status %d %s", a.status, a.body)
		case !a.cached:
			processed++
		}
		if card == "" {
			card = a.body
		}
		equal(t, a.body, card, "every answer with a card has the same card")
	}
	equal(t, processed, 1, "one request processed")
	equal(t, h.sb.Stats().TooEarly, int64(early), "425 answers counted")
	resp, body := h.mustDo(http.MethodPost, "/v1/cards", `{"productId":1,"savingsAccountId":1,"clientId":1}`, h.api(tok, "Idempotency-Key", "one"))
	equal(t, resp.StatusCode, http.StatusOK, "a repeat once done")
	if card != "" {
		equal(t, body, card, "the same card")
	}
	equal(t, h.sb.CardCount(1), 1, "cards")
}

// A real bank finishes what it was asked when the client hangs up, and
// answers a repeat under the same key 425 while it works, then from its
// cache.
func TestClientHangingUpDoesNotStopTheWork(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed(), sandbox.WithFaults(sandbox.Faults{Latency: sandbox.Duration(time.Second), Paths: []string{"/v1/cards"}}))
	tok := h.adminToken()
	const order = `{"productId":1,"savingsAccountId":1,"clientId":1}`
	hungUp := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+"/v1/cards", strings.NewReader(order))
		for k, v := range h.api(tok, "Idempotency-Key", "hang") {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		hungUp <- err
	}()
	// The bank is at work on the order: hang up.
	waitUntil(t, func() bool { return h.sb.Stats().KeysInProgress == 1 })
	cancel()
	if err := <-hungUp; err == nil {
		t.Fatal("the client was meant to hang up before the answer")
	}
	// A repeat while the bank still works: 425, with Retry-After.
	resp, body := h.mustDo(http.MethodPost, "/v1/cards", order, h.api(tok, "Idempotency-Key", "hang"))
	if resp.StatusCode == http.StatusTooEarly {
		equal(t, resp.Header.Get("Retry-After"), "1", "Retry-After")
	} else {
		// Only if the second passed meanwhile on a loaded machine.
		equal(t, resp.Header.Get("x-served-from-cache"), "true", "status "+strconv.Itoa(resp.StatusCode)+" "+body)
	}
	// The card is made although nobody listens any more.
	waitUntil(t, func() bool { return h.sb.CardCount(1) == 1 })
	resp, body = h.mustDo(http.MethodPost, "/v1/cards", order, h.api(tok, "Idempotency-Key", "hang"))
	equal(t, resp.StatusCode, http.StatusOK, body)
	equal(t, resp.Header.Get("x-served-from-cache"), "true", "the repeat learns the card from the cache")
	equal(t, strings.Contains(body, h.sb.Cards()[0].CardToken), true, body)
	equal(t, h.sb.CardCount(1), 1, "one card")
	equal(t, h.sb.Stats().KeysInProgress, int64(0), "nothing in progress")
}

// waitUntil polls cond for up to 10s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		<-time.After(2 * time.Millisecond)
	}
}

func TestLostResponseDropsTheConnectionAfterCreating(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed(), sandbox.WithFaults(sandbox.Faults{LostResponseNext: 1}))
	tok := h.adminToken()
	// No Idempotency-Key: Go's transport must not replay the POST by itself.
	_, _, err := h.do(http.MethodPost, "/v1/cards", `{"productId":1,"savingsAccountId":1,"clientId":1}`, h.api(tok))
	if err == nil {
		t.Fatal("want the connection dropped")
	}
	equal(t, h.sb.CardCount(1), 1, "the card exists")
	equal(t, h.sb.Stats().LostResponses, int64(1), "lost")
}

func TestMaxActiveCardsPerProduct(t *testing.T) {
	t.Parallel()
	seed := sandbox.DefaultSeed()
	seed.CardProducts[0].MaxActiveCardAllowed = 1
	h := newHarness(t, seed)
	tok := h.adminToken()
	resp, _ := h.mustDo(http.MethodPost, "/v1/cards", `{"productId":1,"savingsAccountId":1,"clientId":1}`, h.api(tok))
	equal(t, resp.StatusCode, 200, "first")
	resp, body := h.mustDo(http.MethodPost, "/v1/cards", `{"productId":"1","savingsAccountId":"1","clientId":"1"}`, h.api(tok))
	equal(t, resp.StatusCode, 403, "second: "+body)
	equal(t, strings.Contains(body, "error.msg.card.max.active.cards.reached"), true, body)
}

func TestOrderCardRefusesUnknownFields(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	tok := h.adminToken()
	// The tutorial's example body holds response fields; Fineract refuses them.
	resp, body := h.mustDo(http.MethodPost, "/v1/cards", `{"cardToken":"566e05a9","clientId":12,"resourceId":3,"resourceIdentifier":"566e05a9"}`, h.api(tok))
	equal(t, resp.StatusCode, 400, body)
	equal(t, strings.Contains(body, `"parameterName":"cardToken"`), true, body)
}

func TestSeededFaultsAreDeterministic(t *testing.T) {
	t.Parallel()
	statuses := func() []int {
		h := newHarness(t, sandbox.DefaultSeed(), sandbox.WithRandSeed(42),
			sandbox.WithFaults(sandbox.Faults{ServerErrorRate: 0.5, Paths: []string{"/v1/cardproducts"}}))
		tok := h.adminToken()
		var out []int
		for range 20 {
			resp, _ := h.mustDo(http.MethodGet, "/v1/cardproducts", "", h.api(tok))
			out = append(out, resp.StatusCode)
		}
		return out
	}
	a, b := statuses(), statuses()
	equal(t, a, b, "same seed, same faults")
	if !slicesContain(a, 500) || !slicesContain(a, 200) {
		t.Errorf("want a mix of 200 and 500: %v", a)
	}
}

func slicesContain(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
