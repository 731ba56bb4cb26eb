"""The web client end to end in headless Chromium (fake camera and microphone): three people
register, one creates a meeting, two join by code; everyone's video plays for the others, chat
goes both ways, a mute shows on the tiles, a screen share appears, the host removes someone, and
a phone-sized viewport never scrolls sideways.  The UI is driven by roles and accessible names."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

from tests.media.browser import chromium
from tests.media.conftest import Meeting, recorded_fragments, until

PHONE = {"width": 360, "height": 740}
PASSWORD = "correct horse battery"
# VIDEOCONF_SCREENSHOTS=docs makes the test write the README's screenshots.
SCREENSHOTS = os.environ.get("VIDEOCONF_SCREENSHOTS")


def base_url(meeting: Meeting) -> str:
    return str(meeting.api.client.make_url("")).rstrip("/")


async def person(browser: Any, base: str, name: str, *, viewport: dict | None = None) -> Any:
    """A new browser profile that registers through the UI and lands on the dashboard."""
    context = await browser.new_context(
        permissions=["camera", "microphone"], viewport=viewport or {"width": 1280, "height": 800}, is_mobile=viewport is not None
    )
    page = await context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    # Script errors count; a failed request is an answer the UI shows (403 wrong passcode, 404).
    page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource") and page.errors.append(m.text))
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.goto(base + "/")
    await page.get_by_role("heading", name="Sign in").wait_for()
    await page.get_by_role("link", name="Create one").click()
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Email").fill(f"{name.split()[0].lower()}@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await page.get_by_role("heading", name="Dashboard").wait_for()
    return page


async def join_by_code(page: Any, code: str) -> None:
    await page.get_by_label("Meeting code or link").fill(code)
    await page.get_by_role("button", name="Join", exact=True).click()
    await page.get_by_role("button", name="Join now").click()
    await page.get_by_role("toolbar", name="Meeting controls").wait_for()


async def playing_videos(page: Any) -> list[dict]:
    """Remote videos: their size and decoded frames."""
    return await page.evaluate(
        """() => [...document.querySelectorAll('video[data-track]')].map(v => ({
            track: v.dataset.track, width: v.videoWidth,
            frames: v.getVideoPlaybackQuality().totalVideoFrames,
            tile: v.closest('li')?.getAttribute('aria-label') }))"""
    )


async def wait_until(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """The first true value of ``await check()``, polled every 0.3 s."""
    return await until(check, timeout, what, interval=0.3)


async def no_horizontal_scroll(page: Any) -> bool:
    return await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


async def test_three_people_meet_in_the_web_client(meeting: Meeting, tmp_path: Path) -> None:
    base = base_url(meeting)
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    async with chromium() as browser:
        host = await person(browser, base, "Ada Host")
        await host.get_by_role("button", name="New meeting").click()
        await host.get_by_role("button", name="Join now").click()
        await host.get_by_role("toolbar", name="Meeting controls").wait_for()
        code = re.sub(r"^Code ", "", await host.get_by_text(re.compile(r"^Code ")).inner_text())

        bea = await person(browser, base, "Bea Guest")
        await join_by_code(bea, code)
        cy = await person(browser, base, "Cy Guest")
        await join_by_code(cy, code)

        # Everyone sees the two others' video playing.
        for page in (host, bea, cy):
            try:
                first = await wait_until(lambda p=page: _two_playing(p), timeout=45, what="two remote videos playing")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; {await diagnose(meeting, page)}") from None
            await wait_until(lambda p=page, f=first: _more_frames(p, f), 5, "both remote videos to keep playing")
        if SCREENSHOTS:
            await host.screenshot(path=str(shots / "meeting.png"))

        # Chat both ways.
        await host.get_by_role("button", name="Chat").click()
        await host.get_by_role("textbox", name="Message").fill("Hello from Ada")
        await host.get_by_role("button", name="Send").click()
        await bea.get_by_role("button", name="Chat").click()
        await bea.get_by_role("log", name="Chat messages").get_by_text("Hello from Ada").wait_for()
        await bea.get_by_role("textbox", name="Message").fill("Hi Ada, Bea here")
        await bea.get_by_role("button", name="Send").click()
        await host.get_by_role("log", name="Chat messages").get_by_text("Hi Ada, Bea here").wait_for()
        # Each message shows its sender's name (and, below, in the history a later joiner loads).
        for page, text, sender in ((bea, "Hello from Ada", "Ada Host"), (host, "Hi Ada, Bea here", "Bea Guest")):
            entry = page.get_by_role("log", name="Chat messages").get_by_role("listitem").filter(has_text=text)
            assert await entry.inner_text() == f"{sender}: {text}"

        # Bea mutes: her tile shows it to the others.
        await bea.get_by_role("button", name="Mute microphone").click()
        await bea.get_by_role("button", name="Unmute microphone").wait_for()
        for page in (host, cy):
            await page.get_by_role("listitem", name="Bea Guest", exact=True).get_by_text("Muted").wait_for()

        # Cy shares a screen: a screen tile with video appears for the others.
        await cy.get_by_role("button", name="Share screen").click()
        await cy.get_by_role("button", name="Stop sharing").wait_for(timeout=15000)
        for page in (host, bea):
            tile = page.get_by_role("listitem", name="Cy Guest · screen")
            await tile.wait_for(timeout=20000)
            await wait_until(
                lambda t=tile: t.evaluate("li => (li.querySelector('video')?.videoWidth ?? 0) > 0"),
                timeout=30, what="the screen share playing",
            )

        # The host removes Cy.
        await host.get_by_role("button", name="Participants").click()
        await host.get_by_role("button", name="Remove Cy Guest").click()
        await cy.get_by_role("heading", name="You were removed").wait_for(timeout=15000)
        try:
            await host.get_by_role("listitem", name="Cy Guest", exact=True).wait_for(state="detached", timeout=15000)
        except Exception as exc:
            raise AssertionError(f"{exc}; {await diagnose(meeting, host)}") from None

        # The host records: Bea sees the recording badge come and go; the host finds the file.
        await host.get_by_role("button", name="Record", exact=True).click()
        await host.get_by_role("button", name="Stop recording").wait_for(timeout=15000)
        await bea.get_by_text("● Recording").wait_for(timeout=10000)
        await until(lambda: recorded_fragments(meeting) >= 1, 30, "a playable fragment of the recording")
        await host.get_by_role("button", name="Stop recording").click()
        await bea.get_by_text("● Recording").wait_for(state="hidden", timeout=10000)

        # A phone: the dashboard and the meeting room fit 360 px without sideways scrolling.
        phone = await person(browser, base, "Dee Phone", viewport=PHONE)
        assert await no_horizontal_scroll(phone)
        await join_by_code(phone, code)
        await wait_until(lambda: _two_playing(phone), timeout=45, what="video on the phone")
        assert await no_horizontal_scroll(phone)
        for button in await phone.get_by_role("toolbar", name="Meeting controls").get_by_role("button").all():
            box = await button.bounding_box()
            assert box["height"] >= 44 and box["width"] >= 44, box  # touch-sized
        await phone.get_by_role("button", name="Chat").click()
        history = phone.get_by_role("log", name="Chat messages").get_by_role("listitem")
        await history.filter(has_text="Hi Ada, Bea here").wait_for()
        assert await history.all_inner_texts() == ["Ada Host: Hello from Ada", "Bea Guest: Hi Ada, Bea here"]
        # Leaving by the navigation: the host's dashboard lists the meeting.
        await host.get_by_role("link", name="Dashboard").click()
        await host.get_by_role("heading", name="Dashboard").wait_for()
        await host.get_by_role("region", name="My meetings").get_by_role("link", name="Join Ada Host's meeting").wait_for()
        if SCREENSHOTS:
            await host.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        await host.get_by_role("link", name="Recordings").click()
        await host.get_by_role("button", name="Play recording of Ada Host's meeting").wait_for(timeout=30000)
        for page in (host, bea, cy, phone):
            assert page.errors == [], page.errors


async def diagnose(meeting: Meeting, page: Any) -> dict:
    """What the page and the SFU know, for a failure message."""
    from videoconf.app import SFU

    node = meeting.api.app[SFU]
    return {
        "videos": await playing_videos(page),
        "errors": page.errors,
        "client": await page.evaluate(
            "() => { const c = window.videoconfRoom; return c && { log: c.log.join(' '), published: [...c.published.keys()],"
            " tracks: [...c.tracks.values()].map(t => [t.track_id, t.participant, t.kind]) }; }"
        ),
        "downtracks": [
            (p.identity[:8], d.up.track_id, getattr(d.current, "rid", None), getattr(d.target, "rid", None), d.packets, d.bound)
            for room in node.rooms.values() for p in room.participants.values() for d in p.downtracks.values() if d.up.kind == "video"
        ],
    }


async def _two_playing(page: Any) -> list[dict] | None:
    videos = [v for v in await playing_videos(page) if v["width"] > 0 and v["frames"] > 0]
    return videos if len({v["tile"] for v in videos}) >= 2 else None


async def _more_frames(page: Any, first: list[dict]) -> bool:
    """Whether each of the videos ``first`` saw has decoded more frames since."""
    later = {v["track"]: v["frames"] for v in await playing_videos(page)}
    return all(later.get(v["track"], 0) > v["frames"] for v in first)


async def test_bad_states_are_shown_and_every_control_has_a_name(meeting: Meeting) -> None:
    base = base_url(meeting)
    api = meeting.api
    locked = await api.meeting(meeting.host["token"], title="Locked room", passcode="246813")
    async with chromium() as browser:
        page = await person(browser, base, "Eve Visitor")
        # The app installs: a manifest with icons, and a service worker that controls the origin.
        manifest = await page.evaluate("() => fetch('/manifest.webmanifest').then(r => r.json())")
        assert manifest["display"] == "standalone" and any(i["sizes"] == "512x512" for i in manifest["icons"])
        assert await page.evaluate("() => navigator.serviceWorker.ready.then(r => Boolean(r.active))")
        # Every button, link and form field on the dashboard has an accessible name.
        unnamed = await page.evaluate(
            """() => [...document.querySelectorAll('button, a, input, select')].filter(e => {
                const name = (e.getAttribute('aria-label') || e.textContent || '').trim();
                const labelled = e.labels && e.labels.length > 0;
                return !(name || labelled || e.type === 'hidden');
            }).map(e => e.outerHTML)"""
        )
        assert unnamed == []
        # Scheduling from the dashboard lists the meeting as upcoming.
        await page.get_by_label("Title").fill("Planning")
        await page.get_by_label("Date").fill("2031-03-04")
        await page.get_by_label("Time", exact=True).fill("09:30")
        await page.get_by_role("button", name="Schedule", exact=True).click()
        await page.get_by_role("region", name="Upcoming meetings").get_by_role("link", name="Start Planning").wait_for()
        # An invite link with a wrong passcode: the join screen says so and stays usable.
        await page.goto(f"{base}/j/{locked['code']}")
        await page.get_by_label("Passcode").fill("1111")
        await page.get_by_role("button", name="Join now").click()
        await page.get_by_role("alert").filter(has_text="That passcode is not right.").wait_for()
        await page.get_by_label("Passcode").fill("246813")
        await page.get_by_role("button", name="Join now").click()
        await page.get_by_role("toolbar", name="Meeting controls").wait_for()
        # The network drops the signaling connection: the client resumes its session.
        from videoconf.app import SIGNALING

        (session,) = [s for s in meeting.api.app[SIGNALING].sessions.values() if s.participant and s.participant.name == "Eve Visitor"]
        await session.ws.close()
        await page.locator("#announcer").filter(has_text="Reconnected.").wait_for(timeout=20000)
        await page.get_by_role("status").filter(has_text="Connection: good").wait_for()
        # The host ends the meeting for everyone: the room says so.
        await api.call("POST", f"/api/meetings/{locked['id']}/end", meeting.host["token"], expect=200)
        await page.get_by_role("heading", name="Meeting ended").wait_for(timeout=15000)
        # The ended meeting's link says it has ended; an unknown code says no meeting has it.
        await page.goto(f"{base}/j/{locked['code']}")
        await page.get_by_role("alert").filter(has_text="This meeting has ended.").wait_for()
        await page.goto(f"{base}/#/join/zzz-zzzz-zzz")
        await page.get_by_role("alert").filter(has_text="No meeting has that code.").wait_for()
        assert page.errors == [], page.errors
