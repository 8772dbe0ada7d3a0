package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
)

// ErrSchemaInUse is returned by ReserveSchema when another process holds
// the schema.
var ErrSchemaInUse = errors.New("schema in use")

// SchemaReservation is a schema reserved for one process, by a session
// advisory lock held as long as its connection stays open. Tools that
// recreate a schema of their own (cardbridge dev, cardbridge bench) take one
// before they touch it: two of them on one database and schema would drop
// each other's tables.
type SchemaReservation struct {
	// Conn holds the lock; the tool may use it for its DDL.
	Conn   *pgx.Conn
	schema string
}

// ReserveSchema reserves schema on the database at dbURL, or returns an
// error wrapping ErrSchemaInUse when another process holds it.
func ReserveSchema(ctx context.Context, dbURL, schema string) (*SchemaReservation, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to Postgres (DATABASE_URL): %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", schemaLockKey(schema)).Scan(&ok); err != nil {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("reserving schema %s: %w", schema, err)
	}
	if !ok {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("%w: schema %s", ErrSchemaInUse, schema)
	}
	return &SchemaReservation{Conn: conn, schema: schema}, nil
}

// schemaLockKey is the advisory lock key of a schema: a hash, since
// advisory locks are named by numbers. (The text keeps the key of the
// reservations cardbridge bench took before this function was shared.)
func schemaLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("cardbridge bench schema " + schema))
	return int64(h.Sum64())
}

// Release gives the schema back and closes the connection. The lock is
// released explicitly before the connection closes: the server frees a
// closed session's locks only when its backend has exited, which can come
// after the next process already asked for the lock.
func (r *SchemaReservation) Release(ctx context.Context) {
	_, _ = r.Conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", schemaLockKey(r.schema))
	_ = r.Conn.Close(ctx)
}
