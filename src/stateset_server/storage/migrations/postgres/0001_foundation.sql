-- Workspaces, API keys, per-workspace counters, orders with their items, and the event log.
-- JSON (not JSONB) keeps objects byte-for-byte as written, so both engines return identical documents.
-- Money columns are integer micro-units (10^-6 of the currency unit); times are Unix microseconds.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    mode          TEXT NOT NULL CHECK (mode IN ('test', 'live')),
    kind          TEXT NOT NULL CHECK (kind IN ('secret', 'restricted', 'publishable')),
    name          TEXT,
    secret_hash   TEXT NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    last4         TEXT NOT NULL,
    scopes        TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);

CREATE TABLE counters (
    workspace_id  TEXT NOT NULL,
    mode          TEXT NOT NULL,
    name          TEXT NOT NULL,
    value         BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, mode, name)
);

CREATE TABLE orders (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL,
    mode              TEXT NOT NULL,
    order_number      BIGINT NOT NULL,
    status            TEXT NOT NULL,
    currency          TEXT NOT NULL,
    customer_id       TEXT,
    customer_email    TEXT,
    subtotal          BIGINT NOT NULL,
    tax               BIGINT NOT NULL,
    shipping          BIGINT NOT NULL,
    total             BIGINT NOT NULL,
    shipping_address  JSON,
    shipping_method   TEXT,
    billing_address   JSON,
    metadata          JSON NOT NULL DEFAULT '{}',
    notes             TEXT,
    version           BIGINT NOT NULL DEFAULT 1,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE UNIQUE INDEX orders_number ON orders (workspace_id, mode, order_number);
CREATE INDEX orders_created ON orders (workspace_id, mode, created_at, id);
CREATE INDEX orders_status ON orders (workspace_id, mode, status, created_at, id);
CREATE INDEX orders_customer ON orders (workspace_id, mode, customer_id, created_at, id);

CREATE TABLE order_items (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL REFERENCES orders (id),
    position     BIGINT NOT NULL,
    sku          TEXT NOT NULL,
    description  TEXT,
    quantity     BIGINT NOT NULL,
    unit_price   BIGINT NOT NULL,
    total        BIGINT NOT NULL,
    metadata     JSON NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX order_items_position ON order_items (order_id, position);
CREATE INDEX order_items_sku ON order_items (sku);

-- The spine: every state change appends one row here in the same transaction as the change.
-- `seq` orders events; consumers (timeline, webhooks, streams) read it.
CREATE TABLE events (
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                   TEXT NOT NULL UNIQUE,
    workspace_id         TEXT NOT NULL,
    mode                 TEXT NOT NULL,
    type                 TEXT NOT NULL,
    object_type          TEXT NOT NULL,
    object_id            TEXT NOT NULL,
    data                 JSON NOT NULL,
    previous_attributes  JSON,
    request_id           TEXT,
    api_key_id           TEXT,
    created_at           BIGINT NOT NULL
);
CREATE INDEX events_feed ON events (workspace_id, mode, seq);
CREATE INDEX events_type ON events (workspace_id, mode, type, seq);
CREATE INDEX events_object ON events (object_id, seq);
