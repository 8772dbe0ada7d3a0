package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/crc64"
	"io"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/cardbridge/cardbridge/migrations"
)

// ErrPendingMigrations is returned by CheckMigrations when the database is
// behind the binary.
var ErrPendingMigrations = errors.New("database has pending migrations: run `cardbridge migrate up` (or start with `cardbridge run --migrate`)")

// MigrationStatus is one migration and whether it is applied.
type MigrationStatus struct {
	Version int64
	Name    string
	Applied bool
}

// migrator opens a goose provider on db. goose's Postgres
// session locker takes an advisory lock for the whole run, so several
// processes migrating at once apply each migration exactly once. The lock id
// is derived from the schema, so tests in separate schemas do not queue
// behind one another.
func (s *Store) migrator(db *sql.DB) (*goose.Provider, error) {
	id := int64(crc64.Checksum([]byte("cardbridge:"+s.schema), crc64.MakeTable(crc64.ECMA)) & 0x7fffffffffffffff)
	// Poll for the lock every second (goose waits 5s between tries by
	// default), for up to five minutes.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(id), lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return nil, fmt.Errorf("loading migrations: %w", err)
	}
	return p, nil
}

// MigrateUp applies every pending migration and reports what it applied.
func (s *Store) MigrateUp(ctx context.Context, out io.Writer) error {
	return s.withSchemaChanges(ctx, func(p *goose.Provider) error {
		res, err := p.Up(ctx)
		for _, r := range res {
			fmt.Fprintf(out, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(1e6))
		}
		if err != nil {
			return fmt.Errorf("migrating up: %w", err)
		}
		if len(res) == 0 {
			fmt.Fprintln(out, "no pending migrations")
		}
		return nil
	})
}

// MigrateDown rolls back the most recent migration.
func (s *Store) MigrateDown(ctx context.Context, out io.Writer) error {
	return s.withSchemaChanges(ctx, func(p *goose.Provider) error {
		r, err := p.Down(ctx)
		if err != nil {
			return fmt.Errorf("migrating down: %w", err)
		}
		fmt.Fprintf(out, "rolled back %s\n", r.Source.Path)
		return nil
	})
}

// MigrationStatus lists every migration the binary carries.
func (s *Store) MigrationStatus(ctx context.Context) ([]MigrationStatus, error) {
	var out []MigrationStatus
	err := s.withMigrator(func(p *goose.Provider) error {
		st, err := p.Status(ctx)
		if err != nil {
			return fmt.Errorf("reading migration status: %w", err)
		}
		for _, m := range st {
			out = append(out, MigrationStatus{Version: m.Source.Version, Name: m.Source.Path, Applied: m.State == goose.StateApplied})
		}
		return nil
	})
	return out, err
}

// CheckMigrations returns ErrPendingMigrations when the database is not at
// the binary's latest version.
func (s *Store) CheckMigrations(ctx context.Context) error {
	return s.withMigrator(func(p *goose.Provider) error {
		pending, err := p.HasPending(ctx)
		if err != nil {
			return fmt.Errorf("checking migrations: %w", err)
		}
		if pending {
			return ErrPendingMigrations
		}
		return nil
	})
}

// withMigrator runs fn with a migrator on the store's pool, for reading
// the migration status (quick statements, under the usual timeouts).
func (s *Store) withMigrator(fn func(*goose.Provider) error) error {
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	p, err := s.migrator(db)
	if err != nil {
		return err
	}
	return fn(p)
}

// withSchemaChanges runs fn with a migrator on connections of their own,
// without the statement and lock timeouts of the request path: a
// migration may rewrite a large table, or wait for live traffic to let go
// of it, and must not fail half way for taking longer than a request.
func (s *Store) withSchemaChanges(ctx context.Context, fn func(*goose.Provider) error) error {
	cfg := s.cfg.Copy()
	cfg.MaxConns = 2 // goose's lock session and its migrations
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = "0"
	cfg.ConnConfig.RuntimeParams["lock_timeout"] = "0"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("opening database for migrations: %w", err)
	}
	defer pool.Close()
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := s.migrator(db)
	if err != nil {
		return err
	}
	return fn(p)
}
