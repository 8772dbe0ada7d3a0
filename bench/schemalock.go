package bench

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
)

// lockSchema reserves schema for this run with a session advisory lock,
// held for as long as the returned connection stays open. Two runs on one
// database with the same schema would drop each other's tables and relay
// each other's outbox rows into their own NATS servers, which shows up as
// missing outcomes and "unrelated" ones; refusing the second run is the
// only safe answer. The connection is also what the run uses for its DDL.
func lockSchema(ctx context.Context, dbURL, schema string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to Postgres (--database-url, DATABASE_URL): %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", schemaLockKey(schema)).Scan(&ok); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("reserving schema %s: %w", schema, err)
	}
	if !ok {
		conn.Close(ctx)
		return nil, fmt.Errorf("schema %s is in use by another cardbridge bench on this database: wait for it to end or choose another --schema", schema)
	}
	return conn, nil
}

// schemaLockKey is the advisory lock key of a schema: a hash, since
// advisory locks are named by numbers.
func schemaLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("cardbridge bench schema " + schema))
	return int64(h.Sum64())
}

// releaseSchema gives back the schema reserved on conn and closes it. The
// lock is released explicitly before the connection closes: the server
// frees a closed session's locks only when its backend has exited, which
// can come after the next run already asked for the lock.
func releaseSchema(ctx context.Context, conn *pgx.Conn, schema string) {
	_, _ = conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", schemaLockKey(schema))
	_ = conn.Close(ctx)
}
