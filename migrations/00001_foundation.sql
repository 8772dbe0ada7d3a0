-- +goose Up

-- Which CloudEvent source may order cards for which MBanq client, from which
-- deposit account and with which card product. An ERP can order only for the
-- clients bound to its source.
CREATE TABLE source_bindings (
    source             text        NOT NULL CHECK (source <> ''),
    client_id          bigint      NOT NULL CHECK (client_id > 0),
    savings_account_id bigint      NOT NULL CHECK (savings_account_id > 0),
    card_product_id    bigint      NOT NULL CHECK (card_product_id > 0),
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, client_id)
);

-- One MBanq self-service user per client. The row is written (status
-- 'provisioning', password already sealed) before MBanq is asked to create
-- the user, so a crash in between leaves a password we can still use to
-- finish or recover the provisioning instead of an orphan user whose
-- password nobody knows.
CREATE TABLE self_service_users (
    client_id       bigint      PRIMARY KEY CHECK (client_id > 0),
    username        text        NOT NULL UNIQUE,
    password_sealed bytea       NOT NULL,
    mbanq_user_id   bigint,
    status          text        NOT NULL CHECK (status IN ('provisioning', 'active')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (status = 'provisioning' OR mbanq_user_id IS NOT NULL)
);

-- The inbox: one row per request that reached its outcome. (source, id) is
-- the CloudEvents idempotency key; a second delivery finds its row here.
CREATE TABLE processed_requests (
    source       text        NOT NULL,
    request_id   text        NOT NULL,
    payload_hash bytea       NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('issued', 'failed')),
    reason       text,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, request_id)
);

-- Cards ordered at MBanq, one per issued request.
CREATE TABLE card_orders (
    source             text        NOT NULL,
    request_id         text        NOT NULL,
    client_id          bigint      NOT NULL,
    employee_id        text        NOT NULL,
    savings_account_id bigint      NOT NULL,
    card_product_id    bigint      NOT NULL,
    idempotency_key    text        NOT NULL,
    card_id            bigint      NOT NULL,
    card_token         text        NOT NULL,
    status             text        NOT NULL,
    issued_at          timestamptz NOT NULL,
    PRIMARY KEY (source, request_id),
    FOREIGN KEY (source, request_id) REFERENCES processed_requests (source, request_id)
);
CREATE INDEX card_orders_client_idx ON card_orders (client_id);

-- Outcome events waiting to be published. Each row is a ready NATS message
-- (binary-mode CloudEvent); the relay deletes it once JetStream acknowledged
-- the publish.
CREATE TABLE outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   text        NOT NULL UNIQUE,
    subject    text        NOT NULL,
    headers    jsonb       NOT NULL,
    data       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE outbox;
DROP TABLE card_orders;
DROP TABLE processed_requests;
DROP TABLE self_service_users;
DROP TABLE source_bindings;
