"""``videoconf webhooks create|list|update|delete|deliveries|redeliver``: the webhook endpoints of
the configured database, as the server API manages them (the same service, the same checks).
Each command prints JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

from control_api.webhook_format import EVENT_TYPES


async def webhooks_command(settings: Any, args: argparse.Namespace) -> Any:
    from control_api.app import build_context
    from control_api.services.notifications import NotificationService
    from control_api.services.webhooks import WebhookService
    from control_api.webhook_schemas import DeliveriesQuery, WebhookCreateIn, WebhookPatchIn

    ctx = build_context(settings)
    webhooks = WebhookService(ctx, NotificationService(ctx))
    try:
        action = args.webhooks_command
        if action == "create":
            body = WebhookCreateIn(
                url=args.url, events=args.event or [], ordered=args.ordered, enabled=not args.disabled,
                notify_email=args.notify_email, description=args.description or "",
            )
            return (await webhooks.create(body)).model_dump(mode="json")
        if action == "list":
            return (await webhooks.list()).model_dump(mode="json")["items"]
        endpoint_id = uuid.UUID(args.endpoint_id)
        if action == "update":
            changes: dict[str, Any] = {}
            if args.url is not None:
                changes["url"] = args.url
            if args.all_events:
                changes["events"] = []
            elif args.event:
                changes["events"] = args.event
            for name in ("ordered", "enabled", "notify_email", "description"):
                if getattr(args, name) is not None:
                    changes[name] = getattr(args, name)
            return (await webhooks.update(endpoint_id, WebhookPatchIn(**changes))).model_dump(mode="json")
        if action == "delete":
            await webhooks.delete(endpoint_id)
            return {"deleted": str(endpoint_id)}
        if action == "deliveries":
            query = DeliveriesQuery(status=args.status, limit=args.limit, cursor=args.cursor)
            return (await webhooks.deliveries(endpoint_id, query)).model_dump(mode="json")
        return (await webhooks.redeliver(endpoint_id, args.delivery_id)).model_dump(mode="json")
    finally:
        await ctx.bus.close()
        if ctx.redis is not None:
            await ctx.redis.aclose()
        await ctx.db.close()


def add_commands(sub: Any, config_file: argparse.ArgumentParser, settings: Any) -> None:
    """``settings(args)``: the configuration, as the other commands read it."""

    def run(args: argparse.Namespace) -> int:
        from pydantic import ValidationError

        from control_api.errors import ServiceError

        try:
            result = asyncio.run(webhooks_command(settings(args), args))
        except ServiceError as exc:
            print(f"videoconf webhooks: {exc.message}", file=sys.stderr)
            return 2
        except (ValidationError, ValueError) as exc:
            print(f"videoconf webhooks: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(result, indent=2))
        return 0

    events = f"an event type to send ({', '.join(EVENT_TYPES)}; repeat for more; none: all but chat.message)"
    webhooks = sub.add_parser("webhooks", help="webhook endpoints and their delivery log")
    commands = webhooks.add_subparsers(dest="webhooks_command", required=True)
    create = commands.add_parser("create", parents=[config_file], help="add an endpoint; prints its secret once")
    create.add_argument("--url", required=True)
    create.add_argument("--event", action="append", choices=EVENT_TYPES, metavar="TYPE", help=events)
    create.add_argument("--ordered", action="store_true", help="one meeting's events one at a time, in order")
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    create.add_argument("--notify-email", help="the account told when the endpoint is disabled for failing")
    create.add_argument("--description")
    commands.add_parser("list", parents=[config_file], help="the endpoints (without secrets)")
    update = commands.add_parser("update", parents=[config_file], help="change an endpoint")
    update.add_argument("endpoint_id")
    update.add_argument("--url")
    update.add_argument("--event", action="append", choices=EVENT_TYPES, metavar="TYPE", help=events)
    update.add_argument("--all-events", action="store_true", help="every event but the opt-in ones")
    update.add_argument("--ordered", action=argparse.BooleanOptionalAction, default=None)
    update.add_argument("--enabled", action=argparse.BooleanOptionalAction, default=None)
    update.add_argument("--notify-email")
    update.add_argument("--description")
    delete = commands.add_parser("delete", parents=[config_file], help="remove an endpoint and its log")
    delete.add_argument("endpoint_id")
    deliveries = commands.add_parser("deliveries", parents=[config_file], help="an endpoint's delivery log, newest first")
    deliveries.add_argument("endpoint_id")
    deliveries.add_argument("--status", choices=("pending", "succeeded", "failed"))
    deliveries.add_argument("--limit", type=int, default=50)
    deliveries.add_argument("--cursor")
    redeliver = commands.add_parser("redeliver", parents=[config_file], help="send a delivery's event again")
    redeliver.add_argument("endpoint_id")
    redeliver.add_argument("delivery_id", type=int)
    webhooks.set_defaults(func=run)
