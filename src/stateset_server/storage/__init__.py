"""Storage: one async transaction interface over two engines (SQLite, PostgreSQL).

Business code writes `async def` functions that take a `Tx` and issue parameterised SQL with `$n`
placeholders. PostgreSQL runs them on asyncpg; SQLite runs the very same functions synchronously in
its group-commit writer thread (they never await anything but the `Tx`). Only this package knows the
dialect.
"""

from stateset_server.storage.database import Database, Row, Tx, open_database, with_database

__all__ = ["Database", "Row", "Tx", "open_database", "with_database"]
