-- +goose Up

-- A replayed dead letter is re-driven under its original CloudEvent id.
-- Its outcome event gets a new id (a function of the request and the replay
-- generation), so subscribers that deduplicate by event id still see it.
ALTER TABLE dead_letters ADD COLUMN replay_count integer NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE dead_letters DROP COLUMN replay_count;
