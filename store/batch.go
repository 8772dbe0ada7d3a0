package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// batcher groups concurrent calls into batches: calls that arrive while a
// batch is running wait in a queue and go together in the next one. Under
// load the cost of a round trip (or a commit) is shared by every call in
// the batch; with a single caller nothing waits, as the first call of an
// idle batcher runs at once.
type batcher[Q, R any] struct {
	in   chan batchCall[Q, R]
	quit chan struct{}
	wg   sync.WaitGroup
	max  int
	// timeout bounds a batch, its one-by-one reruns included.
	timeout time.Duration
	// op names the batch to the Observer; obs may be nil.
	op  string
	obs Observer
	// run handles a batch; it returns one result per call, in order. When
	// it fails for a batch of several with an error about a call (not the
	// database being unavailable), each call is run again alone, so one
	// bad call cannot fail the others.
	run func(ctx context.Context, qs []Q) ([]R, error)
}

type batchCall[Q, R any] struct {
	// ctx is the caller's context, kept for its values (the request's
	// span and log attributes): the batch runs under bounds of its own,
	// never under the caller's cancellation.
	ctx  context.Context
	q    Q
	done chan batchResult[R]
}

type batchResult[R any] struct {
	r   R
	err error
}

var errStoreClosed = errors.New("store is closed")

// newBatcher starts workers goroutines, each running one batch at a time.
// op names its batches to obs, which may be nil.
func newBatcher[Q, R any](workers, max int, timeout time.Duration, op string, obs Observer, run func(context.Context, []Q) ([]R, error)) *batcher[Q, R] {
	b := &batcher[Q, R]{in: make(chan batchCall[Q, R]), quit: make(chan struct{}), max: max, timeout: timeout, op: op, obs: obs, run: run}
	for range workers {
		b.wg.Add(1)
		go b.loop()
	}
	return b
}

// do submits q and waits for its result, for as long as ctx lasts. Once
// submitted, the call goes ahead even if ctx ends (a batch is not cut
// short for one caller), but the caller stops waiting: it gets
// ErrUnconfirmed, as the write may or may not be committed. A batch that
// outlasts the batcher's timeout fails with ErrUnavailable.
func (b *batcher[Q, R]) do(ctx context.Context, q Q) (R, error) {
	var zero R
	c := batchCall[Q, R]{ctx: ctx, q: q, done: make(chan batchResult[R], 1)}
	select {
	case b.in <- c:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-b.quit:
		return zero, errStoreClosed
	}
	select {
	case r := <-c.done:
		return r.r, r.err
	case <-ctx.Done():
		// done is buffered: the batch's answer is dropped, not blocked on.
		return zero, fmt.Errorf("%w: %w", ErrUnconfirmed, ctx.Err())
	}
}

func (b *batcher[Q, R]) close() {
	close(b.quit)
	b.wg.Wait()
}

func (b *batcher[Q, R]) loop() {
	defer b.wg.Done()
	batch := make([]batchCall[Q, R], 0, b.max)
	qs := make([]Q, 0, b.max)
	for {
		select {
		case c := <-b.in:
			batch = append(batch[:0], c)
		case <-b.quit:
			return
		}
	drain:
		for len(batch) < b.max {
			select {
			case c := <-b.in:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		qs = qs[:0]
		for _, c := range batch {
			qs = append(qs, c.q)
		}
		b.settle(batch, qs)
	}
}

func (b *batcher[Q, R]) settle(batch []batchCall[Q, R], qs []Q) {
	// Batches run on a context of their own: the callers' contexts may end
	// while a batch runs, and a half-sent batch would help nobody. It has
	// a deadline, so that a database that does not answer fails the batch
	// (and frees the worker for the next) rather than holding it for ever.
	// A batch of one is that call's own work and carries the values of its
	// context (its span, its log attributes); a batch of several carries
	// no one's.
	base := context.Background()
	if len(batch) == 1 {
		base = context.WithoutCancel(batch[0].ctx)
	}
	ctx, cancel := context.WithTimeout(base, b.timeout)
	defer cancel()
	errs, end := b.observe(batch)
	answer := func(i int, r batchResult[R]) {
		if errs != nil {
			errs[i] = r.err
		}
		batch[i].done <- r
	}
	defer func() {
		if end != nil {
			end(errs)
		}
	}()

	rs, err := b.run(ctx, qs)
	if err == nil {
		for i := range batch {
			answer(i, batchResult[R]{r: rs[i]})
		}
		return
	}
	err = b.timedOut(ctx, err)
	if len(batch) == 1 || Unavailable(err) {
		// Running the calls one by one would wait as long again, each.
		for i := range batch {
			answer(i, batchResult[R]{err: err})
		}
		return
	}
	deadline, _ := ctx.Deadline()
	for i, c := range batch {
		// A call run again alone is its caller's work: it carries the
		// values of the caller's context, within the batch's deadline.
		one, cancelOne := context.WithDeadline(context.WithoutCancel(c.ctx), deadline)
		rs, err := b.run(one, qs[i:i+1])
		if err != nil {
			err = b.timedOut(one, err)
		}
		cancelOne()
		if err != nil {
			answer(i, batchResult[R]{err: err})
			continue
		}
		answer(i, batchResult[R]{r: rs[0]})
	}
}

// observe tells the Observer that batch starts. It returns the slice for
// each call's error and the function to call with it once the batch is
// over, both nil when there is nothing to record.
func (b *batcher[Q, R]) observe(batch []batchCall[Q, R]) ([]error, func([]error)) {
	if b.obs == nil {
		return nil, nil
	}
	ctxs := make([]context.Context, len(batch))
	for i, c := range batch {
		ctxs[i] = c.ctx
	}
	end := b.obs.Batch(b.op, ctxs)
	if end == nil {
		return nil, nil
	}
	return make([]error, len(batch)), end
}

// timedOut turns the error of a batch cut off by its deadline into
// ErrUnavailable: it is no caller's context that ended.
func (b *batcher[Q, R]) timedOut(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%s): %v", ErrUnavailable, b.timeout, err)
	}
	return err
}
