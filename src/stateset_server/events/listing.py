"""The event list's fields for the shared list engine."""

from __future__ import annotations

from stateset_server.core.listing import Field, ListSpec

__all__ = ["EVENT_LIST"]

_CREATED = Field("created_at", "datetime", sortable=True)

EVENT_LIST = ListSpec(
    table="events",
    fields={
        "id": Field("id", "string", selective=True),
        "type": Field("type", "string", wildcard=True),
        "object_id": Field("object_id", "string", selective=True),
        "object_type": Field("object_type", "string"),
        "created": _CREATED,
        "created_at": _CREATED,
        "seq": Field("seq", "integer", sortable=True),
    },
    aliases={"created_after": ("created_at", "gt"), "created_before": ("created_at", "lt")},
    search=("type", "object_id"),
    default_sort=("seq", "desc"),
)
