"""Storage: one async transaction interface over two engines (SQLite, PostgreSQL).

Business code writes `async def` functions that take a `Tx` and issue parameterised SQL with `$n`
placeholders. PostgreSQL runs them on asyncpg; SQLite runs the very same functions synchronously on
the event loop, inside its group-commit writer's transaction (they never await anything but the
`Tx`). Only this package knows the dialect.
"""

from stateset_server.storage.database import IN_WORKSPACE, Database, Row, Tx, open_database, with_database

__all__ = ["IN_WORKSPACE", "Database", "Row", "Tx", "open_database", "with_database"]
