"""The delivery worker: one task per node that claims due deliveries, posts them and records what
happened (``WebhookService.claim`` / ``record``).

Each attempt resolves the endpoint's host again and connects only to the addresses just checked
(``webhook_urls.GuardedResolver``), follows no redirect, gives up after ``webhooks.timeout`` and
reads at most ``webhooks.max_response_bytes`` of the answer.  Any 2xx is a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import timedelta

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from control_api.config import WebhookSettings
from control_api.services.webhooks import Claimed, Outcome, WebhookService
from control_api.webhook_format import headers
from control_api.webhook_urls import GuardedResolver, UnsafeUrl, is_ip, split_url

log = logging.getLogger(__name__)


class WebhookWorker:
    def __init__(self, webhooks: WebhookService, settings: WebhookSettings, registry: CollectorRegistry | None = None) -> None:
        self.webhooks = webhooks
        self.settings = settings
        self.results = Counter(
            "videoconf_webhook_deliveries", "Webhook delivery attempts, by what became of the delivery "
            "(succeeded, retrying, failed)", ("result",), registry=registry,
        )
        self.pending = Gauge(
            "videoconf_webhook_deliveries_pending", "Webhook deliveries waiting (as of the worker's last look)",
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.webhooks.guard), use_dns_cache=False, force_close=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={"User-Agent": "VideoConf-Webhooks"},
        )
        self._task = asyncio.create_task(self._run(), name="webhook-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_count = 0.0
        last_prune = -self.settings.prune_interval
        while True:
            try:
                claimed = await self.webhooks.claim(self.settings.batch, self.settings.lease_seconds)
                if loop.time() - last_count > 10:
                    last_count = loop.time()
                    self.pending.set(await self.webhooks.pending_count())
            except Exception:
                log.exception("claiming webhook deliveries failed")
                claimed = []
            if loop.time() - last_prune >= self.settings.prune_interval:
                last_prune = loop.time()
                await self._prune()
            if claimed:
                await asyncio.gather(*(self._deliver(delivery) for delivery in claimed))
                continue
            self.webhooks.wakeup.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.webhooks.wakeup.wait(), self.settings.poll_interval)

    async def _prune(self) -> None:
        before = self.webhooks.ctx.now() - timedelta(seconds=self.settings.retention)
        try:
            gone = await self.webhooks.prune(before)
        except Exception:
            log.exception("pruning old webhook deliveries failed")
            return
        if gone:
            log.info("pruned %d webhook deliveries older than %s", gone, before.isoformat())

    async def _deliver(self, claimed: Claimed) -> None:
        outcome = await self.attempt(claimed)
        try:
            result = await self.webhooks.record(claimed, outcome)
        except Exception:  # the lease runs out and the delivery is tried again
            log.exception("recording webhook delivery %d failed", claimed.id)
            return
        self.results.labels(result).inc()
        if result == "failed":
            log.warning("webhook delivery %d to %s failed for good after %d attempts: %s",
                        claimed.id, claimed.url, claimed.attempts + 1, outcome.error)

    async def attempt(self, claimed: Claimed) -> Outcome:
        """One POST of the delivery."""
        assert self._session is not None
        body = json.dumps(claimed.payload, separators=(",", ":")).encode()
        timestamp = int(self.webhooks.ctx.now().timestamp())
        try:
            host, _ = split_url(claimed.url)
            if is_ip(host):  # aiohttp does not pass IP literals through the resolver
                self.webhooks.guard.check_address(host)
            async with self._session.post(
                claimed.url, data=body, headers=headers(claimed.secret, claimed.event_id, timestamp, body),
                allow_redirects=False,
            ) as response:
                answer = await response.content.read(self.settings.max_response_bytes)
                if 200 <= response.status < 300:
                    return Outcome(True, response.status)
                snippet = answer[:200].decode("utf-8", "replace")
                return Outcome(False, response.status, f"HTTP {response.status}" + (f": {snippet}" if snippet else ""))
        except UnsafeUrl as exc:
            return Outcome(False, None, str(exc))
        except asyncio.TimeoutError:
            return Outcome(False, None, f"no answer within {self.settings.timeout:g} s")
        except aiohttp.ClientError as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}")

