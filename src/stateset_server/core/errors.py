"""The error catalog and the one exception type every layer raises.

Each code has exactly one HTTP status, so clients can branch on the code alone. The catalog is also
what the OpenAPI document, the README and the `/docs/errors/{code}` pages are generated from.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CATALOG", "ApiError"]

# code -> (HTTP status, what it means)
CATALOG: dict[str, tuple[int, str]] = {
    "VALIDATION_ERROR": (422, "The request body or parameters failed validation (400 when the body is not JSON)."),
    "MISSING_REQUIRED_FIELD": (422, "A required field was not provided."),
    "INVALID_FIELD_FORMAT": (422, "A field has the right type but the wrong format (e.g. an amount or email)."),
    "INVALID_API_KEY": (401, "The API key is unknown, malformed or revoked."),
    "MISSING_API_KEY": (401, "No API key was provided in the Authorization header."),
    "INSUFFICIENT_PERMISSIONS": (403, "The API key does not have the scope this operation requires."),
    "PAYMENT_FAILED": (402, "The payment was declined or could not be made; details.reason says why. Nothing moved."),
    "RESOURCE_NOT_FOUND": (404, "The resource does not exist, or belongs to another workspace or mode."),
    "ROUTE_NOT_FOUND": (404, "No endpoint exists at this path."),
    "METHOD_NOT_ALLOWED": (405, "The endpoint exists but does not accept this HTTP method."),
    "RESOURCE_ALREADY_EXISTS": (409, "A resource with the same identifier already exists."),
    "RESOURCE_CONFLICT": (409, "The operation conflicts with the resource's current state."),
    "IDEMPOTENCY_KEY_REUSED": (422, "The Idempotency-Key was already used with a different request body or path."),
    "IDEMPOTENCY_IN_PROGRESS": (
        409,
        "A request with the same Idempotency-Key is still being processed; retry shortly.",
    ),
    "INSUFFICIENT_INVENTORY": (422, "Not enough stock: details name the SKU, the requested and available quantity."),
    "PAYLOAD_TOO_LARGE": (413, "The request body is larger than the 10 MB limit."),
    "UNSUPPORTED_MEDIA_TYPE": (415, "The request body's content type is not supported."),
    "RATE_LIMITED": (429, "Too many requests; retry after the number of seconds given."),
    "INTERNAL_ERROR": (500, "Something went wrong on the server; the request id helps find it in the logs."),
    "SERVICE_UNAVAILABLE": (503, "A dependency of the server (such as the database) is unavailable."),
}


class ApiError(Exception):
    """An error with a stable code that becomes the documented error envelope."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.status = status if status is not None else CATALOG[code][0]
        self.headers = headers or {}

    @classmethod
    def not_found(cls, kind: str, object_id: str) -> ApiError:
        return cls(
            "RESOURCE_NOT_FOUND",
            f"No such {kind}: '{object_id}'",
            {"resource": kind, "id": object_id},
        )

    @classmethod
    def field(
        cls,
        field: str,
        issue: str,
        *,
        expected: str,
        received: Any = None,
        code: str = "INVALID_FIELD_FORMAT",
    ) -> ApiError:
        details = {"field": field, "issue": issue, "expected": expected, "received": received}
        return cls(code, f"Invalid value for '{field}': {issue}", details)
