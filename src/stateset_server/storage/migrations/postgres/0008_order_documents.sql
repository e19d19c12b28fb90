-- Each order's JSON as the API shows it (without its request-dependent payment_url), rewritten in the
-- same transaction as every change to the order: a GET reads one row instead of four queries and
-- a re-render. NULL for orders written before this migration; those are rendered from their rows.
ALTER TABLE orders ADD COLUMN document TEXT;
