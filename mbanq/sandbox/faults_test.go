package sandbox_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

const orderCard1 = `{"productId":1,"savingsAccountId":1,"clientId":1}`

func TestGarbledResponseKeepsTheRealAnswerForTheKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed(), sandbox.WithFaults(sandbox.Faults{GarbledResponseNext: 3}))
	tok := h.adminToken()

	// Three orders, each under its own key: each is processed, and its
	// answer is garbled in a different way, with status 200 still.
	var garbled []string
	for _, key := range []string{"g1", "g2", "g3"} {
		resp, body := h.mustDo(http.MethodPost, "/v1/cards", orderCard1, h.api(tok, "Idempotency-Key", key))
		equal(t, resp.StatusCode, http.StatusOK, key+" status")
		equal(t, resp.Header.Get("x-served-from-cache"), "", key+" not from cache")
		garbled = append(garbled, body)
	}
	equal(t, h.sb.CardCount(1), 3, "every garbled order created its card")
	equal(t, h.sb.Faults().GarbledResponseNext, 0, "counter used up")

	// A retry under each key gets the real card from the cache.
	var real []string
	for i, key := range []string{"g1", "g2", "g3"} {
		resp, body := h.mustDo(http.MethodPost, "/v1/cards", orderCard1, h.api(tok, "Idempotency-Key", key))
		equal(t, resp.StatusCode, http.StatusOK, key+" retry status")
		equal(t, resp.Header.Get("x-served-from-cache"), "true", key+" from cache")
		var card struct {
			ID        int64  `json:"id"`
			CardToken string `json:"cardToken"`
		}
		if err := json.Unmarshal([]byte(body), &card); err != nil || card.CardToken != h.sb.Cards()[i].CardToken {
			t.Fatalf("%s: retry %s is not card %d (%v)", key, body, i+1, err)
		}
		real = append(real, body)
	}

	equal(t, garbled[0], "{}", "first form: an empty object")
	equal(t, garbled[1], real[1][:len(real[1])/2], "second form: the real answer cut in half")
	equal(t, json.Valid([]byte(garbled[1])), false, "a truncated body is not JSON")
	equal(t, garbled[2], "", "third form: an empty body")

	st := h.sb.Stats()
	equal(t, st.GarbledResponses, int64(3), "garbled")
	equal(t, st.IdempotentReplays, int64(3), "replays")
	_, body := h.mustDo(http.MethodGet, "/_sandbox/stats", "", nil)
	equal(t, strings.Contains(body, `"garbledResponses":3`), true, "stats: "+body)
}

func TestGarbledResponseOnlyStrikesSuccessfulPOSTsInPaths(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	resp, body := h.mustDo(http.MethodPut, "/_sandbox/faults", `{"garbledResponseRate":1,"garbledResponseNext":2,"paths":["/v1/cards"]}`, nil)
	equal(t, resp.StatusCode, http.StatusOK, "put: "+body)
	equal(t, strings.Contains(body, `"garbledResponseRate":1`) && strings.Contains(body, `"garbledResponseNext":2`), true, "JSON names: "+body)
	tok := h.adminToken()

	// A refusal is answered as it is, and uses up no counter.
	resp, body = h.mustDo(http.MethodPost, "/v1/cards", `{"productId":2,"savingsAccountId":1,"clientId":1}`, h.api(tok, "Idempotency-Key", "refused"))
	equal(t, resp.StatusCode, http.StatusForbidden, "refused: "+body)
	equal(t, strings.Contains(body, "error.msg.cardproduct.not.active"), true, body)
	equal(t, h.sb.Faults().GarbledResponseNext, 2, "counter kept")

	// GET answers and POSTs outside Paths are not garbled.
	resp, body = h.mustDo(http.MethodGet, "/v1/cardproducts/1", "", h.api(tok))
	equal(t, resp.StatusCode == http.StatusOK && json.Valid([]byte(body)) && body != "{}", true, "GET: "+body)
	resp, body = h.mustDo(http.MethodPost, "/v1/users",
		`{"username":"acme-ss","firstname":"A","lastname":"S","officeId":1,"roles":["5"],"isSelfServiceUser":true,"clients":[1],"sendPasswordToEmail":false,"password":"Very-Secret-77","repeatPassword":"Very-Secret-77"}`,
		h.api(tok, "Idempotency-Key", "u1"))
	equal(t, resp.StatusCode == http.StatusOK && strings.Contains(body, `"resourceId":2`), true, "user outside Paths: "+body)

	// A POST without a key is processed and garbled too; the rate goes on
	// once the counter is used up.
	for i := range 3 {
		resp, body = h.mustDo(http.MethodPost, "/v1/cards", orderCard1, h.api(tok))
		equal(t, resp.StatusCode, http.StatusOK, "status")
		var card struct {
			CardToken string `json:"cardToken"`
		}
		if json.Unmarshal([]byte(body), &card) == nil && card.CardToken != "" {
			t.Errorf("not garbled: %s", body)
		}
		equal(t, h.sb.CardCount(1), i+1, "card created")
	}
	equal(t, h.sb.Stats().GarbledResponses, int64(3), "garbled")

	for _, bad := range []string{`{"garbledResponseRate":1.5}`, `{"garbledResponseNext":-1}`} {
		resp, body = h.mustDo(http.MethodPut, "/_sandbox/faults", bad, nil)
		equal(t, resp.StatusCode, http.StatusBadRequest, bad+": "+body)
	}
	if err := h.sb.SetFaults(sandbox.Faults{GarbledResponseRate: -0.1}); err == nil {
		t.Error("SetFaults must refuse a negative rate")
	}
}

func TestTenantRateLimitIsATokenBucketPerTenant(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	step := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	h := newHarness(t, sandbox.DefaultSeed(), sandbox.WithClock(clock))
	tok := h.adminToken() // before the limit: not counted
	resp, body := h.mustDo(http.MethodPut, "/_sandbox/faults", `{"tenantRateLimit":10}`, nil)
	equal(t, resp.StatusCode, http.StatusOK, "put: "+body)

	// A second's worth goes through at once, the next call is refused.
	for i := range 10 {
		resp, body = h.mustDo(http.MethodGet, "/v1/cardproducts/1", "", h.api(tok))
		equal(t, resp.StatusCode, http.StatusOK, fmt.Sprintf("call %d: %s", i, body))
	}
	resp, body = h.mustDo(http.MethodGet, "/v1/cardproducts/1", "", h.api(tok))
	equal(t, resp.StatusCode, http.StatusTooManyRequests, "over the limit: "+body)
	equal(t, resp.Header.Get("Retry-After"), "1", "Retry-After: a call is let through within the second")
	// Another tenant's calls do not count (and are refused for their tenant).
	other := h.api(tok)
	other["tenantId"] = "someone-else"
	resp, _ = h.mustDo(http.MethodGet, "/v1/cardproducts/1", "", other)
	equal(t, resp.StatusCode != http.StatusTooManyRequests, true, "another tenant is not limited by this one's bucket")

	// It refills at the rate: one call per 100ms.
	step(100 * time.Millisecond)
	resp, _ = h.mustDo(http.MethodGet, "/v1/cardproducts/1", "", h.api(tok))
	equal(t, resp.StatusCode, http.StatusOK, "refilled one")
	resp, _ = h.mustDo(http.MethodGet, "/v1/cardproducts/1", "", h.api(tok))
	equal(t, resp.StatusCode, http.StatusTooManyRequests, "and only one")
	// The token endpoint is a call of the tenant too.
	resp, _ = h.mustDo(http.MethodPost, "/oauth/token", "grant_type=password", map[string]string{"tenantId": sandbox.DefaultTenantID, "Content-Type": "application/x-www-form-urlencoded"})
	equal(t, resp.StatusCode, http.StatusTooManyRequests, "token endpoint limited")
	st := h.sb.Stats()
	equal(t, st.TenantRateLimited, int64(3), "refused by the tenant limit")

	if err := h.sb.SetFaults(sandbox.Faults{TenantRateLimit: -1}); err == nil {
		t.Error("SetFaults must refuse a negative limit")
	}
	// Off again: no limit.
	equal(t, h.sb.SetFaults(sandbox.Faults{}), nil, "reset")
	for range 20 {
		resp, _ = h.mustDo(http.MethodGet, "/v1/cardproducts/1", "", h.api(tok))
		equal(t, resp.StatusCode, http.StatusOK, "no limit")
	}
}
