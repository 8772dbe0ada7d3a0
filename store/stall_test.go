package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/store"
)

// lockTable takes an ACCESS EXCLUSIVE lock on table from a connection of
// its own, as an operator's LOCK TABLE or a long ALTER would, and returns
// the function that releases it.
func lockTable(t *testing.T, s *store.Store, table string) (release func()) {
	t.Helper()
	return lockTableIn(t, s, table, "ACCESS EXCLUSIVE")
}

func lockTableIn(t *testing.T, s *store.Store, table, mode string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := s.Pool().Acquire(ctx)
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "LOCK TABLE "+table+" IN "+mode+" MODE")
	require.NoError(t, err)
	var once sync.Once
	release = func() {
		once.Do(func() {
			_ = tx.Rollback(ctx)
			conn.Release()
		})
	}
	t.Cleanup(release)
	return release
}

func showSetting(t *testing.T, s *store.Store, name string) string {
	t.Helper()
	var v string
	require.NoError(t, s.Pool().QueryRow(context.Background(), "SHOW "+name).Scan(&v))
	return v
}

func TestSessionTimeoutsHaveDefaultsTheURLOverrides(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	require.Equal(t, "10s", showSetting(t, s, "statement_timeout"))
	require.Equal(t, "5s", showSetting(t, s, "lock_timeout"))
	require.Equal(t, "1min", showSetting(t, s, "idle_in_transaction_session_timeout"))

	u, err := url.Parse(testenv.DatabaseURL(t))
	require.NoError(t, err)
	q := u.Query()
	q.Set("statement_timeout", "42s")
	u.RawQuery = q.Encode() + "&options=-c%20lock_timeout%3D7s"
	o, err := store.Open(context.Background(), store.Options{URL: secret.New(u.String())})
	require.NoError(t, err)
	defer o.Close()
	require.Equal(t, "42s", showSetting(t, o, "statement_timeout"), "a URL parameter wins")
	require.Equal(t, "7s", showSetting(t, o, "lock_timeout"), "a setting in options wins")
	require.Equal(t, "1min", showSetting(t, o, "idle_in_transaction_session_timeout"))
}

// Migrations and the purge may take longer than a request's statement
// timeout: they lift it for themselves. Migrations run under a statement
// timeout of 5 ms in the URL, which fails an ordinary statement; a purge
// statement waits for a lock for longer than the URL's 300 ms.
func TestMigrationsAndPurgeAreNotBoundByTheStatementTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	plain := testenv.DatabaseURL(t)
	withTimeout := func(ms string) *store.Store {
		u, err := url.Parse(plain)
		require.NoError(t, err)
		q := u.Query()
		q.Set("statement_timeout", ms)
		u.RawQuery = q.Encode()
		s, err := store.Open(ctx, store.Options{URL: secret.New(u.String())})
		require.NoError(t, err)
		t.Cleanup(s.Close)
		return s
	}
	s := withTimeout("5")
	_, err := s.Pool().Exec(ctx, "SELECT pg_sleep(0.05)")
	require.ErrorContains(t, err, "statement timeout", "the timeout bites an ordinary statement")
	require.NoError(t, s.MigrateUp(ctx, &bytes.Buffer{}))

	// Old rows for the purge to find, written under the default timeouts.
	w, err := store.Open(ctx, store.Options{URL: secret.New(plain)})
	require.NoError(t, err)
	t.Cleanup(w.Close)
	_, err = w.Pool().Exec(ctx, `
		INSERT INTO processed_requests (source, request_id, payload_hash, outcome, processed_at)
		SELECT 'urn:erp:old', g::text, '', 'issued', now() - interval '100 days' FROM generate_series(1, 3000) g`)
	require.NoError(t, err)
	// A SHARE lock (an index build, say) makes the purge's DELETE wait.
	release := lockTableIn(t, w, "processed_requests", "SHARE")
	purger := withTimeout("300")
	type result struct {
		p   store.Purged
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := purger.Purge(ctx, store.Retention{Rows: 48 * time.Hour})
		done <- result{p, err}
	}()
	require.Eventually(t, func() bool {
		var waiting bool
		require.NoError(t, w.Pool().QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%processed_at < now()%' AND now() - query_start > interval '1 second')`).Scan(&waiting))
		return waiting
	}, 30*time.Second, 20*time.Millisecond, "the purge waits longer than the URL's statement timeout")
	release()
	r := <-done
	require.NoError(t, r.err)
	require.EqualValues(t, 3000, r.p.Requests)
}

// A batch of writes behind a locked table fails as a whole once the lock
// timeout ends it, with an error that is not a context error, rather than
// waiting for ever or running its calls one by one (each as long again).
func TestWritesBehindALockedTableFailWithinTheLockTimeout(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	release := lockTable(t, s, "processed_requests")

	const n = 20
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		go func() {
			_, err := s.Complete(context.Background(), completion("urn:erp:lock", fmt.Sprint(i), true))
			errs <- err
		}()
	}
	for range n {
		err := <-errs
		require.Error(t, err)
		require.True(t, store.Unavailable(err), "%v", err)
		require.False(t, errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded),
			"a database that does not answer is not a shutdown: %v", err)
	}
	// Each call is bounded by the lock timeout, not n of them: well under
	// n lock timeouts for the lot.
	require.Less(t, time.Since(start), n*store.DefaultLockTimeout/2)

	release()
	ok, err := s.Complete(context.Background(), completion("urn:erp:lock", "0", true))
	require.NoError(t, err)
	require.True(t, ok, "nothing was written while the table was locked")
}

// A caller whose context ends stops waiting for a write it submitted, and
// learns its fate is unknown; the write itself goes ahead.
func TestCompleteReturnsWhenTheCallerStopsWaiting(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	release := lockTable(t, s, "processed_requests")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := s.Complete(ctx, completion("urn:erp:gone", "1", true))
		done <- err
	}()
	// Wait until the write is really waiting on the lock, then give up.
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, s.Pool().QueryRow(context.Background(),
			`SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'processed_requests'::regclass`).Scan(&waiting))
		return waiting > 0
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, store.ErrUnconfirmed)
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(store.DefaultLockTimeout / 2):
		t.Fatal("Complete kept waiting after its caller's context ended")
	}
	release()
}

// The readiness check fails while a table the pipeline writes is locked,
// within its own bound, and passes once it is released. Not parallel: the
// load of other tests would stretch the time it bounds.
func TestCheckWritableFailsWhileATableIsLocked(t *testing.T) {
	s := testenv.Store(t)
	require.NoError(t, s.CheckWritable(context.Background()))
	for _, table := range []string{"processed_requests", "outbox"} {
		release := lockTable(t, s, table)
		start := time.Now()
		err := s.CheckWritable(context.Background())
		require.Error(t, err, table)
		require.Less(t, time.Since(start), 3*time.Second)
		release()
		require.NoError(t, s.CheckWritable(context.Background()))
	}
}
