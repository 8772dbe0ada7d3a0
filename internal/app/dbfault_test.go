package app_test

// Issue 13: the database cannot hang the process. Each fault is injected
// for real: a table locked from another session, a private Postgres server
// crashed (pg_ctl stop -m immediate) and started again, and a failover to
// a promoted streaming standby behind a multi-host DATABASE_URL.

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/internal/app"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

// exitBound is the documented longest time from SIGTERM to exit
// (app.ShutdownLimit, the grace), with a second for the process to exit.
const exitBound = app.ShutdownLimit + time.Second

// binProcess is a `cardbridge run` process.
type binProcess struct {
	cmd  *exec.Cmd
	logs *testenv.LogBuffer
	done chan error
	addr string
}

func startBinary(t *testing.T, env []string) *binProcess {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), "run")
	cmd.Env = env
	p := &binProcess{cmd: cmd, logs: &testenv.LogBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		p.done <- cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // an error once it has exited
		<-exited
	})
	require.Eventually(t, func() bool {
		for _, l := range p.logs.Lines() {
			if l["msg"] == "cardbridge running" {
				p.addr, _ = l["http"].(string)
				return true
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("cardbridge run exited at start: %v\n%s", err, p.logs.String())
		default:
		}
		return false
	}, 60*time.Second, 20*time.Millisecond, "cardbridge run starts")
	return p
}

func readyzAt(t *testing.T, addr string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Checks map[string]string `json:"checks"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body.Checks
}

// waitOutcomes waits until CARDS holds want events, for as long as the
// retry delays a fault of some seconds can bring, and returns them.
func (s *stack) waitOutcomes(t *testing.T, want int) {
	t.Helper()
	require.Eventually(t, func() bool { return s.outcomeCount(t) >= uint64(want) },
		2*time.Minute, 50*time.Millisecond, "%d outcomes", want)
}

// With processed_requests locked from another session, a `cardbridge run`
// process hands every request back instead of holding it, says so on
// /readyz, and stops within the grace on SIGTERM. Once the lock is gone a
// process issues every request, once.
func TestLockedTableHandsRequestsBackAndDoesNotHoldShutdown(t *testing.T) {
	s := newStack(t, nil)
	st, err := store.Open(context.Background(), store.Options{URL: s.cfg.DatabaseURL})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	require.NoError(t, st.MigrateUp(context.Background(), &strings.Builder{}))
	s.bind(t, st, 1)
	seed := sandbox.DefaultSeed()
	env := append(testenv.RunEnv(s.cfg.DatabaseURL.Reveal(), s.ns.URL(), s.bank, seed, s.cfg.SecretKey),
		"HTTP_ADDR=127.0.0.1:0",
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
	)
	p := startBinary(t, env)
	reqs := s.publish(t, 5)
	s.waitOutcomes(t, 5)

	// The stall: an exclusive lock on the inbox, held by another session.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.cfg.DatabaseURL.Reveal())
	require.NoError(t, err)
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "LOCK TABLE processed_requests IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)

	reqs = append(reqs, s.publish(t, 20)...)
	require.Eventually(t, func() bool {
		status, checks := readyzAt(t, p.addr)
		return status == http.StatusServiceUnavailable && strings.HasPrefix(checks["postgres"], "stalled")
	}, 30*time.Second, 50*time.Millisecond, "/readyz says the database is stalled")
	// Handed back, not held: the requests come back to be delivered again
	// while the table stays locked.
	require.Eventually(t, func() bool {
		info := s.consumerInfo(t)
		return info.Delivered.Consumer >= uint64(5+2*20)
	}, time.Minute, 50*time.Millisecond, "every request stalled is handed back and redelivered")
	require.EqualValues(t, 5, s.outcomeCount(t), "nothing is answered while the inbox is locked")

	// SIGTERM during the stall: the process exits within the grace.
	start := time.Now()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		took := time.Since(start)
		require.NoError(t, err, "graceful exit; output:\n%s", p.logs.String())
		require.Less(t, took, exitBound, "SIGTERM with the database stalled")
		t.Logf("exited %s after SIGTERM with the inbox locked", took.Round(time.Millisecond))
	case <-time.After(exitBound + time.Minute):
		t.Fatalf("still running %s after SIGTERM; output:\n%s", time.Since(start), p.logs.String())
	}

	// The lock goes; a process answers everything, once.
	require.NoError(t, tx.Rollback(ctx))
	p2 := startBinary(t, env)
	s.waitOutcomes(t, len(reqs))
	status, _ := readyzAt(t, p2.addr)
	require.Equal(t, http.StatusOK, status)
	requireIssuedOnce(t, s.sb, s.outcomes(t, len(reqs)), reqs)
	require.NoError(t, p2.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, <-p2.done)
}

// privateStack is a stack whose database is a private server (or a
// primary and its standby, through dbURL).
func privateStack(t *testing.T, dbURL string, bindVia string) (*stack, *process, *store.Store) {
	t.Helper()
	s := newStack(t, func(h http.Handler) string {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	})
	s.cfg.DatabaseURL = secret.New(dbURL)
	p := s.start(t, s.cfg) // migrates
	st, err := store.Open(context.Background(), store.Options{URL: secret.New(bindVia)})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	s.bind(t, st, 1)
	return s, p, st
}

// A crash of the Postgres server (immediate stop) and its restart: the
// process says it is not ready while the server is down, hands requests
// back, and issues every one once the server is back, without a hand.
func TestPostgresCrashAndRestartRecoverByThemselves(t *testing.T) {
	pg := testenv.StartPostgres(t)
	s, p, _ := privateStack(t, pg.URL(), pg.URL())
	reqs := s.publish(t, 5)
	s.waitOutcomes(t, 5)

	pg.Stop("immediate")
	require.Eventually(t, func() bool {
		status, checks := p.readyz(t)
		return status == http.StatusServiceUnavailable && checks["postgres"] != "ok"
	}, 30*time.Second, 50*time.Millisecond, "/readyz says Postgres is down")
	reqs = append(reqs, s.publish(t, 10)...)
	require.Eventually(t, func() bool {
		return s.consumerInfo(t).Delivered.Consumer >= uint64(5+2*10)
	}, time.Minute, 50*time.Millisecond, "requests are handed back while Postgres is down")

	pg.Start()
	restart := time.Now()
	s.waitOutcomes(t, len(reqs))
	t.Logf("every request answered %s after the restart", time.Since(restart).Round(time.Millisecond))
	require.Eventually(t, func() bool {
		status, _ := p.readyz(t)
		return status == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "/readyz is 200 again")
	requireIssuedOnce(t, s.sb, s.outcomes(t, len(reqs)), reqs)
}

// A failover: the primary crashes and its streaming standby is promoted.
// With both hosts in DATABASE_URL and target_session_attrs=read-write,
// the process finds the new primary by itself and goes on issuing.
func TestFailoverToAPromotedStandbyRecoversByItself(t *testing.T) {
	primary := testenv.StartPostgres(t)
	standby := primary.StartStandby(t)
	multi := "postgres://postgres@" + primary.Host() + "," + standby.Host() +
		"/cardbridge?sslmode=disable&target_session_attrs=read-write"
	s, p, _ := privateStack(t, multi, primary.URL())
	reqs := s.publish(t, 5)
	s.waitOutcomes(t, 5)

	// The standby has everything so far (asynchronous replication: wait
	// for it, so this test is about reconnecting, not about lost commits).
	ctx := context.Background()
	sconn, err := pgx.Connect(ctx, standby.URL())
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var n int
		return sconn.QueryRow(ctx, "SELECT count(*) FROM processed_requests").Scan(&n) == nil && n == 5
	}, 30*time.Second, 20*time.Millisecond, "the standby has replayed the first outcomes")
	require.NoError(t, sconn.Close(ctx))

	primary.Stop("immediate")
	standby.Promote()
	failover := time.Now()
	reqs = append(reqs, s.publish(t, 10)...)
	s.waitOutcomes(t, len(reqs))
	t.Logf("every request answered %s after the promotion", time.Since(failover).Round(time.Millisecond))
	// They were recorded on the promoted standby, the one server left.
	pconn, err := pgx.Connect(ctx, standby.URL())
	require.NoError(t, err)
	defer pconn.Close(ctx)
	var n int
	require.NoError(t, pconn.QueryRow(ctx, "SELECT count(*) FROM processed_requests").Scan(&n))
	require.Equal(t, len(reqs), n)
	require.Eventually(t, func() bool {
		status, _ := p.readyz(t)
		return status == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond, "/readyz is 200 on the new primary")
	requireIssuedOnce(t, s.sb, s.outcomes(t, len(reqs)), reqs)
}

// A database that stops answering without closing anything (a network
// that drops every packet, here a toxiproxy timeout toxic between
// cardbridge and Postgres): /readyz turns 503, requests are handed back
// after a bounded wait instead of being held, a shutdown ends within the
// grace, and once the network heals a process issues every request once.
func TestUnansweringDatabaseHandsBackAndDoesNotHoldShutdown(t *testing.T) {
	s := newStack(t, nil)
	direct := s.cfg.DatabaseURL.Reveal()
	u, err := url.Parse(direct)
	require.NoError(t, err)
	proxy := toxiproxy.NewProxy(toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop()),
		"postgres", "127.0.0.1:0", u.Host)
	require.NoError(t, proxy.Start())
	t.Cleanup(proxy.Stop)
	u.Host = proxy.Listen
	s.cfg.DatabaseURL = secret.New(u.String())

	st, err := store.Open(context.Background(), store.Options{URL: secret.New(direct)})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	logs := &testenv.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := app.Start(ctx, s.cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	p := &process{svc: svc, logs: logs}
	s.bind(t, st, 1)
	reqs := s.publish(t, 5)
	s.waitOutcomes(t, 5)

	// Every byte from cardbridge to Postgres is held from now on; no
	// connection is closed.
	_, err = proxy.Toxics.AddToxicJson(strings.NewReader(
		`{"name":"blackhole","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		status, checks := p.readyz(t)
		return status == http.StatusServiceUnavailable && checks["postgres"] != "ok"
	}, 30*time.Second, 50*time.Millisecond, "/readyz says Postgres does not answer")
	reqs = append(reqs, s.publish(t, 10)...)
	require.Eventually(t, func() bool {
		return s.consumerInfo(t).Delivered.Consumer >= uint64(5+2*10)
	}, 2*time.Minute, 50*time.Millisecond, "requests are handed back while Postgres does not answer")
	require.EqualValues(t, 5, s.outcomeCount(t))

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		took := time.Since(start)
		t.Logf("stopped %s after the shutdown began, Postgres not answering (%v)", took.Round(time.Millisecond), err)
		require.Less(t, took, exitBound, "shutdown with Postgres not answering")
		// A clean stop: what could not be flushed stays in the outbox for
		// the next process, and nothing waits on the database past the
		// grace.
		require.NoError(t, err)
	case <-time.After(exitBound + time.Minute):
		t.Fatalf("still running %s after the shutdown began", time.Since(start))
	}

	require.NoError(t, proxy.Toxics.RemoveToxic(context.Background(), "blackhole"))
	p2 := s.start(t, s.cfg)
	s.waitOutcomes(t, len(reqs))
	status, _ := p2.readyz(t)
	require.Equal(t, http.StatusOK, status)
	requireIssuedOnce(t, s.sb, s.outcomes(t, len(reqs)), reqs)
}
