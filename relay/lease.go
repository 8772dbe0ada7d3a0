package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cardbridge/cardbridge/store"
)

// A sweep leases the rows it publishes (store.ClaimOutbox) rather than
// holding them locked in a transaction: publishing can wait on JetStream
// for seconds, and read a stream when a row outlived its duplicate window,
// and no database connection or row lock should be held meanwhile. The
// lease is renewed while the sweep works and ends when it settles (the
// published rows deleted, the others released). A sweep that dies leaves
// its rows to the next sweep once the lease runs out; one that cannot
// renew stops publishing before the lease can run out, so two sweeps never
// publish the same row at once, as long as the clocks of the database and
// of this process run at the same rate.
type leasePolicy struct {
	// term is how long a claim or a renewal holds the rows.
	term time.Duration
	// renew is how often a sweep still at work renews its lease.
	renew time.Duration
	// margin is how long before an unrenewed lease runs out the sweep
	// stops publishing: time for the publishes under way to be answered
	// or given up, and for the rows to be settled.
	margin time.Duration
}

func defaultLeasePolicy() leasePolicy {
	return leasePolicy{term: 15 * time.Second, renew: 5 * time.Second, margin: 5 * time.Second}
}

// settleTimeout bounds the delete and release that end a sweep's lease.
const settleTimeout = 10 * time.Second

// sweepBatch claims one batch of rows at least minAge old, publishes them
// and settles the lease. It returns how many rows it claimed.
func (r *Relay) sweepBatch(ctx context.Context, minAge time.Duration) (int, error) {
	lease, err := r.store.ClaimOutbox(ctx, r.cfg.BatchSize, minAge, r.lease.term)
	if err != nil || len(lease.Events) == 0 {
		return 0, err
	}
	work, stop := r.holdLease(ctx, lease)
	acked, pubErr := r.publishObserved(work, lease.Events)
	stop()
	// Once events are published, ending ctx (a shutdown) must not keep
	// their rows from being deleted: the settle has a bound of its own,
	// which starts after the publish, so that a slow publish does not
	// leave it no time. A deadline of ctx (the bound of a shutdown's last
	// sweep) still holds: past it the process is leaving, and the rows
	// are taken again once the lease runs out.
	end := time.Now().Add(settleTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
		end = dl
	}
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), end)
	defer cancel()
	if err := r.store.SettleOutbox(sctx, lease, acked); err != nil {
		// Rows published before the failure are published again after the
		// lease, and dropped by JetStream as duplicates.
		return len(lease.Events), err
	}
	if pubErr != nil {
		return len(lease.Events), fmt.Errorf("publishing outbox: %w", pubErr)
	}
	return len(lease.Events), nil
}

// holdLease renews lease while the returned context's work goes on, and
// ends that context when the lease cannot be renewed in time (margin
// before it could run out) or is found lost. stop ends the renewals.
func (r *Relay) holdLease(ctx context.Context, lease store.OutboxLease) (work context.Context, stop func()) {
	work, cancel := context.WithCancelCause(ctx)
	done, exited := make(chan struct{}), make(chan struct{})
	p := r.lease
	go func() {
		defer close(exited)
		// The lease began before the claim returned; counting from now
		// is at most the claim's round trip late, well within margin.
		expire := time.NewTimer(p.term - p.margin)
		defer expire.Stop()
		renew := time.NewTicker(p.renew)
		defer renew.Stop()
		for {
			select {
			case <-done:
				return
			case <-work.Done():
				return
			case <-expire.C:
				r.log.Warn("the lease on outbox rows could not be renewed; their sweep stops, and the next one takes them", "rows", len(lease.Events))
				cancel(errLeaseEnded)
				return
			case <-renew.C:
				began := time.Now()
				rctx, rcancel := context.WithTimeout(work, p.renew)
				held, err := r.store.RenewOutboxLease(rctx, lease, p.term)
				rcancel()
				switch {
				case err != nil:
					r.log.Warn("renewing the lease on outbox rows failed", "err", err)
				case !held:
					cancel(errLeaseEnded)
					return
				default:
					expire.Reset(time.Until(began.Add(p.term - p.margin)))
				}
			}
		}
	}()
	return work, func() {
		close(done)
		<-exited
		cancel(nil)
	}
}

// errLeaseEnded ends a sweep whose lease could not be kept.
var errLeaseEnded = errors.New("the sweep's lease on its outbox rows ended")
