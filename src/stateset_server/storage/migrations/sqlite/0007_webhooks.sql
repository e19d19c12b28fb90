-- Webhooks: endpoints, the durable outbox of deliveries (one row per endpoint per matching event,
-- written in the event's own transaction), and every delivery attempt.
-- Booleans are 0/1 integers and JSON is text, as everywhere else; times are Unix microseconds.

CREATE TABLE webhook_endpoints (
    id                          TEXT PRIMARY KEY,
    workspace_id                TEXT NOT NULL,
    mode                        TEXT NOT NULL,
    url                         TEXT NOT NULL,
    description                 TEXT,
    events                      TEXT NOT NULL,            -- JSON list of event types and patterns
    secret                      TEXT NOT NULL,            -- needed in clear to sign (HMAC)
    previous_secret             TEXT,                     -- still signed with until it expires (rotation)
    previous_secret_expires_at  INTEGER,
    headers                     TEXT NOT NULL DEFAULT '{}',
    metadata                    TEXT NOT NULL DEFAULT '{}',
    enabled                     INTEGER NOT NULL DEFAULT 1,
    disabled_reason             TEXT,
    disabled_at                 INTEGER,
    failure_streak              INTEGER NOT NULL DEFAULT 0,  -- deliveries failed for good since the last success
    failing_since               INTEGER,                     -- first failed attempt since the last success
    created_at                  INTEGER NOT NULL,
    updated_at                  INTEGER NOT NULL,
    deleted_at                  INTEGER
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
    attempt_count     INTEGER NOT NULL DEFAULT 0,
    failures          INTEGER NOT NULL DEFAULT 0,   -- failed attempts in the current retry schedule
    next_attempt_at   INTEGER,                      -- set while pending
    locked_until      INTEGER,                      -- a dispatcher's lease
    locked_by         TEXT,
    last_status_code  INTEGER,
    last_error        TEXT,
    last_attempt_at   INTEGER,
    completed_at      INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
-- What dispatchers poll: only pending rows are in it, so it stays small however long the history.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (workspace_id, mode, endpoint_id, created_at, id);

CREATE TABLE webhook_attempts (
    delivery_id    TEXT NOT NULL,
    attempt        INTEGER NOT NULL,
    started_at     INTEGER NOT NULL,
    status_code    INTEGER,
    latency_ms     INTEGER NOT NULL,
    error          TEXT,
    response_body  TEXT,               -- the first KB of the receiver's answer
    outcome        TEXT NOT NULL,      -- succeeded | retry | failed | gone
    worker         TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
