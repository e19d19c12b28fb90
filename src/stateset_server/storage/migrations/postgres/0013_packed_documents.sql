-- The JSON documents (an order's, an event's snapshot, an idempotent response) are stored packed:
-- zstd frames made against a dictionary of our own JSON (storage/packing.py), bytes, not text.
-- Rows written before keep their JSON as its UTF-8 bytes, which the reader returns as they are.
ALTER TABLE orders ALTER COLUMN document TYPE BYTEA USING convert_to(document, 'UTF8');
ALTER TABLE events ALTER COLUMN data TYPE BYTEA USING convert_to(data::text, 'UTF8');
ALTER TABLE idempotency_keys ALTER COLUMN response TYPE BYTEA USING convert_to(response, 'UTF8');
