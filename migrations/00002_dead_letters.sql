-- +goose Up

-- Requests that ended without a card: permanent failures, exhausted retries
-- and messages that could not be read as a request at all. The original
-- message is kept whole (subject, headers, body) so it can be inspected and
-- replayed with its original CloudEvent id.
CREATE TABLE dead_letters (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source        text        NOT NULL,  -- the request's (source, id), or ('', stream/seq)
    request_id    text        NOT NULL,  -- when the message named none
    reason        text        NOT NULL,
    message       text        NOT NULL,
    bank_code     text,
    msg_subject   text        NOT NULL,
    msg_headers   jsonb       NOT NULL,
    msg_data      bytea       NOT NULL,
    stream_seq    bigint      NOT NULL,
    deliveries    bigint      NOT NULL,
    first_seen_at timestamptz NOT NULL,  -- when the message was published
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at   timestamptz,
    UNIQUE (source, request_id)
);
CREATE INDEX dead_letters_reason_idx ON dead_letters (reason, recorded_at);

-- +goose Down
DROP TABLE dead_letters;
