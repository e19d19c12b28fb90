"""Fewer round trips to PostgreSQL: a write transaction's INSERTs and UPDATEs that return nothing
are held back and sent together, as one statement of data-modifying CTEs, with the next statement
that needs an answer (or before COMMIT).

A create was seven round trips (BEGIN, a lookup, four INSERTs, COMMIT) and each one costs both this
process and the database server a message exchange; held back, its INSERTs are one statement (and
postgres.py sends that alone, without BEGIN or COMMIT, when nothing went before). Results are the same as
sending each statement at once, because a statement is held back only when nothing it does can be
seen by, or depend on, the others sent with it:

- it is a plain `INSERT … VALUES` or `UPDATE` that reads no other table (no SELECT, FROM or
  USING in it: the statements of one WITH all see the snapshot taken before any of them ran);
- no other held-back statement writes its table (PostgreSQL leaves two changes of one row in one
  statement undefined, and an UPDATE would not see a row INSERTed beside it);
- foreign keys are checked at the end of the combined statement, after all its parts ran.

A plain SELECT of tables that nothing held back writes runs at once, ahead of them: it could not see
their rows anyway. Everything else first sends what is held back, then runs as before; so does a
savepoint's start and end, so an error inside a savepoint is raised inside it. A statement that fails fails the combined
one with the same error, and the transaction rolls back as it would have.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_ARGS", "PendingWrites", "rows_statement", "tables_read", "target_table"]

MAX_ARGS = 30_000  # PostgreSQL takes at most 32,767 parameters in one statement
_TARGET = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE)\s+([A-Za-z_][A-Za-z_0-9]*)\b", re.IGNORECASE)
_READS = re.compile(r"\b(?:SELECT|FROM|USING|WITH|JOIN)\b", re.IGNORECASE)
_DISTINCT = re.compile(r"\bIS\s+(?:NOT\s+)?DISTINCT\s+FROM\b", re.IGNORECASE)  # a comparison, not a read
_VALUES = re.compile(r"^(\s*INSERT\s+INTO\s+[A-Za-z_][A-Za-z_0-9]*\s*\([^()]*\)\s*VALUES\s*)\((.*)\)\s*$", re.I | re.S)
_PLACEHOLDER = re.compile(r"\$(\d+)")
_SOURCES = re.compile(r"\b(?:FROM|JOIN)\s+(\S+)", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")
_targets: dict[str, str | None] = {}
_sources: dict[str, frozenset[str] | None] = {}
_rows_sql: dict[tuple[str, int, int], str | None] = {}


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    """Statement texts are few and recur; the caches are bounded all the same (IN lists vary)."""
    if len(cache) >= 4096:
        cache.clear()
    cache[key] = value


def target_table(sql: str) -> str | None:
    """The table a statement may be held back for, or None when it must run at once."""
    try:
        return _targets[sql]
    except KeyError:
        match = _TARGET.match(sql)
        reads = _READS.search(_DISTINCT.sub(" ", sql))
        table = match.group(1).lower() if match and not reads and "$$" not in sql else None
        _remember(_targets, sql, table)
        return table


def tables_read(sql: str) -> frozenset[str] | None:
    """The tables a plain SELECT reads, or None when that is not plain to see (a subquery in FROM,
    a WITH, not a SELECT). Where a word after FROM is not a table (`EXTRACT(… FROM x)`) it is
    counted as one anyway: a table too many only sends held-back writes sooner."""
    try:
        return _sources[sql]
    except KeyError:
        names = None
        if sql.lstrip()[:6].upper() == "SELECT" and "$$" not in sql:
            found = _SOURCES.findall(_DISTINCT.sub(" ", sql))
            if all(_NAME.match(name) for name in found):
                names = frozenset(name.lower() for name in found)
        _remember(_sources, sql, names)
        return names


def _renumber(sql: str, offset: int) -> str:
    if offset == 0:
        return sql
    return _PLACEHOLDER.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            return False
    return depth == 0


def rows_statement(sql: str, width: int, count: int) -> str | None:
    """`INSERT … VALUES (…)` for one row of `width` parameters as one statement for `count` rows;
    None when the statement is not that plain shape."""
    key = (sql, width, count)
    if key in _rows_sql:
        return _rows_sql[key]
    match = _VALUES.match(sql) if target_table(sql) else None
    out = None
    if match and _balanced(match.group(2)):  # else the "row" ran on into e.g. an ON CONFLICT clause
        numbers = [int(n) for n in _PLACEHOLDER.findall(match.group(2))]
        if numbers and max(numbers) == width:
            head, row = match.group(1), match.group(2)
            out = head + ", ".join(f"({_renumber(row, width * i)})" for i in range(count))
    _remember(_rows_sql, key, out)
    return out


_combined: dict[tuple[tuple[str, int], ...], str] = {}


def _combine(parts: tuple[tuple[str, int], ...]) -> str:
    """The statement text for parts given as (SQL, number of arguments), numbered in order."""
    ctes, offset, main = [], 0, ""
    for index, (sql, count) in enumerate(parts):
        text = _renumber(sql, offset)
        offset += count
        if index < len(parts) - 1:
            ctes.append(f"w{index} AS ({text})")
        else:
            main = text
    return f"WITH {', '.join(ctes)} {main}" if ctes else main


class PendingWrites:
    """The statements held back in one transaction, in order, and what they write."""

    __slots__ = ("_args", "_parts", "tables")

    def __init__(self) -> None:
        self._parts: list[tuple[str, Sequence[Any]]] = []
        self._args = 0
        self.tables: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._parts)

    def fits(self, table: str, nargs: int) -> bool:
        """Can a statement writing `table` with `nargs` parameters join the ones held back?"""
        return table not in self.tables and self._args + nargs <= MAX_ARGS

    def add(self, table: str, sql: str, args: Sequence[Any]) -> str:
        """Hold a statement back; its name as a CTE of `combined` (which a `last` may read)."""
        self._parts.append((sql, args))
        self._args += len(args)
        self.tables.add(table)
        return f"w{len(self._parts) - 1}"

    def combined(self, last: str | None = None, last_args: Sequence[Any] = ()) -> tuple[str, list[Any]]:
        """One statement: every held-back part as a CTE (`w0`, `w1`, … in order), then `last` (by
        default the last part) as the statement whose result is returned. Empties the buffer."""
        parts = self._parts if last is None else [*self._parts, (last, last_args)]
        args: list[Any] = []
        for _sql, part_args in parts:
            args.extend(part_args)
        key = tuple((sql, len(part_args)) for sql, part_args in parts)
        text = _combined.get(key)
        if text is None:
            text = _combine(key)
            _remember(_combined, key, text)
        self.clear()
        return text, args

    def clear(self) -> None:
        self._parts.clear()
        self._args = 0
        self.tables.clear()
