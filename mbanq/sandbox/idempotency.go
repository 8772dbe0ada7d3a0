package sandbox

import (
	"crypto/sha256"
	"hash/maphash"
	"sync"
	"time"
)

// Idempotency follows Fineract: a POST with an Idempotency-Key is processed
// once; a repeat with the same key and the same body is answered from a
// cache, with the same status and body and the header
// x-served-from-cache: true; a repeat with a different body is refused
// (StatusIdempotencyConflict). A repeat that arrives while the first is
// still being processed waits for its answer.
//
// Keys are scoped by method and path, tenant-wide as in Fineract, not by
// user: a request retried by a re-provisioned user (new id, same key) must
// still not create a second card. The body is compared byte for byte (by SHA-256): a
// client that re-encodes the same data differently is told so, rather than
// silently served a stale answer.
//
// Answers are kept for idempotencyTTL, and at most idempotencyCapacity of
// them (oldest dropped first), so a long load test does not exhaust memory.

const (
	idempotencyTTL      = 24 * time.Hour
	idempotencyCapacity = 1 << 20
	idempotencyShards   = 64
)

type idemEntry struct {
	bodyHash [32]byte
	done     chan struct{} // closed once the answer below is set
	// Set before done is closed.
	status    int
	body      []byte
	abandoned bool // the first request failed without an answer to keep
	expires   time.Time
}

type idemShard struct {
	mu    sync.Mutex
	m     map[string]*idemEntry
	order []string // insertion order, for expiry and the capacity bound
}

// idempotencyCache is sharded so that concurrent orders with different keys
// rarely wait for each other.
type idempotencyCache struct {
	seed   maphash.Seed
	shards [idempotencyShards]idemShard
	now    func() time.Time
}

func newIdempotencyCache(now func() time.Time) *idempotencyCache {
	c := &idempotencyCache{seed: maphash.MakeSeed(), now: now}
	for i := range c.shards {
		c.shards[i].m = map[string]*idemEntry{}
	}
	return c
}

func (c *idempotencyCache) shard(key string) *idemShard {
	return &c.shards[maphash.String(c.seed, key)%idempotencyShards]
}

// begin looks key up. If it is new, it is reserved and leader is true: the
// caller must process the request and call finish or abandon. Otherwise the
// existing entry is returned (wait on done), or conflict is true when the
// key was used with another body.
func (c *idempotencyCache) begin(key string, body []byte) (e *idemEntry, leader, conflict bool) {
	h := sha256.Sum256(body)
	sh := c.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := c.now()
	if e, ok := sh.m[key]; ok && !(e.isDone() && now.After(e.expires)) {
		if e.bodyHash != h {
			return nil, false, true
		}
		return e, false, false
	}
	sh.evict(now)
	e = &idemEntry{bodyHash: h, done: make(chan struct{}), expires: now.Add(idempotencyTTL)}
	sh.m[key] = e
	sh.order = append(sh.order, key)
	return e, true, false
}

func (e *idemEntry) isDone() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

// evict drops expired answers, and the oldest ones beyond capacity, from the
// front of the insertion order. Called with mu held.
func (sh *idemShard) evict(now time.Time) {
	limit := idempotencyCapacity / idempotencyShards
	for len(sh.order) > 0 {
		k := sh.order[0]
		e, ok := sh.m[k]
		if ok && (!e.isDone() || (len(sh.order) < limit && !now.After(e.expires))) {
			return
		}
		if ok {
			delete(sh.m, k)
		}
		sh.order = sh.order[1:]
	}
}

// finish stores the answer of a leader's request and wakes the waiters.
func (c *idempotencyCache) finish(e *idemEntry, status int, body []byte) {
	e.status, e.body = status, body
	close(e.done)
}

// abandon forgets a reserved key whose request ended without an answer, so
// that a repeat is processed afresh.
func (c *idempotencyCache) abandon(key string, e *idemEntry) {
	sh := c.shard(key)
	sh.mu.Lock()
	if sh.m[key] == e {
		delete(sh.m, key)
	}
	sh.mu.Unlock()
	e.abandoned = true
	close(e.done)
}
