-- The JSON documents (an order, an event's snapshot, a stored idempotent response) are 1-4 KB.
-- Past ~2 KB a row is TOASTed: PostgreSQL compressed each one with pglz on every write, about 6 %
-- of the machine's CPU under a write load. Kept inline and uncompressed up to a page's worth, they
-- cost some disk and no CPU; larger ones are still compressed or moved out of line.
ALTER TABLE orders SET (toast_tuple_target = 8160);
ALTER TABLE events SET (toast_tuple_target = 8160);
ALTER TABLE idempotency_keys SET (toast_tuple_target = 8160);
ALTER TABLE webhook_deliveries SET (toast_tuple_target = 8160);
