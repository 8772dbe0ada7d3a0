package relay

import (
	"context"
	"time"

	"github.com/cardbridge/cardbridge/store"
)

// Observer is told of everything the relay publishes, for metrics: each
// event published as its commit happens, and each batch of a sweep.
// Package observe implements it; a nil Config.Observer observes nothing.
type Observer interface {
	// Published reports one publish (one event, or a sweep's batch): how
	// many events were sent, how many JetStream acknowledged, how long that
	// took, and the error if any.
	Published(events, acked int, elapsed time.Duration, err error)
	// Publishing is told that the outcome of a request is being published
	// as its commit happens, in that request's context (for a trace span).
	// The function it returns, if not nil, is called once with the result:
	// nil when JetStream stored the event.
	Publishing(ctx context.Context, e store.OutboxEvent) func(err error)
}

// publishObserved is publish, timed for the Observer.
func (r *Relay) publishObserved(ctx context.Context, events []store.OutboxEvent) ([]int64, error) {
	if r.cfg.Observer == nil {
		return r.publish(ctx, events)
	}
	start := time.Now()
	acked, err := r.publish(ctx, events)
	r.cfg.Observer.Published(len(events), len(acked), time.Since(start), err)
	return acked, err
}
