"""Real headless Chromium (Debian's /usr/bin/chromium, never a downloaded browser) driven by
Playwright, with fake camera and microphone, loading the web client's ES modules from the server
under test.  A missing Chromium fails the tests rather than skipping them: `.ci/run` installs it."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Flags for headless Chromium as root on this machine (see ARCHITECTURE.md): fake devices, loopback
# ICE, real host addresses instead of mDNS names, and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
MODULE = "/web/js/sfu-client.js"


@asynccontextmanager
async def chromium(extra_args: list[str] | None = None) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    profile = tempfile.mkdtemp(prefix="videoconf-chromium-")
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, *(extra_args or [])], headless=True
            )
            try:
                yield browser
            finally:
                await browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def client_page(browser: Any, base_url: str) -> Any:
    """A page on the server's origin (a secure context on 127.0.0.1), emptied, with the web client's
    module imported as ``window.vc``.  Console errors are collected in ``page.errors``."""
    context = await browser.new_context(permissions=["camera", "microphone"])
    page = await context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))

    def console(message: Any) -> None:
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            page.errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", console)

    # A document the server itself serves: Chromium's local-network-access checks block
    # WebSockets from a page that Playwright fulfils (it has no address space), as they would
    # block a public page reaching into this one.
    await page.goto(f"{base_url}{MODULE}")
    await page.evaluate("document.body.replaceChildren()")
    await page.evaluate("async (module) => { window.vc = await import(module); }", MODULE)
    return page


async def js(page: Any, body: str, **args: Any) -> Any:
    """Run ``body`` (the inside of an async function with the named ``args`` in scope)."""
    names = ", ".join(args)
    return await page.evaluate(f"async ({{{names}}}) => {{ {body} }}", json.loads(json.dumps(args)))
