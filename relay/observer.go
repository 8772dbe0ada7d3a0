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
