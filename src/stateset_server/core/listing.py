"""Lists: one implementation of pagination, filters and sorting for every list endpoint.

A resource declares its fields once (`ListSpec`); a request's query string becomes a `ListQuery`
(validated, typed, every value later a bound parameter); `fetch_page` runs it. Pages come by `offset`
(max 10,000), the deprecated `page`, or an opaque `cursor` — a keyset position on the sort columns
plus the id, so cursor pages stay stable while rows are inserted or deleted, under any sort.

`total_count` is counted exactly up to 1,000 rows and reported as 1,000 with
`total_count_exact: false` beyond that, so no page ever scans a large table; `include=total_count`
asks for the exact count when a client really needs it. Cursor pages carry the first page's count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.datastructures import QueryParams

from stateset_server.core.errors import ApiError
from stateset_server.core.money import MICRO
from stateset_server.core.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from stateset_server.storage import Row, Tx
from stateset_server.workspaces.keys import Principal

__all__ = [
    "COUNT_CAP",
    "MAX_OFFSET",
    "Field",
    "ListQuery",
    "ListSpec",
    "Page",
    "fetch_page",
    "list_parameters",
    "parse_list_query",
]

MAX_OFFSET = 10_000
COUNT_CAP = 1_000
MAX_IN_VALUES = 100
OPERATORS = ("eq", "ne", "gte", "gt", "lte", "lt", "in", "like", "between")
RESERVED = {"limit", "offset", "cursor", "page", "sort", "order", "search", "include"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Field:
    """A filterable (and maybe sortable) field: its SQL expression and how its values are typed."""

    column: str
    kind: str  # "string", "money", "datetime", "integer", "enum"
    sortable: bool = False
    parse: Callable[[str], Any] | None = None  # enum: text → stored value (None when unknown)
    choices: tuple[str, ...] = ()  # enum: what to list in an error
    wildcard: bool = False  # string: `order.*` means the prefix `order.`
    # An equality on it matches a few rows (an id, an email, a reference) and an index leads with it:
    # on SQLite a page filtered so is read through that index and sorted, not walked in sort order.
    selective: bool = False


@dataclass(frozen=True)
class ListSpec:
    table: str
    fields: dict[str, Field]
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)  # param → (field, operator)
    search: tuple[str, ...] = ()
    default_sort: tuple[str, str] = ("created_at", "desc")
    id_column: str = "id"


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    values: tuple[Any, ...]


@dataclass
class ListQuery:
    conditions: list[Condition]
    search: str | None
    sort: list[tuple[str, str, str]]  # (field name, SQL expression, "asc" | "desc")
    limit: int
    offset: int
    cursor: dict[str, Any] | None
    exact_count: bool
    page_requested: bool = False

    @property
    def signature(self) -> str:
        return ",".join(f"{name}:{direction}" for name, _column, direction in self.sort)


@dataclass
class Page:
    rows: list[Row]
    has_more: bool
    next_cursor: str | None
    previous_cursor: str | None
    total_count: int
    total_exact: bool
    current_page: int | None
    limit: int

    def pagination(self) -> dict[str, Any]:
        return {
            "has_more": self.has_more,
            "next_cursor": self.next_cursor,
            "previous_cursor": self.previous_cursor,
            "total_count": self.total_count,
            "total_count_exact": self.total_exact,
            "page_count": math.ceil(self.total_count / self.limit) if self.total_count else 0,
            "current_page": self.current_page,
            "limit": self.limit,
        }


def _bad(param: str, issue: str, expected: str, received: Any) -> ApiError:
    return ApiError(
        "VALIDATION_ERROR",
        f"Invalid query parameter '{param}': {issue}",
        {"field": param, "issue": issue, "expected": expected, "received": received},
        status=400,
    )


def _integer(param: str, raw: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\d{1,9}", raw) or not low <= int(raw) <= high:
        raise _bad(param, "out of range", f"an integer from {low} to {high}", raw)
    return int(raw)


def _moment(param: str, raw: str, *, end_of_day: bool = False) -> int:
    text = raw.strip()
    try:
        if _DATE.match(text):
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
            moment = day + timedelta(days=1) if end_of_day else day
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+", 1) if "T" in text else text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise _bad(param, "not an ISO 8601 date or time", "2024-01-15 or 2024-01-15T10:30:00Z", raw) from None
    return int(moment.timestamp() * 1_000_000)


def _value(param: str, spec_field: Field, raw: str, *, end_of_day: bool = False) -> Any:
    if spec_field.kind == "money":
        try:
            amount = Decimal(raw.strip())
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite() or amount.as_tuple().exponent < -6 or abs(amount) > 10**12:  # type: ignore[operator]
            raise _bad(param, "not a decimal amount", "a decimal amount such as 100.00", raw)
        return int(amount * MICRO)
    if spec_field.kind == "datetime":
        return _moment(param, raw, end_of_day=end_of_day)
    if spec_field.kind == "integer":
        if not re.fullmatch(r"-?\d{1,18}", raw.strip()):
            raise _bad(param, "not an integer", "an integer", raw)
        return int(raw)
    if spec_field.kind == "enum":
        assert spec_field.parse is not None
        parsed = spec_field.parse(raw)
        if parsed is None:
            raise _bad(param, "unknown value", "one of " + ", ".join(spec_field.choices), raw)
        return parsed
    if len(raw) > 500:
        raise _bad(param, "too long", "at most 500 characters", raw[:50] + "…")
    return raw


def _split_param(name: str, spec: ListSpec) -> tuple[str, str] | None:
    if name in spec.aliases:
        return spec.aliases[name]
    if name in spec.fields:
        return name, "eq"
    for op in OPERATORS:
        suffix = f"_{op}"
        if name.endswith(suffix) and name[: -len(suffix)] in spec.fields:
            return name[: -len(suffix)], op
    return None


def _condition(param: str, field_name: str, op: str, raw: str, spec: ListSpec) -> Condition:
    spec_field = spec.fields[field_name]
    if op == "like":
        if spec_field.kind != "string":
            raise _bad(param, "only text fields take _like", "a text field", raw)
        return Condition(spec_field.column, "like", (_value(param, spec_field, raw),))
    if op in ("in", "between"):
        parts = [part.strip() for part in raw.split(",")]
        if op == "between":
            if len(parts) != 2:
                raise _bad(param, "takes two values", "low,high", raw)
            low = _value(param, spec_field, parts[0])
            high = _value(param, spec_field, parts[1], end_of_day=True)
            # A date-only upper bound includes its whole day.
            upper = "lt" if spec_field.kind == "datetime" and _DATE.match(parts[1]) else "lte"
            return Condition(spec_field.column, f"between_{upper}", (low, high))
        if not 1 <= len(parts) <= MAX_IN_VALUES:
            raise _bad(param, "takes 1 to 100 values", "a,b,c", raw)
        return Condition(spec_field.column, "in", tuple(_value(param, spec_field, part) for part in parts))
    if op in ("eq", "ne") and spec_field.wildcard and raw.endswith("*"):
        prefix = raw[:-1]
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return Condition(spec_field.column, "prefix" if op == "eq" else "not_prefix", (like,))
    return Condition(spec_field.column, op, (_value(param, spec_field, raw),))


def parse_list_query(params: QueryParams, spec: ListSpec) -> ListQuery:
    limit = _integer("limit", params["limit"], 1, MAX_LIMIT) if params.get("limit") else DEFAULT_LIMIT
    offset = _integer("offset", params["offset"], 0, MAX_OFFSET) if params.get("offset") else 0
    page_requested = False
    if params.get("page"):
        page = _integer("page", params["page"], 1, MAX_OFFSET // limit + 1)
        offset, page_requested = (page - 1) * limit, True
        if offset > MAX_OFFSET:
            raise _bad("page", "beyond the offset limit", f"offset at most {MAX_OFFSET}; use cursor", params["page"])

    conditions = []
    for name, raw in params.multi_items():
        if name in RESERVED:
            continue
        target = _split_param(name, spec)
        if target is None:
            allowed = sorted(set(spec.fields) | set(spec.aliases))
            raise _bad(
                name,
                "unknown filter",
                f"one of {', '.join(allowed)} (each also with _eq, _ne, _gt, _gte, _lt, _lte, _in, _like, _between)",
                raw,
            )
        conditions.append(_condition(name, target[0], target[1], raw, spec))

    sort_names = [s.strip() for s in (params.get("sort") or spec.default_sort[0]).split(",") if s.strip()]
    directions = [d.strip().lower() for d in (params.get("order") or "").split(",") if d.strip()]
    sort = []
    for index, name in enumerate(sort_names):
        direction = (
            directions[index] if index < len(directions) else ("asc" if params.get("sort") else spec.default_sort[1])
        )
        if name.startswith("-"):
            name, direction = name[1:], "desc"
        spec_field = spec.fields.get(name)
        if spec_field is None or not spec_field.sortable:
            sortable = sorted(n for n, f in spec.fields.items() if f.sortable)
            raise _bad("sort", f"cannot sort by '{name}'", "one of " + ", ".join(sortable), params.get("sort"))
        if direction not in ("asc", "desc"):
            raise _bad("order", "unknown direction", "asc or desc", params.get("order"))
        sort.append((name, spec_field.column, direction))
    if len(directions) > len(sort_names):
        raise _bad("order", "more directions than sort fields", "one direction per sort field", params.get("order"))
    # The id breaks ties deterministically, in the direction of the first sort field.
    sort.append(("id", spec.id_column, sort[0][2]))

    cursor = None
    if params.get("cursor"):
        cursor = decode_cursor(params["cursor"], {"k": list, "s": str, "d": str})
        if offset or page_requested:
            raise _bad("cursor", "cannot be combined with offset or page", "cursor alone", params["cursor"])
    search = params.get("search")
    if search is not None and not 1 <= len(search) <= 200:
        raise _bad("search", "1 to 200 characters", "a search text", search)
    exact = "total_count" in (params.get("include") or "").split(",")
    query = ListQuery(conditions, search, sort, limit, offset, cursor, exact, page_requested)
    if cursor is not None and cursor["s"] != query.signature:
        raise _bad(
            "cursor", "was issued for a different sort", f"a cursor from sort={query.signature}", params["cursor"]
        )
    return query


class _Sql:
    """Builds a WHERE clause with numbered placeholders; values are only ever bound parameters."""

    def __init__(self, dialect: str, args: list[Any], leading: str = "") -> None:
        self.dialect = dialect
        self.args = args
        self.leading = leading
        self.clauses: list[str] = []

    def filtered(self, column: str, op: str) -> str:
        """The column as a range filter sees it. On SQLite a range on another column than the leading
        sort column must not pick the index (measured on 1M orders: a wide `total` range chose the total
        index and sorted 380,000 rows — 740 ms; walking the sort index and filtering takes 0.2 ms).
        Equality and IN keep their indexes: they are selective. PostgreSQL's planner needs no hint."""
        if self.dialect == "sqlite" and op not in ("eq", "in") and column != self.leading:
            return f"+{column}"
        return column

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def like(self, column: str, pattern: str, *, negate: bool = False, escape: bool = False) -> str:
        # Case-insensitive on both engines (SQLite's LIKE already is, for ASCII).
        operator = "ILIKE" if self.dialect == "postgres" else "LIKE"
        clause = f"{column} {'NOT ' if negate else ''}{operator} {self.arg(pattern)}"
        return clause + (" ESCAPE '\\'" if escape else "")

    def add(self, condition: Condition) -> None:
        column, values = self.filtered(condition.column, condition.op), condition.values
        simple = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        if condition.op in simple:
            self.clauses.append(f"{column} {simple[condition.op]} {self.arg(values[0])}")
        elif condition.op == "in":
            self.clauses.append(f"{column} IN ({', '.join(self.arg(v) for v in values)})")
        elif condition.op.startswith("between_"):
            upper = "<" if condition.op == "between_lt" else "<="
            self.clauses.append(f"{column} >= {self.arg(values[0])} AND {column} {upper} {self.arg(values[1])}")
        elif condition.op == "like":
            self.clauses.append(self.like(column, values[0]))
        elif condition.op in ("prefix", "not_prefix"):
            self.clauses.append(self.like(column, values[0], negate=condition.op == "not_prefix", escape=True))
        else:  # pragma: no cover - parse_list_query only produces the operators above
            raise AssertionError(condition.op)


def _keyset(sql: _Sql, sort: list[tuple[str, str, str]], values: list[Any], forward: bool) -> str:
    """Rows after (forward) or before the position `values` in the sort order."""

    def after(direction: str) -> str:
        return ">" if (direction == "asc") == forward else "<"

    directions = {direction for _n, _c, direction in sort}
    if len(directions) == 1:  # one direction: a row-value comparison both engines can seek with an index
        columns = ", ".join(column for _n, column, _d in sort)
        placeholders = ", ".join(sql.arg(v) for v in values)
        return f"({columns}) {after(sort[0][2])} ({placeholders})"
    alternatives = []
    for index, (_name, column, direction) in enumerate(sort):
        equal = [f"{c} = {sql.arg(values[i])}" for i, (_n, c, _d) in enumerate(sort[:index])]
        alternatives.append("(" + " AND ".join([*equal, f"{column} {after(direction)} {sql.arg(values[index])}"]) + ")")
    return "(" + " OR ".join(alternatives) + ")"


def _narrowed(spec: ListSpec, query: ListQuery) -> bool:
    """Whether an equality on a selective field filters a page sorted by another column than its
    index gives in order: the selective fields' indexes go on with created_at, id (events': seq)."""
    leading = query.sort[0][1]
    if leading in ("created_at", "seq"):
        return False
    selective = {f.column for f in spec.fields.values() if f.selective}
    return any(c.op in ("eq", "in") and c.column in selective and c.column != leading for c in query.conditions)


async def fetch_page(tx: Tx, spec: ListSpec, query: ListQuery, principal: Principal, columns: str) -> Page:
    sql = _Sql(tx.dialect, [principal.workspace_id, principal.mode], leading=query.sort[0][1])
    sql.clauses = ["workspace_id = $1", "mode = $2"]
    for condition in query.conditions:
        sql.add(condition)
    if query.search:
        pattern = "%" + query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql.clauses.append("(" + " OR ".join(sql.like(c, pattern, escape=True) for c in spec.search) + ")")
    filters = " AND ".join(sql.clauses)
    filter_args = list(sql.args)

    # SQLite (no statistics) would rather walk the sort column's index than sort: with an equality on
    # a selective field that walks the whole workspace for a few rows (40 ms on 40,000 orders for
    # `customer_id=…&sort=total`, 52 µs read by customer and sorted). `+column` (in the order and in
    # a cursor's position) takes the sort's index out of the choice. Not for other filters: sorting
    # a common status's rows costs more than walking.
    hint = "+" if tx.dialect == "sqlite" and _narrowed(spec, query) else ""
    sort = [(name, hint + column, d) for name, column, d in query.sort]
    forward = query.cursor is None or query.cursor["d"] == "next"
    where = list(sql.clauses)
    if query.cursor is not None:
        if len(query.cursor["k"]) != len(query.sort):
            raise _bad("cursor", "malformed cursor", "a next_cursor value", None)
        where.append(_keyset(sql, sort, query.cursor["k"], forward))

    def direction(d: str) -> str:
        return d.upper() if forward else ("DESC" if d == "asc" else "ASC")

    order = ", ".join(f"{column} {direction(d)}" for _n, column, d in sort)
    keys = ", ".join(f"{column} AS _k{i}" for i, (_n, column, _d) in enumerate(query.sort))
    # The count (first pages only: later ones carry it in their cursor) rides in the page's statement
    # as a scalar subquery, run once (its parameters are the page's first ones): one round trip on
    # PostgreSQL instead of two. An empty page returns no row to carry it; it is then counted alone.
    if query.cursor is not None and "t" in query.cursor:
        counting = None
    elif query.exact_count:
        counting = f"SELECT count(*) FROM {spec.table} WHERE {filters}"
    else:
        counting = f"SELECT count(*) FROM (SELECT 1 FROM {spec.table} WHERE {filters} LIMIT {COUNT_CAP + 1}) AS capped"
    counted = f", ({counting}) AS _count" if counting else ""
    rows = await tx.fetch(
        f"SELECT {columns}, {keys}{counted} FROM {spec.table} WHERE {' AND '.join(where)} ORDER BY {order}"
        f" LIMIT {query.limit + 1} OFFSET {query.offset}",
        *sql.args,
    )
    extra = len(rows) > query.limit
    rows = rows[: query.limit]
    if not forward:
        rows.reverse()

    if counting is None:
        assert query.cursor is not None
        total, exact = int(query.cursor["t"]), bool(query.cursor["x"])
    else:
        found = int(rows[0]["_count"]) if rows else int(await tx.fetchval(counting, *filter_args))
        total, exact = (found, True) if query.exact_count else (min(found, COUNT_CAP), found <= COUNT_CAP)

    page_number = int(query.cursor.get("p", 1)) if query.cursor is not None else query.offset // query.limit + 1
    has_more = extra if forward else True
    has_previous = (extra if not forward else query.cursor is not None) or query.offset > 0

    def cursor_at(row: Row, way: str, page: int) -> str:
        position = [row[f"_k{i}"] for i in range(len(query.sort))]
        return encode_cursor({"k": position, "s": query.signature, "d": way, "t": total, "x": exact, "p": page})

    return Page(
        rows=rows,
        has_more=has_more,
        next_cursor=cursor_at(rows[-1], "next", page_number + 1) if rows and has_more else None,
        previous_cursor=cursor_at(rows[0], "prev", max(page_number - 1, 1)) if rows and has_previous else None,
        total_count=total,
        total_exact=exact,
        current_page=page_number,
        limit=query.limit,
    )


async def read_page(
    db: Any, spec: ListSpec, query: ListQuery, principal: Principal, columns: str, present: Callable[[Row], Any]
) -> tuple[list[Any], dict[str, Any]]:
    """One page of a list whose rows are shown one by one: (the shown rows, the pagination block)."""

    async def read(tx: Tx) -> tuple[list[Any], dict[str, Any]]:
        page = await fetch_page(tx, spec, query, principal, columns)
        return [present(row) for row in page.rows], page.pagination()

    result: tuple[list[Any], dict[str, Any]] = await db.read(read)
    return result


def list_parameters(spec: ListSpec) -> tuple[tuple[str, str, str], ...]:
    """The query parameters of a list, for its OpenAPI description."""
    sortable = ", ".join(sorted(n for n, f in spec.fields.items() if f.sortable))
    common = (
        ("limit", "integer", "1 to 100, default 10"),
        ("offset", "integer", f"0 to {MAX_OFFSET}"),
        ("cursor", "string", "next_cursor or previous_cursor of another page"),
        ("page", "integer", "deprecated: use offset or cursor"),
        ("sort", "string", f"comma-separated: {sortable}"),
        ("order", "string", "comma-separated asc/desc, one per sort field"),
        ("search", "string", "free text over " + ", ".join(spec.search)),
        ("include", "string", "total_count: count exactly even beyond 1,000 rows"),
    )
    kinds = {"money": "string", "datetime": "string", "integer": "integer", "enum": "string", "string": "string"}
    filters = tuple(
        (name, kinds[f.kind], f"{f.kind} filter; also {name}_eq/_ne/_gt/_gte/_lt/_lte/_in/_like/_between")
        for name, f in spec.fields.items()
    )
    aliases = tuple((name, "string", f"{target} {op}") for name, (target, op) in spec.aliases.items())
    return common + filters + aliases
