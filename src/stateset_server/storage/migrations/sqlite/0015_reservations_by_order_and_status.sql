-- An order is read with its active reservations (`orders/repository._get_order_sql`, every pay,
-- fulfil, cancel and update reads it so). With an index on order_id alone, SQLite's planner (the
-- database has no statistics) looked them up through `reservations_expiry (status, ...)`: every
-- active reservation of every workspace, per order read (10 ms with 20,000 active, not 44 us).
-- Both equalities in one index leave it no such choice, and serve the other reads by order.
CREATE INDEX reservations_order_status ON reservations (order_id, status);
DROP INDEX reservations_order;
