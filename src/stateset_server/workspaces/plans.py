"""Plans and their rate limits, pure: the API reference's table, Enterprise custom limits, validation.

A workspace has a plan and, on Enterprise only, custom limits that replace the plan's value window by
window. In the database a custom limit is NULL ("the plan's value"), 0 ("unlimited") or a positive
number; `Limits` uses None for "unlimited".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "DEFAULT_PLAN",
    "LIMIT_FIELDS",
    "PLANS",
    "Limits",
    "PlanError",
    "default_plan",
    "effective_limits",
    "parse_limit",
    "validate_plan",
]

# The window fields in the order they are shown: per second (burst), per minute, per day, in flight.
LIMIT_FIELDS = ("per_second", "per_minute", "per_day", "concurrent")
DEFAULT_PLAN = "enterprise"  # self-hosters and existing installations are never throttled unless they choose


@dataclass(frozen=True, slots=True)
class Limits:
    """Effective limits of one API key; None means unlimited."""

    per_second: int | None
    per_minute: int | None
    per_day: int | None
    concurrent: int | None

    def as_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


PLANS: dict[str, Limits] = {
    "free": Limits(per_second=100, per_minute=60, per_day=1_000, concurrent=10),
    "starter": Limits(per_second=200, per_minute=100, per_day=10_000, concurrent=25),
    "growth": Limits(per_second=1_000, per_minute=1_000, per_day=100_000, concurrent=100),
    "scale": Limits(per_second=5_000, per_minute=5_000, per_day=500_000, concurrent=500),
    # "Custom" in the API reference. The defaults leave room for benchmarks at 20,000+ requests/s on one
    # key (1.2 M/min) while still stopping a runaway client; operators tune them with custom limits.
    "enterprise": Limits(per_second=50_000, per_minute=2_000_000, per_day=None, concurrent=None),
}


class PlanError(ValueError):
    """A plan or custom limit that cannot be set; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def default_plan() -> str:
    """The plan new workspaces get: $STATESET_DEFAULT_PLAN, else Enterprise."""
    plan = (os.environ.get("STATESET_DEFAULT_PLAN") or DEFAULT_PLAN).strip().lower()
    if plan not in PLANS:
        raise PlanError("STATESET_DEFAULT_PLAN", f"STATESET_DEFAULT_PLAN must be one of {', '.join(PLANS)}")
    return plan


def parse_limit(text: str | int | None, field: str = "limit") -> int | None:
    """A custom limit as typed by a person or sent as JSON: a non-negative integer, or "unlimited"
    (stored as 0). None stays None: use the plan's value."""
    if text is None:
        return None
    if isinstance(text, str):
        cleaned = text.strip().lower().replace(",", "").replace("_", "")
        if cleaned == "unlimited":
            return 0
        if not cleaned.isdigit():
            raise PlanError(field, f"{field} must be a whole number or 'unlimited', got {text!r}")
        return int(cleaned)
    if isinstance(text, bool) or text < 0:
        raise PlanError(field, f"{field} must be 0 (unlimited) or a positive whole number, got {text!r}")
    return int(text)


def validate_plan(plan: str, custom: dict[str, int | None]) -> tuple[str, dict[str, int | None]]:
    """The plan name and custom limits to store, or PlanError. Custom limits are an Enterprise feature:
    the other plans are exactly the published table."""
    name = plan.strip().lower()
    if name not in PLANS:
        raise PlanError("plan", f"unknown plan {plan!r}; plans: {', '.join(PLANS)}")
    cleaned = {field: custom.get(field) for field in LIMIT_FIELDS}
    for field, value in cleaned.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise PlanError(field, f"{field} must be 0 (unlimited) or a positive whole number, got {value!r}")
    given = [field for field, value in cleaned.items() if value is not None]
    if given and name != "enterprise":
        raise PlanError(
            given[0],
            f"custom limits ({', '.join(given)}) are only available on the enterprise plan;"
            f" the {name} plan's limits are fixed",
        )
    return name, cleaned


@lru_cache(maxsize=1024)
def effective_limits(
    plan: str,
    per_second: int | None = None,
    per_minute: int | None = None,
    per_day: int | None = None,
    concurrent: int | None = None,
) -> Limits:
    """The limits a key of a workspace gets: the plan's, with each stored custom value (0 = unlimited)
    in place of the plan's. Cached: the authentication query returns these columns on every request."""
    base = PLANS.get(plan, PLANS[DEFAULT_PLAN])

    def pick(custom: int | None, planned: int | None) -> int | None:
        if custom is None:
            return planned
        return None if custom == 0 else custom

    return Limits(
        per_second=pick(per_second, base.per_second),
        per_minute=pick(per_minute, base.per_minute),
        per_day=pick(per_day, base.per_day),
        concurrent=pick(concurrent, base.concurrent),
    )
