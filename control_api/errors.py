"""One error type for the services and one JSON shape for every error the API returns:
``{"error": {"code": ..., "message": ..., "details": ...}}``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class ServiceError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def not_found(what: str) -> ServiceError:
    return ServiceError(404, "not_found", f"{what} not found")


def forbidden(message: str, code: str = "forbidden") -> ServiceError:
    return ServiceError(403, code, message)


def conflict(code: str, message: str, details: Any = None) -> ServiceError:
    return ServiceError(409, code, message, details)


def unavailable(code: str, message: str) -> ServiceError:
    return ServiceError(503, code, message)


def unauthorized(message: str, code: str = "unauthorized") -> ServiceError:
    return ServiceError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="videoconf"'})


def invalid(message: str, details: Any = None, code: str = "validation_error") -> ServiceError:
    return ServiceError(422, code, message, details)


MAX_MESSAGE = 500  # characters of an error message
MAX_QUOTE = 200  # characters of any string in the details (field names may come from the request)
MAX_ITEMS = 50  # entries of any list or object in the details


def bounded(value: Any, limit: int = MAX_QUOTE) -> Any:
    """``value`` with every string cut to ``limit`` characters and every collection to
    ``MAX_ITEMS`` entries, so that no error can echo a large part of a request back."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "..."
    if isinstance(value, (list, tuple)):
        return [bounded(v) for v in value[:MAX_ITEMS]]
    if isinstance(value, dict):
        return {bounded(k): bounded(v) for k, v in list(value.items())[:MAX_ITEMS]}
    return value


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": code, "message": bounded(message, MAX_MESSAGE), "details": bounded(details)}}
    return web.Response(
        status=status,
        body=json.dumps(body, default=str).encode(),
        content_type="application/json",
        headers=headers,
    )


# The code used for aiohttp's own HTTP errors (unknown route, wrong method, ...).
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "rate_limited",
}
