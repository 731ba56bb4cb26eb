"""The OpenAPI 3.1 document, generated from the route declarations and pydantic models, and the
interactive docs page (Swagger UI served from the swagger-ui-bundle package, no CDN)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from control_api.errors import HTTP_CODES
from control_api.routing import UUID_PATTERN, Endpoint, alias_name
from control_api.schemas import ErrorOut

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "Malformed request",
    401: "Not signed in, or the token is not valid",
    403: "Not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Request body is not JSON",
    416: "Range not satisfiable",
    422: "Validation failed",
    429: "Rate limited; see Retry-After",
    503: "The database (or another service the server needs) is unavailable; retry after Retry-After",
}


def build_spec(endpoints: list[Endpoint], *, title: str, version: str, server_url: str) -> dict[str, Any]:
    models: dict[tuple[type[BaseModel], str], None] = {(ErrorOut, "serialization"): None}
    for ep in endpoints:
        if ep.body is not None:
            models[(ep.body, "validation")] = None
        if ep.response is not None:
            models[(ep.response, "serialization")] = None
    refs, defs = models_json_schema(list(models), ref_template=REF)
    schemas = defs.get("$defs", {})

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        paths.setdefault(ep.openapi_path, {})[ep.method.lower()] = _operation(ep, refs)
        for number, alias in enumerate(ep.aliases, 1):
            twin = replace(ep, path=alias, aliases=())
            paths.setdefault(twin.openapi_path, {})[ep.method.lower()] = _alias_operation(ep, twin, number, refs)

    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Control API of VideoConf. Every error has the shape "
            '`{"error": {"code", "message", "details"}}`.',
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "serverApiKey": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A short-lived EdDSA JWT signed with an API key's secret (see the server API in the README)",
                },
            },
        },
    }


def _operation(ep: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": ep.name,
        "summary": ep.summary,
        "tags": list(ep.tags),
        "parameters": _parameters(ep),
        "responses": {},
    }
    if ep.description:
        operation["description"] = ep.description
    if ep.auth:
        operation["security"] = [{"bearerAuth": []}]
    if ep.scope is not None:
        operation["security"] = [{"serverApiKey": [ep.scope]}]
        operation["x-scope"] = ep.scope
    if ep.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(ep.body, "validation")]}},
        }
    operation["responses"] = {str(ep.status): _success(ep, refs), **_errors(ep, refs)}
    return operation


def _errors(ep: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    codes = set(ep.errors) | {503}  # any operation, while the database is away
    if ep.body is not None:
        codes |= {400, 413, 415, 422}
    if ep.query is not None:
        codes.add(422)
    error_ref = refs[(ErrorOut, "serialization")]
    return {
        str(code): {
            "description": ERROR_TEXT.get(code, HTTP_CODES.get(code, "Error")),
            "content": {"application/json": {"schema": error_ref}},
        }
        for code in sorted(codes)
    }


def _alias_operation(ep: Endpoint, twin: Endpoint, number: int, refs: dict[Any, Any]) -> dict[str, Any]:
    """The operation of an alias path: the canonical one's, marked deprecated, naming the
    canonical path in its description and in ``x-alias-of``."""
    operation = _operation(twin, refs)
    operation["operationId"] = alias_name(ep, number)
    operation["summary"] = f"{ep.summary} (alias of {ep.openapi_path})"
    operation["description"] = (
        f"Alias of `{ep.method} {ep.openapi_path}`, kept for clients of the original VideoConf API: "
        "the same behaviour, parameters and responses. New clients use the canonical path."
        + (f"\n\n{ep.description}" if ep.description else "")
    )
    operation["deprecated"] = True
    operation["x-alias-of"] = ep.openapi_path
    return operation


def _success(ep: Endpoint, refs: dict[Any, Any]) -> dict[str, Any]:
    if ep.status == 204:
        return {"description": "Done, no content"}
    if ep.response is not None:
        return {"description": "Success", "content": {ep.produces: {"schema": refs[(ep.response, "serialization")]}}}
    schema: dict[str, Any] = {"type": "string"}
    if not ep.produces.startswith("text/"):
        schema["format"] = "binary"
    return {"description": "Success", "content": {ep.produces: {"schema": schema}}}


def _parameters(ep: Endpoint) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in ep.path_params:
        schema: dict[str, Any] = {"type": "string"}
        if "{" + name + ":" + UUID_PATTERN + "}" in ep.path:
            schema["format"] = "uuid"
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if ep.query is not None:
        query_schema = ep.query.model_json_schema(ref_template=REF)
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    params.extend(ep.extra_parameters)
    return params


DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>VideoConf API</title>
<link rel="stylesheet" href="/api/docs/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/api/docs/static/swagger-ui-bundle.js"></script>
<script src="/api/docs/init.js"></script>
</body>
</html>
"""
# A file of its own, not an inline script: the page's Content-Security-Policy allows no inline code.
DOCS_INIT_JS = 'window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui"});\n'

