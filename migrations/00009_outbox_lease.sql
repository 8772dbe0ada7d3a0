-- +goose Up

-- A sweep leases the outbox rows it publishes instead of holding them locked
-- in a transaction while it talks to NATS: lease_id names the sweep that
-- holds a row, until leased_until. A sweep that ends releases its rows (or
-- deletes them, once published); the rows of one that died are taken again
-- when its lease runs out.
ALTER TABLE outbox ADD COLUMN lease_id uuid;
ALTER TABLE outbox ADD COLUMN leased_until timestamptz;

-- +goose Down
ALTER TABLE outbox DROP COLUMN leased_until;
ALTER TABLE outbox DROP COLUMN lease_id;
