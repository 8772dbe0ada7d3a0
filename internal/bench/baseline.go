package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/cardbridge/cardbridge/event"
)

// BaselineReport is the rate of the simplest design that still keeps
// cardbridge's promise, measured on the same Postgres in the same run: one
// transaction per request writing an inbox row and an outbox row. A design
// that commits once per request cannot beat it; one that groups commits
// can.
type BaselineReport struct {
	Requests  int     `json:"requests"`
	Conns     int     `json:"conns"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"perSecond"`
	// Ratio is cardbridge's throughput over PerSecond; SteadyRatio uses
	// the steady-state throughput.
	Ratio       float64 `json:"ratio"`
	SteadyRatio float64 `json:"steadyRatio"`
	// CPU is the machine's CPU during the baseline, per commit (the bench's
	// own client included); nil where /proc cannot be read.
	CPU *CPUReport `json:"cpu,omitempty"`
	// PostgresRatio is Postgres's CPU per bare commit over its CPU per
	// cardbridge request: how much database work batching saves, whatever
	// the rest of the machine costs. Zero when Postgres is not local.
	PostgresRatio float64 `json:"postgresRatio,omitempty"`
}

// The baseline's tables have the shape of processed_requests and outbox as
// migrated (00001_foundation.sql, and the outbox's lease in
// 00009_outbox_lease.sql; a test keeps them alike), under names of their
// own so that they can live beside cardbridge's tables in the bench schema.
// They are ordinary tables: temporary ones skip the write-ahead log, and
// the commit's WAL flush is the very cost being measured.
const baselineDDL = `
DROP TABLE IF EXISTS baseline_outbox, baseline_processed_requests;
CREATE TABLE baseline_processed_requests (
    source       text        NOT NULL,
    request_id   text        NOT NULL,
    payload_hash bytea       NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('issued', 'failed')),
    reason       text,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, request_id)
);
CREATE TABLE baseline_outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   text        NOT NULL UNIQUE,
    subject    text        NOT NULL,
    headers    jsonb       NOT NULL,
    data       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    lease_id   uuid,
    leased_until timestamptz
)`

const baselineDropDDL = `DROP TABLE IF EXISTS baseline_outbox, baseline_processed_requests`

// runBaseline commits n requests, one transaction each (BEGIN, two
// INSERTs, COMMIT: four round trips, as pgbench would do them), from
// conns connections, each driven by a goroutine of its own: more
// goroutines than connections would only queue for the pool, and on two
// cores that queueing costs CPU that Postgres needs. dbURL's search_path
// names the schema; the schema must exist.
func runBaseline(ctx context.Context, dbURL string, n, conns int) (*BaselineReport, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	cfg.MaxConns = int32(conns)
	cfg.MinConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, baselineDDL); err != nil {
		return nil, fmt.Errorf("baseline: creating tables: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = pool.Exec(ctx, baselineDropDDL)
	}()

	// Open every connection before the clock starts: connecting is not
	// what is being measured.
	held := make([]*pgxpool.Conn, 0, conns)
	for range conns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("baseline: connecting: %w", err)
		}
		held = append(held, c)
	}
	for _, c := range held {
		c.Release()
	}

	// A realistic outbox row: a card.issued as the relay would publish it.
	sample, err := event.NewIssued("urn:cardbridge", event.RequestRef{ID: uuid.NewString(), Source: DefaultSource, EmployeeID: "E-1", ClientID: 1},
		event.Card{ID: 1, Token: uuid.NewString(), ProductID: 1, Status: "ACTIVE", IssuedAt: time.Now()}).Encode()
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	headers, err := json.Marshal(sample.Header)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	hash := make([]byte, 32)

	var next atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	cpu0 := takeCPU(nil)
	start := time.Now()
	for range conns {
		g.Go(func() error {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return nil
				}
				id := uuid.NewString()
				err := pgx.BeginFunc(gctx, pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(gctx, `INSERT INTO baseline_processed_requests (source, request_id, payload_hash, outcome) VALUES ($1, $2, $3, 'issued')`,
						DefaultSource, id, hash); err != nil {
						return err
					}
					_, err := tx.Exec(gctx, `INSERT INTO baseline_outbox (event_id, subject, headers, data) VALUES ($1, $2, $3, $4)`,
						event.OutcomeID(DefaultSource, id), sample.Subject, headers, sample.Data)
					return err
				})
				if err != nil {
					return fmt.Errorf("baseline: committing: %w", err)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	elapsed := time.Since(start)
	return &BaselineReport{
		Requests:  n,
		Conns:     conns,
		Seconds:   elapsed.Seconds(),
		PerSecond: float64(n) / elapsed.Seconds(),
		CPU:       cpuReport(cpu0, takeCPU(nil), n),
	}, nil
}

// externalBaselineSchema reserves the bench schema for a baseline next to
// an external deployment, whose own database the bench does not know,
// creating it when absent, and returns a URL using it and a function that
// releases it, dropping it only if it was created here (and not keep):
// a schema found there may be someone's.
func externalBaselineSchema(ctx context.Context, cfg Config) (string, func(), error) {
	lock, err := lockSchema(ctx, cfg.DatabaseURL, cfg.Schema)
	if err != nil {
		return "", nil, fmt.Errorf("baseline: %w", err)
	}
	var existed bool
	release := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if !existed && !cfg.KeepSchema {
			_, _ = lock.Conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+cfg.Schema+" CASCADE")
		}
		lock.Release(ctx)
	}
	if err := lock.Conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", cfg.Schema).Scan(&existed); err != nil {
		release()
		return "", nil, fmt.Errorf("baseline: looking up schema %s: %w", cfg.Schema, err)
	}
	if !existed {
		if _, err := lock.Conn.Exec(ctx, "CREATE SCHEMA "+cfg.Schema); err != nil {
			existed = true // nothing of ours to drop
			release()
			return "", nil, fmt.Errorf("baseline: creating schema %s: %w", cfg.Schema, err)
		}
	}
	dbURL, err := withSearchPath(cfg.DatabaseURL, cfg.Schema)
	if err != nil {
		release()
		return "", nil, err
	}
	return dbURL, release, nil
}
