package chaos_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/app"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

// The size of the run. The defaults are CI's (about three minutes, most
// of it the bank's outage); see doc.go for a long run.
var (
	rate       = flag.Float64("chaos.rate", 25, "requests published per second while the faults run")
	requests   = flag.Int("chaos.requests", 1000, "at least this many requests in all: those the steady rate has not published when the faults are over are published at once")
	processes  = flag.Int("chaos.processes", 2, "cardbridge run processes sharing the consumer")
	rounds     = flag.Int("chaos.rounds", 1, "times the whole sequence of faults is run")
	kills      = flag.Int("chaos.kills", 2, "SIGKILLs (each followed by a restart) in all, spread over the rounds; each lands while the victim has card orders at the bank")
	sigterms   = flag.Int("chaos.sigterms", 1, "SIGTERMs under load per round, besides the one during the database stall")
	natsKills  = flag.Int("chaos.nats-kills", 1, "NATS nodes killed per round: the ERP stream's leader, then the CARDS stream's, in turn")
	natsPause  = flag.Duration("chaos.nats-pause", 5*time.Second, "how long a killed NATS node stays down")
	pgStall    = flag.Duration("chaos.pg-stall", 15*time.Second, "how long Postgres' traffic is held (connections open, no byte through); 0 skips it")
	pgStop     = flag.Duration("chaos.pg-stop", 5*time.Second, "how long Postgres is unreachable (connections cut, new ones refused); 0 skips it")
	bankOutage = flag.Duration("chaos.bank-outage", 61*time.Second, "how long the bank is gone (connections cut, new ones refused); 0 skips it")
	extraEnv   = flag.String("chaos.env", "", "comma-separated NAME=value settings for the processes, to compare with the defaults (CI runs the defaults)")
	settle     = flag.Duration("chaos.settle", 2*time.Minute, "how long the requests may take to get their outcomes once the faults are over")
)

// Recovery bounds: how long after a fault ends every request that was
// waiting at its end must have its outcome. They are generous (a shared
// 2-core machine, the race detector in the test process), and documented in
// doc.go. A request that meets no fault must have its outcome within
// boundNormal of its publication (the bank's injected 5xx, 429 and lost
// answers cost a few retries of 1, 2, 4 s).
var (
	boundNormal = flag.Duration("chaos.bound-normal", 25*time.Second, "publication to outcome for a request no fault touched")
	boundKill   = flag.Duration("chaos.bound-kill", 20*time.Second, "after a SIGKILL and restart (README: held requests back within 10 s)")
	boundTerm   = flag.Duration("chaos.bound-sigterm", 20*time.Second, "after a SIGTERM and restart")
	boundNATS   = flag.Duration("chaos.bound-nats", 30*time.Second, "after a killed NATS node is back")
	boundPG     = flag.Duration("chaos.bound-pg", 30*time.Second, "after Postgres is back from a stall or a stop")
	boundBank   = flag.Duration("chaos.bound-bank", 45*time.Second, "after the bank is back (a paused process probes at most every 30 s)")
	boundElect  = flag.Duration("chaos.bound-nats-gap", 20*time.Second, "longest time without an outcome when a NATS node is lost: the election and the relay's resumption (a leader change must cost no more than the election), the node still down")
	boundReady  = flag.Duration("chaos.bound-ready", 15*time.Second, "from the start of a database fault to /readyz answering 503")
)

// shutdownGrace is the documented longest time from SIGTERM to exit
// (app.ShutdownGrace, README); a process must exit 0 within it
// and termMargin.
const (
	shutdownGrace = app.ShutdownGrace
	termMargin    = 5 * time.Second
)

const source = "urn:erp:chaos"

// bankLatency is the least time the bank takes to answer; a signal is sent
// when the victim has an order that arrived less than freshOrder ago, so
// that the order is sure to be at the bank when the signal lands.
const (
	bankLatency = 200 * time.Millisecond
	freshOrder  = 100 * time.Millisecond
)

// TestChaos runs cardbridge as in production, with default settings: two
// `cardbridge run` processes, a three-node NATS cluster with replicated
// streams, Postgres behind a fault-injecting proxy, and a bank over HTTP
// that answers slowly and misbehaves (2% 5xx, 2% 429, 2% lost answers).
// Requests flow at a steady rate while, in turn: processes are SIGKILLed
// with card orders at the bank and restarted; one is stopped with SIGTERM
// under load; the node leading a stream is killed and restarted after a
// pause; Postgres is stalled (one process gets a SIGTERM meanwhile), then
// stopped and started; the bank goes away for over a minute and comes back.
// It asserts that each fault landed, the recovery after each within its
// bound, no request waiting past its bounds, and in the end exactly one
// outcome per request, one card per issued request, and clean SIGTERMs.
func TestChaos(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bin := testenv.Binary(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	// Postgres: a schema of the test's own, migrated, with bindings; the
	// processes reach it only through the proxy.
	dbURL := testenv.DatabaseURL(t)
	st, err := store.Open(ctx, store.Options{URL: secret.New(dbURL)})
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.MigrateUp(ctx, &bytes.Buffer{}))
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: source, ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: source, ClientID: 2, SavingsAccountID: 2, CardProductID: 2})) // inactive product: the bank refuses
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	pg := startPGProxy(t, u.Host)
	u.Host = pg.Addr()
	procDB := u.String()

	// NATS: three nodes, each a process of its own.
	nc3 := testenv.StartNATSCluster(t, 3)
	nc, err := nats.Connect(nc3.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.Timeout(5*time.Second))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	// The bank: slow, misbehaving, one listener per process slot.
	seed := sandbox.DefaultSeed()
	sb := sandbox.New(seed, sandbox.WithRandSeed(rng.Uint64()))
	// Its 429s come from a tenant rate limit, as a real bank's do (MBanq
	// limits calls per tenant): well above the steady load, it caps how
	// fast a backlog drains after a fault. A 429 at random, whatever the
	// load, would read to the adaptive limiter as a limit at the load of
	// the moment (see the README's "Kind to the bank").
	require.NoError(t, sb.SetFaults(sandbox.Faults{
		ServerErrorRate:  0.02,
		TenantRateLimit:  150,
		LostResponseRate: 0.02,
		Latency:          sandbox.Duration(bankLatency),
		LatencyJitter:    sandbox.Duration(300 * time.Millisecond),
	}))
	ps := &procs{t: t, bin: bin, live: map[int]*proc{}}
	for range *processes {
		f := &front{sb: sb, orders: map[uint64]time.Time{}, addr: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}
		f.up(t)
		defer f.down()
		ps.fronts = append(ps.fronts, f)
		ps.http = append(ps.http, testenv.FreePort(t))
	}
	key := testenv.SecretKey(t)
	ps.env = []string{
		"DATABASE_URL=" + procDB,
		"NATS_URL=" + nc3.URL(),
		"MBANQ_TENANT_ID=" + seed.TenantID,
		"MBANQ_CLIENT_ID=" + seed.OAuthClient.ID,
		"MBANQ_CLIENT_SECRET=" + seed.OAuthClient.Secret.Reveal(),
		"MBANQ_ADMIN_USERNAME=" + seed.Admin.Username,
		"MBANQ_ADMIN_PASSWORD=" + seed.Admin.Password.Reveal(),
		"CARDBRIDGE_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key),
		"LOG_FORMAT=json",
		"LOG_LEVEL=warn",
	}
	if *extraEnv != "" {
		// Not for CI, which runs the defaults: to compare a setting.
		ps.env = append(ps.env, strings.Split(*extraEnv, ",")...)
		t.Logf("processes run with %s", *extraEnv)
	}
	t.Cleanup(func() {
		ps.killAll()
		if t.Failed() {
			for i, p := range ps.all {
				t.Logf("process %d (slot %d) output (tail):\n%s", i, p.slot, tail(p.out.String()))
			}
		}
	})

	// The processes create the streams and the consumer, as in production.
	for slot := range *processes {
		ps.start(slot)
	}
	began := time.Now()
	waitFor(t, 2*time.Minute, "the processes to create the streams and the consumer", func() bool {
		_, err := js.Consumer(ctx, "ERP", "cardbridge")
		return err == nil
	})
	checkAlive(t, ps)
	requireReplicated(ctx, t, js)

	// The ledger, fed live from CARDS, and the steady publisher.
	led := newLedger()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchOutcomes(watchCtx, t, js, led)
	// The publisher stops between two requests when told (stopPub); a
	// request it has begun it publishes until acknowledged, unless the test
	// ends (ctx), which the test waits for.
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan int, 1)
	seq := 0
	go func() { pubDone <- publishSteadily(pubCtx, ctx, t, js, led, &seq, *rate) }()
	pubStopped := false
	defer func() {
		if !pubStopped {
			cancel()
			<-pubDone
		}
	}()

	waitFor(t, 2*time.Minute, "the first outcomes", func() bool { _, n := led.counts(); return n > 0 })
	t.Logf("outcomes flowing %s after the processes started", time.Since(began).Round(time.Millisecond))

	var faults []*fault
	record := func(f *fault) {
		waitRecovered(led, f, 10*time.Second)
		faults = append(faults, f)
		rate := ""
		if answered := f.pending - f.unrecovered; answered > 1 && f.drain > f.resume {
			rate = fmt.Sprintf(" (%.0f/s between)", float64(answered-1)/(f.drain-f.resume).Seconds())
		}
		t.Logf("%-8s %s: lasted %s; %d requests waiting at its end: first answered after %s, last after %s%s (bound %s)%s; longest time without an outcome %s",
			f.kind, f.what, f.end.Sub(f.start).Round(time.Millisecond), f.pending, f.resume.Round(time.Millisecond),
			f.drain.Round(time.Millisecond), rate, f.bound, unrecoveredNote(f), f.gap.Round(time.Millisecond))
		checkAlive(t, ps)
	}

	killsLeft := *kills
	for round := range *rounds {
		// SIGKILLs, each while the victim has card orders at the bank.
		n := (killsLeft + (*rounds - round) - 1) / (*rounds - round)
		killsLeft -= n
		for range n {
			slot, fr, before := busySlot(t, ps, rng)
			total := sb.Stats().CardOrdersInFlight
			f := &fault{kind: "kill", bound: *boundKill, start: time.Now()}
			ps.kill(slot)
			// Orders that were in flight before the SIGKILL and still are
			// once the process is gone were at the bank when it landed.
			spanned := fr.stillInFlight(before)
			require.Positive(t, total, "the sandbox had card orders in flight just before the SIGKILL")
			require.Positive(t, spanned, "the SIGKILL landed while orders of the victim were at the bank (%d in flight just before)", len(before))
			ps.start(slot)
			f.end = time.Now()
			f.what = fmt.Sprintf("SIGKILL slot %d (%d of its orders in flight just before, %d of them still at the bank once it was gone; %d orders in flight in all)", slot, len(before), spanned, total)
			record(f)
		}

		// SIGTERM under load.
		for range *sigterms {
			slot, _, before := busySlot(t, ps, rng)
			f := &fault{kind: "sigterm", bound: *boundTerm, start: time.Now()}
			took, perr, exited := ps.sigterm(slot, shutdownGrace+termMargin)
			checkTerm(t, "under load", slot, took, perr, exited)
			ps.start(slot)
			f.end = time.Now()
			f.what = fmt.Sprintf("SIGTERM slot %d (%d of its orders at the bank): exit in %s", slot, len(before), took.Round(time.Millisecond))
			record(f)
		}

		// The node leading ERP (then CARDS) is killed, and restarted after a
		// pause.
		for k := range *natsKills {
			stream := []string{"ERP", "CARDS"}[k%2]
			leader, err := streamLeader(ctx, js, stream)
			require.NoError(t, err)
			led := leaderships(ctx, js, leader)
			f := &fault{kind: "nats", bound: *boundNATS, start: time.Now()}
			nc3.Kill(leader)
			var elected time.Duration
			waitFor(t, 30*time.Second, "a new "+stream+" leader", func() bool {
				c, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				l, err := streamLeader(c, js, stream)
				elected = time.Since(f.start)
				return err == nil && l != leader
			})
			wait(ctx, *natsPause-time.Since(f.start))
			nc3.Restart(leader)
			f.end = time.Now()
			f.what = fmt.Sprintf("SIGKILL NATS %s, leader of %s (new %s leader in %s)", leader, led, stream, elected.Round(time.Millisecond))
			record(f)
		}

		// Postgres stalled: /readyz must turn 503, and a SIGTERM meanwhile
		// must still end within the grace.
		if *pgStall > 0 {
			require.True(t, pgAnswers(procDB, 10*time.Second), "Postgres answers through the proxy before the stall")
			f := &fault{kind: "pg-stall", bound: *boundPG, start: time.Now()}
			pg.stall(t)
			require.False(t, pgAnswers(procDB, 2*time.Second), "Postgres through the proxy answers nothing during the stall")
			termAt := f.start.Add(min(5*time.Second, *pgStall/4))
			stallSlots := ps.slots()
			readyWatch := watchReadyz(ps, stallSlots, f.start.Add(*pgStall))
			wait(ctx, time.Until(termAt))
			slots := ps.slots()
			slot := slots[rng.IntN(len(slots))]
			took, perr, exited := ps.sigterm(slot, shutdownGrace+termMargin)
			checkTerm(t, "during the database stall", slot, took, perr, exited)
			wait(ctx, time.Until(f.start.Add(*pgStall)))
			pg.unstall(t)
			checkReadyz(t, "stall", f.start, stallSlots, <-readyWatch, slot)
			ps.start(slot)
			f.end = time.Now()
			f.what = fmt.Sprintf("Postgres stalled (SIGTERM to slot %d: exit in %s)", slot, took.Round(time.Millisecond))
			record(f)
		}

		// Postgres stopped and started.
		if *pgStop > 0 {
			f := &fault{kind: "pg-stop", bound: *boundPG, start: time.Now()}
			pg.stop()
			require.True(t, refuses(pg.Addr()), "Postgres refuses connections while stopped")
			stopSlots := ps.slots()
			readyWatch := watchReadyz(ps, stopSlots, f.start.Add(*pgStop))
			wait(ctx, *pgStop)
			pg.start(t)
			checkReadyz(t, "stop", f.start, stopSlots, <-readyWatch, -1)
			f.end = time.Now()
			f.what = "Postgres stopped and started"
			record(f)
		}

		// The bank goes away and comes back.
		if *bankOutage > 0 {
			inFlight := sb.Stats().CardOrdersInFlight
			f := &fault{kind: "bank", bound: *boundBank, start: time.Now()}
			for _, fr := range ps.fronts {
				fr.down()
			}
			for _, fr := range ps.fronts {
				require.True(t, refuses(fr.addr), "the bank refuses connections on %s while away", fr.addr)
			}
			wait(ctx, *bankOutage)
			for _, fr := range ps.fronts {
				fr.up(t)
			}
			f.end = time.Now()
			f.what = fmt.Sprintf("bank away (%d card orders in flight when it went)", inFlight)
			record(f)
		}
	}

	// The faults are over: the rest of the requests at once, then every
	// request must get its outcome.
	stopPub()
	published := <-pubDone
	pubStopped = true
	for published < *requests {
		publishOne(ctx, t, js, led, &seq)
		published++
	}
	pubEnd := time.Now()
	waitFor(t, *settle, "every request's outcome", func() bool { p, a := led.counts(); return p == a })
	p, _ := led.counts()
	t.Logf("all %d requests answered %s after the last was published", p, time.Since(pubEnd).Round(time.Millisecond))

	// Nothing left held: the consumer has nothing pending or unacknowledged.
	cons, err := js.Consumer(ctx, "ERP", "cardbridge")
	require.NoError(t, err)
	var ci *jetstream.ConsumerInfo
	waitFor(t, 30*time.Second, "the consumer to have nothing pending or unacknowledged", func() bool {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ci, err = cons.Info(c)
		return err == nil && ci.NumPending == 0 && ci.NumAckPending == 0
	})

	// Every process stops cleanly.
	for _, slot := range ps.slots() {
		took, perr, exited := ps.sigterm(slot, shutdownGrace+termMargin)
		checkTerm(t, "at the end", slot, took, perr, exited)
	}
	stopWatch()

	led.mu.Lock()
	require.Empty(t, led.errs, "every outcome on CARDS read and decoded")
	led.mu.Unlock()

	// Exactly one outcome per request on CARDS, read again from the stream.
	checkOutcomes(t, ctx, js, led, sb, st)

	// Recovery after each fault within its bound; outcomes flow on while a
	// NATS node is down.
	for _, f := range faults {
		if f.kind == "nats" && f.gap > *boundElect {
			t.Errorf("%s %q: no outcome for %s; bound %s", f.kind, f.what, f.gap.Round(time.Millisecond), *boundElect)
		}
		if f.unrecovered > 0 || f.drain > f.bound {
			t.Errorf("recovery after %s %q: %d of %d waiting requests unanswered %s after its end, last answered after %s; bound %s",
				f.kind, f.what, f.unrecovered, f.pending, f.bound+10*time.Second, f.drain.Round(time.Millisecond), f.bound)
		}
	}

	// No request held past its bounds: each must have its outcome within
	// boundNormal of its publication, extended by each fault that began
	// while it was (legitimately) waiting to that fault's end plus bound.
	checkHeld(t, led, faults)
	stats := sb.Stats()
	t.Logf("chaos: %d requests, %d processes, %d faults in %s; bank: %d cards, %d requests, %d injected 5xx, %d 429, %d lost answers",
		p, *processes, len(faults), time.Since(began).Round(time.Second), stats.CardsCreated, stats.Requests,
		stats.InjectedServerErrors, stats.InjectedRateLimits, stats.LostResponses)
}

// requireReplicated checks that cardbridge created the streams with three
// replicas on the 3-node cluster, and the consumer with as many.
func requireReplicated(ctx context.Context, t *testing.T, js jetstream.JetStream) {
	t.Helper()
	for _, name := range []string{"ERP", "CARDS"} {
		s, err := js.Stream(ctx, name)
		require.NoError(t, err)
		info, err := s.Info(ctx)
		require.NoError(t, err)
		require.Equal(t, 3, info.Config.Replicas, "cardbridge creates stream %s with three replicas on a 3-node cluster", name)
	}
	cons, err := js.Consumer(ctx, "ERP", "cardbridge")
	require.NoError(t, err)
	waitFor(t, 30*time.Second, "the consumer to be replicated on three nodes", func() bool {
		ci, err := cons.Info(ctx)
		return err == nil && ci.Cluster != nil && len(ci.Cluster.Replicas) == 2
	})
}

// streamLeader is the name of the server leading stream.
func streamLeader(ctx context.Context, js jetstream.JetStream, stream string) (string, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", err
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return "", fmt.Errorf("stream %s has no leader", stream)
	}
	return info.Cluster.Leader, nil
}

// leaderships lists what server leads: streams and the consumer.
func leaderships(ctx context.Context, js jetstream.JetStream, server string) string {
	var led []string
	for _, stream := range []string{"ERP", "CARDS"} {
		if l, err := streamLeader(ctx, js, stream); err == nil && l == server {
			led = append(led, stream)
		}
	}
	if c, err := js.Consumer(ctx, "ERP", "cardbridge"); err == nil {
		if ci, err := c.Info(ctx); err == nil && ci.Cluster != nil && ci.Cluster.Leader == server {
			led = append(led, "the consumer")
		}
	}
	return strings.Join(led, ", ")
}

// publishSteadily publishes requests at r per second until stop ends and
// returns how many; ctx is the test's (see publishOne).
func publishSteadily(stop, ctx context.Context, t *testing.T, js jetstream.JetStream, led *ledger, seq *int, r float64) int {
	tick := time.NewTicker(time.Duration(float64(time.Second) / r))
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-stop.Done():
			return n
		case <-tick.C:
		}
		publishOne(ctx, t, js, led, seq)
		n++
	}
}

// publishOne publishes the next request, as an ERP would: retried under
// the same Nats-Msg-Id until JetStream acknowledges it (during a leader
// election it cannot). Most requests are for client 1 (a card); one in
// twenty for client 2 (the bank refuses its product), one in twenty for
// client 3 (no binding).
func publishOne(ctx context.Context, t *testing.T, js jetstream.JetStream, led *ledger, seq *int) {
	i := *seq
	*seq++
	client := int64(1)
	switch {
	case i%20 == 3:
		client = 2
	case i%20 == 7:
		client = 3
	}
	r := event.Request{ID: uuid.NewString(), Source: source, Subject: fmt.Sprintf("E-%d", i), Time: time.Now(),
		Data: event.RequestData{Employee: event.Employee{ID: fmt.Sprintf("E-%d", i), FirstName: "Chaos", LastName: "Monkey"}, ClientID: client}}
	mode := event.Binary
	if i%2 == 1 {
		mode = event.Structured
	}
	m, err := event.EncodeRequest(r, mode)
	if err != nil {
		t.Errorf("encoding request %d: %v", i, err)
		return
	}
	msg := m.NATS()
	msg.Header.Set("Nats-Msg-Id", r.ID)
	oid := event.OutcomeID(source, r.ID)
	led.addPublished(oid, pub{reqID: r.ID, client: client, at: time.Now()})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := js.PublishMsg(c, msg)
		cancel()
		if err == nil || ctx.Err() != nil {
			return // acknowledged, or the test is over
		}
		if time.Now().After(deadline) {
			t.Errorf("publishing request %d: not acknowledged within 2 minutes: %v", i, err)
			return
		}
		time.Sleep(100 * time.Millisecond) // an ERP's retry delay
	}
}

// checkOutcomes reads CARDS from the start and checks one outcome per
// request and none besides, the outcome each client's requests must have,
// one card per issued request at the bank, and one self-service user per
// client that needed one.
func checkOutcomes(t *testing.T, ctx context.Context, js jetstream.JetStream, led *ledger, sb *sandbox.Server, st *store.Store) {
	s, err := js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	byID := map[string]event.Outcome{}
	copies := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		var m *jetstream.RawStreamMsg
		waitFor(t, 30*time.Second, fmt.Sprintf("message %d of CARDS", seq), func() bool {
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			m, err = s.GetMsg(c, seq)
			return err == nil || errors.Is(err, jetstream.ErrMsgNotFound)
		})
		require.NoError(t, err, "CARDS keeps every message (no limit reached in a test)")
		o, err := event.DecodeOutcome(m.Header, m.Data)
		require.NoError(t, err)
		byID[o.ID] = o
		copies[o.ID]++
	}
	led.mu.Lock()
	published := led.published
	led.mu.Unlock()
	var twice []string
	for id, n := range copies {
		if n > 1 {
			twice = append(twice, fmt.Sprintf("%s x%d", id, n))
		}
	}
	require.Empty(t, twice, "no outcome published twice")
	// The outcome each client's requests must have: a card for client 1,
	// the bank's refusal for client 2 (inactive product), unbound_source
	// for client 3. A wrong one is reported, and the checks go on.
	issued := 0
	var wrong []string
	for oid, p := range published {
		o, ok := byID[oid]
		require.True(t, ok, "request %s has an outcome", p.reqID)
		if o.Type == event.TypeCardIssued {
			issued++
		}
		want, reason := event.TypeCardIssued, ""
		switch p.client {
		case 2:
			want, reason = event.TypeCardFailed, event.ReasonBankRejected
		case 3:
			want, reason = event.TypeCardFailed, event.ReasonUnboundSource
		}
		f, failed := o.Data.(event.Failed)
		if o.Type != want || (failed && f.Reason != reason) {
			wrong = append(wrong, fmt.Sprintf("request %s (client %d): %s, want %s %s; %+v", p.reqID, p.client, o.Type, want, reason, o.Data))
		}
	}
	if len(wrong) > 0 {
		sort.Strings(wrong)
		t.Errorf("%d requests got the wrong outcome:\n  %s", len(wrong), strings.Join(wrong[:min(10, len(wrong))], "\n  "))
	}
	require.Len(t, byID, len(published), "no outcome for a request that was not made")
	require.EqualValues(t, len(published), info.State.Msgs, "one message per outcome on CARDS")

	require.Equal(t, issued, sb.CardCount(1), "one card per issued request at the bank")
	require.Zero(t, sb.CardCount(2))
	require.Zero(t, sb.CardCount(3))
	bankCards := map[int64]bool{}
	for _, c := range sb.Cards() {
		bankCards[c.ID] = true
	}
	for _, o := range byID {
		if d, ok := o.Data.(event.Issued); ok {
			require.True(t, bankCards[d.CardID], "card %d of an outcome exists at the bank", d.CardID)
		}
	}
	users, err := st.SelfServiceUsers(ctx)
	require.NoError(t, err)
	require.Len(t, users, 2, "clients 1 and 2 each got one self-service user")
	bankUsers := 0
	for _, u := range sb.Users() {
		if u.IsSelfServiceUser {
			bankUsers++
		}
	}
	require.Equal(t, 2, bankUsers, "no second self-service user at the bank")
}

// checkHeld checks that no request waited for its outcome past its bounds,
// and reports the longest waits.
func checkHeld(t *testing.T, led *ledger, faults []*fault) {
	sorted := append([]*fault(nil), faults...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].start.Before(sorted[j].start) })
	led.mu.Lock()
	defer led.mu.Unlock()
	type late struct {
		oid          string
		waited, over time.Duration
		blame        string
	}
	var lates []late
	var longest time.Duration
	var longestID string
	for oid, p := range led.published {
		at, ok := led.outcomes[oid]
		if !ok {
			continue // reported by checkOutcomes
		}
		waited := at.Sub(p.at)
		if waited > longest {
			longest, longestID = waited, p.reqID
		}
		deadline, blame := p.at.Add(*boundNormal), "none"
		for _, f := range sorted {
			if !f.start.After(deadline) && f.end.Add(f.bound).After(deadline) {
				deadline = f.end.Add(f.bound)
			}
			switch {
			case f.end.After(p.at) && f.start.Before(at):
				blame = "during " + f.kind + " " + f.what
			case !f.end.After(p.at):
				blame = fmt.Sprintf("none; published %s after the end of %s %s", p.at.Sub(f.end).Round(time.Millisecond), f.kind, f.what)
			}
		}
		if at.After(deadline) {
			lates = append(lates, late{oid: p.reqID, waited: waited, over: at.Sub(deadline), blame: blame})
		}
	}
	t.Logf("longest wait from publication to outcome: %s (request %s)", longest.Round(time.Millisecond), longestID)
	if len(lates) > 0 {
		sort.Slice(lates, func(i, j int) bool { return lates[i].over > lates[j].over })
		var b strings.Builder
		for _, l := range lates[:min(10, len(lates))] {
			fmt.Fprintf(&b, "\n  request %s waited %s, %s past its bound (fault: %s)", l.oid, l.waited.Round(time.Millisecond), l.over.Round(time.Millisecond), l.blame)
		}
		t.Errorf("%d requests held past their bounds; the worst:%s", len(lates), b.String())
	}
}

func checkTerm(t *testing.T, when string, slot int, took time.Duration, err error, exited bool) {
	t.Helper()
	if !exited {
		t.Errorf("SIGTERM %s: slot %d did not exit within %s (grace %s + %s), SIGKILLed", when, slot, took.Round(time.Millisecond), shutdownGrace, termMargin)
		return
	}
	if err != nil {
		t.Errorf("SIGTERM %s: slot %d exited after %s with %v, not 0", when, slot, took.Round(time.Millisecond), err)
		return
	}
	t.Logf("SIGTERM %s: slot %d exited 0 in %s", when, slot, took.Round(time.Millisecond))
}

// checkAlive reports a process that exited by itself, and replaces it.
func checkAlive(t *testing.T, ps *procs) {
	t.Helper()
	for _, slot := range ps.slots() {
		p := ps.get(slot)
		select {
		case <-p.done:
			t.Errorf("slot %d exited by itself (%v); output (tail):\n%s", slot, p.err, tail(p.out.String()))
			ps.take(slot)
			ps.start(slot)
		default:
		}
	}
}

// watchReadyz polls /readyz of each of the given slots (each on its own,
// so that one slow answer does not delay another's) until until, and sends
// when each first answered 503.
func watchReadyz(ps *procs, slots []int, until time.Time) <-chan map[int]time.Time {
	out := make(chan map[int]time.Time, 1)
	go func() {
		var mu sync.Mutex
		seen := map[int]time.Time{}
		var wg sync.WaitGroup
		for _, s := range slots {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(until) && ps.get(s) != nil {
					if code, _ := ps.readyz(s); code == 503 {
						mu.Lock()
						seen[s] = time.Now()
						mu.Unlock()
						return
					}
					time.Sleep(100 * time.Millisecond) // polling
				}
			}()
		}
		wg.Wait()
		out <- seen
	}()
	return out
}

// checkReadyz checks that every process that lived through a database
// fault (slots, all but skip) answered 503 on /readyz during it, within
// boundReady of its start.
func checkReadyz(t *testing.T, fault string, start time.Time, slots []int, seen map[int]time.Time, skip int) {
	t.Helper()
	for _, s := range slots {
		if s == skip {
			continue
		}
		at, ok := seen[s]
		switch {
		case !ok:
			t.Errorf("Postgres %s: /readyz of slot %d never answered 503 during the fault", fault, s)
		case at.Sub(start) > *boundReady:
			t.Errorf("Postgres %s: /readyz of slot %d answered 503 only after %s; bound %s", fault, s, at.Sub(start).Round(time.Millisecond), *boundReady)
		default:
			t.Logf("Postgres %s: /readyz of slot %d answered 503 after %s", fault, s, at.Sub(start).Round(time.Millisecond))
		}
	}
}

// pgAnswers reports whether a query through dbURL is answered within d.
func pgAnswers(dbURL string, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	st, err := store.Open(ctx, store.Options{URL: secret.New(dbURL)})
	if err != nil {
		return false
	}
	defer st.Close()
	var one int
	return st.Pool().QueryRow(ctx, "SELECT 1").Scan(&one) == nil
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
}

// wait lets a fault last d: the duration of the fault, not a
// synchronisation.
func wait(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func unrecoveredNote(f *fault) string {
	if f.unrecovered == 0 {
		return ""
	}
	return fmt.Sprintf("; %d STILL WAITING", f.unrecovered)
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// busySlot picks a live process at random and waits until one of its card
// orders reached the bank moments ago, so that a signal sent now lands
// with orders at the bank. It returns the slot, its bank front and the
// orders in flight then.
func busySlot(t *testing.T, ps *procs, rng *rand.Rand) (int, *front, map[uint64]bool) {
	t.Helper()
	checkAlive(t, ps)
	slots := ps.slots()
	slot := slots[rng.IntN(len(slots))]
	fr := ps.fronts[slot]
	var before map[uint64]bool
	waitFor(t, time.Minute, fmt.Sprintf("card orders of slot %d at the bank", slot), func() bool {
		var young bool
		before, young = fr.inFlight(freshOrder)
		return young
	})
	return slot, fr, before
}
