"""Workspace endpoints: `GET /v1/workspace` (the caller's plan and limits) and
`PUT /v1/workspaces/{workspace_id}/plan` (operator workspaces only)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta
from starlette.requests import Request
from starlette.responses import Response

from stateset_server.core import idempotency
from stateset_server.core.clock import iso
from stateset_server.core.errors import ApiError
from stateset_server.core.http import ApiRoute, json_response, read_json, rendered
from stateset_server.storage import Row, Tx
from stateset_server.workspaces import repository
from stateset_server.workspaces.keys import Principal
from stateset_server.workspaces.plans import LIMIT_FIELDS, PlanError, effective_limits, parse_limit, validate_plan

__all__ = ["ROUTES", "workspace_out"]

# Scopes no restricted key can hold (they are not in keys.RESOURCES): secret keys only.
READ_SCOPE = "workspace:read"
MANAGE_SCOPE = "workspaces:write"

CustomLimit = Annotated[int, Meta(ge=0)] | Literal["unlimited"] | None


class LimitsOut(msgspec.Struct):
    per_second: int | None
    per_minute: int | None
    per_day: int | None
    concurrent: int | None


class WorkspaceOut(msgspec.Struct):
    id: str
    name: str
    plan: str
    limits: LimitsOut  # in effect; null = unlimited
    custom_limits: LimitsOut  # Enterprise overrides; null = the plan's value, 0 = unlimited
    operator: bool
    created_at: str
    object: str = "workspace"


class PlanIn(msgspec.Struct, forbid_unknown_fields=True):
    """A plan and, on Enterprise, custom limits (0 or "unlimited": no limit). Omitted limits take the
    plan's value: the request replaces every custom limit."""

    plan: Annotated[str, Meta(max_length=32)]
    per_second: CustomLimit = None
    per_minute: CustomLimit = None
    per_day: CustomLimit = None
    concurrent: CustomLimit = None


def workspace_out(row: Row) -> WorkspaceOut:
    custom = {name: row[name] for name in LIMIT_FIELDS}
    limits = effective_limits(row["plan"], *(custom[name] for name in LIMIT_FIELDS))
    return WorkspaceOut(
        id=row["id"],
        name=row["name"],
        plan=row["plan"],
        limits=LimitsOut(**limits.as_dict()),
        custom_limits=LimitsOut(**custom),
        operator=bool(row["operator"]),
        created_at=iso(row["created_at"]),
    )


async def retrieve_workspace(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    row = await request.app.state.db.read(lambda tx: repository.get_workspace(tx, principal.workspace_id))
    if row is None:  # the key was found a moment ago; only a concurrent deletion could get here
        raise ApiError.not_found("workspace", principal.workspace_id)
    return json_response(workspace_out(row))


def _updated(workspace: WorkspaceOut) -> tuple[int, WorkspaceOut]:
    return 200, workspace


async def set_workspace_plan(request: Request, principal: Principal | None) -> Response:
    assert principal is not None
    caller = await request.app.state.db.read(lambda tx: repository.get_workspace(tx, principal.workspace_id))
    if caller is None or not caller["operator"]:
        raise ApiError(
            "INSUFFICIENT_PERMISSIONS",
            "Only secret keys of the operator workspace can change plans.",
            {"required": "operator workspace", "workspace_id": principal.workspace_id},
        )
    body = await read_json(request, PlanIn)
    workspace_id = request.path_params["workspace_id"]
    try:
        custom = {name: parse_limit(getattr(body, name), name) for name in LIMIT_FIELDS}
        plan, limits = validate_plan(body.plan, custom)
    except PlanError as exc:
        code = "INVALID_FIELD_FORMAT" if exc.field == "plan" else "VALIDATION_ERROR"
        raise ApiError.field(
            exc.field, str(exc), expected=_expected(exc.field), received=getattr(body, exc.field, None), code=code
        ) from None

    async def write(tx: Tx) -> WorkspaceOut:
        row = await repository.set_plan(tx, workspace_id, plan, limits)
        if row is None:
            raise ApiError.not_found("workspace", workspace_id)
        return workspace_out(row)

    idempotency.bind(_updated)
    return rendered(_updated, await request.app.state.db.write(write))


def _expected(field: str) -> str:
    if field == "plan":
        return "free, starter, growth, scale or enterprise"
    return "no custom limit except on the enterprise plan; there, 0 or 'unlimited' or a positive whole number"


ROUTES = [
    ApiRoute(
        "GET",
        "/v1/workspace",
        retrieve_workspace,
        scope=READ_SCOPE,
        summary="The caller's workspace: its plan and the rate limits of its keys",
        tag="Workspaces",
        response=WorkspaceOut,
    ),
    ApiRoute(
        "PUT",
        "/v1/workspaces/{workspace_id}/plan",
        set_workspace_plan,
        scope=MANAGE_SCOPE,
        summary="Change a workspace's plan and custom limits (secret keys of the operator workspace)",
        tag="Workspaces",
        request_body=PlanIn,
        response=WorkspaceOut,
        errors=("RESOURCE_NOT_FOUND", "VALIDATION_ERROR", "INVALID_FIELD_FORMAT"),
    ),
]
