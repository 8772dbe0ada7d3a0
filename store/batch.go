package store

import (
	"context"
	"errors"
	"sync"
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
	// run handles a batch; it returns one result per call, in order. When
	// it fails for a batch of several, each call is run again alone, so one
	// bad call cannot fail the others.
	run func(ctx context.Context, qs []Q) ([]R, error)
}

type batchCall[Q, R any] struct {
	q    Q
	done chan batchResult[R]
}

type batchResult[R any] struct {
	r   R
	err error
}

var errStoreClosed = errors.New("store is closed")

// newBatcher starts workers goroutines, each running one batch at a time.
func newBatcher[Q, R any](workers, max int, run func(context.Context, []Q) ([]R, error)) *batcher[Q, R] {
	b := &batcher[Q, R]{in: make(chan batchCall[Q, R]), quit: make(chan struct{}), max: max, run: run}
	for range workers {
		b.wg.Add(1)
		go b.loop()
	}
	return b
}

// do submits q and waits for its result. Once submitted, the call goes
// ahead even if ctx ends (a write must not be abandoned half way) and the
// caller learns its fate either way.
func (b *batcher[Q, R]) do(ctx context.Context, q Q) (R, error) {
	c := batchCall[Q, R]{q: q, done: make(chan batchResult[R], 1)}
	select {
	case b.in <- c:
	case <-ctx.Done():
		var zero R
		return zero, ctx.Err()
	case <-b.quit:
		var zero R
		return zero, errStoreClosed
	}
	r := <-c.done
	return r.r, r.err
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
	// while a batch runs, and a half-sent batch would help nobody.
	ctx := context.Background()
	rs, err := b.run(ctx, qs)
	if err == nil {
		for i, c := range batch {
			c.done <- batchResult[R]{r: rs[i]}
		}
		return
	}
	if len(batch) == 1 {
		batch[0].done <- batchResult[R]{err: err}
		return
	}
	for i, c := range batch {
		rs, err := b.run(ctx, qs[i:i+1])
		if err != nil {
			c.done <- batchResult[R]{err: err}
			continue
		}
		c.done <- batchResult[R]{r: rs[0]}
	}
}
