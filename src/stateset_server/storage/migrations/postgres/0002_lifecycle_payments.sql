-- The order lifecycle (state, shipment, money received and returned), payments, refunds, and the
-- double-entry USDC ledger. Amounts are integer micro-units; times are Unix microseconds.

ALTER TABLE orders ADD COLUMN resume_status TEXT;
ALTER TABLE orders ADD COLUMN status_reason TEXT;
ALTER TABLE orders ADD COLUMN amount_paid BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN amount_refunded BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN carrier TEXT;
ALTER TABLE orders ADD COLUMN tracking_number TEXT;
ALTER TABLE orders ADD COLUMN estimated_delivery BIGINT;
ALTER TABLE orders ADD COLUMN paid_at BIGINT;
ALTER TABLE orders ADD COLUMN fulfilled_at BIGINT;
ALTER TABLE orders ADD COLUMN shipped_at BIGINT;
ALTER TABLE orders ADD COLUMN delivered_at BIGINT;
ALTER TABLE orders ADD COLUMN cancelled_at BIGINT;

-- The object's status after the change: the timeline is the events where it changed.
ALTER TABLE events ADD COLUMN object_status TEXT;

CREATE TABLE payments (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL,
    mode             TEXT NOT NULL,
    order_id         TEXT NOT NULL REFERENCES orders (id),
    method           TEXT NOT NULL CHECK (method IN ('usdc', 'card')),
    status           TEXT NOT NULL,
    amount           BIGINT NOT NULL CHECK (amount > 0),
    amount_refunded  BIGINT NOT NULL DEFAULT 0,
    currency         TEXT NOT NULL,
    network_fee      BIGINT NOT NULL,
    processing_fee   BIGINT NOT NULL,
    wallet_address   TEXT,
    card_brand       TEXT,
    card_last4       TEXT,
    card_token       TEXT,
    transaction_hash TEXT,
    billing_address  JSON,
    created_at       BIGINT NOT NULL,
    CHECK (amount_refunded BETWEEN 0 AND amount)
);
CREATE INDEX payments_order ON payments (order_id, created_at);

CREATE TABLE refunds (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL,
    mode             TEXT NOT NULL,
    order_id         TEXT NOT NULL REFERENCES orders (id),
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    amount           BIGINT NOT NULL CHECK (amount > 0),
    reason           TEXT,
    transaction_hash TEXT,
    created_at       BIGINT NOT NULL
);
CREATE INDEX refunds_order ON refunds (order_id, created_at);

-- Accounts per workspace and mode: payer wallets (by address), and the system accounts
-- 'merchant', 'fees' and 'faucet' (sandbox minting). Only wallets keep a running balance (they
-- must never go negative); system balances are sums of their entries, so payments never queue
-- on one hot row.
CREATE TABLE ledger_accounts (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    mode          TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('wallet', 'merchant', 'fees', 'faucet')),
    address       TEXT NOT NULL,
    balance       BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    UNIQUE (workspace_id, mode, address),
    CHECK (kind <> 'wallet' OR balance >= 0)
);

CREATE TABLE ledger_transactions (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    mode          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    reference     TEXT,
    hash          TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL
);

-- Every transaction's entries sum to zero (the writer checks before inserting).
CREATE TABLE ledger_entries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  TEXT NOT NULL REFERENCES ledger_transactions (id),
    account_id      TEXT NOT NULL REFERENCES ledger_accounts (id),
    amount          BIGINT NOT NULL CHECK (amount <> 0),
    created_at      BIGINT NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);
