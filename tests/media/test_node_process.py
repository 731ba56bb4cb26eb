"""The SFU as an operator runs it (``videoconf run``) with two ``videoconf bot`` processes: one
publishes, one subscribes and reports.  The node's /metrics shows what it forwarded and proves
that the server process created no decoder or encoder while doing so."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from clients.loadtest.process import ChildProcess
from tests.server_process import ServerProcess, request

PASSWORD = "correct horse battery"


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def bot(server: ServerProcess, email: str, meeting: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "videoconf.cli", "bot", "--api", server.base, "--email", email,
        "--password", PASSWORD, "--meeting", meeting, *extra,
    ]


def test_bots_meet_through_a_server_process_that_decodes_and_encodes_nothing(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    assert server.cli("migrate").returncode == 0
    server.start()
    publisher = None
    try:
        accounts = {}
        for name in ("host", "guest"):
            status, body = request(
                server.base + "/api/auth/register",
                {"email": f"{name}@example.com", "password": PASSWORD, "display_name": name.title()},
            )
            assert status == 201, body
            accounts[name] = body["access_token"]
        status, meeting = request(server.base + "/api/meetings", {"title": "Bots", "kind": "instant"}, accounts["host"])
        assert status == 201, meeting
        before = scrape(server.base)
        assert before[("videoconf_sfu_codec_instances_total", (("kind", "decoder"),))] == 0

        publisher = ChildProcess(
            bot(server, "host@example.com", meeting["code"], "--publish", "--duration", "25", "--codec", "VP8"),
            env=server.env, output=tmp_path / "publisher.log",
        )
        publisher.start(lambda: scrape(server.base).get(("videoconf_sfu_tracks", (("kind", "video"),)), 0) >= 1, 20,
                        "the publishing bot's track")

        subscriber = subprocess.run(
            bot(server, "guest@example.com", meeting["id"], "--duration", "6", "--name", "Watcher"),
            capture_output=True, text=True, timeout=60, env=server.env,
        )
        assert subscriber.returncode == 0, subscriber.stderr
        report = json.loads(subscriber.stdout)
        assert report["errors"] == []
        (video,) = [t for t in report["tracks"] if t["kind"] == "video"]
        (audio,) = [t for t in report["tracks"] if t["kind"] == "audio"]
        assert video["frames_verified"] >= 30 and video["frames_corrupt"] == 0, video
        assert video["frames_verified"] == video["frames_received"], video
        assert audio["tone_strength"] > 0.5, audio

        metrics = scrape(server.base)
        assert metrics[("videoconf_sfu_packets_forwarded_total", (("kind", "video"),))] >= 30
        assert metrics[("videoconf_sfu_packets_forwarded_total", (("kind", "audio"),))] >= 100
        assert metrics[("videoconf_sfu_bytes_forwarded_total", (("kind", "video"),))] > 0
        assert metrics[("videoconf_sfu_forward_delay_seconds_count", ())] > 0
        assert metrics[("videoconf_sfu_rooms", ())] == 1
        # Both bots decoded in their own processes; the server created no codec at all.
        assert metrics[("videoconf_sfu_codec_instances_total", (("kind", "decoder"),))] == 0
        assert metrics[("videoconf_sfu_codec_instances_total", (("kind", "encoder"),))] == 0
    finally:
        if publisher is not None and publisher.running:
            publisher.kill()
        code, log = server.stop()
    assert code == 0, log
