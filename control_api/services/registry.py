"""The one plain factory that wires the services together."""

from __future__ import annotations

from dataclasses import dataclass

from control_api.services.auth import AuthService
from control_api.services.calendar import CalendarService
from control_api.services.chat import ChatService
from control_api.services.context import ServiceContext
from control_api.services.meetings import MeetingService
from control_api.services.notifications import NotificationService
from control_api.services.recordings import RecordingService
from control_api.services.server_api import ServerApiService
from control_api.services.webhooks import WebhookService


@dataclass
class Services:
    ctx: ServiceContext
    auth: AuthService
    calendar: CalendarService
    notifications: NotificationService
    meetings: MeetingService
    chat: ChatService
    recordings: RecordingService
    webhooks: WebhookService
    server: ServerApiService


def build_services(ctx: ServiceContext) -> Services:
    auth = AuthService(ctx)
    calendar = CalendarService(ctx)
    notifications = NotificationService(ctx)
    webhooks = WebhookService(ctx, notifications)
    meetings = MeetingService(ctx, auth, calendar, notifications, webhooks)
    recordings = RecordingService(ctx, notifications, webhooks)
    return Services(
        ctx=ctx,
        auth=auth,
        calendar=calendar,
        notifications=notifications,
        meetings=meetings,
        chat=ChatService(ctx, meetings),
        recordings=recordings,
        webhooks=webhooks,
        server=ServerApiService(ctx, meetings, recordings),
    )
