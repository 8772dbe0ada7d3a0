package sandbox_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// BenchmarkOrderCard measures the sandbox answering card orders with
// Idempotency-Keys over loopback HTTP, from parallel clients.
func BenchmarkOrderCard(b *testing.B) {
	srv := httptest.NewServer(sandbox.New(sandbox.DefaultSeed()))
	defer srv.Close()
	h := &harness{t: b, srv: srv}
	tok := h.adminToken()
	client := srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 256
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/cards", strings.NewReader(`{"productId":1,"savingsAccountId":1,"clientId":1}`))
			req.Header.Set("tenantId", sandbox.DefaultTenantID)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", strconv.FormatInt(n.Add(1), 10))
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}
