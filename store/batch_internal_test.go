package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

type callerKey struct{}

// batchLog records what a batcher's run and Observer were given.
type batchLog struct {
	mu      sync.Mutex
	runs    []batchRun
	batches [][]any   // the callerKey value of each call, per batch
	errs    [][]error // each call's error, per batch
}

type batchRun struct {
	qs       []int
	caller   any // the callerKey value run's context carried
	ended    bool
	deadline bool
}

func (l *batchLog) Batch(op string, calls []context.Context) func([]error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	vals := make([]any, len(calls))
	for i, c := range calls {
		vals[i] = c.Value(callerKey{})
	}
	l.batches = append(l.batches, vals)
	return func(errs []error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.errs = append(l.errs, append([]error(nil), errs...))
	}
}

// Each call keeps its caller's context for its values: a batch of one
// runs with them, a call run again alone after its batch failed runs with
// its own, and the Observer is given every call's. No caller's context
// bounds the batch: the first caller stops waiting, and its batch goes on
// uncancelled.
func TestBatchCarriesEachCallersContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &batchLog{}
		gate := make(chan struct{})
		errBadRow := errors.New("a row the database refuses")
		b := newBatcher(1, 8, time.Minute, "commit", log, func(ctx context.Context, qs []int) ([]int, error) {
			if qs[0] == 0 {
				<-gate
			}
			log.mu.Lock()
			_, deadline := ctx.Deadline()
			log.runs = append(log.runs, batchRun{qs: append([]int(nil), qs...), caller: ctx.Value(callerKey{}), ended: ctx.Err() != nil, deadline: deadline})
			log.mu.Unlock()
			switch {
			case len(qs) > 1:
				return nil, errBadRow // run each alone
			case qs[0] == 3:
				return nil, errBadRow
			}
			return []int{qs[0] * 10}, nil
		})

		callerCtx := func(name string) context.Context { return context.WithValue(context.Background(), callerKey{}, name) }
		first, stop := context.WithCancel(callerCtx("caller-0"))
		firstErr := make(chan error, 1)
		go func() {
			_, err := b.do(first, 0)
			firstErr <- err
		}()
		synctest.Wait() // its batch is running, held at the gate

		type answer struct {
			r   int
			err error
		}
		answers := map[int]chan answer{}
		for _, q := range []int{1, 2, 3} {
			answers[q] = make(chan answer, 1)
			go func() {
				r, err := b.do(callerCtx("caller-"+string(rune('0'+q))), q)
				answers[q] <- answer{r, err}
			}()
		}
		synctest.Wait() // the three wait to be taken into the next batch

		stop()
		require.ErrorIs(t, <-firstErr, ErrUnconfirmed, "the first caller stopped waiting")
		close(gate)

		for _, q := range []int{1, 2} {
			a := <-answers[q]
			require.NoError(t, a.err)
			require.Equal(t, q*10, a.r)
		}
		a := <-answers[3]
		require.ErrorIs(t, a.err, errBadRow)

		b.close()
		require.Len(t, log.runs, 5, "the batch of one, the batch of three, then each of the three alone")
		require.Equal(t, batchRun{qs: []int{0}, caller: "caller-0", deadline: true}, log.runs[0],
			"a batch of one carries its caller's values, and is not cut short when that caller stops waiting")
		require.Len(t, log.runs[1].qs, 3)
		require.Nil(t, log.runs[1].caller, "a batch of several carries no one caller's values")
		require.True(t, log.runs[1].deadline)
		for _, r := range log.runs[2:] {
			require.Len(t, r.qs, 1)
			require.Equal(t, "caller-"+string(rune('0'+r.qs[0])), r.caller, "a call run alone carries its own caller's values")
			require.True(t, r.deadline, "within the batch's bound")
			require.False(t, r.ended)
		}

		require.Equal(t, [][]any{{"caller-0"}, callersOf(log.runs[1].qs)}, log.batches, "the Observer is given each call's context")
		require.Len(t, log.errs, 2)
		require.Equal(t, []error{nil}, log.errs[0])
		for i, q := range log.runs[1].qs {
			if q == 3 {
				require.ErrorIs(t, log.errs[1][i], errBadRow)
			} else {
				require.NoError(t, log.errs[1][i])
			}
		}
	})
}

func callersOf(qs []int) []any {
	out := make([]any, len(qs))
	for i, q := range qs {
		out[i] = "caller-" + string(rune('0'+q))
	}
	return out
}
