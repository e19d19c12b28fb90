-- Plans SQLite's planner chose without statistics (nothing here runs ANALYZE) that walked an index as
-- large as a workspace or the whole database for a few rows. Timings on skewed data: 20,000 orders in
-- each of two workspaces, with their reservations, returns, events, movements and deliveries.

-- An order is read with its active reservations (`orders/repository._get_order_sql`, every pay,
-- fulfil, cancel and update reads it so). With an index on order_id alone, SQLite's planner (the
-- database has no statistics) looked them up through `reservations_expiry (status, ...)`: every
-- active reservation of every workspace, per order read (10 ms with 20,000 active, not 44 us).
-- Releasing an order's expired ones (`inventory/stock.release_order`) adds a range on expires_at,
-- which took it to the same index (21 ms, not 23 us). All three columns in one index leave it no
-- such choice, and serve the other reads by order.
CREATE INDEX reservations_order_status ON reservations (order_id, status, expires_at);
DROP INDEX reservations_order;

-- An order's counted returns (`returns/repository.returned_quantities` and `allocated`, before each
-- return and refund) and `GET /v1/returns?order_id=`: with order_id alone indexed, SQLite walked the
-- workspace's returns on `returns_status` or `returns_created` (4-10 ms with 10,000, not 20 us).
-- Workspace, mode and order in one index; created_at, id give the list its order.
DROP INDEX returns_order;
CREATE INDEX returns_order ON returns (workspace_id, mode, order_id, created_at, id);

-- A page of returns reads their restocks (`returns/repository.restocks_of`, `reference IN (...)`):
-- for two or more, SQLite walked the workspace's movements on `inventory_movements_sku` (39-51 ms
-- with 90,000, not 51 us). With workspace and mode after the reference it looks each one up.
DROP INDEX inventory_movements_reference;
CREATE INDEX inventory_movements_reference ON inventory_movements (reference, workspace_id, mode);

-- `GET /v1/orders?customer_email=` (newest first) walked the workspace's orders on `orders_created`
-- to skip sorting the customer's (20 ms with 20,000, not 81 us); created_at after the email gives
-- that order. `sort=customer_email` still reads this index in email order; its id tiebreak is
-- sorted within each email (a few rows; all of one email's orders if a page falls among them).
DROP INDEX orders_email;
CREATE INDEX orders_email ON orders (workspace_id, mode, customer_email, created_at, id);

-- An endpoint's queue failed when it is disabled (`webhooks/repository.cancel_pending`), and its
-- deliveries listed by status or by event_id: SQLite walked every delivery of the endpoint on
-- `webhook_deliveries_endpoint` (18-31 ms with 10,000, not 20-130 us).
CREATE INDEX webhook_deliveries_status ON webhook_deliveries (workspace_id, mode, endpoint_id, status, created_at, id);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (workspace_id, mode, endpoint_id, event_id, created_at, id);
