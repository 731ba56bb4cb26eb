"""Declared endpoints: each route names its body, query and response models once, and that
declaration drives request parsing, validation, response encoding and the OpenAPI spec.

Request bodies are parsed straight from bytes by pydantic in strict mode with unknown fields
forbidden: malformed JSON is a 400, a body over the limit a 413, a wrong content type a 415,
and anything that does not fit the model a 422 naming each offending field.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError

from control_api.errors import ServiceError, conflict, invalid

UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PARAM = re.compile(r"\{(\w+)(?::[^{}]*(?:\{[^{}]*\}[^{}]*)*)?\}")

Authenticator = Callable[[web.Request], Awaitable[Any]]
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator")
# Checks, past any cache, that the caller's account still exists (401 when it does not).
Revalidator = Callable[[Any], Awaitable[None]]
REVALIDATOR: web.AppKey[Revalidator] = web.AppKey("revalidator")
MAX_BODY: web.AppKey[int] = web.AppKey("max_body", int)
RAW_BODY: web.RequestKey[bytes] = web.RequestKey("raw_body", bytes)  # the body once read (``read_body``)


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Callable[..., Awaitable[Any]]
    summary: str
    tags: tuple[str, ...]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    errors: tuple[int, ...] = ()
    produces: str = "application/json"
    description: str = ""
    extra_parameters: list[dict[str, Any]] = field(default_factory=list)
    # Other paths served by the same handler (the original VideoConf API's): routed alike,
    # documented as deprecated aliases of ``path``.
    aliases: tuple[str, ...] = ()
    # Server API: the API key scope the call needs (``control_api.server_auth``); set ``auth=False``.
    scope: str | None = None

    @property
    def name(self) -> str:
        return self.handler.__name__

    @property
    def openapi_path(self) -> str:
        return _PARAM.sub(lambda m: "{" + m.group(1) + "}", self.path)

    @property
    def path_params(self) -> list[str]:
        return _PARAM.findall(self.path)


class Api:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def route(
        self, method: str, path: str, *, summary: str, tags: tuple[str, ...] | str, **options: Any
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        def register(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            self.endpoints.append(
                Endpoint(
                    method=method,
                    path=path,
                    handler=handler,
                    summary=summary,
                    tags=(tags,) if isinstance(tags, str) else tags,
                    description=(handler.__doc__ or "").strip(),
                    **options,
                )
            )
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for endpoint in self.endpoints:
            handle = _wrap(endpoint)
            app.router.add_route(endpoint.method, endpoint.path, handle, name=endpoint.name)
            for number, alias in enumerate(endpoint.aliases, 1):
                app.router.add_route(endpoint.method, alias, handle, name=alias_name(endpoint, number))


def alias_name(endpoint: Endpoint, number: int) -> str:
    """The route name and operationId of an endpoint's ``number``-th alias (from 1)."""
    return f"{endpoint.name}_alias_{number}"


def _wrap(endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        kwargs: dict[str, Any] = {}
        if endpoint.auth:
            kwargs["user"] = await request.app[AUTHENTICATOR](request)
        if endpoint.scope is not None:
            from control_api.server_auth import require_key  # it imports the handlers, which import this

            kwargs["key"] = await require_key(request, endpoint.scope)
        if endpoint.query is not None:
            kwargs["query"] = parse_query(endpoint.query, request)
        if endpoint.body is not None:
            kwargs["body"] = await parse_body(endpoint.body, request)
        try:
            result = await endpoint.handler(request, **kwargs)
        except IntegrityError:
            await _revalidate(request, kwargs.get("user"))
            raise conflict("conflict", "the request clashed with a concurrent change; try again") from None
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=endpoint.status)
        return web.Response(
            status=endpoint.status,
            body=result.model_dump_json().encode(),
            content_type="application/json",
        )

    handle.__name__ = endpoint.name
    return handle


async def _revalidate(request: web.Request, user: Any) -> None:
    """A write that broke a constraint most often refers to a row deleted meanwhile; when that
    row is the caller's own account (its token still cached), the answer is 401."""
    if user is not None and REVALIDATOR in request.app:
        await request.app[REVALIDATOR](user)


def _details(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(part) for part in (where, *error["loc"])),
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]


async def read_body(request: web.Request) -> bytes:
    """The raw request body, read once within the size limit and kept on the request (the server
    API checks a signed hash of it before the body is parsed)."""
    if RAW_BODY in request:
        return request[RAW_BODY]
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        raise ServiceError(413, "payload_too_large", f"request body is over {limit} bytes")
    if request.content_type != "application/json":
        raise ServiceError(
            415, "unsupported_media_type", "request body must be sent as application/json"
        )
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.read(65536):
            size += len(chunk)
            if size > limit:
                raise ServiceError(413, "payload_too_large", f"request body is over {limit} bytes")
            chunks.append(chunk)
    except (ConnectionError, ValueError) as exc:
        raise ServiceError(400, "bad_request", f"could not read the request body: {exc}") from exc
    request[RAW_BODY] = raw = b"".join(chunks)
    return raw


async def parse_body(model: type[BaseModel], request: web.Request) -> BaseModel:
    raw = await read_body(request)
    if not raw.strip():
        raise ServiceError(400, "malformed_json", "request body is empty; a JSON object is needed")
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise ServiceError(400, "malformed_json", "request body is not valid JSON") from None
        raise invalid("request body is not valid", _details(exc, "body")) from None


def parse_query(model: type[BaseModel], request: web.Request) -> BaseModel:
    values: dict[str, str] = {}
    for key in request.query:
        all_values = request.query.getall(key)
        if len(all_values) > 1:
            raise invalid(f"query parameter {key!r} is given more than once")
        values[key] = all_values[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise invalid("query parameters are not valid", _details(exc, "query")) from None


def path_uuid(request: web.Request, name: str) -> uuid.UUID:
    """Path parameters are matched by the UUID pattern, so this cannot fail on a routed request."""
    return uuid.UUID(request.match_info[name])
