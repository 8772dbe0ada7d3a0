package sandbox_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// TestCardOrdersInFlight: the gauge counts card orders received and not yet
// answered, here held by injected latency, and none once they are answered.
func TestCardOrdersInFlight(t *testing.T) {
	t.Parallel()
	h := newHarness(t, sandbox.DefaultSeed())
	tok := h.adminToken()
	equal(t, h.sb.Stats().CardOrdersInFlight, int64(0), "none before any order")
	if err := h.sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(3 * time.Second), Paths: []string{"/v1/cards"}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan int, 2)
	for _, key := range []string{"f1", "f2"} {
		go func() {
			resp, _, err := h.do(http.MethodPost, "/v1/cards", orderCard1, h.api(tok, "Idempotency-Key", key))
			if err != nil {
				t.Error(err)
				done <- 0
				return
			}
			done <- resp.StatusCode
		}()
	}
	waitFor(t, func() bool { return h.sb.Stats().CardOrdersInFlight == 2 }, "two orders held at the bank")
	_, body := h.mustDo(http.MethodGet, "/_sandbox/stats", "", nil)
	equal(t, strings.Contains(body, `"cardOrdersInFlight":2`), true, "stats: "+body)
	for range 2 {
		equal(t, <-done, http.StatusOK, "order answered")
	}
	waitFor(t, func() bool { return h.sb.Stats().CardOrdersInFlight == 0 }, "none once answered")
	equal(t, h.sb.CardCount(1), 2, "both orders made their card")
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
}
