-- No query reads order items by SKU (items are read by order, and by id for returns), yet every
-- created order paid for the index on each item: one more B-tree insert per item, and on SQLite its
-- three rightmost leaves and their parent rewritten to the WAL by almost every commit (5 of a
-- create group's ~80 pages; docs/benchmarks.md, session 11). A SKU filter, if one is added, brings
-- back the index it needs.
DROP INDEX order_items_sku;
