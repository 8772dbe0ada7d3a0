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
// renew stops publishing before the lease can run out, so two sweeps do not
// publish the same row at once, as long as the clocks of the database and
// of this process run at the same rate. (A publish the NATS client still
// buffers, during a reconnect, when its sweep stops can still go out
// later; within the duplicate window JetStream drops it.)
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

// settleTimeout bounds the delete and release that end a sweep's lease,
// and settleReserve is the time kept for them before a deadline.
const (
	settleTimeout = 10 * time.Second
	settleReserve = 500 * time.Millisecond
)

// sweepBatch claims one batch of rows at least minAge old, publishes them
// and settles the lease. It returns how many rows it claimed.
func (r *Relay) sweepBatch(ctx context.Context, minAge time.Duration) (int, error) {
	lease, err := r.store.ClaimOutbox(ctx, r.cfg.BatchSize, minAge, r.lease.term)
	if err != nil || len(lease.Events) == 0 {
		return 0, err
	}
	// A shutdown's last sweep has a deadline: publishing stops a little
	// before it, so that there is time left to settle the lease, rather
	// than leave the rows leased to a process that is gone.
	pctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		pctx, cancel = context.WithDeadline(ctx, dl.Add(-settleReserve))
		defer cancel()
	}
	work, stop := r.holdLease(pctx, lease)
	acked, pubErr := r.publishObserved(work, lease.Events)
	stop()
	if errors.Is(context.Cause(work), errLeaseLost) {
		// What was not published is another sweep's now, or was deleted
		// (its event published at commit): not this sweep's failure. A
		// lease that could not be renewed (errLeaseExpired) is one.
		pubErr = nil
	}
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), r.settleBy(ctx))
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

// settleBy is when the settle of a sweep under ctx must be done. Once
// events are published, ending ctx (a shutdown) must not keep their rows
// from being deleted: the settle has a bound of its own, settleTimeout,
// which starts after the publish, so that a slow publish does not leave it
// no time. But a shutdown bounds it: ctx's deadline (a shutdown's last
// sweep), or the drain deadline for a sweep that was under way when Run's
// context ended. Past it the process is leaving, and the rows are taken
// again once the lease runs out.
func (r *Relay) settleBy(ctx context.Context) time.Time {
	end := time.Now().Add(settleTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
		end = dl
	}
	if ctx.Err() != nil {
		if dl := r.drainDeadline(); dl.Before(end) {
			end = dl
		}
	}
	return end
}

// leaseTimeLeft reports whether a sweep under ctx has time to claim a batch
// and still settle it before ctx's deadline.
func leaseTimeLeft(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return !ok || time.Until(dl) > settleReserve
}

// holdLease renews lease while the returned context's work goes on, and
// ends that context when the lease is found lost, or when it could not be
// renewed by margin before it could run out: a renewal waits no longer
// than that, so a stalled database cannot keep the sweep at work past its
// lease. stop ends the renewals.
func (r *Relay) holdLease(ctx context.Context, lease store.OutboxLease) (work context.Context, stop func()) {
	work, cancel := context.WithCancelCause(ctx)
	done, exited := make(chan struct{}), make(chan struct{})
	p := r.lease
	go func() {
		defer close(exited)
		// The lease began before the claim returned; counting from now
		// is at most the claim's round trip late, well within margin.
		stopAt := time.Now().Add(p.term - p.margin)
		expire := time.NewTimer(time.Until(stopAt))
		defer expire.Stop()
		renew := time.NewTicker(p.renew)
		defer renew.Stop()
		lost := func(why string) {
			r.log.Warn(why+"; the sweep stops, and the next one takes its rows", "rows", len(lease.Events))
			cancel(errLeaseExpired)
		}
		for {
			select {
			case <-done:
				return
			case <-work.Done():
				return
			case <-expire.C:
				lost("the lease on outbox rows could not be renewed in time")
				return
			case <-renew.C:
				began := time.Now()
				rctx, rcancel := context.WithDeadline(work, stopAt)
				held, err := r.store.RenewOutboxLease(rctx, lease, p.term)
				rcancel()
				switch {
				case err != nil && work.Err() != nil:
					return // the sweep is over
				case err != nil && !time.Now().Before(stopAt):
					lost("the lease on outbox rows could not be renewed in time")
					return
				case err != nil:
					r.log.Warn("renewing the lease on outbox rows failed", "err", err)
				case !held:
					r.log.Info("the lease on outbox rows ended: their events were published, or another sweep took them", "rows", len(lease.Events))
					cancel(errLeaseLost)
					return
				default:
					stopAt = began.Add(p.term - p.margin)
					expire.Reset(time.Until(stopAt))
				}
			}
		}
	}()
	return work, func() {
		cancel(nil)
		close(done)
		<-exited
	}
}

// The ends of a sweep whose lease could not be kept: errLeaseLost when it
// was found to hold no row any more (published at commit and deleted, or
// taken by another sweep after it ran out), errLeaseExpired when it could
// not be renewed in time.
var (
	errLeaseLost    = errors.New("the sweep's lease on its outbox rows ended")
	errLeaseExpired = errors.New("the sweep's lease on its outbox rows could not be renewed in time")
)
