-- Customers, products, stock per location with reservations and a movement ledger, and returns (RMA).

CREATE TABLE customers (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    mode          TEXT NOT NULL,
    email         TEXT NOT NULL,
    email_key     TEXT NOT NULL,  -- lower-cased: emails are unique per workspace and mode, ignoring case
    first_name    TEXT,
    last_name     TEXT,
    phone         TEXT,
    tier          TEXT,
    addresses     TEXT NOT NULL DEFAULT '[]',
    metadata      TEXT NOT NULL DEFAULT '{}',
    version       INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    deleted_at    INTEGER
);
CREATE UNIQUE INDEX customers_email ON customers (workspace_id, mode, email_key) WHERE deleted_at IS NULL;
CREATE INDEX customers_created ON customers (workspace_id, mode, created_at, id);
CREATE INDEX customers_tier ON customers (workspace_id, mode, tier, created_at, id);

CREATE TABLE products (
    id                   TEXT PRIMARY KEY,
    workspace_id         TEXT NOT NULL,
    mode                 TEXT NOT NULL,
    sku                  TEXT NOT NULL,
    name                 TEXT NOT NULL,
    description          TEXT,
    category             TEXT,
    price                INTEGER,  -- micro-units in `currency`; NULL: orders must give the price
    currency             TEXT,
    track_inventory      INTEGER NOT NULL DEFAULT 1,
    low_stock_threshold  INTEGER,
    active               INTEGER NOT NULL DEFAULT 1,
    metadata             TEXT NOT NULL DEFAULT '{}',
    version              INTEGER NOT NULL DEFAULT 1,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    deleted_at           INTEGER
);
CREATE UNIQUE INDEX products_sku ON products (workspace_id, mode, sku) WHERE deleted_at IS NULL;
CREATE INDEX products_created ON products (workspace_id, mode, created_at, id);
CREATE INDEX products_category ON products (workspace_id, mode, category, created_at, id);

-- Stock of one SKU at one location. available = on_hand - reserved, never negative.
CREATE TABLE inventory_levels (
    workspace_id  TEXT NOT NULL,
    mode          TEXT NOT NULL,
    sku           TEXT NOT NULL,
    location      TEXT NOT NULL,
    on_hand       INTEGER NOT NULL DEFAULT 0,
    reserved      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, mode, sku, location),
    CHECK (on_hand >= 0),
    CHECK (reserved >= 0),
    CHECK (reserved <= on_hand)
);

-- Every change to on_hand or reserved, with its reason: the levels are the sum of these.
CREATE TABLE inventory_movements (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id    TEXT NOT NULL,
    mode            TEXT NOT NULL,
    sku             TEXT NOT NULL,
    location        TEXT NOT NULL,
    kind            TEXT NOT NULL,  -- adjust, set, transfer_in, transfer_out, reserve, release, commit, restock
    on_hand_delta   INTEGER NOT NULL,
    reserved_delta  INTEGER NOT NULL,
    reason          TEXT,
    reference       TEXT,  -- the order, reservation, transfer or return it belongs to
    created_at      INTEGER NOT NULL
);
CREATE INDEX inventory_movements_sku ON inventory_movements (workspace_id, mode, sku, location, id);
CREATE INDEX inventory_movements_reference ON inventory_movements (reference);

CREATE TABLE reservations (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    mode          TEXT NOT NULL,
    order_id      TEXT NOT NULL,
    sku           TEXT NOT NULL,
    location      TEXT NOT NULL,
    quantity      INTEGER NOT NULL CHECK (quantity > 0),
    status        TEXT NOT NULL,  -- active, committed, released, expired
    expires_at    INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX reservations_order ON reservations (order_id);
CREATE INDEX reservations_expiry ON reservations (status, expires_at);

CREATE TABLE returns (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL,
    mode              TEXT NOT NULL,
    order_id          TEXT NOT NULL REFERENCES orders (id),
    status            TEXT NOT NULL,  -- requested, approved, rejected, cancelled, received, processed
    reason            TEXT,
    refund_amount     INTEGER NOT NULL DEFAULT 0,
    refund_id         TEXT,
    restock_location  TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}',
    version           INTEGER NOT NULL DEFAULT 1,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX returns_order ON returns (order_id);
CREATE INDEX returns_created ON returns (workspace_id, mode, created_at, id);
CREATE INDEX returns_status ON returns (workspace_id, mode, status, created_at, id);

CREATE TABLE return_items (
    id             TEXT PRIMARY KEY,
    return_id      TEXT NOT NULL REFERENCES returns (id),
    order_item_id  TEXT NOT NULL,
    sku            TEXT NOT NULL,
    quantity       INTEGER NOT NULL CHECK (quantity > 0),
    unit_price     INTEGER NOT NULL
);
CREATE INDEX return_items_return ON return_items (return_id);
CREATE INDEX return_items_order_item ON return_items (order_item_id);
