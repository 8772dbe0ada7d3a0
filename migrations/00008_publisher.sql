-- +goose Up

-- The NATS identity that alone may speak for a source: its
-- requests must arrive on <request subject>.<publisher>, a subject the NATS
-- server lets only that ERP's user publish on. NULL keeps the trust of
-- before: whatever publishes on the request subject may name the source,
-- for deployments whose NATS is closed to all but trusted ERPs. All the
-- bindings of one source name the same publisher (store.AddBinding).
ALTER TABLE source_bindings ADD COLUMN publisher text
    CHECK (publisher IS NULL OR publisher ~ '^[A-Za-z0-9_-]{1,64}$');
-- When the source was bound to its publisher: requests stored before that
-- were sent under the trust of then, and are taken as such.
ALTER TABLE source_bindings ADD COLUMN publisher_since timestamptz;

-- +goose Down
ALTER TABLE source_bindings DROP COLUMN publisher_since;
ALTER TABLE source_bindings DROP COLUMN publisher;
