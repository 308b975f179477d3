-- TG-Tinker: training clients, their futures (the job queue) and their
-- sealed model states. Every payload that can hold training data or model
-- weights (requests, results, states) is sealed with the tenant's key
-- before it is stored. Times are BIGINT microseconds since the epoch.
CREATE TABLE trainer_clients (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    config      TEXT NOT NULL,          -- JSON, no secrets or data
    created_at  BIGINT NOT NULL,
    next_seq    BIGINT NOT NULL DEFAULT 1,
    state       {{BYTES}},                  -- sealed session state after the last finished future
    state_seq   BIGINT NOT NULL DEFAULT 0,
    steps       BIGINT NOT NULL DEFAULT 0,
    ledger      TEXT NOT NULL DEFAULT '[]' -- JSON privacy events
);

CREATE TABLE trainer_artifacts (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    kind        TEXT NOT NULL,          -- checkpoint, package
    name        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    blob        {{BYTES}} NOT NULL,     -- sealed (tenant, artifact id as associated data)
    created_at  BIGINT NOT NULL
);
CREATE INDEX trainer_artifacts_tenant ON trainer_artifacts (tenant, client_id);
CREATE INDEX trainer_clients_tenant ON trainer_clients (tenant);

CREATE TABLE trainer_futures (
    id              TEXT PRIMARY KEY,
    tenant          TEXT NOT NULL,
    client_id       TEXT NOT NULL REFERENCES trainer_clients (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL,
    op              TEXT NOT NULL,
    request         {{BYTES}} NOT NULL,     -- sealed
    request_hash    TEXT NOT NULL,      -- SHA-256 of the plaintext request, for idempotent retries
    idempotency_key TEXT,
    actor           TEXT NOT NULL,      -- the API key that submitted it
    status          TEXT NOT NULL,      -- queued, running, succeeded, failed, cancelled
    cancel          INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     BIGINT,
    result          {{BYTES}},              -- sealed
    error_code      TEXT,
    error_message   TEXT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT,
    expires_at      BIGINT,
    UNIQUE (client_id, seq)
);
CREATE UNIQUE INDEX trainer_futures_idem ON trainer_futures (tenant, idempotency_key);
CREATE INDEX trainer_futures_status ON trainer_futures (status, client_id, seq);
