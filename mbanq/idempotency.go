package mbanq

import (
	"github.com/google/uuid"
	"time"
)

// idempotencyNamespace scopes the keys made by IdempotencyKey.
var idempotencyNamespace = uuid.MustParse("6f1d3c1e-8d5b-4b8e-9a63-2f5b4c0e7a11")

// IdempotencyKey derives a stable Idempotency-Key from the parts that
// identify a logical operation, e.g. IdempotencyKey("order-card", source, id).
// The same parts always give the same key (a name-based UUID), in any
// process, so a retry after a crash is recognised by MBanq too. Parts are
// length-prefixed, so ("ab","c") and ("a","bc") differ.
func IdempotencyKey(parts ...string) string {
	var b []byte
	for _, p := range parts {
		b = append(b, byte(len(p)>>24), byte(len(p)>>16), byte(len(p)>>8), byte(len(p)))
		b = append(b, p...)
	}
	return uuid.NewSHA1(idempotencyNamespace, b).String()
}

// DefaultKeyRetention is how long MBanq is trusted to remember an
// Idempotency-Key and answer a repeat from it. MBanq does not say (its API
// documentation leaves it open); Fineract keeps them until they
// are purged, and the sandbox keeps them 24 hours. A caller that asks again
// under a key after longer may get a second operation.
const DefaultKeyRetention = 24 * time.Hour
