package relay_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/relay"
	"github.com/cardbridge/cardbridge/store"
)

func outcome(i int) store.Completion {
	id := fmt.Sprintf("ev-%d", i)
	return store.Completion{
		Source: "urn:erp:r", RequestID: fmt.Sprint(i), PayloadHash: []byte{1},
		Outcome: store.OutcomeFailed, Reason: "unbound_source",
		Event: store.OutboxEvent{EventID: id, Message: event.Message{Subject: "card.failed",
			Header: map[string][]string{"Ce-Id": {id}}, Data: []byte(`{}`)}},
	}
}

// stack is a store in a schema of its own and an embedded JetStream with
// cardbridge's streams, plus a subscription to the outcomes.
type stack struct {
	s   *store.Store
	nc  *nats.Conn
	js  jetstream.JetStream
	sub *nats.Subscription
}

func newStack(t *testing.T) stack {
	t.Helper()
	s := testenv.Store(t)
	ns := testenv.NATS(t)
	nc, js := testenv.JetStream(t, ns.URL())
	_, err := broker.Ensure(context.Background(), js, broker.DefaultTopology())
	require.NoError(t, err)
	sub, err := nc.SubscribeSync("card.>")
	require.NoError(t, err)
	return stack{s: s, nc: nc, js: js, sub: sub}
}

// storedOutcomes is how many events the outcome stream holds.
func (st stack) storedOutcomes(t *testing.T) uint64 {
	t.Helper()
	stream, err := st.js.Stream(context.Background(), "CARDS")
	require.NoError(t, err)
	info, err := stream.Info(context.Background())
	require.NoError(t, err)
	return info.State.Msgs
}

// start runs r until the returned function is called; that function
// stops it and returns what Run returned.
func start(r *relay.Relay) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// backlog is how many outbox rows are left now.
func (st stack) backlog(t *testing.T) int64 {
	t.Helper()
	n, _, err := st.s.OutboxBacklog(context.Background())
	require.NoError(t, err)
	return n
}

// requireOutboxEmpty waits until no outbox row is left.
func (st stack) requireOutboxEmpty(t *testing.T, why string) {
	t.Helper()
	require.Eventually(t, func() bool {
		n, _, err := st.s.OutboxBacklog(context.Background())
		return err == nil && n == 0
	}, 30*time.Second, 20*time.Millisecond, why)
}

// A relay that crashed after JetStream stored its batch but before it
// deleted the rows publishes them again; JetStream drops the copies by
// Nats-Msg-Id, so subscribers see each outcome once.
func TestRepublishAfterCrashIsDeduplicated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStack(t)
	s, js := st.s, st.js

	const n = 50
	var rows []store.OutboxEvent
	for i := range n {
		c := outcome(i)
		_, err := s.Complete(ctx, c)
		require.NoError(t, err)
		rows = append(rows, c.Event)
	}
	r := newRelay(t, s, js, relay.Config{BatchSize: 7, SweepAge: time.Nanosecond})
	published, err := r.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, n, published)

	// The crash: the rows are back, as if the deletes never committed.
	for _, e := range rows {
		_, err := s.Pool().Exec(ctx, `INSERT INTO outbox (event_id, subject, headers, data) VALUES ($1, $2, $3, $4)`,
			e.EventID, e.Subject, e.Header, e.Data)
		require.NoError(t, err)
	}
	published, err = r.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, n, published)

	require.EqualValues(t, n, st.storedOutcomes(t), "each outcome stored once")
	require.Zero(t, st.backlog(t))
}

// An event handed to Committed is published at once, long before any
// sweep, and its row is deleted once JetStream has acknowledged it.
func TestCommittedIsPublishedAtOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := newStack(t)
	s, js, sub := st.s, st.js, st.sub

	r := newRelay(t, s, js, relay.Config{PollInterval: time.Hour, SweepAge: time.Hour})
	stop := start(r)
	for i := range 3 {
		c := outcome(i)
		_, err := s.Complete(ctx, c)
		require.NoError(t, err)
		r.Committed(ctx, c.Event)
		m, err := sub.NextMsg(30 * time.Second)
		require.NoError(t, err, "published without waiting for a sweep")
		require.Equal(t, fmt.Sprintf("ev-%d", i), m.Header.Get("Nats-Msg-Id"))
	}
	st.requireOutboxEmpty(t, "acknowledged rows are deleted")
	require.NoError(t, stop())
}

// A row nobody published (its process died after the commit) is published
// by the sweep once it is older than SweepAge.
func TestSweepPublishesRowsLeftBehind(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := newStack(t)
	s, js, sub := st.s, st.js, st.sub

	_, err := s.Complete(ctx, outcome(1))
	require.NoError(t, err)
	committed := time.Now()
	const age = 300 * time.Millisecond
	r := newRelay(t, s, js, relay.Config{PollInterval: 20 * time.Millisecond, SweepAge: age})
	stop := start(r)
	m, err := sub.NextMsg(30 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "ev-1", m.Header.Get("Nats-Msg-Id"))
	require.GreaterOrEqual(t, time.Since(committed), age-50*time.Millisecond, "a young row is left to its own process")
	require.NoError(t, stop())
	require.Zero(t, st.backlog(t))
}

// Committed never holds up the consumer: with nobody collecting (Run not
// started, or far behind) it leaves the rows to a sweep, whose publishes
// JetStream recognises as duplicates.
func TestCommittedNeverBlocks(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := newStack(t)
	s, js := st.s, st.js

	r := newRelay(t, s, js, relay.Config{BatchSize: 1, PollInterval: 20 * time.Millisecond, SweepAge: time.Nanosecond})
	const n = 20 // more than the 4 pending acknowledgements a BatchSize of 1 holds
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		for i := range n {
			c := outcome(i)
			if _, err := s.Complete(ctx, c); err != nil {
				t.Error(err)
				return
			}
			r.Committed(ctx, c.Event)
		}
	}()
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatal("Committed blocked while nobody collected acknowledgements")
	}

	stop := start(r)
	st.requireOutboxEmpty(t, "the sweep publishes every row left behind")
	require.NoError(t, stop())

	require.EqualValues(t, n, st.storedOutcomes(t), "each outcome stored once")
}

// The last sweep at shutdown publishes young rows too, so that outcomes
// whose acknowledgement was not collected are not left for a start that
// may come after JetStream's duplicate window.
func TestShutdownSweepsYoungRows(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := newStack(t)
	s, js, sub := st.s, st.js, st.sub

	r := newRelay(t, s, js, relay.Config{PollInterval: time.Hour, SweepAge: time.Hour})
	stop := start(r)
	_, err := s.Complete(ctx, outcome(7)) // committed, never handed to Committed
	require.NoError(t, err)
	_, err = sub.NextMsg(200 * time.Millisecond)
	require.Error(t, err, "a young row is not swept while running")

	require.NoError(t, stop())
	m, err := sub.NextMsg(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "ev-7", m.Header.Get("Nats-Msg-Id"))
	require.Zero(t, st.backlog(t))
}

// setDuplicateWindow sets the outcome stream's duplicate window.
func (st stack) setDuplicateWindow(t *testing.T, window time.Duration) {
	t.Helper()
	ctx := context.Background()
	stream, err := st.js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	cfg := stream.CachedInfo().Config
	cfg.Duplicates = window
	_, err = st.js.UpdateStream(ctx, cfg)
	require.NoError(t, err)
}

// backdate makes the events' outbox rows as old as age by the database's
// clock, by which the relay tells a row's age: a row from a process that
// died long ago, without waiting that long.
func (st stack) backdate(t *testing.T, age time.Duration, eventIDs ...string) {
	t.Helper()
	tag, err := st.s.Pool().Exec(context.Background(),
		"UPDATE outbox SET created_at = now() - $1::interval WHERE event_id = ANY($2)", age, eventIDs)
	require.NoError(t, err)
	require.EqualValues(t, len(eventIDs), tag.RowsAffected())
}

// remembers reports whether the stream still holds e's Nats-Msg-Id in its
// duplicate window, without storing anything: the probe carries e's id
// and expects a last message id that is never the stream's. JetStream
// checks the id first, and answers a duplicate while it remembers it;
// once it has forgotten it, the expectation fails (wrong last msg ID), so
// the probe is not stored either way. Core subscribers to the subject do
// receive it.
func (st stack) remembers(t *testing.T, e store.OutboxEvent) bool {
	t.Helper()
	const wrongLastMsgID = 10070 // JetStream's error code for a failed last-msg-id expectation
	ack, err := st.js.PublishMsg(context.Background(), e.NATS(),
		jetstream.WithMsgID(e.EventID), jetstream.WithExpectLastMsgID("never-the-last-id"))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == wrongLastMsgID {
		return false
	}
	require.NoError(t, err)
	require.True(t, ack.Duplicate, "the probe was answered as a duplicate, not stored")
	return true
}

// A row that outlived the stream's duplicate window (its process was
// killed after JetStream stored the event and before the delete, and
// stayed down) is not published again: the sweep finds its event in the
// stream and only deletes the row. An old row whose event is not there,
// and a young row in the same batch, are published as usual.
//
// The rows are made old on the relay's side (backdated by an hour). For
// JetStream to forget ev-1's id without the test sleeping through a real
// window, the first copy is published while the window is the shortest
// JetStream allows, and the test waits until JetStream reports the id
// forgotten; then the window is set back, so that the young row is
// young again for the relay.
func TestRowOlderThanTheDuplicateWindowIsNotPublishedTwice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStack(t)
	s, js, sub := st.s, st.js, st.sub
	stream, err := js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	window := stream.CachedInfo().Config.Duplicates
	st.setDuplicateWindow(t, 100*time.Millisecond) // JetStream's shortest

	stored, lost, young := outcome(1), outcome(2), outcome(3)
	for _, c := range []store.Completion{stored, lost} {
		_, err := s.Complete(ctx, c)
		require.NoError(t, err)
	}
	st.backdate(t, time.Hour, stored.Event.EventID, lost.Event.EventID)
	// The first publish of ev-1, whose row was never deleted.
	_, err = js.PublishMsg(ctx, stored.Event.NATS(),
		jetstream.WithMsgID(stored.Event.EventID))
	require.NoError(t, err)
	m, err := sub.NextMsg(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, "ev-1", m.Header.Get("Nats-Msg-Id"))

	require.Eventually(t, func() bool { return !st.remembers(t, stored.Event) }, 10*time.Second, 20*time.Millisecond,
		"JetStream forgets ev-1's id")
	st.setDuplicateWindow(t, window)
	require.False(t, st.remembers(t, stored.Event), "a longer window does not bring a forgotten id back")
	// The probes reached the subscribers of card.> (though not the
	// stream): a new subscription sees only what comes after them.
	require.NoError(t, sub.Unsubscribe())
	sub, err = st.nc.SubscribeSync("card.>")
	require.NoError(t, err)
	_, err = s.Complete(ctx, young)
	require.NoError(t, err)
	r := newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond})
	claimed, err := r.Flush(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, claimed)

	var ids []string
	for range 2 {
		m, err = sub.NextMsg(10 * time.Second)
		require.NoError(t, err)
		ids = append(ids, m.Header.Get("Nats-Msg-Id"))
	}
	require.ElementsMatch(t, []string{"ev-2", "ev-3"}, ids, "the events never stored are published")
	_, err = sub.NextMsg(300 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "nothing else is published")
	require.EqualValues(t, 3, st.storedOutcomes(t), "each outcome stored once")
	st.requireOutboxEmpty(t, "every row is deleted")
}

// When the stream cannot be read (here: its consumer limit is reached),
// old rows are neither published nor deleted, while young rows of the
// same batch go out. Once the check has failed for the hold limit, the
// old rows are published unchecked rather than stuck, the whole backlog in
// one sweep, not one batch per hold limit.
func TestOldRowsWaitForTheirCheckThenArePublished(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStack(t)
	s, js, sub := st.s, st.js, st.sub
	unreadableCards(t, js, time.Minute)
	var err error

	const old = 5
	var oldIDs []string
	for i := 1; i <= old; i++ {
		c := outcome(i)
		_, err = s.Complete(ctx, c)
		require.NoError(t, err)
		oldIDs = append(oldIDs, c.Event.EventID)
	}
	st.backdate(t, time.Hour, oldIDs...)
	_, err = s.Complete(ctx, outcome(old+1))
	require.NoError(t, err)

	// One batch holds them all: the young row goes, the old ones wait.
	a := newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond})
	_, err = a.Flush(ctx)
	require.Error(t, err, "the stream could not be read")
	m, err := sub.NextMsg(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("ev-%d", old+1), m.Header.Get("Nats-Msg-Id"), "the young row is published")
	_, err = sub.NextMsg(200 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "the old rows wait")

	// Batches of two: the whole backlog goes once the hold limit is past.
	const hold = 500 * time.Millisecond
	clk := testenv.NewClock()
	b := newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond, BatchSize: 2})
	relay.SetHoldLimit(b, hold)
	relay.SetClock(b, clk.Now)
	_, err = b.Flush(ctx)
	require.Error(t, err, "the stream could not be read")
	require.EqualValues(t, old, st.backlog(t))
	clk.Advance(hold)
	_, err = b.Flush(ctx)
	require.NoError(t, err, "released rows are published, not reported as held")
	var ids []string
	for range old {
		m, err = sub.NextMsg(10 * time.Second)
		require.NoError(t, err)
		ids = append(ids, m.Header.Get("Nats-Msg-Id"))
	}
	require.ElementsMatch(t, []string{"ev-1", "ev-2", "ev-3", "ev-4", "ev-5"}, ids)
	st.requireOutboxEmpty(t, "every row is deleted")
	require.EqualValues(t, old+1, st.storedOutcomes(t))
}

// The hold limit runs from the start of a spell of failed checks: an old
// row whose check fails long after an earlier failure (whose rows another
// relay published meanwhile) waits the hold limit again, rather than
// being published unchecked at once.
func TestHoldLimitRunsFromTheStartOfAFailingSpell(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStack(t)
	s, js, sub := st.s, st.js, st.sub
	unreadableCards(t, js, time.Minute)
	var err error

	const hold = 2 * time.Second
	clk := testenv.NewClock()
	r := newRelay(t, s, js, relay.Config{SweepAge: time.Nanosecond})
	relay.SetHoldLimit(r, hold)
	relay.SetSpellGap(r, hold/2)
	relay.SetClock(r, clk.Now)
	_, err = s.Complete(ctx, outcome(1))
	require.NoError(t, err)
	st.backdate(t, time.Hour, "ev-1")
	_, err = r.Flush(ctx)
	require.Error(t, err, "the stream could not be read")
	// Another relay published it meanwhile.
	_, err = s.Pool().Exec(ctx, "DELETE FROM outbox WHERE event_id = 'ev-1'")
	require.NoError(t, err)

	_, err = s.Complete(ctx, outcome(2))
	require.NoError(t, err)
	st.backdate(t, time.Hour, "ev-2")
	clk.Advance(2 * hold)
	_, err = r.Flush(ctx)
	require.Error(t, err, "held: the stream could not be read (a new spell of failures)")
	_, err = sub.NextMsg(200 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "the old row waits for the hold limit")
	require.EqualValues(t, 1, st.backlog(t))
}

// unreadableCards makes CARDS anew with the given duplicate window and its
// one consumer taken, so that the relay's check of old rows cannot read it
// (the consumer limit cannot be changed on a stream).
func unreadableCards(t *testing.T, js jetstream.JetStream, window time.Duration) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, js.DeleteStream(ctx, "CARDS"))
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "CARDS", Subjects: []string{"card.>"},
		Duplicates: window, MaxConsumers: 1})
	require.NoError(t, err)
	_, err = js.CreateConsumer(ctx, "CARDS", jetstream.ConsumerConfig{Durable: "taken", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
}
