package sandbox_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// A refused command is remembered under its key, as Fineract does: once the
// cause is fixed, only a new key gets the command evaluated again.
func TestRefusedOrderIsRememberedUnderItsKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	tok := h.adminToken()
	const order = `{"productId":2,"savingsAccountId":1,"clientId":1}` // product 2 is inactive
	post := func(key string) (*http.Response, string) {
		t.Helper()
		return h.mustDo(http.MethodPost, "/v1/cards", order, h.api(tok, "Idempotency-Key", key))
	}
	refused := func(resp *http.Response, body string, fromCache bool, what string) {
		t.Helper()
		equal(t, resp.StatusCode, http.StatusForbidden, what+" status: "+body)
		equal(t, strings.Contains(body, `"userMessageGlobalisationCode":"error.msg.cardproduct.not.active"`), true, what+" code: "+body)
		equal(t, resp.Header.Get("x-served-from-cache") == "true", fromCache, what+" from cache")
	}

	resp, first := post("K")
	refused(resp, first, false, "K")
	resp, body := post("K")
	refused(resp, body, true, "K again")
	equal(t, body, first, "the stored answer")
	resp, body = post("K2")
	refused(resp, body, false, "K2, a fresh evaluation")

	// The bank's staff activate the product.
	resp, body = h.mustDo(http.MethodPut, "/_sandbox/cardproducts/2", `{"active":true}`, nil)
	equal(t, resp.StatusCode, http.StatusOK, "activate: "+body)
	equal(t, strings.Contains(body, `"active":true`), true, body)
	resp, body = h.mustDo(http.MethodGet, "/v1/cardproducts/2", "", h.api(tok))
	equal(t, resp.StatusCode == http.StatusOK && strings.Contains(body, `"active":true`), true, "the API sees it: "+body)

	// The keys already refused stay refused; a new key gets the card.
	resp, body = post("K")
	refused(resp, body, true, "K after the fix")
	equal(t, body, first, "still the stored answer")
	resp, body = post("K2")
	refused(resp, body, true, "K2 after the fix")
	equal(t, h.sb.CardCount(1), 0, "no card yet")
	resp, body = post("K3")
	equal(t, resp.StatusCode, http.StatusOK, "K3: "+body)
	equal(t, resp.Header.Get("x-served-from-cache"), "", "K3 not from cache")
	equal(t, strings.Contains(body, `"cardToken"`), true, body)
	equal(t, h.sb.CardCount(1), 1, "one card")
	equal(t, h.sb.Stats().IdempotentReplays, int64(3), "replays")

	// And back: deactivating refuses new keys again.
	if err := h.sb.SetCardProductActive(2, false); err != nil {
		t.Fatal(err)
	}
	resp, body = post("K4")
	refused(resp, body, false, "K4 after deactivation")
}

func TestPutCardProductRefusesBadRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	for _, tc := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/_sandbox/cardproducts/99", `{"active":true}`, http.StatusNotFound, "error.msg.cardproduct.id.invalid"},
		{"/_sandbox/cardproducts/x", `{"active":true}`, http.StatusBadRequest, "validation.msg.invalid.id"},
		{"/_sandbox/cardproducts/1", `{}`, http.StatusBadRequest, "validation.msg.sandbox.cardproduct.active.cannot.be.blank"},
		{"/_sandbox/cardproducts/1", `{"active":true,"name":"x"}`, http.StatusBadRequest, "validation.msg.invalid.json"},
		{"/_sandbox/cardproducts/1", `{"active":"yes"}`, http.StatusBadRequest, "validation.msg.invalid.json"},
	} {
		resp, body := h.mustDo(http.MethodPut, tc.path, tc.body, nil)
		equal(t, resp.StatusCode, tc.status, tc.path+" "+tc.body+": "+body)
		equal(t, strings.Contains(body, `"`+tc.code+`"`), true, tc.code+" in "+body)
	}
	if err := h.sb.SetCardProductActive(99, true); err == nil {
		t.Error("want an error for an unknown product")
	}
}

// Orders and product reads race with the product's flag changing; run with
// -race.
func TestCardProductActiveChangesWhileOrdering(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	tok := h.adminToken()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 50 {
			if err := h.sb.SetCardProductActive(1, i%2 == 1); err != nil {
				t.Error(err)
			}
		}
	})
	for range 4 {
		wg.Go(func() {
			for range 10 {
				resp, body := h.mustDo(http.MethodPost, "/v1/cards", orderCard1, h.api(tok))
				if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusForbidden {
					t.Errorf("order: %d %s", resp.StatusCode, body)
				}
				if resp, body := h.mustDo(http.MethodGet, "/v1/cardproducts", "", h.api(tok)); resp.StatusCode != http.StatusOK {
					t.Errorf("products: %d %s", resp.StatusCode, body)
				}
			}
		})
	}
	wg.Wait()
	// The toggling ended on active (i = 49).
	resp, body := h.mustDo(http.MethodPost, "/v1/cards", orderCard1, h.api(tok))
	equal(t, resp.StatusCode, http.StatusOK, "order after: "+body)
}
