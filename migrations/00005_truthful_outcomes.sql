-- +goose Up

-- Time a request has spent trying the bank, across deliveries and
-- processes: the retry budget (CARDBRIDGE_RETRY_FOR) is spent only by
-- deliveries that reached the bank, not by time waiting in the stream or
-- while the process was paused. A row exists only for requests that failed
-- at the bank at least once and have no outcome yet.
CREATE TABLE bank_retries (
    source     text        NOT NULL,
    request_id text        NOT NULL,
    first_at   timestamptz NOT NULL DEFAULT now(),
    last_at    timestamptz NOT NULL DEFAULT now(),
    spent_ms   bigint      NOT NULL CHECK (spent_ms >= 0),
    attempts   integer     NOT NULL,
    -- Some attempt may have been acted on by the bank without its answer
    -- being learnt; it stays so until a definite answer ends the request.
    unknown    boolean     NOT NULL,
    -- When the first try whose answer is unknown was made: the bank must
    -- still remember its Idempotency-Key when it is asked again.
    unknown_since timestamptz,
    last_error text        NOT NULL,
    PRIMARY KEY (source, request_id)
);

-- A dead letter is either the failed outcome of its request ('outcome':
-- one per request, updated when a replay fails again) or a message refused
-- without an outcome of its own ('conflict': a second request reusing an id
-- with other data; one per message, however many there are).
ALTER TABLE dead_letters ADD COLUMN kind text NOT NULL DEFAULT 'outcome'
    CHECK (kind IN ('outcome', 'conflict'));
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_source_request_id_key;
CREATE UNIQUE INDEX dead_letters_outcome_key ON dead_letters (source, request_id) WHERE kind = 'outcome';
CREATE UNIQUE INDEX dead_letters_conflict_key ON dead_letters (source, request_id, stream_seq) WHERE kind = 'conflict';

-- The Idempotency-Key generation of the request's card order. It moves on
-- only when a replay follows a definite refusal by the bank (bank_rejected),
-- which the bank remembers under the old key; after an unknown outcome the
-- key is kept, so a card that exists is found rather than ordered again.
ALTER TABLE dead_letters ADD COLUMN order_key_generation integer NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE dead_letters DROP COLUMN order_key_generation;
DROP INDEX dead_letters_conflict_key;
DROP INDEX dead_letters_outcome_key;
DELETE FROM dead_letters WHERE kind = 'conflict';
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_source_request_id_key UNIQUE (source, request_id);
ALTER TABLE dead_letters DROP COLUMN kind;
DROP TABLE bank_retries;
