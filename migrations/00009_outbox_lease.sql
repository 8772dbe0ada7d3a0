-- +goose NO TRANSACTION
-- +goose Up

-- A sweep leases the outbox rows it publishes instead of holding them locked
-- in a transaction while it talks to NATS: lease_id names the sweep that
-- holds a row, until leased_until. A sweep that ends releases its rows (or
-- deletes them, once published); the rows of one that died are taken again
-- when its lease runs out. The index finds a lease's rows for its renewals
-- and its end; CONCURRENTLY, so an upgrade does not stop commits.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS lease_id uuid;
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS leased_until timestamptz;
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_lease_idx ON outbox (lease_id) WHERE lease_id IS NOT NULL;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS outbox_lease_idx;
ALTER TABLE outbox DROP COLUMN IF EXISTS leased_until;
ALTER TABLE outbox DROP COLUMN IF EXISTS lease_id;
