-- Idempotency keys: the first response to a write, kept 24 hours, scoped to workspace, mode and key.
-- The row is written in the same transaction as the change it protects.
CREATE TABLE idempotency_keys (
    workspace_id  TEXT NOT NULL,
    mode          TEXT NOT NULL,
    key           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    status_code   INTEGER NOT NULL,
    response      TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, mode, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Indexes for the sortable order fields (the id breaks ties).
CREATE INDEX orders_total ON orders (workspace_id, mode, total, id);
CREATE INDEX orders_updated ON orders (workspace_id, mode, updated_at, id);
CREATE INDEX orders_email ON orders (workspace_id, mode, customer_email, id);
CREATE INDEX events_created ON events (workspace_id, mode, created_at, id);
