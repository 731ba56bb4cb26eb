"""Smoke tests of the load tester against a real node: tiny scenarios of a few bots for a few
seconds.  They check that the report's numbers are present and agree with each other (what the
node forwarded is what the bots received, within loss), never how fast anything was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clients.loadtest.runner import QualityBar, Target, capacity_search, run_scenario
from clients.loadtest.scenarios import SINGLE_LAYER, scenario
from control_api.handlers import SERVICES
from tests.media.conftest import Meeting, until
from videoconf.app import SFU

ROOT = Path(__file__).resolve().parents[2]


def target(meeting: Meeting) -> Target:
    return Target(
        str(meeting.api.client.make_url("")).rstrip("/"),
        meeting.api.app[SERVICES].ctx.room_tokens,
        host_token=meeting.host["token"],
        signaling_url=meeting.signaling_url,
    )


async def test_tiny_livestream_report_is_complete_and_consistent(meeting: Meeting) -> None:
    tiny = scenario("livestream", viewers=3, video_layers=SINGLE_LAYER, tile=None, duration=3.0, warmup=1.5, decode=1)
    report = await run_scenario(target(meeting), tiny)

    assert (report["publishers"], report["subscribers"], report["failed_joins"]) == (1, 3, 0)
    window = report["window_seconds"]
    forwarded = report["packets_out_per_second"] * window
    received = report["received_packets"]
    # What the node counted as written is what the bots counted as received, give or take the
    # packets in flight at the two edges of the window and any loss.
    assert forwarded > 0 and received > 0
    assert abs(received - forwarded) <= 0.05 * forwarded + 20
    # One publisher, three receivers: three copies of every packet in (RTX aside).
    assert 2.5 * report["packets_in_per_second"] <= report["packets_out_per_second"] <= 3.5 * report["packets_in_per_second"]
    assert report["packet_loss"] is not None and report["packet_loss"] <= 0.05
    assert 0 < report["mbit_in"] < report["mbit_out"]
    assert report["frame_rate"]["sent"] == 30 and report["frame_rate"]["median"] > 5
    delay, copies = report["forward_delay_ms"], report["copy_delay_ms"]
    assert delay["p50"] is not None and 0 < delay["p50"] <= delay["p99"]
    # Each copy leaves no later than the last copy of its packet.
    assert copies["p50"] is not None and 0 < copies["p50"] <= delay["p50"] and copies["p99"] <= delay["p99"]
    assert report["join_ms"]["p50"] > 0 and report["first_media_ms"]["p50"] >= report["join_ms"]["p50"]
    assert report["sfu_cpu"] > 0 and report["sfu_us_per_forwarded_packet"] > 0
    assert report["decoded"]["receivers"] == 1
    assert report["decoded"]["frames"] > 0 and report["decoded"]["corrupt"] == 0
    assert report["scenario"]["name"] == "livestream" and report["scenario"]["viewers"] == 3


async def test_viewers_shared_with_worker_processes_are_counted_with_this_one_s(meeting: Meeting) -> None:
    # The viewers count by the clear RTP header, undecrypted (the capacity search's way), here
    # and in the workers; the other tests count after decryption.
    tiny = scenario("livestream", viewers=5, video_layers=SINGLE_LAYER, tile=None, duration=3.0, warmup=1.0, clear_count=True)
    load = target(meeting)
    load.processes = 3  # this process and two workers
    report = await run_scenario(load, tiny)
    assert (report["subscribers"], report["failed_joins"], report["load_processes"]) == (5, 0, 3)
    # Five viewers, wherever they are: five copies of every packet, all counted as received.
    forwarded = report["packets_out_per_second"] * report["window_seconds"]
    assert abs(report["received_packets"] - forwarded) <= 0.05 * forwarded + 20
    assert 4.5 * report["packets_in_per_second"] <= report["packets_out_per_second"] <= 5.5 * report["packets_in_per_second"]
    assert report["frame_rate"]["median"] > 5 and report["packet_loss"] is not None and report["packet_loss"] <= 0.05
    assert 0 < report["load_cpu"] <= report["load_cpu_total"]
    assert report["join_ms"]["p50"] > 0 and report["first_media_ms"]["p50"] > 0
    # The workers are gone afterwards, and so are their bots.
    node = meeting.api.app[SFU]
    await until(lambda: node.participant_count() == 0, timeout=15)


async def test_audio_only_and_meeting_scenarios_receive_from_every_other_publisher(meeting: Meeting) -> None:
    audio = await run_scenario(target(meeting), scenario("audio", publishers=2, viewers=2, duration=2.0, warmup=1.0))
    assert (audio["publishers"], audio["subscribers"]) == (2, 4)  # the speakers hear each other
    assert audio["frame_rate"]["median"] is None and audio["mbit_out"] > 0
    # Audio only: each speaker's packets go to the two listeners and the other speaker.
    assert 2.5 * audio["packets_in_per_second"] <= audio["packets_out_per_second"] <= 3.5 * audio["packets_in_per_second"]
    assert abs(audio["received_packets"] - audio["packets_out_per_second"] * audio["window_seconds"]) <= 0.05 * audio["received_packets"] + 20

    people = await run_scenario(target(meeting), scenario("meeting", publishers=3, duration=2.0, warmup=2.0, tile=(320, 180)))
    assert (people["publishers"], people["subscribers"]) == (3, 3)  # everyone publishes and receives
    assert people["received_packets"] > 0 and people["packet_loss"] is not None


async def test_capacity_search_raises_subscribers_until_the_limit(meeting: Meeting) -> None:
    tiny = scenario("livestream", video_layers=SINGLE_LAYER, tile=None, duration=2.0, warmup=1.0)
    result = await capacity_search(target(meeting), tiny, QualityBar(min_fps_ratio=0.0, max_loss=0.5), start=1, growth=2.0, limit=3)
    counts = [step["subscribers"] for step in result["steps"]]
    assert counts == [1, 2, 3], result["stopped_because"]
    assert all(step["verdict"] == "held" for step in result["steps"])
    assert result["largest_held"] == 3 and result["subscribers_per_core"] > 0
    assert "limit" in result["stopped_because"]

    strict = await capacity_search(target(meeting), tiny, QualityBar(min_fps_ratio=2.0), start=1, limit=3)
    assert len(strict["steps"]) == 1 and strict["largest_held"] == 0  # no frame rate beats twice the sent one
    assert "frame rate" in strict["stopped_because"]


def test_videoconf_loadtest_command_on_a_local_node(tmp_path: Path) -> None:
    output = tmp_path / "report.json"
    command = [sys.executable, "-m", "videoconf.cli", "loadtest", "--local", "--scenario", "join-storm",
               "--viewers", "3", "--duration", "2", "--warmup", "1", "--output", str(output)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(output.read_text())
    (storm,) = report["scenarios"]
    assert storm["scenario"]["name"] == "join-storm" and storm["subscribers"] == 3
    assert storm["received_packets"] > 0 and storm["sfu_cpu"] > 0
    assert "| join-storm |" in done.stdout and "report written to" in done.stdout
    assert report["table"] in done.stdout

    bad = subprocess.run([*command[:6], "nope"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown scenario" in bad.stderr


def test_videoconf_loadtest_says_why_when_the_node_is_unreachable(tmp_path: Path) -> None:
    from clients.loadtest.process import free_port

    env = {**os.environ, "PYTHONPATH": str(ROOT), "VIDEOCONF_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "videoconf.cli", "loadtest", "--api", f"http://127.0.0.1:{free_port()}", "--scenario", "audio",
         "--output", str(tmp_path / "never.json"), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 1
    assert "videoconf loadtest: ClientConnectorError" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "never.json").exists()


async def test_a_server_that_is_not_a_videoconf_node_gets_a_clear_error(meeting: Meeting) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from clients.loadtest.runner import LoadTestError
    from clients.loadtest.runner import Meeting as LoadMeeting

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>hello</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", html)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        stranger = Target(str(server.make_url("")).rstrip("/"), meeting.api.app[SERVICES].ctx.room_tokens)
        load = LoadMeeting(stranger, scenario("audio"))
        try:
            with pytest.raises(LoadTestError, match="not a JSON answer"):
                await load.open()
            with pytest.raises(LoadTestError, match="not Prometheus text"):
                await load.scrape()
        finally:
            await load.close()
    finally:
        await server.close()
