package store

import "context"

// Observer is told of the store's batches, for tracing. Admissions and
// commits of concurrent requests share one round trip (see batcher), so
// the work done for a request is a share of a batch: an Observer lets
// each request's trace show that share. Package observe implements it; a
// nil Options.Observer observes nothing.
type Observer interface {
	// Batch is told that a batch starts: op names it ("admit",
	// "commit"), and calls holds the context of each call in it, in
	// order, for the values it carries (its span, its log attributes).
	// Those contexts may have ended: the batch goes ahead regardless, and
	// the Observer must not wait on them. Batch returns the function
	// called once the batch is over, with each call's error (nil for a
	// call that succeeded), or nil when it has nothing to record.
	Batch(op string, calls []context.Context) (end func(errs []error))
}
