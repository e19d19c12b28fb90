-- Plans and rate limits. A workspace has a plan and, on Enterprise, custom limits per window:
-- NULL = the plan's value, 0 = unlimited. Existing workspaces predate rate limiting: Enterprise.
-- The operator workspace (the one created at first start) may change any workspace's plan over the API.
ALTER TABLE workspaces ADD COLUMN plan TEXT NOT NULL DEFAULT 'enterprise';
ALTER TABLE workspaces ADD COLUMN per_second BIGINT;
ALTER TABLE workspaces ADD COLUMN per_minute BIGINT;
ALTER TABLE workspaces ADD COLUMN per_day BIGINT;
ALTER TABLE workspaces ADD COLUMN concurrent BIGINT;
ALTER TABLE workspaces ADD COLUMN operator BIGINT NOT NULL DEFAULT 0;
UPDATE workspaces SET operator = 1 WHERE id = (SELECT id FROM workspaces ORDER BY created_at, id LIMIT 1);

-- Request counts (hits) per API key and fixed window (period 's', 'm' or 'd'; window_start in Unix seconds),
-- shared by every server process. Processes add their counts in batches; rows whose window has ended
-- are deleted periodically (expires_at = window_start + the window's length).
CREATE TABLE rate_limit_counters (
    bucket        TEXT NOT NULL,
    period        TEXT NOT NULL,
    window_start  BIGINT NOT NULL,
    hits          BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (bucket, period, window_start)
);
CREATE INDEX rate_limit_counters_expiry ON rate_limit_counters (expires_at);

-- Requests in flight per API key, as each server process last published them (for concurrency limits).
-- A process that stops publishing (crashed) is ignored once its rows are older than a few seconds.
CREATE TABLE rate_limit_inflight (
    node        TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    inflight    BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (node, bucket)
);
CREATE INDEX rate_limit_inflight_bucket ON rate_limit_inflight (bucket, updated_at);
