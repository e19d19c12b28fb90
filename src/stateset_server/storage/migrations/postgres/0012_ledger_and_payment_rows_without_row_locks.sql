-- Each foreign key checked on insert takes a FOR KEY SHARE lock on the row it references. Every
-- payment's ledger entries reference the workspace's merchant and fee accounts, so every payment
-- locked the same two rows: locked by several transactions at once, a row's lock becomes a MultiXact,
-- written to the WAL, and the wallet rows being debited were locked the same way. With these keys
-- a payment cost PostgreSQL about a quarter more (docs/benchmarks.md, session 8).
--
-- What the keys guarded is kept by how the rows are written: entries are inserted only by
-- `payments/ledger.post`, in the statement that inserts their transaction, with account ids read
-- from `ledger_accounts`; a payment only in the statement that updates its order. Nothing deletes
-- orders, payments, ledger accounts or transactions. tests/e2e/test_payments.py audits the links.
-- SQLite keeps its keys: there a check is an index probe under the one writer, and takes no lock.
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_transaction_id_fkey;
ALTER TABLE payments DROP CONSTRAINT payments_order_id_fkey;
