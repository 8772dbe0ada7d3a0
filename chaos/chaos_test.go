package chaos_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/broker"
	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/secret"
	"github.com/cardbridge/cardbridge/store"
)

var (
	requests  = flag.Int("chaos.requests", 2000, "requests to publish")
	processes = flag.Int("chaos.processes", 2, "cardbridge processes sharing the consumer")
	kills     = flag.Int("chaos.kills", 8, "SIGKILLs (and restarts) of a random process")
	deadline  = flag.Duration("chaos.timeout", 4*time.Minute, "how long the requests may take to settle")
)

const (
	source    = "urn:erp:chaos"
	appName   = "cardbridge-chaos"
	natsStore = "nats"
)

// proc is one cardbridge run process.
type proc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

type cluster struct {
	t    *testing.T
	bin  string
	env  []string
	mu   sync.Mutex
	live []*proc
	all  []*proc
}

func (c *cluster) start() {
	cmd := exec.Command(c.bin, "run")
	cmd.Env = c.env
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(c.t, cmd.Start())
	p := &proc{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	c.mu.Lock()
	c.live = append(c.live, p)
	c.all = append(c.all, p)
	c.mu.Unlock()
}

// kill SIGKILLs a random live process and starts a replacement.
func (c *cluster) kill(rng *rand.Rand) {
	c.mu.Lock()
	i := rng.IntN(len(c.live))
	p := c.live[i]
	c.live = append(c.live[:i], c.live[i+1:]...)
	c.mu.Unlock()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	c.start()
}

// stop sends SIGTERM to every live process and checks each exits 0: a
// graceful shutdown.
func (c *cluster) stop() {
	c.mu.Lock()
	live := c.live
	c.live = nil
	c.mu.Unlock()
	for _, p := range live {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range live {
		select {
		case err := <-p.done:
			require.NoError(c.t, err, "graceful shutdown exits 0; output:\n%s", tail(p.out.String()))
		case <-time.After(60 * time.Second):
			_ = p.cmd.Process.Kill()
			c.t.Fatalf("process did not stop within 60s of SIGTERM; output:\n%s", tail(p.out.String()))
		}
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// TestChaos publishes requests while processes are killed at random, the
// bank injects 5xx, 429 and lost responses, the database connections are
// cut once and the NATS server restarts once. Afterwards every request has
// exactly one outcome and at most one card.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Log("-short: running a smaller chaos round")
		*requests, *kills = 300, 3
	}
	ctx := context.Background()
	bin := testenv.Binary(t)

	// Postgres: a schema of the test's own, migrated, with bindings.
	dbURL := testenv.DatabaseURL(t)
	st, err := store.Open(ctx, store.Options{URL: secret.New(dbURL)})
	require.NoError(t, err)
	defer st.Close()
	require.NoError(t, st.MigrateUp(ctx, &bytes.Buffer{}))
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: source, ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: source, ClientID: 2, SavingsAccountID: 2, CardProductID: 2})) // inactive product: the bank refuses
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()

	// NATS: embedded, on a fixed port so it can be restarted in place.
	natsDir := t.TempDir()
	ns, err := broker.StartEmbedded(natsDir, 0)
	require.NoError(t, err)
	natsURL := ns.URL()
	natsPort := mustPort(t, natsURL)
	defer func() { ns.Stop() }()

	// The bank: misbehaving on purpose.
	sb := sandbox.New(sandbox.DefaultSeed(), sandbox.WithRandSeed(7))
	bank := httptest.NewServer(sb)
	defer bank.Close()
	require.NoError(t, sb.SetFaults(sandbox.Faults{
		ServerErrorRate:  0.05,
		RateLimitRate:    0.05,
		LostResponseRate: 0.05,
		Latency:          sandbox.Duration(2 * time.Millisecond),
		LatencyJitter:    sandbox.Duration(20 * time.Millisecond),
	}))

	key := testenv.SecretKey(t)
	seed := sandbox.DefaultSeed()
	c := &cluster{t: t, bin: bin, env: []string{
		"DATABASE_URL=" + u.String(),
		"NATS_URL=" + natsURL,
		"MBANQ_BASE_URL=" + bank.URL,
		"MBANQ_TENANT_ID=" + seed.TenantID,
		"MBANQ_CLIENT_ID=" + seed.OAuthClient.ID,
		"MBANQ_CLIENT_SECRET=" + seed.OAuthClient.Secret.Reveal(),
		"MBANQ_ADMIN_USERNAME=" + seed.Admin.Username,
		"MBANQ_ADMIN_PASSWORD=" + seed.Admin.Password.Reveal(),
		"CARDBRIDGE_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key),
		"HTTP_ADDR=127.0.0.1:0",
		"CARDBRIDGE_ACK_WAIT=3s",
		"LOG_FORMAT=json",
		"LOG_LEVEL=warn",
	}}

	// The requests: most for client 1 (cards), some for client 2 (bank
	// refuses), some for client 3 (not bound).
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.Timeout(15*time.Second))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = broker.Ensure(ctx, js, topologyWithAckWait(3*time.Second))
	require.NoError(t, err)
	want := map[string]int64{} // request id -> client
	for i := range *requests {
		client := int64(1)
		switch {
		case i%20 == 3:
			client = 2
		case i%20 == 7:
			client = 3
		}
		r := event.Request{ID: uuid.NewString(), Source: source, Subject: fmt.Sprintf("E-%d", i),
			Data: event.RequestData{Employee: event.Employee{ID: fmt.Sprintf("E-%d", i), FirstName: "Chaos", LastName: "Monkey"}, ClientID: client}}
		mode := event.Binary
		if i%2 == 1 {
			mode = event.Structured
		}
		m, err := event.EncodeRequest(r, mode)
		require.NoError(t, err)
		_, err = js.PublishMsgAsync(m.NATS())
		require.NoError(t, err)
		want[r.ID] = client
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing the requests timed out")
	}

	for range *processes {
		c.start()
	}
	defer func() {
		if t.Failed() {
			for i, p := range c.all {
				t.Logf("process %d output:\n%s", i, tail(p.out.String()))
			}
		}
	}()

	// The chaos: kills at random moments; the database cut after the
	// second kill and the NATS restart after the fourth.
	// Each kill waits until a further share of the requests is processed,
	// so every kill lands while requests are in flight, at a moment jittered
	// by up to 50ms.
	rng := rand.New(rand.NewPCG(1, 2))
	midRun := 0
	for k := range *kills {
		mark := int64((k + 1) * len(want) / (*kills + 2))
		for {
			p, _ := counts(t, st)
			if p >= mark {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
		if p, _ := counts(t, st); p < int64(len(want)) {
			midRun++
		}
		c.kill(rng)
		switch k {
		case 1:
			cutDatabase(t, u.String())
		case 3:
			ns.Stop()
			ns, err = broker.StartEmbedded(natsDir, natsPort)
			require.NoError(t, err, "restarting NATS")
		}
	}

	// Settle: every request processed and every outcome relayed.
	settled := false
	end := time.Now().Add(*deadline)
	var processed, backlog int64
	for time.Now().Before(end) {
		processed, backlog = counts(t, st)
		if processed == int64(len(want)) && backlog == 0 {
			settled = true
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.True(t, settled, "settled: %d of %d requests processed, %d outcomes unrelayed", processed, len(want), backlog)
	c.stop()

	// Exactly one outcome event per request, and none besides.
	events := readOutcomes(t, natsURL)
	wantIssued := map[int64]int{}
	for id, client := range want {
		o, ok := events.byID[event.OutcomeID(source, id)]
		require.True(t, ok, "request %s has an outcome event", id)
		switch client {
		case 1:
			require.Equal(t, event.TypeCardIssued, o.Type, "request %s: %+v", id, o.Data)
			wantIssued[1]++
		case 2:
			require.Equal(t, event.TypeCardFailed, o.Type)
			require.Equal(t, event.ReasonBankRejected, o.Data.(event.Failed).Reason)
		case 3:
			require.Equal(t, event.TypeCardFailed, o.Type)
			require.Equal(t, event.ReasonUnboundSource, o.Data.(event.Failed).Reason)
		}
	}
	require.Len(t, events.byID, len(want), "no outcome for a request that was not made")
	require.EqualValues(t, len(want), events.total, "no outcome published twice (%d messages for %d ids)", events.total, len(events.byID))

	// Exactly one card per issued request at the bank, and the card each
	// outcome names is the one the bank made.
	require.Equal(t, wantIssued[1], sb.CardCount(1), "one card per request at the bank")
	require.Zero(t, sb.CardCount(2))
	require.Zero(t, sb.CardCount(3))
	bankCards := map[int64]bool{}
	for _, card := range sb.Cards() {
		bankCards[card.ID] = true
	}
	for _, o := range events.byID {
		if d, ok := o.Data.(event.Issued); ok {
			require.True(t, bankCards[d.CardID], "card %d of an outcome exists at the bank", d.CardID)
		}
	}
	// One self-service user per client that needed one.
	users, err := st.SelfServiceUsers(ctx)
	require.NoError(t, err)
	require.Len(t, users, 2, "clients 1 and 2 each got one self-service user")
	bankUsers := 0
	for _, usr := range sb.Users() {
		if usr.IsSelfServiceUser {
			bankUsers++
		}
	}
	require.Equal(t, 2, bankUsers, "no second self-service user at the bank")

	stats := sb.Stats()
	t.Logf("chaos: %d requests, %d processes, %d kills (%d while requests were pending), 1 database cut, 1 NATS restart; bank stats %+v",
		len(want), *processes, *kills, midRun, stats)
}

func topologyWithAckWait(d time.Duration) broker.Topology {
	t := broker.DefaultTopology()
	t.AckWait = d
	return t
}

func mustPort(t *testing.T, natsURL string) int {
	u, err := url.Parse(natsURL)
	require.NoError(t, err)
	var port int
	_, err = fmt.Sscan(u.Port(), &port)
	require.NoError(t, err)
	return port
}

// cutDatabase terminates every connection of the cardbridge processes.
func cutDatabase(t *testing.T, dbURL string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()`, appName).Scan(&n))
	t.Logf("cut %d database connections", n)
}

func counts(t *testing.T, st *store.Store) (processed, backlog int64) {
	ctx := context.Background()
	require.NoError(t, st.Pool().QueryRow(ctx, `SELECT count(*) FROM processed_requests`).Scan(&processed))
	backlog, _, err := st.OutboxBacklog(ctx)
	require.NoError(t, err)
	return processed, backlog
}

type outcomes struct {
	byID  map[string]event.Outcome
	total uint64
}

// readOutcomes reads the whole CARDS stream.
func readOutcomes(t *testing.T, natsURL string) outcomes {
	ctx := context.Background()
	nc, err := nats.Connect(natsURL, nats.Timeout(15*time.Second))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	s, err := js.Stream(ctx, "CARDS")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	out := outcomes{byID: map[string]event.Outcome{}, total: info.State.Msgs}
	cons, err := js.OrderedConsumer(ctx, "CARDS", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	for range info.State.Msgs {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		require.NoError(t, err)
		o, err := event.DecodeOutcome(m.Headers(), m.Data())
		require.NoError(t, err)
		out.byID[o.ID] = o
	}
	return out
}
