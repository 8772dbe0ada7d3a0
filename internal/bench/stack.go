package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cardbridge/cardbridge/internal/broker"
	"github.com/cardbridge/cardbridge/internal/secret"
	"github.com/cardbridge/cardbridge/mbanq/sandbox"
	"github.com/cardbridge/cardbridge/store"
)

// stack is a deployment of the bench's own: an embedded NATS server in
// the bench's process, a Postgres schema, and the sandbox and cardbridge
// instances as child processes.
type stack struct {
	cfg    Config
	status io.Writer

	dir, logDir string
	nats        *broker.Embedded
	dbURL       string                   // with search_path = the bench schema
	schemaLock  *store.SchemaReservation // holds the schema until close
	secretKey   string

	sandbox    *child
	sandboxURL string

	mu        sync.Mutex // guards instances: the samplers read them while a preloaded run starts them
	instances []*child
}

// running returns the cardbridge instances started so far.
func (s *stack) running() []*child {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.instances)
}

// startStack starts everything but cardbridge: NATS, the schema (migrated,
// with the binding) and the sandbox. On error, whatever was started is
// stopped again.
func startStack(ctx context.Context, cfg Config, status io.Writer) (_ *stack, err error) {
	s := &stack{cfg: cfg, status: status}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.dir, err = os.MkdirTemp("", "cardbridge-bench-"); err != nil {
		return nil, err
	}
	s.logDir = cfg.LogDir
	if s.logDir == "" {
		s.logDir = filepath.Join(s.dir, "logs")
	}
	if err := os.MkdirAll(s.logDir, 0o755); err != nil {
		return nil, err
	}
	key := make([]byte, secret.KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	// A new key each run is enough: the schema, and with it every sealed
	// self-service password, is new each run too.
	s.secretKey = base64.StdEncoding.EncodeToString(key)

	if s.nats, err = broker.StartEmbedded(filepath.Join(s.dir, "nats"), 0); err != nil {
		return nil, err
	}
	if err := s.prepareDatabase(ctx); err != nil {
		return nil, err
	}
	if err := s.startSandbox(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(status, "bench: stack: NATS %s, sandbox %s (pid %d, latency %v), schema %s, logs in %s\n",
		s.nats.URL(), s.sandboxURL, s.sandbox.pid(), cfg.BankLatency, cfg.Schema, s.logDir)
	return s, nil
}

// natsURL is where the embedded server listens.
func (s *stack) natsURL() string { return s.nats.URL() }

// prepareDatabase recreates the bench schema, applies the migrations and
// binds the source. The bench migrates rather than leaving it to
// `cardbridge run --migrate` because --preload needs the binding before
// any cardbridge starts.
func (s *stack) prepareDatabase(ctx context.Context) error {
	dbURL, err := withSearchPath(s.cfg.DatabaseURL, s.cfg.Schema)
	if err != nil {
		return err
	}
	if s.schemaLock, err = lockSchema(ctx, s.cfg.DatabaseURL, s.cfg.Schema); err != nil {
		return err
	}
	if _, err := s.schemaLock.Conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+s.cfg.Schema+" CASCADE; CREATE SCHEMA "+s.cfg.Schema); err != nil {
		return fmt.Errorf("preparing schema %s: %w", s.cfg.Schema, err)
	}
	s.dbURL = dbURL
	st, err := store.Open(ctx, store.Options{URL: secret.New(s.dbURL)})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.MigrateUp(ctx, io.Discard); err != nil {
		return err
	}
	return st.AddBinding(ctx, store.Binding{
		Source: s.cfg.Source, ClientID: s.cfg.ClientID,
		SavingsAccountID: s.cfg.SavingsAccountID, CardProductID: s.cfg.CardProductID,
	})
}

// withSearchPath returns dbURL with its search_path set to schema.
func withSearchPath(dbURL, schema string) (string, error) {
	u, err := url.Parse(dbURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", errors.New("--database-url must be a postgres:// URL")
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// startSandbox starts `cardbridge sandbox` on a port of the kernel's
// choosing and reads the address it announces, which avoids racing
// another program for a port picked in advance.
func (s *stack) startSandbox(ctx context.Context) error {
	addr := make(chan string, 1)
	w := &lineWatcher{match: func(line string) bool {
		// "MBanq sandbox listening on http://127.0.0.1:41234 (tenant ...)"
		_, rest, ok := strings.Cut(line, "listening on ")
		if !ok {
			return false
		}
		u, _, _ := strings.Cut(rest, " ")
		addr <- u
		return true
	}}
	args := []string{"sandbox", "--addr", "127.0.0.1:0",
		"--latency", s.cfg.BankLatency.String(), "--latency-jitter", s.cfg.BankLatencyJitter.String(),
		"--rate-limit", strconv.FormatFloat(s.cfg.BankRateLimit, 'g', -1, 64)}
	c, err := startChild("sandbox", s.cfg.CardbridgeBin, args, os.Environ(), filepath.Join(s.logDir, "sandbox.log"), w)
	if err != nil {
		return err
	}
	s.sandbox = c
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case s.sandboxURL = <-addr:
		return nil
	case <-c.done:
		return c.exitError()
	case <-t.C:
		return fmt.Errorf("sandbox did not announce its address within 30s; log:\n%s", c.logTail(8))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ensureStreams creates the request and outcome streams, so that requests
// can be published before any cardbridge runs (--preload) and the outcome
// stream can be subscribed to before publishing. They have broker.Ensure's
// duplicate windows but not its retention: a request stream with interest
// retention would not keep requests preloaded before the consumer exists. The durable consumer is left to
// cardbridge, so that its settings are cardbridge's own and an experiment
// with them is not silently overridden by the bench.
func ensureStreams(ctx context.Context, js jetstream.JetStream) error {
	t := broker.DefaultTopology()
	for _, sc := range []jetstream.StreamConfig{
		{Name: t.RequestStream, Subjects: t.RequestSubjects, Storage: jetstream.FileStorage, Duplicates: broker.RequestDuplicateWindow},
		{Name: t.OutcomeStream, Subjects: t.OutcomeSubjects, Storage: jetstream.FileStorage, Duplicates: broker.DuplicateWindow},
	} {
		if _, err := js.Stream(ctx, sc.Name); err == nil {
			continue
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("looking up stream %s: %w", sc.Name, err)
		}
		if _, err := js.CreateStream(ctx, sc); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("creating stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// instanceEnv is the environment of one `cardbridge run`. Variables of the
// bench's own environment pass through (CARDBRIDGE_ACK_WAIT and any tuning
// knob yet to come), except those naming what the bench must control:
// the topology it publishes to and subscribes on, and the settings below,
// which come last and so win.
func (s *stack) instanceEnv(httpAddr string) []string {
	drop := map[string]bool{
		"CARDBRIDGE_REQUEST_STREAM": true, "CARDBRIDGE_REQUEST_SUBJECT": true,
		"CARDBRIDGE_OUTCOME_STREAM": true, "CARDBRIDGE_CONSUMER": true,
		"CARDBRIDGE_SECRET_KEY_PREVIOUS": true, "MBANQ_SELF_SERVICE_ROLE_ID": true,
		"MBANQ_OFFICE_ID": true,
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			env = append(env, kv)
		}
	}
	set := map[string]string{
		"DATABASE_URL":             s.dbURL,
		"NATS_URL":                 s.nats.URL(),
		"MBANQ_BASE_URL":           s.sandboxURL,
		"CARDBRIDGE_SECRET_KEY":    s.secretKey,
		"HTTP_ADDR":                httpAddr,
		"CARDBRIDGE_MAX_IN_FLIGHT": strconv.Itoa(s.cfg.InFlight),
		"LOG_FORMAT":               "json",
		"LOG_LEVEL":                s.cfg.LogLevel,
	}
	for k, v := range sandboxSeedValues {
		set[k] = v
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// startInstances launches cfg.Instances `cardbridge run --migrate` and
// returns the time the first was launched, which starts the measured
// window of a preloaded run, once every instance answers /readyz.
func (s *stack) startInstances(ctx context.Context) (time.Time, error) {
	var launched time.Time
	addrs := make([]string, s.cfg.Instances)
	for i := range s.cfg.Instances {
		addr, err := freeAddr()
		if err != nil {
			return launched, err
		}
		addrs[i] = addr
		name := fmt.Sprintf("cardbridge-%d", i+1)
		c, err := startChild(name, s.cfg.CardbridgeBin, []string{"run", "--migrate"}, s.instanceEnv(addr),
			filepath.Join(s.logDir, name+".log"), nil)
		if err != nil {
			return launched, err
		}
		c.httpAddr = addr
		if i == 0 {
			launched = c.started
		}
		s.mu.Lock()
		s.instances = append(s.instances, c)
		s.mu.Unlock()
	}
	for i, c := range s.running() {
		if err := waitReady(ctx, c, "http://"+addrs[i]+"/readyz"); err != nil {
			return launched, err
		}
	}
	// The addresses let one watch an instance during the run, e.g. its
	// /debug/pprof with CARDBRIDGE_PPROF=true in the bench's environment.
	who := make([]string, s.cfg.Instances)
	for i, c := range s.running() {
		who[i] = fmt.Sprintf("pid %d on http://%s", c.pid(), addrs[i])
	}
	fmt.Fprintf(s.status, "bench: %d cardbridge ready (%s; in-flight %d each)\n", s.cfg.Instances, strings.Join(who, ", "), s.cfg.InFlight)
	return launched, nil
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. cardbridge cannot announce a port it picked itself, so a small race
// remains; a lost race shows as an instance that exits, with its log.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady polls url until it answers 200, the child exits, or a minute
// passes.
func waitReady(ctx context.Context, c *child, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.NewTimer(time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-c.done:
			return c.exitError()
		case <-deadline.C:
			return fmt.Errorf("%s not ready at %s after a minute; log:\n%s", c.name, url, c.logTail(8))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sampleMemory records the RSS of every instance.
func (s *stack) sampleMemory() {
	for _, c := range s.running() {
		c.sampleRSS()
	}
}

// processReports describes the children for the report; call it before
// stopping them, while /proc still knows their peak memory.
func (s *stack) processReports() []ProcessReport {
	var out []ProcessReport
	for _, c := range s.running() {
		out = append(out, c.usage("cardbridge"))
	}
	if s.sandbox != nil {
		out = append(out, s.sandbox.usage("sandbox"))
	}
	return out
}

// stopInstances stops the cardbridge processes gracefully, together, and
// returns the paths of their logs.
func (s *stack) stopInstances() []string {
	s.mu.Lock()
	running := s.instances
	s.instances = nil
	s.mu.Unlock()
	var paths []string
	for _, c := range running {
		c.terminate()
	}
	for _, c := range running {
		c.stop(15 * time.Second)
		paths = append(paths, c.logPath)
	}
	return paths
}

// close stops everything the stack started and removes what it created,
// except the logs when LogDir was given and the schema with KeepSchema.
func (s *stack) close() {
	s.stopInstances()
	if s.sandbox != nil {
		s.sandbox.stop(5 * time.Second)
		s.sandbox = nil
	}
	if s.nats != nil {
		s.nats.Stop()
		s.nats = nil
	}
	if s.schemaLock != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if s.dbURL != "" && !s.cfg.KeepSchema {
			if _, err := s.schemaLock.Conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+s.cfg.Schema+" CASCADE"); err != nil {
				fmt.Fprintf(s.status, "bench: dropping schema %s: %v\n", s.cfg.Schema, err)
			}
		}
		s.schemaLock.Release(ctx)
		cancel()
		s.schemaLock, s.dbURL = nil, ""
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
		s.dir = ""
	}
}

// sandboxStats reads what the sandbox counted (GET /_sandbox/stats).
func (s *stack) sandboxStats(ctx context.Context) (sandbox.Stats, error) {
	var st sandbox.Stats
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.sandboxURL+"/_sandbox/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("reading the sandbox's counts: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("reading the sandbox's counts: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("reading the sandbox's counts: %w", err)
	}
	return st, nil
}
