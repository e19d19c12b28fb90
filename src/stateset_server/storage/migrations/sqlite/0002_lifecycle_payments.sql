-- The order lifecycle (state, shipment, money received and returned), payments, refunds, and the
-- double-entry USDC ledger. Amounts are integer micro-units; times are Unix microseconds.

ALTER TABLE orders ADD COLUMN resume_status TEXT;
ALTER TABLE orders ADD COLUMN status_reason TEXT;
ALTER TABLE orders ADD COLUMN amount_paid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN amount_refunded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN carrier TEXT;
ALTER TABLE orders ADD COLUMN tracking_number TEXT;
ALTER TABLE orders ADD COLUMN estimated_delivery INTEGER;
ALTER TABLE orders ADD COLUMN paid_at INTEGER;
ALTER TABLE orders ADD COLUMN fulfilled_at INTEGER;
ALTER TABLE orders ADD COLUMN shipped_at INTEGER;
ALTER TABLE orders ADD COLUMN delivered_at INTEGER;
ALTER TABLE orders ADD COLUMN cancelled_at INTEGER;

-- The object's status after the change: the timeline is the events where it changed.
ALTER TABLE events ADD COLUMN object_status TEXT;

CREATE TABLE payments (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL,
    mode             TEXT NOT NULL,
    order_id         TEXT NOT NULL REFERENCES orders (id),
    method           TEXT NOT NULL CHECK (method IN ('usdc', 'card')),
    status           TEXT NOT NULL,
    amount           INTEGER NOT NULL CHECK (amount > 0),
    amount_refunded  INTEGER NOT NULL DEFAULT 0,
    currency         TEXT NOT NULL,
    network_fee      INTEGER NOT NULL,
    processing_fee   INTEGER NOT NULL,
    wallet_address   TEXT,
    card_brand       TEXT,
    card_last4       TEXT,
    card_token       TEXT,
    transaction_hash TEXT,
    billing_address  TEXT,
    created_at       INTEGER NOT NULL,
    CHECK (amount_refunded BETWEEN 0 AND amount)
);
CREATE INDEX payments_order ON payments (order_id, created_at);

CREATE TABLE refunds (
    id               TEXT PRIMARY KEY,
    workspace_id     TEXT NOT NULL,
    mode             TEXT NOT NULL,
    order_id         TEXT NOT NULL REFERENCES orders (id),
    payment_id       TEXT NOT NULL REFERENCES payments (id),
    amount           INTEGER NOT NULL CHECK (amount > 0),
    reason           TEXT,
    transaction_hash TEXT,
    created_at       INTEGER NOT NULL
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
    balance       INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
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
    created_at    INTEGER NOT NULL
);

-- Every transaction's entries sum to zero (the writer checks before inserting).
CREATE TABLE ledger_entries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    transaction_id  TEXT NOT NULL REFERENCES ledger_transactions (id),
    account_id      TEXT NOT NULL REFERENCES ledger_accounts (id),
    amount          INTEGER NOT NULL CHECK (amount <> 0),
    created_at      INTEGER NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_transaction ON ledger_entries (transaction_id);
