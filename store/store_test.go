package store_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/store"
)

func completion(source, id string, issued bool) store.Completion {
	c := store.Completion{
		Source:      source,
		RequestID:   id,
		PayloadHash: []byte("hash-" + id),
		Outcome:     store.OutcomeFailed,
		Reason:      "unbound_source",
		Event: store.OutboxEvent{
			EventID: "ev-" + source + "-" + id,
			Message: event.Message{
				Subject: "card.failed",
				Header:  map[string][]string{"Ce-Id": {"ev-" + id}},
				Data:    []byte(`{"x":1}`),
			},
		},
	}
	if issued {
		c.Outcome, c.Reason = store.OutcomeIssued, ""
		c.Event.Subject = "card.issued"
		c.Card = &store.CardOrder{ClientID: 1, EmployeeID: "e-" + id, SavingsAccountID: 1, CardProductID: 1,
			IdempotencyKey: "k-" + id, CardID: 42, CardToken: "tok", Status: "ACTIVE", IssuedAt: time.Now()}
	}
	return c
}

func TestCompleteWritesOnceAndOnlyOnce(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()

	ok, err := s.Complete(ctx, completion("urn:erp:a", "1", true))
	require.NoError(t, err)
	require.True(t, ok)

	ok, err = s.Complete(ctx, completion("urn:erp:a", "1", true))
	require.NoError(t, err)
	require.False(t, ok, "a second completion of the same request must write nothing")

	p, err := s.ProcessedRequest(ctx, "urn:erp:a", "1")
	require.NoError(t, err)
	require.Equal(t, store.OutcomeIssued, p.Outcome)
	o, err := s.CardOrder(ctx, "urn:erp:a", "1")
	require.NoError(t, err)
	require.EqualValues(t, 42, o.CardID)

	n, _, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestCompleteGroupsConcurrentWritesAndIsolatesABadOne(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	const n = 200
	var wg sync.WaitGroup
	results := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := completion("urn:erp:b", fmt.Sprint(i), i%2 == 0)
			if i == 7 {
				// An outcome the schema's CHECK refuses: it must fail alone.
				c.Outcome = "bogus"
			}
			results[i], errs[i] = s.Complete(ctx, c)
		}()
	}
	wg.Wait()
	for i := range n {
		if i == 7 {
			require.Error(t, errs[i])
			continue
		}
		require.NoError(t, errs[i], "request %d", i)
		require.True(t, results[i], "request %d", i)
	}
	backlog, _, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.EqualValues(t, n-1, backlog)
}

func TestCompleteStoresUnreadableIdentifiers(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	c := completion("urn:\xff\x00bad", "id\x00", false)
	c.Event = store.OutboxEvent{}
	c.DeadLetter = &store.DeadLetter{Message: "not a CloudEvent", Subject: "employee.card.requested",
		Header: map[string][]string{}, Data: []byte{0xff, 0x00}, StreamSeq: 3, Deliveries: 1, FirstSeen: time.Now()}
	ok, err := s.Complete(ctx, c)
	require.NoError(t, err)
	require.True(t, ok)
	n, _, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Zero(t, n, "no event without a request to answer")
}

// claimAll claims every row at least minAge old, as one sweep.
func claimAll(t *testing.T, s *store.Store, minAge, term time.Duration) store.OutboxLease {
	t.Helper()
	l, err := s.ClaimOutbox(context.Background(), 100, minAge, term)
	require.NoError(t, err)
	return l
}

func eventIDs(l store.OutboxLease) []string {
	ids := make([]string, 0, len(l.Events))
	for _, e := range l.Events {
		ids = append(ids, e.EventID)
	}
	return ids
}

func TestSettleOutboxDeletesAcknowledgedRowsAndReleasesTheRest(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	for i := range 5 {
		_, err := s.Complete(ctx, completion("urn:erp:c", fmt.Sprint(i), true))
		require.NoError(t, err)
	}
	l, err := s.ClaimOutbox(ctx, 3, 0, time.Minute)
	require.NoError(t, err)
	require.Len(t, l.Events, 3)
	require.Equal(t, []string{"ev-0"}, l.Events[0].Header["Ce-Id"], "headers survive the round trip")
	require.Equal(t, []string{"ev-urn:erp:c-0", "ev-urn:erp:c-1", "ev-urn:erp:c-2"}, eventIDs(l), "in commit order")

	require.NoError(t, s.SettleOutbox(ctx, l, []int64{l.Events[0].ID, l.Events[1].ID}))
	backlog, _, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, backlog, "acknowledged rows are deleted, the others kept")
	require.Equal(t, []string{"ev-urn:erp:c-2", "ev-urn:erp:c-3", "ev-urn:erp:c-4"}, eventIDs(claimAll(t, s, 0, time.Minute)),
		"the unacknowledged row is released for the next sweep at once")
}

// Young rows belong to the process that committed them, which publishes
// them itself; a sweep takes only what is older than its minimum age.
func TestClaimOutboxLeavesYoungRows(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	_, err := s.Complete(ctx, completion("urn:erp:y", "old", true))
	require.NoError(t, err)
	_, err = s.Pool().Exec(ctx, `UPDATE outbox SET created_at = now() - interval '1 minute'`)
	require.NoError(t, err)
	_, err = s.Complete(ctx, completion("urn:erp:y", "young", true))
	require.NoError(t, err)

	l := claimAll(t, s, 30*time.Second, time.Minute)
	require.Equal(t, []string{"ev-urn:erp:y-old"}, eventIDs(l))
	require.NoError(t, s.SettleOutbox(ctx, l, []int64{l.Events[0].ID}))

	require.NoError(t, s.DeletePublished(ctx, []string{"ev-urn:erp:y-young", "ev-gone"}))
	backlog, _, err := s.OutboxBacklog(ctx)
	require.NoError(t, err)
	require.Zero(t, backlog, "published rows are deleted by event id; unknown ids are no error")
}

// A lease keeps other sweeps off its rows until it is settled or runs out;
// no transaction stays open meanwhile.
func TestClaimOutboxSkipsLeasedRowsUntilTheLeaseRunsOut(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	for i := range 4 {
		_, err := s.Complete(ctx, completion("urn:erp:d", fmt.Sprint(i), true))
		require.NoError(t, err)
	}
	first, err := s.ClaimOutbox(ctx, 2, 0, time.Hour)
	require.NoError(t, err)
	require.Len(t, first.Events, 2)
	var locks int
	require.NoError(t, s.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE relation = 'outbox'::regclass AND pid <> pg_backend_pid()`).Scan(&locks))
	require.Zero(t, locks, "a lease holds no transaction, so no lock on the outbox")

	second := claimAll(t, s, 0, time.Hour)
	require.Equal(t, []string{"ev-urn:erp:d-2", "ev-urn:erp:d-3"}, eventIDs(second), "rows under a live lease are not taken")
	require.Empty(t, claimAll(t, s, 0, time.Hour).Events)

	// The first sweep dies without settling: its lease runs out (made to
	// here by moving it into the past) and its rows are taken again.
	_, err = s.Pool().Exec(ctx, `UPDATE outbox SET leased_until = now() - interval '1 second' WHERE lease_id = $1::uuid`, first.ID)
	require.NoError(t, err)
	third := claimAll(t, s, 0, time.Hour)
	require.Equal(t, eventIDs(first), eventIDs(third))

	// The dead sweep's lease is gone: renewing or settling it touches
	// nothing of the sweep that holds its rows now.
	held, err := s.RenewOutboxLease(ctx, first, time.Hour)
	require.NoError(t, err)
	require.False(t, held)
	require.NoError(t, s.SettleOutbox(ctx, first, nil))
	require.Empty(t, claimAll(t, s, 0, time.Hour).Events, "settling a lost lease releases nothing")
	held, err = s.RenewOutboxLease(ctx, third, time.Hour)
	require.NoError(t, err)
	require.True(t, held)
}

// A lease that ran out and was partly taken over is lost as a whole: its
// renewal renews none of its rows, not the ones nobody took yet.
func TestRenewOutboxLeaseRefusesALeaseThatRanOut(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	for i := range 2 {
		_, err := s.Complete(ctx, completion("urn:erp:p", fmt.Sprint(i), true))
		require.NoError(t, err)
	}
	first := claimAll(t, s, 0, time.Hour)
	require.Len(t, first.Events, 2)
	_, err := s.Pool().Exec(ctx, `UPDATE outbox SET leased_until = now() - interval '1 second' WHERE lease_id = $1::uuid`, first.ID)
	require.NoError(t, err)
	second, err := s.ClaimOutbox(ctx, 1, 0, time.Hour)
	require.NoError(t, err)
	require.Equal(t, eventIDs(first)[:1], eventIDs(second), "one of the two rows is taken over")

	held, err := s.RenewOutboxLease(ctx, first, time.Hour)
	require.NoError(t, err)
	require.False(t, held, "the lease ran out: it is lost, though one of its rows was not taken")
	require.Equal(t, eventIDs(first)[1:], eventIDs(claimAll(t, s, 0, time.Hour)), "the row nobody took stays free for the next sweep")
}

func TestBindings(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	require.NoError(t, s.AddBinding(ctx, store.Binding{Source: "urn:erp:x", ClientID: 1, SavingsAccountID: 2, CardProductID: 3}))
	require.NoError(t, s.AddBinding(ctx, store.Binding{Source: "urn:erp:x", ClientID: 1, SavingsAccountID: 5, CardProductID: 3}))
	a, err := s.Admit(ctx, store.AdmissionQuery{Source: "urn:erp:x", RequestID: "r", ClientID: 1})
	require.NoError(t, err)
	require.NotNil(t, a.Binding)
	require.EqualValues(t, 5, a.Binding.SavingsAccountID, "adding again updates the account")
	a, err = s.Admit(ctx, store.AdmissionQuery{Source: "urn:erp:x", RequestID: "r", ClientID: 2})
	require.NoError(t, err)
	require.Nil(t, a.Binding)
	require.True(t, a.SourceKnown)
	bs, err := s.Bindings(ctx)
	require.NoError(t, err)
	require.Len(t, bs, 1)
	require.NoError(t, s.RemoveBinding(ctx, "urn:erp:x", 1))
	require.ErrorIs(t, s.RemoveBinding(ctx, "urn:erp:x", 1), store.ErrNotFound)
}

func TestRecordProvisioningFirstWriterWins(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	a, err := s.RecordProvisioning(ctx, store.SelfServiceUser{ClientID: 9, Username: "a", PasswordSealed: []byte("sa")})
	require.NoError(t, err)
	b, err := s.RecordProvisioning(ctx, store.SelfServiceUser{ClientID: 9, Username: "b", PasswordSealed: []byte("sb")})
	require.NoError(t, err)
	require.Equal(t, "a", a.Username)
	require.Equal(t, "a", b.Username, "the second process must adopt the first row")
	require.Equal(t, store.UserProvisioning, b.Status)
	require.NoError(t, s.ActivateUser(ctx, 9, 107))
	u, err := s.SelfServiceUser(ctx, 9)
	require.NoError(t, err)
	require.Equal(t, store.UserActive, u.Status)
	require.EqualValues(t, 107, u.MBanqUserID)
}

func TestMigrationsUpDownAndConcurrent(t *testing.T) {
	t.Parallel()
	url := testenv.DatabaseURL(t)
	ctx := context.Background()
	open := func() *store.Store {
		s, err := store.Open(ctx, store.Options{URL: secret.New(url)})
		require.NoError(t, err)
		t.Cleanup(s.Close)
		return s
	}
	s := open()
	require.ErrorIs(t, s.CheckMigrations(ctx), store.ErrPendingMigrations)

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = open().MigrateUp(ctx, &bytes.Buffer{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, s.CheckMigrations(ctx))
	st, err := s.MigrationStatus(ctx)
	require.NoError(t, err)
	for _, m := range st {
		require.True(t, m.Applied, m.Name)
	}
	var out bytes.Buffer
	require.NoError(t, s.MigrateDown(ctx, &out))
	require.ErrorIs(t, s.CheckMigrations(ctx), store.ErrPendingMigrations)
}

func TestAdmitAnswersManyRequestsAtOnce(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	require.NoError(t, s.AddBinding(ctx, store.Binding{Source: "urn:erp:a", ClientID: 1, SavingsAccountID: 10, CardProductID: 3}))
	_, err := s.Complete(ctx, completion("urn:erp:a", "done", true))
	require.NoError(t, err)

	var wg sync.WaitGroup
	type tc struct {
		q                  store.AdmissionQuery
		processed, binding bool
		known              bool
	}
	cases := []tc{
		{store.AdmissionQuery{Source: "urn:erp:a", RequestID: "done", ClientID: 1}, true, true, true},
		{store.AdmissionQuery{Source: "urn:erp:a", RequestID: "new", ClientID: 1}, false, true, true},
		{store.AdmissionQuery{Source: "urn:erp:a", RequestID: "new", ClientID: 2}, false, false, true},
		{store.AdmissionQuery{Source: "urn:erp:z", RequestID: "new", ClientID: 1}, false, false, false},
		{store.AdmissionQuery{Source: "urn:\xff", RequestID: "\x00", ClientID: 1}, false, false, false},
	}
	for range 20 {
		for _, c := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, err := s.Admit(ctx, c.q)
				require.NoError(t, err)
				require.Equal(t, c.processed, a.Processed != nil, "%+v", c.q)
				require.Equal(t, c.binding, a.Binding != nil, "%+v", c.q)
				require.Equal(t, c.known, a.SourceKnown, "%+v", c.q)
				if a.Processed != nil {
					require.Equal(t, store.OutcomeIssued, a.Processed.Outcome)
					require.Equal(t, []byte("hash-done"), a.Processed.PayloadHash)
				}
				if a.Binding != nil {
					require.EqualValues(t, 10, a.Binding.SavingsAccountID)
					require.EqualValues(t, 3, a.Binding.CardProductID)
				}
			}()
		}
	}
	wg.Wait()
}

func admissionQuery(i int64) store.AdmissionQuery {
	return store.AdmissionQuery{Source: "urn:erp:bench", RequestID: fmt.Sprint(i), ClientID: 1}
}

// The console's list is the newest requests first, looked for in a recent
// window and then further back until it is full, so older requests still
// show when the recent ones are fewer than asked.
func TestRecentRequestsNewestFirstAcrossWindows(t *testing.T) {
	t.Parallel()
	s := testenv.Store(t)
	ctx := context.Background()
	ages := map[string]string{"a": "1 minute", "b": "2 hours", "c": "3 days", "d": "30 days", "e": "10 seconds"}
	for id, age := range ages {
		_, err := s.Complete(ctx, completion("urn:erp:console", id, id != "c"))
		require.NoError(t, err)
		_, err = s.Pool().Exec(ctx, `UPDATE processed_requests SET processed_at = now() - $1::interval WHERE request_id = $2`, age, id)
		require.NoError(t, err)
	}
	ids := func(limit int) []string {
		got, err := s.RecentRequests(ctx, limit)
		require.NoError(t, err)
		var out []string
		for _, r := range got {
			out = append(out, r.RequestID)
		}
		return out
	}
	require.Equal(t, []string{"e", "a"}, ids(2), "the last hour holds enough")
	require.Equal(t, []string{"e", "a", "b", "c"}, ids(4), "a week back")
	require.Equal(t, []string{"e", "a", "b", "c", "d"}, ids(50), "everything, when fewer than asked")
}

// A DATABASE_URL pgx cannot parse is refused with the reason and the form
// it should have, never with the password.
func TestOpenSaysWhyTheURLIsWrongWithoutThePassword(t *testing.T) {
	t.Parallel()
	for raw, why := range map[string]string{
		"postgres://u:s3cret-pw@h:54x2/db":                      "invalid port",
		"postgres://u:s3cret-pw@h/db?sslmode=maybe":             "sslmode is invalid",
		"postgres://u:s3cr%zz-pw@h/db":                          "invalid percent-encoded token in password",
		"host=h password=s3cret-pw port=abc":                    "invalid port",
		"postgres://u:s3cret-pw@h/db?connect_timeout=s3cret-pw": "",
	} {
		_, err := store.Open(context.Background(), store.Options{URL: secret.New(raw)})
		require.Error(t, err, raw)
		require.Contains(t, err.Error(), "DATABASE_URL is not a valid Postgres connection string")
		require.Contains(t, err.Error(), "postgres://user:password@host:5432/dbname")
		require.Contains(t, err.Error(), why)
		require.NotContains(t, err.Error(), "s3cret")
		require.NotContains(t, err.Error(), "zz-pw")
	}
}
