-- Webhooks: endpoints, the durable outbox of deliveries (one row per endpoint per matching event,
-- written in the event's own transaction), and every delivery attempt.
-- Booleans are 0/1 integers as everywhere else; JSON columns keep documents as written; times are
-- Unix microseconds.

CREATE TABLE webhook_endpoints (
    id                          TEXT PRIMARY KEY,
    workspace_id                TEXT NOT NULL,
    mode                        TEXT NOT NULL,
    url                         TEXT NOT NULL,
    description                 TEXT,
    events                      JSON NOT NULL,            -- JSON list of event types and patterns
    secret                      TEXT NOT NULL,            -- needed in clear to sign (HMAC)
    previous_secret             TEXT,                     -- still signed with until it expires (rotation)
    previous_secret_expires_at  BIGINT,
    headers                     JSON NOT NULL DEFAULT '{}',
    metadata                    JSON NOT NULL DEFAULT '{}',
    enabled                     BIGINT NOT NULL DEFAULT 1,
    disabled_reason             TEXT,
    disabled_at                 BIGINT,
    failure_streak              BIGINT NOT NULL DEFAULT 0,  -- deliveries failed for good since the last success
    failing_since               BIGINT,                     -- first failed attempt since the last success
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL,
    deleted_at                  BIGINT
);
-- The outbox's one query per event: the live, enabled endpoints of a workspace and mode.
CREATE INDEX webhook_endpoints_active ON webhook_endpoints (workspace_id, mode)
    WHERE enabled = 1 AND deleted_at IS NULL;
CREATE INDEX webhook_endpoints_created ON webhook_endpoints (workspace_id, mode, created_at, id);

CREATE TABLE webhook_deliveries (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL,
    mode              TEXT NOT NULL,
    endpoint_id       TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    event_type        TEXT NOT NULL,
    origin            TEXT NOT NULL DEFAULT 'event' CHECK (origin IN ('event', 'replay')),
    status            TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempt_count     BIGINT NOT NULL DEFAULT 0,
    failures          BIGINT NOT NULL DEFAULT 0,   -- failed attempts in the current retry schedule
    next_attempt_at   BIGINT,                      -- set while pending
    locked_until      BIGINT,                      -- a dispatcher's lease
    locked_by         TEXT,
    last_status_code  BIGINT,
    last_error        TEXT,
    last_attempt_at   BIGINT,
    completed_at      BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
-- What dispatchers poll: only pending rows are in it, so it stays small however long the history.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (workspace_id, mode, endpoint_id, created_at, id);

CREATE TABLE webhook_attempts (
    delivery_id    TEXT NOT NULL,
    attempt        BIGINT NOT NULL,
    started_at     BIGINT NOT NULL,
    status_code    BIGINT,
    latency_ms     BIGINT NOT NULL,
    error          TEXT,
    response_body  TEXT,               -- the first KB of the receiver's answer
    outcome        TEXT NOT NULL,      -- succeeded | retry | failed | gone
    worker         TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
