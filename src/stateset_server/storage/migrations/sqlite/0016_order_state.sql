-- The order as the domain sees it (orders/model.py, msgpack), rewritten with the row by every change:
-- a command prepared ahead of its transaction (orders/lifecycle.py) decodes it instead of reading the
-- order's items and payments and converting every column (one row read, no subqueries). NULL for
-- orders written before this migration; those are read from their rows until their next change.
ALTER TABLE orders ADD COLUMN state BLOB;
