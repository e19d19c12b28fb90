-- PostgreSQL's migration 12 drops the foreign keys of ledger entries and payments (its comment says
-- why). SQLite keeps them: there a check is an index probe under the one writer, and takes no lock.
-- This migration keeps both engines' migrations numbered alike.
SELECT 1;
