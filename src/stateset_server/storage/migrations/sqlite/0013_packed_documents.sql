-- PostgreSQL's migration 13 turns the document columns into bytes for packed documents
-- (storage/packing.py). A SQLite column keeps a BLOB as it is whatever its declared type, and the
-- reader tells a packed document (a BLOB) from one written before (TEXT). This migration keeps both
-- engines' migrations numbered alike.
SELECT 1;
