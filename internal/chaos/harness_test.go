package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/cardbridge/cardbridge/event"
	"github.com/cardbridge/cardbridge/internal/testenv"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
)

// ---------------------------------------------------------------------------
// The bank: one sandbox behind one real HTTP listener per process slot, so
// that the test knows which process has card orders at the bank, and so
// that the bank can go away (listeners closed, connections cut, new ones
// refused) and come back on the same ports with its state.

// front is one HTTP listener of the bank.
type front struct {
	sb   *sandbox.Server
	addr string // 127.0.0.1:port, fixed for the test
	mu   sync.Mutex
	srv  *http.Server
	// orders are the card orders on this listener received and not yet
	// answered (the sandbox goes on with an order whose client went away,
	// as a bank does).
	seq    atomic.Uint64
	orders map[uint64]time.Time // when each arrived
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/v1/cards" {
		id := f.seq.Add(1)
		f.mu.Lock()
		f.orders[id] = time.Now()
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			delete(f.orders, id)
			f.mu.Unlock()
		}()
	}
	f.sb.ServeHTTP(w, r)
}

// inFlight returns the orders in flight now, and whether one of them
// arrived within the last fresh (so that, with the bank's latency, it is
// sure to be there a moment later).
func (f *front) inFlight(fresh time.Duration) (map[uint64]bool, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[uint64]bool, len(f.orders))
	young := false
	for id, at := range f.orders {
		m[id] = true
		young = young || time.Since(at) < fresh
	}
	return m, young
}

// stillInFlight counts the orders of set still in flight.
func (f *front) stillInFlight(set map[uint64]bool) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for id := range set {
		if _, ok := f.orders[id]; ok {
			n++
		}
	}
	return n
}

func (f *front) URL() string { return "http://" + f.addr }

// up listens on the front's address again; the port may still be held for
// a moment by the kernel after a close, so it is retried for a while.
func (f *front) up(t *testing.T) {
	t.Helper()
	var l net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err = net.Listen("tcp", f.addr)
		if err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "the bank listening again on %s: %v", f.addr, err)
		time.Sleep(50 * time.Millisecond) // polling the port
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	f.mu.Lock()
	f.srv = srv
	f.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

// down closes the listener and every connection, in flight or idle.
func (f *front) down() {
	f.mu.Lock()
	srv := f.srv
	f.srv = nil
	f.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// refuses reports whether a connection to addr is refused.
func refuses(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		_ = c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// ---------------------------------------------------------------------------
// Postgres through toxiproxy, in-process: the processes reach Postgres only
// through the proxy, so the test can stall the traffic (a timeout toxic
// with no timeout holds every byte in both directions, connections stay
// open), or stop the proxy (every connection cut, new ones refused) and
// start it again on the same address. The test's own checks go to Postgres
// directly.

type pgProxy struct {
	p *toxiproxy.Proxy
}

func startPGProxy(t *testing.T, upstream string) *pgProxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "postgres", "127.0.0.1:0", upstream)
	require.NoError(t, p.Start())
	t.Cleanup(p.Stop)
	return &pgProxy{p: p}
}

// Addr is the proxy's listening address, fixed after the first start.
func (x *pgProxy) Addr() string { return x.p.Listen }

// stall holds every byte in both directions until unstall.
func (x *pgProxy) stall(t *testing.T) {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		_, err := x.p.Toxics.AddToxicJson(strings.NewReader(
			fmt.Sprintf(`{"name":"stall_%s","type":"timeout","stream":%q,"attributes":{"timeout":0}}`, dir, dir)))
		require.NoError(t, err)
	}
}

// unstall removes the stall; the connections it held are closed (toxiproxy
// cannot hand back the bytes it dropped), as after a network partition.
func (x *pgProxy) unstall(t *testing.T) {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		require.NoError(t, x.p.Toxics.RemoveToxic(context.Background(), "stall_"+dir))
	}
}

func (x *pgProxy) stop()              { x.p.Stop() }
func (x *pgProxy) start(t *testing.T) { require.NoError(t, x.p.Start()) }

// ---------------------------------------------------------------------------
// cardbridge processes, one per slot: slot i always talks to bank front i
// and serves HTTP on its own fixed port.

type proc struct {
	slot int
	cmd  *exec.Cmd
	out  *testenv.LogBuffer
	done chan struct{}
	err  error // set before done is closed
}

type procs struct {
	t      *testing.T
	bin    string
	env    []string
	fronts []*front
	http   []int // HTTP port per slot
	mu     sync.Mutex
	live   map[int]*proc
	all    []*proc
}

func (ps *procs) start(slot int) {
	t := ps.t
	cmd := exec.Command(ps.bin, "run")
	cmd.Env = append(append([]string{}, ps.env...),
		"MBANQ_BASE_URL="+ps.fronts[slot].URL(),
		fmt.Sprintf("HTTP_ADDR=127.0.0.1:%d", ps.http[slot]))
	out := &testenv.LogBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	p := &proc{slot: slot, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	ps.mu.Lock()
	ps.live[slot] = p
	ps.all = append(ps.all, p)
	ps.mu.Unlock()
}

func (ps *procs) get(slot int) *proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.live[slot]
}

func (ps *procs) slots() []int {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var s []int
	for k := range ps.live {
		s = append(s, k)
	}
	sort.Ints(s)
	return s
}

// take removes slot's process from the live set.
func (ps *procs) take(slot int) *proc {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.live[slot]
	delete(ps.live, slot)
	return p
}

// sigterm stops slot's process gracefully and reports how long it took and
// how it ended; it gives up after limit.
func (ps *procs) sigterm(slot int, limit time.Duration) (took time.Duration, err error, exited bool) {
	p := ps.take(slot)
	began := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return time.Since(began), p.err, true
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.done
		return time.Since(began), p.err, false
	}
}

// kill SIGKILLs slot's process and waits until it is gone.
func (ps *procs) kill(slot int) {
	p := ps.take(slot)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (ps *procs) killAll() {
	for _, s := range ps.slots() {
		ps.kill(s)
	}
}

func (ps *procs) readyz(slot int) (int, string) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", ps.http[slot]))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode, strings.TrimSpace(b.String())
}

// ---------------------------------------------------------------------------
// The ledger: what was published when, and which outcomes JetStream stored
// when (its own timestamps), read live from CARDS by an ordered consumer.

type ledger struct {
	mu        sync.Mutex
	published map[string]pub       // outcome id -> request
	order     []string             // outcome ids in publish order
	outcomes  map[string]time.Time // outcome id -> first stored
	copies    map[string]int       // outcome id -> messages seen
	errs      []error              // what the watcher could not read
}

func (l *ledger) addError(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

type pub struct {
	reqID  string
	client int64
	at     time.Time // the first publish attempt
}

func newLedger() *ledger {
	return &ledger{published: map[string]pub{}, outcomes: map[string]time.Time{}, copies: map[string]int{}}
}

func (l *ledger) addPublished(oid string, p pub) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.published[oid] = p
	l.order = append(l.order, oid)
}

func (l *ledger) addOutcome(oid string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.copies[oid]++
	if _, ok := l.outcomes[oid]; !ok {
		l.outcomes[oid] = at
	}
}

// pendingAt lists the requests published before t with no outcome stored
// by t.
func (l *ledger) pendingAt(t time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, oid := range l.order {
		if !l.published[oid].at.Before(t) {
			break
		}
		if at, ok := l.outcomes[oid]; !ok || at.After(t) {
			out = append(out, oid)
		}
	}
	return out
}

// unanswered counts the listed requests with no outcome yet.
func (l *ledger) unanswered(oids []string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, oid := range oids {
		if _, ok := l.outcomes[oid]; !ok {
			n++
		}
	}
	return n
}

func (l *ledger) counts() (published, answered int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for oid := range l.published {
		if _, ok := l.outcomes[oid]; ok {
			n++
		}
	}
	return len(l.published), n
}

func (l *ledger) outcomeAt(oid string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.outcomes[oid]
	return at, ok
}

// watchOutcomes records every message of CARDS, live, until ctx ends.
func watchOutcomes(ctx context.Context, t *testing.T, js jetstream.JetStream, l *ledger) {
	t.Helper()
	cons, err := js.OrderedConsumer(ctx, "CARDS", jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			l.addError(fmt.Errorf("outcome metadata: %w", err))
			return
		}
		o, err := event.DecodeOutcome(m.Headers(), m.Data())
		if err != nil {
			l.addError(fmt.Errorf("an outcome on CARDS does not decode: %w", err))
			return
		}
		l.addOutcome(o.ID, md.Timestamp)
	})
	require.NoError(t, err)
	go func() { <-ctx.Done(); cc.Stop() }()
}

// ---------------------------------------------------------------------------
// Faults and their bounds.

type fault struct {
	kind       string // "kill", "sigterm", "nats", "pg-stall", "pg-stop", "bank"
	what       string
	start, end time.Time
	bound      time.Duration // recovery bound after end
	// Measured: requests pending at the end, and when the first and the
	// last of them got an outcome (relative to end).
	pending       int
	resume, drain time.Duration
	unrecovered   int
	// gap is the longest time without any outcome stored, from the start
	// of the fault until its waiting requests were answered.
	gap time.Duration
}

// waitRecovered waits until every request pending at f.end has an outcome,
// or f.bound plus slack passed, and fills in the measures.
func waitRecovered(l *ledger, f *fault, slack time.Duration) {
	pending := l.pendingAt(f.end)
	f.pending = len(pending)
	deadline := f.end.Add(f.bound + slack)
	for l.unanswered(pending) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // polling the ledger
	}
	f.unrecovered = l.unanswered(pending)
	first := time.Duration(-1)
	for _, oid := range pending {
		at, ok := l.outcomeAt(oid)
		if !ok {
			continue
		}
		d := at.Sub(f.end)
		if first < 0 || d < first {
			first = d
		}
		if d > f.drain {
			f.drain = d
		}
	}
	f.resume = max(first, 0)
	f.gap = l.longestGap(f.start, f.end.Add(max(f.drain, 0)))
}

// longestGap is the longest time in [from, to] with no outcome stored.
func (l *ledger) longestGap(from, to time.Time) time.Duration {
	l.mu.Lock()
	var ts []time.Time
	for _, at := range l.outcomes {
		if at.After(from) && at.Before(to) {
			ts = append(ts, at)
		}
	}
	l.mu.Unlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	gap, prev := time.Duration(0), from
	for _, at := range append(ts, to) {
		gap = max(gap, at.Sub(prev))
		prev = at
	}
	return gap
}
