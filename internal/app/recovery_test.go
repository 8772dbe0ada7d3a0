package app_test

// Crash recovery and shared work, with real `cardbridge run` processes:
// a SIGKILLed process's requests (at the bank or waiting for it) are taken
// over by a live process within seconds, while a live process's slow work
// is never handed to another.

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

// bankDoor is one process's way to the sandbox: it knows which card
// orders of that process are at the bank now, and which it ever sent.
type bankDoor struct {
	url     string
	mu      sync.Mutex
	atBank  map[string]bool // Idempotency-Keys of the orders in flight
	keys    map[string]bool // Idempotency-Keys of every order
	ordered atomic.Int64
}

func newBankDoor(t *testing.T, sb *sandbox.Server) *bankDoor {
	d := &bankDoor{atBank: map[string]bool{}, keys: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/cards" {
			sb.ServeHTTP(w, r)
			return
		}
		key := r.Header.Get("Idempotency-Key")
		d.ordered.Add(1)
		d.mu.Lock()
		d.atBank[key] = true
		d.keys[key] = true
		d.mu.Unlock()
		sb.ServeHTTP(w, r)
		d.mu.Lock()
		delete(d.atBank, key)
		d.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	d.url = srv.URL
	return d
}

// inFlight returns the keys of the orders at the bank now.
func (d *bankDoor) inFlight() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Collect(maps.Keys(d.atBank))
}

func (d *bankDoor) saw(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keys[key]
}

// runProc is one `cardbridge run` process.
type runProc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	addr string
	done chan struct{} // closed when the process has exited
}

// procStack is what the processes share: a migrated schema, NATS and the
// sandbox.
type procStack struct {
	dbURL string
	ns    string
	sb    *sandbox.Server
	seed  sandbox.Seed
	key   []byte
	js    jetstream.JetStream
	st    *store.Store
}

func newProcStack(t *testing.T) *procStack {
	t.Helper()
	ctx := context.Background()
	dbURL := testenv.DatabaseURL(t)
	st, err := store.Open(ctx, store.Options{URL: secret.New(dbURL)})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	require.NoError(t, st.MigrateUp(ctx, &bytes.Buffer{}))
	require.NoError(t, st.AddBinding(ctx, store.Binding{Source: erp, ClientID: 1, SavingsAccountID: 1, CardProductID: 1}))
	ns := testenv.NATS(t)
	_, js := testenv.JetStream(t, ns.URL())
	seed := sandbox.DefaultSeed()
	return &procStack{dbURL: dbURL, ns: ns.URL(), sb: sandbox.New(seed), seed: seed, key: testenv.SecretKey(t), js: js, st: st}
}

// start runs `cardbridge run` against bank with extra settings, and waits
// until it is ready.
func (s *procStack) start(t *testing.T, bank string, extra ...string) *runProc {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(testenv.Binary(t), "run")
	cmd.Env = append(testenv.RunEnv(s.dbURL, s.ns, bank, s.seed, s.key),
		"HTTP_ADDR="+addr,
		"LOG_FORMAT=json",
		"LOG_LEVEL=warn",
	)
	cmd.Env = append(cmd.Env, extra...)
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	p := &runProc{cmd: cmd, out: out, addr: addr, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("process on %s:\n%s", addr, tail(out.String()))
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "process ready")
	return p
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// arrivals records when each request's outcome events arrived on CARDS.
type arrivals struct {
	mu   sync.Mutex
	at   map[string][]time.Time // request id -> arrival of each outcome event
	outs []event.Outcome
}

func (s *procStack) watchOutcomes(t *testing.T) *arrivals {
	t.Helper()
	a := &arrivals{at: map[string][]time.Time{}}
	oc, err := s.js.OrderedConsumer(context.Background(), "CARDS", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	cc, err := oc.Consume(func(msg jetstream.Msg) {
		now := time.Now()
		o, err := event.DecodeOutcome(msg.Headers(), msg.Data())
		if err != nil {
			t.Errorf("outcome event: %v", err)
			return
		}
		id := ""
		switch d := o.Data.(type) {
		case event.Issued:
			id = d.RequestID
		case event.Failed:
			id = d.RequestID
		}
		a.mu.Lock()
		a.at[id] = append(a.at[id], now)
		a.outs = append(a.outs, o)
		a.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(cc.Stop)
	return a
}

func (a *arrivals) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.outs)
}

// answered returns the ids of the requests with an outcome.
func (a *arrivals) answered() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := map[string]bool{}
	for id := range a.at {
		ids[id] = true
	}
	return ids
}

func (s *procStack) publish(t *testing.T, n int) []event.Request {
	return publishRequests(t, s.js, n)
}

// The crash: with the bank answering in 400 ms, a process is
// SIGKILLed while it holds requests at the bank and waiting for it. A live
// process takes them over: every request that had no outcome at the kill
// has one within 10 seconds of it (AckWait is 6s; the rest is the bank and
// a loaded machine's margin), exactly one, and one card each.
func TestKilledProcessWorkIsRecoveredWithinTenSeconds(t *testing.T) {
	s := newProcStack(t)
	require.NoError(t, s.sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(400 * time.Millisecond), Paths: []string{"/v1/cards"}}))
	doorA, doorB := newBankDoor(t, s.sb), newBankDoor(t, s.sb)
	a := s.start(t, doorA.url, "CARDBRIDGE_MAX_IN_FLIGHT=8") // holds 16: 8 at the bank, 8 waiting
	s.start(t, doorB.url, "CARDBRIDGE_MAX_IN_FLIGHT=8")
	arr := s.watchOutcomes(t)

	const n = 64
	reqs := s.publish(t, n)

	// Kill a while all its bank slots are taken.
	require.Eventually(t, func() bool { return len(doorA.inFlight()) == 8 }, 30*time.Second, time.Millisecond, "a has 8 orders at the bank")
	atBank := doorA.inFlight()
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGKILL))
	killed := time.Now()
	<-a.done
	atKill := arr.answered()
	pending := n - len(atKill)
	require.Greater(t, pending, 16, "a held requests when it was killed")

	// Every request gets its outcome; those unanswered at the kill within
	// 10s of it.
	require.Eventually(t, func() bool { return len(arr.answered()) == n }, 60*time.Second, 10*time.Millisecond, "every request answered within a minute")
	var last time.Duration
	for _, r := range reqs {
		if atKill[r.ID] {
			continue
		}
		arr.mu.Lock()
		took := arr.at[r.ID][0].Sub(killed)
		arr.mu.Unlock()
		last = max(last, took)
	}
	t.Logf("the last of the %d requests unanswered at the kill got its outcome %s after it", pending, last.Round(time.Millisecond))
	require.Less(t, last, 10*time.Second, "recovery within 10s of the kill")

	// The kill landed with orders at the bank: b ordered them again, under
	// their keys. (One answered between the look and the kill is not.)
	takenOver := 0
	for _, key := range atBank {
		if doorB.saw(key) {
			takenOver++
		}
	}
	t.Logf("of the %d orders a had at the bank at the kill, b ordered %d again under their keys", len(atBank), takenOver)
	require.Positive(t, takenOver, "the kill landed with orders at the bank")

	// Exactly one outcome and one card each, after everything settled.
	require.Eventually(t, func() bool {
		var rows int
		require.NoError(t, s.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&rows))
		return rows == 0
	}, 20*time.Second, 20*time.Millisecond, "outbox empty")
	arr.mu.Lock()
	defer arr.mu.Unlock()
	for id, at := range arr.at {
		require.Len(t, at, 1, "one outcome event for %s", id)
	}
	requireIssuedOnce(t, s.sb, arr.outs, reqs)
}

// A live process's slow work stays with it: with the bank slower than
// AckWait, neither the orders at the bank nor the requests waiting for a
// bank slot are redelivered to the other process.
func TestSlowWorkOfALiveProcessIsNotRedelivered(t *testing.T) {
	s := newProcStack(t)
	const ackWait, latency = 2 * time.Second, 4 * time.Second
	require.NoError(t, s.sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(latency), Paths: []string{"/v1/cards"}}))
	doorA, doorB := newBankDoor(t, s.sb), newBankDoor(t, s.sb)
	// One bank slot and two handlers each: each holds one request at the
	// bank and one waiting for the slot, for longer than AckWait.
	s.start(t, doorA.url, "CARDBRIDGE_MAX_IN_FLIGHT=1", "CARDBRIDGE_ACK_WAIT="+ackWait.String())
	s.start(t, doorB.url, "CARDBRIDGE_MAX_IN_FLIGHT=1", "CARDBRIDGE_ACK_WAIT="+ackWait.String())
	arr := s.watchOutcomes(t)

	const n = 5 // one more than both hold: it waits in the stream
	reqs := s.publish(t, n)
	require.Eventually(t, func() bool { return arr.count() == n }, 60*time.Second, 20*time.Millisecond)

	c, err := s.js.Consumer(context.Background(), "ERP", "cardbridge")
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	require.Equal(t, ackWait, info.Config.AckWait)
	require.EqualValues(t, n, info.Delivered.Consumer, "no request delivered twice")
	require.Zero(t, info.NumRedelivered)
	require.EqualValues(t, n, doorA.ordered.Load()+doorB.ordered.Load(), "one order per request (a %d, b %d)", doorA.ordered.Load(), doorB.ordered.Load())
	require.Positive(t, doorA.ordered.Load(), "both processes had work")
	require.Positive(t, doorB.ordered.Load(), "both processes had work")
	requireIssuedOnce(t, s.sb, arr.outs, reqs)
}

// An ack wait set by hand on an existing consumer is kept, with a warning,
// and the process keeps its messages alive by it, not by its own setting:
// with 1.5s in force and the default 6s configured, InProgress every 2s
// would let a 3s bank call be redelivered.
func TestHandSetAckWaitIsKeptAndKeptAliveBy(t *testing.T) {
	s := newStack(t, nil)
	top := broker.DefaultTopology()
	top.AckWait = 1500 * time.Millisecond
	_, err := broker.Ensure(context.Background(), s.js, top)
	require.NoError(t, err)
	require.NoError(t, s.sb.SetFaults(sandbox.Faults{Latency: sandbox.Duration(3 * time.Second), Paths: []string{"/v1/cards"}}))

	require.Equal(t, broker.DefaultAckWait, s.cfg.NATS.AckWait)
	p := s.start(t, s.cfg)
	require.Equal(t, 1, p.logLines("the consumer's ack wait was set by hand and is kept; messages of a process that dies are redelivered after it (set CARDBRIDGE_ACK_WAIT to change it)"))
	s.bind(t, p.svc.Store(), 1)
	reqs := s.publish(t, 1)
	outs := s.outcomes(t, 1)
	requireIssuedOnce(t, s.sb, outs, reqs)

	info := s.consumerInfo(t)
	require.Equal(t, 1500*time.Millisecond, info.Config.AckWait, "kept")
	require.EqualValues(t, 1, info.Delivered.Consumer, "kept alive through a call twice as long as the ack wait")
}
