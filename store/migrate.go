package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/crc64"
	"io"

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

// migrator opens a goose provider on the store's pool. goose's Postgres
// session locker takes an advisory lock for the whole run, so several
// processes migrating at once apply each migration exactly once. The lock id
// is derived from the schema, so tests in separate schemas do not queue
// behind one another.
func (s *Store) migrator() (*goose.Provider, *sql.DB, error) {
	db := stdlib.OpenDBFromPool(s.pool)
	id := int64(crc64.Checksum([]byte("cardbridge:"+s.schema), crc64.MakeTable(crc64.ECMA)) & 0x7fffffffffffffff)
	// Poll for the lock every second (goose waits 5s between tries by
	// default), for up to five minutes.
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(id), lock.WithLockTimeout(1, 300))
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS,
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("loading migrations: %w", err)
	}
	return p, db, nil
}

// MigrateUp applies every pending migration and reports what it applied.
func (s *Store) MigrateUp(ctx context.Context, out io.Writer) error {
	return s.withMigrator(func(p *goose.Provider) error {
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
	return s.withMigrator(func(p *goose.Provider) error {
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

func (s *Store) withMigrator(fn func(*goose.Provider) error) error {
	p, db, err := s.migrator()
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(p)
}
