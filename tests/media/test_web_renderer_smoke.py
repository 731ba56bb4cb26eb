"""The web renderer benchmark (``benchmarks.web_renderer``) at its smallest: a real node, headless
Chromium and a meeting of 2, then of 4.  Only that the report is whole and its numbers agree with
each other is checked (CPU was used, the SFU forwarded exactly the videos on screen, and they
played), never how fast anything is: speed is measured in ``benchmarks/``, not asserted in tests."""

from __future__ import annotations

from pathlib import Path

from benchmarks.web_renderer import BrowserProcess, Reading, process_kind, run, window


def test_chromium_processes_are_told_apart_by_their_command_lines() -> None:
    assert process_kind(b"/usr/lib/chromium/chromium\0--headless\0--no-sandbox\0") == "browser"
    # A zygote's child rewrites its command line as one string separated by spaces.
    assert process_kind(b"/usr/lib/chromium/chromium --type=renderer --crashpad-handler-pid=0 --lang=en-US\0") == "renderer"
    assert process_kind(b"/usr/lib/chromium/chromium --type=renderer --top-chrome-webui --lang=en-US\0") == "renderer-webui"
    assert process_kind(b"/usr/lib/chromium/chromium\0--type=gpu-process\0--no-sandbox\0") == "gpu-process"
    assert process_kind(b"python3\0-m\0videoconf.cli\0run\0") is None
    assert process_kind(b"") is None


def test_a_window_counts_processes_that_started_in_it_from_zero_and_leaves_out_those_that_ended() -> None:
    renderer, gpu, gone, new = (BrowserProcess(1, "renderer"), BrowserProcess(2, "gpu-process"),
                                BrowserProcess(3, "utility"), BrowserProcess(4, "renderer"))
    first = Reading(10.0, {renderer: 5.0, gpu: 1.0, gone: 2.0}, 3.0, 7.0, {"a": 100, "b": 50})
    last = Reading(12.0, {renderer: 6.0, gpu: 1.5, new: 0.2}, 3.5, 7.2, {"a": 120, "c": 10})
    figures = window(first, last, [2.0, 3.0, 3.0])
    assert figures["renderer_cpu_per_second"] == 0.6  # (1.0 + 0.2) / 2 s
    assert figures["gpu_cpu_per_second"] == 0.25
    assert figures["browser_cpu_per_second"] == 0.85
    assert figures["node_cpu_per_second"] == 0.25 and figures["bots_cpu_per_second"] == 0.1
    assert (figures["started_in_window"], figures["ended_in_window"]) == ([4], [3])
    assert figures["presented_frames_per_second"] == 15.0 and figures["videos_with_frames"] == 2
    assert figures["video_fps"] == [5.0, 10.0]
    assert figures["forwarded_video"] == {"min": 2.0, "max": 3.0, "median": 3.0}


async def test_a_tiny_run_reports_cpu_and_forwards_exactly_the_tiles_on_screen(tmp_path: Path) -> None:
    report = await run([2, 4], trials=1, seconds=3.0, settle=1.0, workdir=tmp_path)

    assert report["benchmark"] == "web_renderer" and report["settings"]["sizes"] == [2, 4]
    assert set(report["results"]) == {"2", "4"}
    for size, result in report["results"].items():
        (trial,) = result["trials"]
        assert "error" not in trial and result["failed_trials"] == 0, trial
        people = int(size)
        assert trial["people"] == people and trial["seconds"] >= 3.0
        assert trial["renderer_cpu_per_second"] > 0 and trial["gpu_cpu_per_second"] > 0
        assert trial["browser_cpu_per_second"] >= trial["renderer_cpu_per_second"] + trial["gpu_cpu_per_second"]
        assert trial["node_cpu_per_second"] > 0
        assert trial["processes"]["renderer"] >= 1 and trial["processes"]["browser"] == 1
        # Everyone else is on the one page, and the SFU forwarded exactly those videos throughout.
        assert trial["shown_tiles"] == trial["playing_after"] == people - 1, trial
        assert trial["forwarded_video"]["min"] == trial["forwarded_video"]["max"] == people - 1, trial
        assert trial["videos_with_frames"] == len(trial["video_fps"]) == people - 1 and trial["presented_frames_per_second"] > 0
        assert trial["page_errors"] == [], trial["page_errors"]
        assert result["renderer_cpu_per_second"] == trial["renderer_cpu_per_second"]
        assert result["forwarded_video"] == people - 1
    ratio = report["ratio"]
    assert ratio["of"] == "4/2" and ratio["renderer_cpu_per_second"] > 0 and ratio["presented_frames_per_second"] > 0
