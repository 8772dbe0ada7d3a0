// Package store is cardbridge's Postgres layer: source bindings,
// self-service users, the inbox of processed requests, card orders and the
// outbox of outcome events.
//
// Driver errors are translated at this boundary: a missing row is
// ErrNotFound, whatever pgx called it.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cardbridge/cardbridge/internal/secret"
)

// ErrNotFound is returned when the row asked for does not exist.
var ErrNotFound = errors.New("not found")

// Options configure Open.
type Options struct {
	// URL is the Postgres connection string.
	URL secret.String
	// Schema, when set, is where every table lives (search_path). Tests use
	// it to give each test its own schema; production leaves it empty.
	Schema string
	// MaxConns caps the pool (0: pgx's default, max(4, CPUs)).
	MaxConns int32
	// Logger receives the store's own log lines.
	Logger *slog.Logger
	// Observer is told of the batches of admissions and commits (see
	// Observer); nil observes nothing.
	Observer Observer
	// SealingKey is the fingerprint (secret.KeyID) of the key passwords are
	// sealed under now, against which SealedPasswordCounts counts. Only a
	// process that reports that metric needs it.
	SealingKey string
}

// Store is a handle on cardbridge's database.
type Store struct {
	pool       *pgxpool.Pool
	cfg        *pgxpool.Config // what pool was made from, for the migrator
	schema     string
	log        *slog.Logger
	sealingKey string
	obs        Observer
	commit     *batcher[Completion, bool]
	admit      *batcher[AdmissionQuery, Admission]
}

// Open connects to Postgres and checks the connection.
func Open(ctx context.Context, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(opts.URL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("opening database: DATABASE_URL is not a valid Postgres connection string%s (the form: postgres://user:password@host:5432/dbname?sslmode=disable, with any @ / ? # %% in the password percent-encoded)", parseReason(err, opts.URL.Reveal()))
	}
	if opts.Schema != "" {
		cfg.ConnConfig.RuntimeParams["search_path"] = opts.Schema
	}
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	// Every statement here is a handful of index probes, whose generic
	// plan is as good as a custom one. Left to choose, Postgres re-planned
	// the batched admission query on every call (its estimate for a
	// parameter array of unknown length favours custom plans), which cost
	// more than running it. A user's own setting in the URL still wins.
	if _, set := cfg.ConnConfig.RuntimeParams["plan_cache_mode"]; !set {
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}
	sessionDefaults(cfg)
	// A connection that broke (a server stopped, a failover) is found and
	// replaced before it is handed out: pgx pings one idle for over a
	// second, and the health check drops dead idle ones between calls.
	cfg.PingTimeout = readyTimeout
	cfg.HealthCheckPeriod = 15 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening database: %w", err)
	}
	s := &Store{pool: pool, cfg: cfg.Copy(), log: opts.Logger, sealingKey: opts.SealingKey, obs: opts.Observer}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&s.schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	s.commit = newCommitter(s)
	s.admit = newAdmitter(s)
	return s, nil
}

// parseReason is why pgx could not parse a connection string, as ": why",
// or "" when it cannot be told without the string itself. pgx's error
// quotes the string with its password masked, best effort; only the reason
// after it is kept, and not even that if it holds the password.
func parseReason(err error, raw string) string {
	msg := err.Error()
	i := strings.LastIndex(msg, "`: ")
	if i < 0 {
		return ""
	}
	reason := msg[i+3:]
	if u, perr := url.Parse(raw); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" && strings.Contains(reason, pw) {
			return ""
		}
	}
	return ": " + reason
}

// Close stops the group committer and closes the pool.
func (s *Store) Close() {
	s.commit.close()
	s.admit.close()
	s.pool.Close()
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// CheckWritable checks, within a second or two, that the request path
// could write now: a connection to a server that accepts writes, and a
// lock on each table the pipeline writes of the kind its inserts take
// (ROW EXCLUSIVE), which waits behind any lock that would block them (a
// LOCK TABLE, a long ALTER). It writes nothing and holds the locks only
// for its own transaction. A ping would say yes to all of those stalls.
func (s *Store) CheckWritable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*readyTimeout)
	defer cancel()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("checking the database: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	ms := readyTimeout.Milliseconds()
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL statement_timeout = %d; SET LOCAL lock_timeout = %d;
		LOCK TABLE processed_requests, card_orders, outbox, dead_letters, bank_retries IN ROW EXCLUSIVE MODE`, ms, ms)); err != nil {
		return fmt.Errorf("checking the database: %w", err)
	}
	return nil
}

// Pool exposes the pool for tests and tools that need raw SQL.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// Unstorable reports whether err is Postgres refusing a value of the row
// being written (a data exception, a violated constraint, a value past a
// limit: SQLSTATE classes 22, 23 and 54), rather than the database failing:
// writing the same row again will fail again.
func Unstorable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// cleanText makes a string storable in a Postgres text column, which refuses
// invalid UTF-8 and NUL bytes. Identifiers of malformed requests can carry
// either, and such a request must still be recorded, not lost.
func cleanText(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}
