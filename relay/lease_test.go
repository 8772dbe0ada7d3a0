package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/relay"
	"github.com/cardbridge/cardbridge/store"
)

// The environment of a test binary started as a sweeping process (see
// TestMain): where its outbox and its NATS server are.
const (
	sweeperDB   = "CARDBRIDGE_TEST_SWEEPER_DB"
	sweeperNATS = "CARDBRIDGE_TEST_SWEEPER_NATS"
)

func TestMain(m *testing.M) {
	if os.Getenv(sweeperDB) != "" {
		os.Exit(sweepOnce())
	}
	os.Exit(m.Run())
}

// sweepOnce is the process TestKilledSweepsRowsAreTakenWhenItsLeaseRunsOut
// kills: one sweep of the outbox, with a lease of a few seconds.
func sweepOnce() int {
	ctx := context.Background()
	s, err := store.Open(ctx, store.Options{URL: secret.New(os.Getenv(sweeperDB))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	nc, err := nats.Connect(os.Getenv(sweeperNATS))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := relay.New(s, js, relay.Config{SweepAge: time.Nanosecond, PublishWait: time.Minute})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	relay.SetLease(r, 3*time.Second, time.Second, time.Second)
	_, err = r.Flush(ctx)
	fmt.Fprintln(os.Stderr, "sweep ended:", err)
	return 1
}

// unanswered is a NATS server whose JetStream does not answer publishes on
// card.>, as a stream without a leader leaves them unanswered: no stream
// takes them yet, and a plain subscriber swallows them. Each publish that
// reaches it is sent on got. answer makes the stream, so that publishes
// are answered from then on.
type unanswered struct {
	url string
	sub *nats.Subscription
	got chan *nats.Msg
}

func newUnanswered(t *testing.T) *unanswered {
	t.Helper()
	ns := testenv.NATS(t)
	nc, _ := testenv.JetStream(t, ns.URL())
	u := &unanswered{url: ns.URL(), got: make(chan *nats.Msg, 64)}
	var err error
	u.sub, err = nc.ChanSubscribe("card.>", u.got)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return u
}

// published waits for a publish to reach the server.
func (u *unanswered) published(t *testing.T) {
	t.Helper()
	select {
	case <-u.got:
	case <-time.After(30 * time.Second):
		t.Fatal("nothing was published")
	}
}

func (u *unanswered) answer(t *testing.T) {
	t.Helper()
	require.NoError(t, u.sub.Unsubscribe())
	_, js := testenv.JetStream(t, u.url)
	_, err := broker.Ensure(context.Background(), js, broker.DefaultTopology())
	require.NoError(t, err)
}

// unansweredOutbox is a store holding one outcome (ev-1) and a JetStream
// that does not answer its publish.
func unansweredOutbox(t *testing.T) (*store.Store, *unanswered, jetstream.JetStream) {
	t.Helper()
	s := testenv.Store(t)
	u := newUnanswered(t)
	_, js := testenv.JetStream(t, u.url)
	_, err := s.Complete(context.Background(), outcome(1))
	require.NoError(t, err)
	return s, u, js
}

// leaseOf reads the lease on the outbox row of eventID: its id (empty when
// the row is free) and until when it holds.
func leaseOf(t *testing.T, s *store.Store, eventID string) (id string, until time.Time) {
	t.Helper()
	var lid *string
	var lu *time.Time
	require.NoError(t, s.Pool().QueryRow(context.Background(),
		`SELECT lease_id::text, leased_until FROM outbox WHERE event_id = $1`, eventID).Scan(&lid, &lu))
	if lid != nil {
		id = *lid
	}
	if lu != nil {
		until = *lu
	}
	return id, until
}

// outboxLocks counts the locks on the outbox table held by sessions idle in
// a transaction: a transaction left open while its session waits for
// something else (NATS) holds one. A statement at work is not counted.
func outboxLocks(t *testing.T, s *store.Store) int {
	t.Helper()
	var n int
	require.NoError(t, s.Pool().QueryRow(context.Background(), `
		SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.relation = 'outbox'::regclass AND a.state LIKE 'idle in transaction%'`).Scan(&n))
	return n
}

// A sweep publishes with no transaction open: while JetStream keeps it
// waiting, its rows are leased, not locked, and the lease is renewed past
// its first term, so that another sweep does not take them. A sweep that
// finds its lease lost stops without waiting for NATS.
func TestSweepLeasesItsRowsInsteadOfLockingThem(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, u, js := unansweredOutbox(t)
	var err error

	r := newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond, PublishWait: time.Minute})
	relay.SetLease(r, 3*time.Second, 500*time.Millisecond, time.Second)
	flushed := make(chan error, 1)
	go func() {
		_, err := r.Flush(ctx)
		flushed <- err
	}()
	u.published(t)

	leaseID, first := leaseOf(t, s, "ev-1")
	require.NotEmpty(t, leaseID, "the row is leased while its publish waits")
	require.Zero(t, outboxLocks(t, s), "no transaction is open on the outbox while the sweep waits for NATS")
	require.Eventually(t, func() bool {
		_, until := leaseOf(t, s, "ev-1")
		return until.After(first)
	}, 30*time.Second, 20*time.Millisecond, "the lease is renewed while the sweep waits")
	other := newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond, PublishWait: time.Minute})
	n, err := other.Flush(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "a row under a renewed lease is not swept twice at once")
	select {
	case err := <-flushed:
		t.Fatalf("the sweep ended before its publish was answered: %v", err)
	default:
	}

	// Another sweep holds the row now (as if this one had stalled past its
	// lease): this one stops, though NATS never answered.
	_, err = s.Pool().Exec(ctx, `UPDATE outbox SET lease_id = gen_random_uuid() WHERE event_id = 'ev-1'`)
	require.NoError(t, err)
	select {
	case err := <-flushed:
		require.NoError(t, err, "a sweep that lost its lease stops, and that is no failure of its own")
	case <-time.After(30 * time.Second):
		t.Fatal("a sweep that lost its lease went on waiting for NATS")
	}
	id, _ := leaseOf(t, s, "ev-1")
	require.NotEqual(t, leaseID, id)
	require.NotEmpty(t, id, "the lost lease's end leaves the new holder's lease alone")
}

// A sweep whose database stalls cannot renew its lease: it stops before
// the lease can run out, so it is no longer at work when another sweep
// takes its rows.
func TestSweepThatCannotRenewStopsBeforeItsLeaseRunsOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.DatabaseURL(t)
	s := testenv.StoreAt(t, dbURL)
	u := newUnanswered(t)
	_, js := testenv.JetStream(t, u.url)
	_, err := s.Complete(ctx, outcome(1))
	require.NoError(t, err)

	// Sweep A has a database of one connection, which the test takes once
	// A has claimed the row: A's renewals wait for it.
	one, err := store.Open(ctx, store.Options{URL: secret.New(dbURL), MaxConns: 1})
	require.NoError(t, err)
	t.Cleanup(one.Close)
	var logs testenv.LogBuffer
	a := newRelay(t, one, js, relay.Config{SweepAge: time.Nanosecond, PublishWait: time.Minute,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	relay.SetLease(a, 3*time.Second, time.Second, time.Second)
	flushed := make(chan error, 1)
	go func() {
		_, err := a.Flush(ctx)
		flushed <- err
	}()
	u.published(t)
	conn, err := one.Pool().Acquire(ctx)
	require.NoError(t, err)
	held := true
	defer func() {
		if held {
			conn.Release()
		}
	}()

	// Sweep B takes the row once A's lease has run out; A stopped first.
	b := newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond, PublishWait: 100 * time.Millisecond})
	var stoppedFirst bool
	require.Eventually(t, func() bool {
		n, _ := b.Flush(ctx) // its publish is not answered either
		if n == 0 {
			return false
		}
		stoppedFirst = strings.Contains(logs.String(), "could not be renewed in time")
		return true
	}, 30*time.Second, 50*time.Millisecond, "another sweep takes the row once the lease ran out")
	require.True(t, stoppedFirst, "sweep A had stopped before its rows were taken; its log:\n%s", logs.String())

	conn.Release()
	held = false
	select {
	case err := <-flushed:
		require.ErrorContains(t, err, "could not be renewed in time", "a lease that ran out is the sweep's failure")
	case <-time.After(30 * time.Second):
		t.Fatal("sweep A never ended")
	}
}

// A publish that fails releases its row at once: the next sweep publishes
// it without waiting for the lease to run out.
func TestFailedSweepReleasesItsRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, u, js := unansweredOutbox(t)
	var err error

	r := newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond, PublishWait: 200 * time.Millisecond})
	relay.SetLease(r, time.Hour, time.Minute, time.Minute)
	n, err := r.Flush(ctx)
	require.Error(t, err, "JetStream never answered")
	require.Equal(t, 1, n)
	id, _ := leaseOf(t, s, "ev-1")
	require.Empty(t, id, "the unpublished row is released")

	// The next sweep, by another process (this one remembers for a while
	// that the stream could not be found, and would report it).
	u.answer(t)
	_, js = testenv.JetStream(t, u.url)
	n, err = newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond}).Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n, "taken again at once, though its hour-long lease had not run out")
	backlog, _, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Zero(t, backlog, "published and deleted")
}

// A process SIGKILLed in the middle of a sweep settles nothing: its rows
// stay leased until the lease runs out, then another process publishes
// them.
func TestKilledSweepsRowsAreTakenWhenItsLeaseRunsOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.DatabaseURL(t)
	s := testenv.StoreAt(t, dbURL)
	u := newUnanswered(t)
	_, err := s.Complete(ctx, outcome(1))
	require.NoError(t, err)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), sweeperDB+"="+dbURL, sweeperNATS+"="+u.url)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	u.published(t)
	held, until := leaseOf(t, s, "ev-1")
	require.NotEmpty(t, held, "the sweeping process holds the row")
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	err = cmd.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, syscall.SIGKILL, exit.Sys().(syscall.WaitStatus).Signal(), "killed mid-sweep, not ended")

	u.answer(t)
	_, js := testenv.JetStream(t, u.url)
	r := newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond})
	// While the dead sweep's lease holds, nobody takes the row...
	var dbNow time.Time
	require.NoError(t, s.Pool().QueryRow(ctx, `SELECT now()`).Scan(&dbNow))
	if until.Sub(dbNow) > time.Second { // time enough to ask before it runs out
		n, err := r.Flush(ctx)
		require.NoError(t, err)
		require.Zero(t, n, "the row is not taken while the dead sweep's lease holds")
	}
	// ...and once it ran out, the next sweep publishes it.
	var flushErr error
	require.Eventually(t, func() bool {
		n, err := r.Flush(ctx)
		flushErr = err
		return err != nil || n > 0
	}, 30*time.Second, 50*time.Millisecond)
	require.NoError(t, flushErr)
	backlog, _, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Zero(t, backlog, "published and deleted")
}
