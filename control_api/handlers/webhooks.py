"""Webhook endpoints through the server API (an API key with the ``webhooks`` scope)."""

from __future__ import annotations

from aiohttp import web

from control_api.errors import ServiceError
from control_api.handlers import api, services
from control_api.routing import UUID_PATTERN, path_uuid
from control_api.server_auth import ApiKeyPrincipal
from control_api.webhook_schemas import (
    DeliveriesQuery,
    DeliveryOut,
    DeliveryPage,
    WebhookCreatedOut,
    WebhookCreateIn,
    WebhookList,
    WebhookOut,
    WebhookPatchIn,
)

SCOPE = "webhooks"
WEBHOOKS = "/api/server/webhooks"
WEBHOOK = WEBHOOKS + "/{webhook_id:" + UUID_PATTERN + "}"
KEY_ERRORS = (401, 403)
TAG = "webhooks"


def _delivery_id(request: web.Request) -> int:
    value = request.match_info["delivery_id"]
    if not value.isdigit() or len(value) > 18:
        raise ServiceError(404, "not_found", "delivery not found")
    return int(value)


@api.route(
    "POST", WEBHOOKS, summary="Create a webhook endpoint (its secret is shown once)", tags=TAG, auth=False, scope=SCOPE,
    body=WebhookCreateIn, response=WebhookCreatedOut, status=201, errors=KEY_ERRORS,
)
async def create_webhook(request: web.Request, key: ApiKeyPrincipal, body: WebhookCreateIn) -> WebhookCreatedOut:
    """422 ``unsafe_url`` when the URL's host resolves to a loopback, private, link-local or
    metadata address (unless the configuration allows it)."""
    return await services(request).webhooks.create(body)


@api.route(
    "GET", WEBHOOKS, summary="Webhook endpoints", tags=TAG, auth=False, scope=SCOPE, response=WebhookList, errors=KEY_ERRORS,
)
async def list_webhooks(request: web.Request, key: ApiKeyPrincipal) -> WebhookList:
    return await services(request).webhooks.list()


@api.route(
    "GET", WEBHOOK, summary="One webhook endpoint", tags=TAG, auth=False, scope=SCOPE, response=WebhookOut,
    errors=(*KEY_ERRORS, 404),
)
async def get_webhook(request: web.Request, key: ApiKeyPrincipal) -> WebhookOut:
    return await services(request).webhooks.get(path_uuid(request, "webhook_id"))


@api.route(
    "PATCH", WEBHOOK, summary="Change a webhook endpoint (URL, events, enabled, ordered)", tags=TAG, auth=False, scope=SCOPE,
    body=WebhookPatchIn, response=WebhookOut, errors=(*KEY_ERRORS, 404),
)
async def update_webhook(request: web.Request, key: ApiKeyPrincipal, body: WebhookPatchIn) -> WebhookOut:
    """Enabling an endpoint a failing streak disabled clears the reason; its pending deliveries
    are tried again."""
    return await services(request).webhooks.update(path_uuid(request, "webhook_id"), body)


@api.route(
    "DELETE", WEBHOOK, summary="Delete a webhook endpoint and its delivery log", tags=TAG, auth=False, scope=SCOPE,
    status=204, errors=(*KEY_ERRORS, 404),
)
async def delete_webhook(request: web.Request, key: ApiKeyPrincipal) -> None:
    await services(request).webhooks.delete(path_uuid(request, "webhook_id"))


@api.route(
    "GET", WEBHOOK + "/deliveries", summary="The endpoint's delivery log, newest first", tags=TAG, auth=False, scope=SCOPE,
    query=DeliveriesQuery, response=DeliveryPage, errors=(*KEY_ERRORS, 404),
)
async def list_webhook_deliveries(request: web.Request, key: ApiKeyPrincipal, query: DeliveriesQuery) -> DeliveryPage:
    """Pass ``next_cursor`` as ``cursor`` for older deliveries."""
    return await services(request).webhooks.deliveries(path_uuid(request, "webhook_id"), query)


@api.route(
    "POST", WEBHOOK + "/deliveries/{delivery_id:[0-9]+}/redeliver", summary="Send a delivery's event again",
    tags=TAG, auth=False, scope=SCOPE, response=DeliveryOut, status=201, errors=(*KEY_ERRORS, 404),
)
async def redeliver_webhook(request: web.Request, key: ApiKeyPrincipal) -> DeliveryOut:
    """A new delivery of the same event, with the same ``webhook-id``."""
    return await services(request).webhooks.redeliver(path_uuid(request, "webhook_id"), _delivery_id(request))
