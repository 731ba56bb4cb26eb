"""Large meetings in the web client, in headless Chromium beside a crowd of SDK bots: the grid
pages, the SFU forwards video for exactly what is on screen (the page, the pins and the speaker),
the speaker is outlined and followed, hands go to the top of the participant list, a phone shows
fewer tiles upright and on its side, a lossy publisher's tile says so, and the shortcuts and
reactions work from the keyboard.  Driven by roles and accessible names."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

from tests.media.browser import chromium
from tests.media.conftest import Meeting, until
from tests.media.crowd import Crowd, gather_crowd
from tests.media.test_web_client import PHONE, base_url, person, wait_until

LAPTOP = {"width": 1280, "height": 800}
# VIDEOCONF_SCREENSHOTS=docs makes the 25-person test write the README's screenshots there.
SCREENSHOTS = os.environ.get("VIDEOCONF_SCREENSHOTS")
USER = "Uma User"


async def enter(page: Any, code: str, *, noise_suppression: bool = True) -> None:
    """Join by code with the microphone off (Chromium's fake microphone beeps)."""
    await page.get_by_label("Meeting code or link").fill(code)
    await page.get_by_role("button", name="Join", exact=True).click()
    await page.get_by_label("Join with microphone off").check()
    if not noise_suppression:
        await page.get_by_label("Noise suppression").uncheck()
    await page.get_by_role("button", name="Join now").click()
    await page.get_by_role("toolbar", name="Meeting controls").wait_for()


async def shown_tiles(page: Any) -> list[dict]:
    """The grid's tiles on screen, in order: name, whether its video plays, its classes."""
    return await page.evaluate(
        """() => [...document.querySelectorAll('ul.tiles > li.tile')].filter(t => !t.hidden).map(t => {
            const v = t.querySelector('video[data-track]');
            return { name: t.getAttribute('aria-label'), classes: [...t.classList],
                     playing: Boolean(v && v.videoWidth > 0 && !v.paused), frames: v ? v.getVideoPlaybackQuality().totalVideoFrames : 0 };
        })"""
    )


async def shown_names(page: Any) -> list[str]:
    return [t["name"] for t in await shown_tiles(page)]


def forwarded(meeting: Meeting, name: str) -> set[str]:
    """The names of the participants whose video the SFU forwards to ``name`` now."""
    from videoconf.app import SFU

    node = meeting.api.app[SFU]
    for room in node.rooms.values():
        for participant in room.participants.values():
            if participant.name == name:
                owners = {d.up.owner for d in participant.downtracks.values() if d.up.kind == "video" and not d.paused}
                return {room.participants[o].name for o in owners if o in room.participants}
    return set()


async def forwarded_gauge(meeting: Meeting) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    _, body = await meeting.api.call("GET", "/metrics", expect=200)
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "videoconf_sfu_forwarded_streams" and sample.labels.get("kind") == "video":
                return sample.value
    raise AssertionError("videoconf_sfu_forwarded_streams{kind=video} is missing")


async def page_forwarding(page: Any) -> set[str]:
    """The names whose video the page's track-forwarding messages say the SFU forwards."""
    return set(await page.evaluate(
        """() => { const c = window.videoconfRoom;
            return [...c.forwarding.values()].filter(f => f.forwarding).map(f => c.participants.get(f.participant)?.name); }"""
    ))


async def all_playing(page: Any, names: list[str]) -> bool:
    tiles = {t["name"]: t for t in await shown_tiles(page)}
    return all(tiles.get(n, {}).get("playing") for n in names)


async def open_crowd(meeting: Meeting, count: int, **options: Any) -> Crowd:
    await meeting.token(meeting.host)  # the host's join starts the meeting
    codec = meeting.api.services.ctx.room_tokens
    return await gather_crowd(meeting.signaling_url, codec, meeting.meeting["id"], count, **options)


async def test_a_49_person_meeting_pages_and_forwards_only_what_is_on_screen(meeting: Meeting) -> None:
    crowd = await open_crowd(meeting, 48)
    try:
        async with chromium() as browser:
            page = await person(browser, base_url(meeting), USER, viewport=None)
            await enter(page, meeting.meeting["code"])
            first = [f"Bot {i:02d}" for i in range(1, 10)]
            # Page 1 of a 3 x 3 grid: the first nine to join, all playing.
            await wait_until(lambda: _names_are(page, first), 30, "page 1's nine tiles")
            await wait_until(lambda: all_playing(page, first), 45, "nine playing tiles")
            await page.get_by_role("navigation", name="Pages").get_by_text("Page 1 of 6").wait_for()
            # The SFU forwards video for exactly those nine: in its state, its metrics and its messages.
            await until(lambda: forwarded(meeting, USER) == set(first), 10, "the SFU forwarding page 1 only")
            assert await forwarded_gauge(meeting) == 9
            await wait_until(lambda: _equals(page_forwarding(page), set(first)), 10, "track-forwarding for page 1 only")

            # Two pages on with the keyboard: page 3's nine, forwarded within 2 s.
            await page.locator("body").press("ArrowRight")
            await page.locator("body").press("ArrowRight")
            third = [f"Bot {i:02d}" for i in range(19, 28)]
            pressed = time.monotonic()
            await wait_until(lambda: _names_are(page, third), 5, "page 3's tiles")
            await until(lambda: forwarded(meeting, USER) == set(third), 2.0 - (time.monotonic() - pressed), "page 3 forwarded within 2 s")
            await page.locator("#announcer").filter(has_text="Page 3 of 6.").wait_for()
            await wait_until(lambda: all_playing(page, third), 20, "page 3 playing")

            # Bot 01 (on page 1) talks: outlined in a floating tile, forwarded beside page 3.
            crowd.named("Bot 01").talk()
            speaker = page.locator("li.tile.floating", has_text="Bot 01")
            await speaker.and_(page.locator(".speaking")).wait_for(timeout=15000)
            await until(lambda: forwarded(meeting, USER) == set(third) | {"Bot 01"}, 5, "page 3 and the speaker forwarded")
            # Speaker view (G): Bot 01 on the stage, playing.
            await page.locator("body").press("g")
            stage = page.locator("li.tile.on-stage")
            await stage.filter(has_text="Bot 01").wait_for(timeout=5000)
            await wait_until(lambda: stage.evaluate("t => t.querySelector('video').videoWidth > 0"), 15, "the stage playing")
            await page.locator("li.tile.on-stage.speaking").wait_for(timeout=10000)  # outlined there too
            crowd.named("Bot 01").talk(False)

            # Hands: raised ones come first in the participant list, in the order raised.
            await crowd.named("Bot 30").participant.raise_hand(True)
            await asyncio.sleep(0.05)
            await crowd.named("Bot 05").participant.raise_hand(True)
            await page.locator("body").press("p")
            people = page.get_by_role("list", name="Participants", exact=True)
            await people.get_by_role("listitem").nth(1).filter(has_text="Hand raised").wait_for(timeout=10000)
            names = await people.get_by_role("listitem").all_inner_texts()
            assert names[0].startswith("Bot 30") and names[1].startswith("Bot 05"), names[:3]
            await page.get_by_text("49 people").wait_for()
            await page.get_by_role("searchbox", name="Search participants").fill("bot 4")
            await until(lambda: _count(people.get_by_role("listitem"), 9), 5, "the nine Bot 4x")
            # Pinning Bot 40 from the list puts it on the stage (a pin comes before the speaker).
            await people.get_by_role("button", name="Pin Bot 40").click()
            await stage.filter(has_text="Bot 40").wait_for(timeout=5000)
            await until(lambda: "Bot 40" in forwarded(meeting, USER), 5, "the pin forwarded")
            await people.get_by_role("button", name="Unpin Bot 40").click()
            await page.evaluate("() => document.activeElement.blur()")  # keys typed in the search box stay there
            await page.locator("body").press("p")

            # Back to the grid; a phone upright shows 2 x 3, on its side 3 x 2; the call goes on.
            await page.locator("body").press("g")
            await page.set_viewport_size(PHONE)
            await wait_until(lambda: _shown_count(page, 6), 10, "six tiles on a phone")
            six = await shown_names(page)
            await until(lambda: forwarded(meeting, USER) == set(six), 5, "the phone's six forwarded")
            await _fits(page)
            await page.set_viewport_size({"width": PHONE["height"], "height": PHONE["width"]})
            await wait_until(lambda: _shown_count(page, 6), 10, "six tiles on a phone on its side")
            await wait_until(lambda: _shown_playing(page), 20, "playing after the rotation")
            await _fits(page)

            # A hidden tab asks for no video at all; shown again, it asks for its tiles again.
            await page.evaluate(HIDE)
            await until(lambda: forwarded(meeting, USER) == set(), 5, "nothing forwarded to a hidden tab")
            await page.evaluate(SHOW)
            await until(lambda: len(forwarded(meeting, USER)) >= 6, 5, "the tiles forwarded again")
            assert page.errors == [], page.errors
    finally:
        await crowd.close()


# The page's visibility as a browser reports a tab put in the background (headless Chromium's
# only tab never is): document.hidden and a visibilitychange event.
HIDE = """() => { Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
                  document.dispatchEvent(new Event('visibilitychange')); }"""
SHOW = """() => { delete document.hidden; document.dispatchEvent(new Event('visibilitychange')); }"""


async def test_a_25_person_meeting_fits_laptops_and_phones_in_grid_and_speaker_view(meeting: Meeting, tmp_path: Path) -> None:
    """The README's screenshots: laptop and phone, grid and speaker view, nothing off screen."""
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    crowd = await open_crowd(meeting, 24)
    try:
        async with chromium() as browser:
            page = await person(browser, base_url(meeting), USER, viewport=None)
            await enter(page, meeting.meeting["code"])
            for size, name, grid, strip in ((LAPTOP, "laptop", 9, 6), (PHONE, "phone", 6, 3)):
                await page.set_viewport_size(size)
                await wait_until(lambda n=grid: _shown_count(page, n), 10, f"{grid} tiles on a {name}")
                await wait_until(lambda: _shown_playing(page), 30, f"the {name}'s tiles playing")
                await _fits(page)
                assert await page.evaluate("() => document.documentElement.scrollHeight <= window.innerHeight + 1")
                await page.screenshot(path=str(shots / f"large-meeting-{name}-grid.png"))
                await page.locator("body").press("g")
                await wait_until(lambda n=strip: _shown_count(page, n + 1), 10, f"the stage and {strip} in the filmstrip on a {name}")
                await wait_until(lambda: _shown_playing(page), 30, f"the {name}'s speaker view playing")
                areas = await page.evaluate(
                    """() => [...document.querySelectorAll('ul.tiles > li.tile')].filter(t => !t.hidden)
                        .map(t => { const r = t.getBoundingClientRect(); return [t.classList.contains('on-stage'), r.width * r.height]; })"""
                )
                stage = [a for on, a in areas if on]
                assert len(stage) == 1 and all(stage[0] > 4 * a for on, a in areas if not on), areas
                await _fits(page)
                await page.screenshot(path=str(shots / f"large-meeting-{name}-speaker.png"))
                await page.locator("body").press("g")
            assert page.errors == [], page.errors
    finally:
        await crowd.close()


async def test_quality_shortcuts_reactions_and_unread_chat(meeting: Meeting) -> None:
    from clients.sdk.participant import LossStats, drop_outgoing_rtp

    dropped = LossStats()

    def lossy(index: int, bot: Any) -> None:  # Bot 02 loses 30% of what it sends, for good
        if index == 1:
            bot.tap_outgoing(lambda pc: drop_outgoing_rtp(pc, 0.3, random.Random(7), dropped, repairs=False))

    crowd = await open_crowd(meeting, 3, voices=0, prepare=lossy)
    try:
        async with chromium() as browser:
            page = await person(browser, base_url(meeting), USER, viewport=None)
            await enter(page, meeting.meeting["code"], noise_suppression=False)
            await wait_until(lambda: all_playing(page, ["Bot 01", "Bot 02", "Bot 03"]), 45, "three playing tiles")
            # The microphone was opened as the pre-join switches said.
            settings = await page.evaluate(
                "() => [...window.videoconfRoom.published.values()].find(p => p.track.kind === 'audio').track.getSettings()"
            )
            assert (settings["noiseSuppression"], settings["echoCancellation"]) == (False, True), settings
            # The lossy bot's tile says so; the others' do not.
            tile = page.get_by_role("listitem", name="Bot 02", exact=True)
            await tile.get_by_text("Poor connection").wait_for(timeout=20000)
            assert await page.get_by_role("listitem", name="Bot 01", exact=True).get_by_text("connection").count() == 0

            # Every control in the room (icons beside the text) keeps an accessible name.
            unnamed = await page.evaluate(
                """() => [...document.querySelectorAll('button, a, input, select')].filter(e => {
                    const name = (e.getAttribute('aria-label') || e.textContent || '').trim();
                    return !(name || (e.labels && e.labels.length > 0));
                }).map(e => e.outerHTML.slice(0, 120))"""
            )
            assert unnamed == [], unnamed
            body = page.locator("body")
            announcer = page.locator("#announcer")
            # ? lists the shortcuts; Escape closes the list.
            await body.press("?")
            dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
            await dialog.wait_for()
            assert await dialog.get_by_text("Mute or unmute the microphone").count() == 1
            await page.keyboard.press("Escape")
            await dialog.wait_for(state="hidden")
            # M unmutes (we joined muted) and mutes again; each is announced.
            await body.press("m")
            await page.get_by_role("button", name="Mute microphone").wait_for()
            await announcer.filter(has_text="Microphone on.").wait_for()
            await body.press("m")
            await page.get_by_role("button", name="Unmute microphone").wait_for()
            # Space held while muted talks; let go, muted again.
            await page.keyboard.down(" ")
            await page.get_by_role("button", name="Mute microphone").wait_for()
            await page.keyboard.up(" ")
            await page.get_by_role("button", name="Unmute microphone").wait_for()
            # H raises the hand; the others see it.
            await body.press("h")
            await page.get_by_role("button", name="Lower hand").wait_for()
            me = await page.evaluate("() => window.videoconfRoom.identity")
            bot = crowd.bots[0].participant
            await until(lambda: any(e.get("type") == "participant-updated" and e["participant"]["identity"] == me and e["participant"]["hand_raised"]
                                    for e in bot.history), 10, "the hand at a bot")
            # E opens the reactions; the arrow keys and Enter send one; everyone hears of it.
            await body.press("e")
            menu = page.get_by_role("menu", name="Reactions")
            await menu.wait_for()
            await page.keyboard.press("ArrowRight")
            await page.keyboard.press("Enter")
            await announcer.filter(has_text="You reacted with clapping").wait_for()
            await menu.wait_for(state="hidden")
            await until(lambda: any(e.get("type") == "reaction" and e["participant"] == me and e["emoji"] == "👏" for e in bot.history), 10, "the reaction at a bot")
            # A bot's reaction shows on its tile and is announced.
            await bot.react("👍")
            await announcer.filter(has_text="Bot 01 reacted with thumbs up").wait_for()
            await page.get_by_role("listitem", name="Bot 01", exact=True).get_by_text("👍").wait_for()
            # A chat message while the chat is closed: the Chat button counts it; opening reads it.
            # (Chat is stored under an account: a registered person, not a bot, writes it.)
            writer = await meeting.participant(meeting.people[0])
            await writer.chat("hello, room")
            await page.get_by_role("button", name="Chat, 1 unread").wait_for()
            await body.press("c")
            await page.get_by_role("log", name="Chat messages").get_by_text("hello, room").wait_for()
            assert await page.get_by_role("button", name="Chat", exact=True).count() == 1
            assert page.errors == [], page.errors
    finally:
        await crowd.close()


async def _names_are(page: Any, names: list[str]) -> bool:
    return await shown_names(page) == names


async def _equals(value: Any, expected: Any) -> bool:
    return await value == expected


async def _shown_playing(page: Any) -> bool:
    return await all_playing(page, await shown_names(page))


async def _count(locator: Any, count: int) -> bool:
    return await locator.count() == count


async def _shown_count(page: Any, count: int) -> bool:
    return len([t for t in await shown_tiles(page) if "floating" not in t["classes"]]) == count


async def _fits(page: Any) -> None:
    """No sideways scrolling; every control is touch-sized and inside the window."""
    viewport = page.viewport_size
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    for button in await page.get_by_role("toolbar", name="Meeting controls").get_by_role("button").all():
        box = await button.bounding_box()
        assert box["height"] >= 44 and box["width"] >= 44, box
        assert 0 <= box["x"] and box["x"] + box["width"] <= viewport["width"] + 1, box
        assert 0 <= box["y"] and box["y"] + box["height"] <= viewport["height"] + 1, box
