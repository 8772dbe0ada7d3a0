-- +goose NO TRANSACTION
-- +goose Up

-- Retention: rows older than CARDBRIDGE_RETENTION are purged in
-- batches by every process (store.Purge), and the bodies of dead letters
-- (which carry employees' names and emails) sooner, after
-- CARDBRIDGE_DEAD_LETTER_BODY_RETENTION. These indexes let the purge and
-- the pending-dead-letter metric read only the rows they are about, not
-- the whole table. CONCURRENTLY, so an upgrade does not stop commits.
CREATE INDEX CONCURRENTLY IF NOT EXISTS dead_letters_recorded_at_idx ON dead_letters (recorded_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS dead_letters_pending_idx ON dead_letters (reason) WHERE replayed_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS dead_letters_replayed_idx ON dead_letters (replayed_at) WHERE replayed_at IS NOT NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS bank_retries_last_at_idx ON bank_retries (last_at);
ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS body_purged_at timestamptz;

-- +goose Down
ALTER TABLE dead_letters DROP COLUMN IF EXISTS body_purged_at;
DROP INDEX CONCURRENTLY IF EXISTS bank_retries_last_at_idx;
DROP INDEX CONCURRENTLY IF EXISTS dead_letters_replayed_idx;
DROP INDEX CONCURRENTLY IF EXISTS dead_letters_pending_idx;
DROP INDEX CONCURRENTLY IF EXISTS dead_letters_recorded_at_idx;
