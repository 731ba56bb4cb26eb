"""The node crashes and comes back while the web client (Debian's Chromium, the real app at /) is
in a meeting with an SDK participant: the page gets a new room token from the API, joins again,
publishes its camera and microphone again and plays the other's new video; the SDK participant
does the same.  The page says what happened ("Reconnected.")."""

from __future__ import annotations

from pathlib import Path

from clients.loadtest.polling import until
from tests.faults.node import Node
from tests.media.browser import chromium
from tests.media.test_web_client import playing_videos, wait_until


def browser_video(client, frames: int = 10) -> list:  # noqa: ANN001
    return [r for r in client.remote.values() if r.kind == "video" and not r.ended and r.frames >= frames]


async def test_the_web_client_rejoins_after_the_node_restarts(tmp_path: Path) -> None:
    node = Node(tmp_path)
    try:
        async with chromium() as browser:
            page, _, sdk = await node.page_with_publishing_host(browser)

            async def host_video(exclude: str | None = None) -> dict | None:
                for video in await playing_videos(page):
                    if video["tile"] == "Hedy Host" and video["width"] > 0 and video["frames"] > 5 and video["track"] != exclude:
                        return video
                return None

            first = await wait_until(host_video, 30, "the host's video in the page")
            await until(lambda: browser_video(sdk), 30, "the page's camera at the SDK participant")
            (old_camera,) = browser_video(sdk)

            # Everything the announcer says, kept: "Reconnected." may be followed at once by
            # "Hedy Host joined." when the SDK participant joins again in the same moment.
            await page.evaluate("""() => {
                window.announced = [];
                const announcer = document.getElementById('announcer');
                new MutationObserver(() => window.announced.push(announcer.textContent))
                    .observe(announcer, {childList: true, characterData: true, subtree: true});
            }""")
            await node.kill()
            # The connection badge (the announcer, also a status, says "Reconnecting." too).
            badge = page.locator("span.badge[role=status]")
            await badge.filter(has_text="Connection: lost, reconnecting").wait_for(timeout=10000)
            await node.start(migrate=False)

            try:
                await page.wait_for_function("() => window.announced.some(text => text.includes('Reconnected.'))", timeout=30000)
            except Exception as exc:
                raise AssertionError(f"the page did not reconnect: {await shown(page)} {await page.evaluate('window.announced')}") from exc
            await badge.filter(has_text="Connection: good").wait_for(timeout=10000)
            try:
                second = await wait_until(lambda: host_video(exclude=first["track"]), 30, "the host's new video in the page")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {await playing_videos(page)} {await shown(page)} sdk {sdk.state} {sdk.rejoins} "
                                     f"{[(r.track_id, r.kind, r.frames) for r in sdk.remote.values()]}") from exc
            frames = second["frames"]
            await wait_until(lambda: _more(page, second["track"], frames), 15, "the host's new video to keep playing")
            await until(lambda: sdk.rejoins == 1, 30, "the SDK participant to rejoin")
            await until(lambda: [r for r in browser_video(sdk) if r.track_id != old_camera.track_id], 30,
                        "the page's republished camera at the SDK participant")
            tiles = await page.evaluate("() => [...document.querySelectorAll('li.tile')].map(t => t.getAttribute('aria-label'))")
            assert sorted(tiles) == ["Hedy Host", "Wendy Web (you)"], tiles
            metrics = await node.metrics()
            assert metrics["videoconf_sfu_participants"] == 2 and metrics["videoconf_sfu_tracks{kind=video}"] == 2
            # Chromium logs each refused WebSocket while the node is down; nothing else may fail.
            errors = [e for e in page.errors if not (e.startswith("WebSocket connection to") and "ERR_CONNECTION_REFUSED" in e)]
            assert errors == [], errors
    finally:
        await node.close()


async def _more(page, track: str, frames: int) -> bool:  # noqa: ANN001
    return any(v["track"] == track and v["frames"] > frames + 10 for v in await playing_videos(page))


async def shown(page) -> dict:  # noqa: ANN001
    """What the page says, for a failure message."""
    return await page.evaluate(
        """() => ({heading: document.querySelector('h1')?.textContent, alert: document.querySelector('[role=alert]')?.textContent,
                  status: document.querySelector('[role=status]')?.textContent, announced: document.getElementById('announcer')?.textContent,
                  log: window.videoconfRoom?.log?.slice(-30).join(' '), tracks: [...(window.videoconfRoom?.tracks?.values() ?? [])].map(t => t.track_id + ':' + t.kind), remote: [...(window.videoconfRoom?.remote?.keys() ?? [])], tiles: [...document.querySelectorAll('li.tile')].map(t => t.getAttribute('aria-label') + '/' + t.querySelectorAll('video').length)})"""
    )
