package bench

import (
	"context"
	"errors"
	"fmt"

	"github.com/cardbridge/cardbridge/store"
)

// lockSchema reserves schema for this run (store.ReserveSchema). Two runs
// on one database with the same schema would drop each other's tables and
// relay each other's outbox rows into their own NATS servers, which shows
// up as missing outcomes and "unrelated" ones; refusing the second run is
// the only safe answer. The reservation's connection is also what the run
// uses for its DDL.
func lockSchema(ctx context.Context, dbURL, schema string) (*store.SchemaReservation, error) {
	r, err := store.ReserveSchema(ctx, dbURL, schema)
	if errors.Is(err, store.ErrSchemaInUse) {
		return nil, fmt.Errorf("schema %s is in use by another cardbridge bench on this database: wait for it to end or choose another --schema", schema)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (--database-url, DATABASE_URL)", err)
	}
	return r, nil
}
