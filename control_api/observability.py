"""The one middleware every request passes: request id, error mapping to the JSON error shape,
Prometheus metrics per route, and a JSON log line per request."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from control_api.errors import HTTP_CODES, ServiceError, error_response

log = logging.getLogger("videoconf.access")
errors_log = logging.getLogger("videoconf.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """One registry per application, so that tests and embedded servers never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_cpu_seconds_total and memory: the load tester reads the node's CPU from here.
        ProcessCollector(registry=self.registry)
        # Leaks show here first (the churn soak reads it): tasks of the server's event loop.
        Gauge("process_asyncio_tasks", "Tasks of the event loop serving requests", registry=self.registry).set_function(_task_count)
        self.requests = Counter(
            "videoconf_http_requests",
            "HTTP requests handled, by route and status",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "videoconf_http_request_duration_seconds",
            "Time to handle HTTP requests, by route",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


def _task_count() -> float:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the event loop
        return float("nan")


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
ACCESS_LOG: web.AppKey[bool] = web.AppKey("access_log", bool)


def _route_of(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
    try:
        response = await handler(request)
    except ServiceError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after", "content-range")}
        response = error_response(exc.status, code, exc.reason, None, headers)
    except (RedisConnectionError, RedisTimeoutError):
        # Rate limits and events survive a Redis outage by themselves; anything else that needed
        # Redis now is a dependency away, not a server fault.
        errors_log.warning("Redis is unreachable in %s %s (request %s)", request.method, request.path, request_id)
        response = error_response(
            503, "redis_unavailable", "a service the server depends on is unavailable; try again shortly",
            {"request_id": request_id}, {"Retry-After": "2"},
        )
    except Exception:
        errors_log.exception("unhandled error in %s %s (request %s)", request.method, request.path, request_id)
        response = error_response(
            500, "internal_error", "the server failed to handle this request", {"request_id": request_id}
        )
    elapsed = time.perf_counter() - started
    route = _route_of(request)
    metrics = request.app[METRICS]
    metrics.requests.labels(request.method, route, str(response.status)).inc()
    metrics.latency.labels(request.method, route).observe(elapsed)
    if not response.prepared:
        response.headers["X-Request-ID"] = request_id
    if request.app[ACCESS_LOG]:
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": response.status,
                "duration_ms": round(elapsed * 1000, 3),
                "remote": request.remote,
            },
        )
    return response
