"""The meeting room's rules as values, run in Chromium (the web client's modules have no build step
and this machine no other JavaScript engine at test time): how many tiles a page holds, what a
page, the speaker view and a hidden tab show, what the SFU is asked for and when a request
counts as changed, the participant list's order, and how quality is judged from stats."""

from __future__ import annotations

from typing import Any

from tests.media.browser import chromium, client_page, js
from tests.media.conftest import Meeting
from tests.media.test_web_client import base_url


def tiles(*names: str) -> list[dict[str, Any]]:
    return [{"key": n, "identity": n.removesuffix(":screen"), "screen": n.endswith(":screen"), "trackId": f"T{n}"} for n in names]


async def test_pages_speaker_view_and_requests_follow_the_rules(meeting: Meeting) -> None:
    async with chromium() as browser:
        page = await client_page(browser, base_url(meeting))
        await page.evaluate("async () => { window.L = await import('/web/js/layout.js'); window.Q = await import('/web/js/quality.js'); }")

        async def call(body: str, **args: Any) -> Any:
            return await js(page, f"const {{ L, Q }} = window; {body}", **args)

        # Page sizes: 3 x 3 on a laptop, 2 x 3 on a phone upright, 3 x 2 on its side, at most 12.
        shapes = await call("return [[1280, 800], [360, 740], [740, 360], [1920, 1080], [3840, 2160]].map(([w, h]) => L.gridShape(w, h).size);")
        assert shapes == [9, 6, 6, 12, 12]

        people = tiles("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k")
        # The grid's order: screen shares, then pins in the order pinned, then the join order.
        order = await call("return L.orderTiles(t, ['j', 'c']).map(x => x.key);", t=[*people, *tiles("e:screen")])
        assert order == ["e:screen", "j", "c", "a", "b", "d", "e", "f", "g", "h", "i", "k"]
        # Page 2 of 4-tile pages, with the speaker on page 1: it floats beside the page.
        shown = await call(
            "const a = L.arrange({ tiles: t, pins: [], dominant: 'b', view: 'grid', page: 1, pageSize: 4, filmSize: 3 });"
            " return [a.shown.map(x => x.key), a.floating?.key, a.page, a.pages];", t=people)
        assert shown == [["e", "f", "g", "h"], "b", 1, 3]
        # A page past the end is the last page.
        assert await call("return L.arrange({ tiles: t, pins: [], dominant: null, view: 'grid', page: 9, pageSize: 4, filmSize: 3 }).page;", t=people) == 2
        # Speaker view: a pin takes the stage before the speaker; the filmstrip pages the rest.
        stage = await call(
            "const a = L.arrange({ tiles: t, pins: ['k'], dominant: 'b', view: 'speaker', page: 0, pageSize: 9, filmSize: 3 });"
            " return [a.stage.key, a.shown.map(x => x.key), a.pages];", t=people)
        assert stage == ["k", ["k", "a", "b", "c"], 4]
        # A hidden tab shows nothing.
        assert await call("return L.arrange({ tiles: t, pins: ['k'], dominant: 'b', view: 'grid', page: 0, pageSize: 9, filmSize: 3, visible: false }).shown.length;", t=people) == 0

        # What the SFU is asked: pins (own pins, the speaker, the shown cameras; at most 16), each
        # drawn tile's size, off for everything else (and for a tile scrolled out of sight).
        requests = await call(
            "const a = L.arrange({ tiles: t, pins: [], dominant: 'k', view: 'grid', page: 0, pageSize: 2, filmSize: 3 });"
            " return [L.pinsFor(a, ['c'], 'k'), L.trackRequests(t.slice(0, 4), a, { a: { width: 640, height: 360 }, b: { width: 640, height: 360 } }, new Set(['b']))];",
            t=people)
        assert requests[0] == ["c", "k", "a", "b"]
        assert requests[1] == {"Ta": {"width": 640, "height": 360}, "Tb": {"quality": "off"}, "Tc": {"quality": "off"}, "Td": {"quality": "off"}}
        many = await call("return L.pinsFor({ shown: t, floating: null }, [], 'zz').length;", t=tiles(*[f"p{i}" for i in range(30)]))
        assert many == 16
        # Only changes are sent; a size that moved by a tenth or less is no change.
        changes = await call(
            "return L.changedRequests({ A: { width: 640, height: 360 }, B: { quality: 'off' }, C: { width: 640, height: 360 } },"
            " { A: { width: 660, height: 370 }, B: { width: 320, height: 180 }, C: { width: 320, height: 180 }, D: { quality: 'off' } });")
        assert changes == [
            {"track_id": "B", "width": 320, "height": 180},
            {"track_id": "C", "width": 320, "height": 180},
            {"track_id": "D", "quality": "off"},
        ]

        # The participant list: hands first in the order raised, then by name; search by name.
        listed = await call(
            "return [L.peopleOrder(p).map(x => x.name), L.peopleOrder(p, 'AN').map(x => x.name)];",
            p=[{"name": "Zoe"}, {"name": "Ann", "hand_raised": True, "hand_raised_at": 20.0},
               {"name": "Bob"}, {"name": "Dan", "hand_raised": True, "hand_raised_at": 10.0}])
        assert listed == [["Dan", "Ann", "Bob", "Zoe"], ["Dan", "Ann"]]

        # Quality: loss and round trip judge; a video due to play that decodes nothing is poor.
        judged = await call(
            "return [Q.judge({ loss: 0.01, rtt: 0.05 }), Q.judge({ loss: 0.03 }), Q.judge({ loss: 0.2 }), Q.judge({ rtt: 0.6 }),"
            " Q.judge({ loss: 0, fps: 0, expectFrames: true }), Q.judge({ loss: 0, fps: 1, expectFrames: true }), Q.judge({})];")
        assert judged == ["good", "fair", "poor", "poor", "poor", "good", None]
        loss = await call(
            "return [Q.intervalLoss({ packetsLost: 5, packetsReceived: 100 }, { packetsLost: 15, packetsReceived: 190 }),"
            " Q.intervalLoss({ packetsLost: 5, packetsReceived: 100 }, { packetsLost: 3, packetsReceived: 150 }), Q.intervalLoss(null, {})];")
        assert loss == [0.1, 0, None]
        assert page.errors == [], page.errors
