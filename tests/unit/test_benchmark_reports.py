"""The benchmarks' report steps (tables, plots, JSON) on results of any subset of what they can
measure, without measuring anything: a long run must never die at its last step."""

from __future__ import annotations

import importlib
import itertools
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

COST = {"sfu": 20.0, "janus": 15.0, "relay": 1000.0}  # µs per forwarded packet


def load(name: str) -> ModuleType:
    """A benchmark of the ``benchmarks`` package."""
    return importlib.import_module(f"benchmarks.{name}")


def trial(n: int, us: float) -> dict[str, Any]:
    rate = 160.0 * n
    return {
        "subscribers": n, "cpu_seconds": us * rate * 5 / 1e6, "packets": int(rate * 5), "wall_seconds": 5.0,
        "packets_per_second": rate, "cpu_share": round(us * rate / 1e6, 4), "us_per_packet": us, "loss": 0.0,
        "fps_per_subscriber": 30.0,
    }


def step(subscribers: int, cpu: float, verdict: str = "held") -> dict[str, Any]:
    return {
        "subscribers": subscribers, "sfu_cpu": cpu, "load_cpu": cpu * 1.1, "packets_out_per_second": 160.0 * subscribers,
        "packet_loss": 0.0, "frame_rate": {"median": 30.0}, "forward_delay_ms": {"p50": 0.4, "p99": 2.0 + 10 * cpu},
        "verdict": verdict,
    }


def capacity(steps: list[dict[str, Any]]) -> dict[str, Any]:
    held = [s for s in steps if s["verdict"] == "held"]
    return {
        "largest_held": held[-1]["subscribers"] if held else 0, "subscribers_per_core": held[-1]["subscribers"] / held[-1]["sfu_cpu"] if held else None,
        "stopped_because": "frame rate under 90% of the sent rate", "steps": steps,
    }


def side_by_side_report(systems: tuple[str, ...], cap: dict[str, Any] | None = None) -> dict[str, Any]:
    module = load("side_by_side")
    counts = [1, 10]
    raw = {s: {n: [trial(n, COST[s] * (1 + 1 / n))] for n in counts} for s in systems}
    if systems:
        raw[systems[-1]][10].append({"error": "RuntimeError: only 9 of 10 subscribers receive audio and video"})
    setup = {"video": "640x360 VP8", "audio": "Opus tone", "counts": counts, "trials": 1, "warmup_seconds": 2.0, "window_seconds": 5.0}
    machine = {"cpu": "Test CPU", "cores": 2, "python": "3.11", "aiortc": "1.16.0", "janus": None}
    return module.assemble(raw, cap, setup, machine)


SUBSETS = [combo for size in (1, 2, 3) for combo in itertools.combinations(("sfu", "janus", "relay"), size)]


@pytest.mark.parametrize("systems", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_side_by_side_reports_any_subset_of_systems(systems: tuple[str, ...], tmp_path: Path) -> None:
    module = load("side_by_side")
    report = side_by_side_report(systems, capacity([step(20, 0.1), step(30, 0.5), step(45, 0.9, "loss 2%")]))
    table = module.write_report(report, tmp_path / "out.json")

    header = next(line for line in table.splitlines() if line.startswith("| N |"))
    assert [name for name in ("VideoConf µs", "Janus µs", "MediaRelay µs") if name in header] == [
        f"{module.SHORT[s]} µs" for s in systems
    ]
    assert ("VideoConf / Janus" in header) == ({"sfu", "janus"} <= set(systems))
    rows = [line for line in table.splitlines() if line.startswith("| 1 |") or line.startswith("| 10 |")]
    assert len(rows) == 2 and all(row.count("|") == header.count("|") for row in rows)
    assert "| 1 | 160.0 |" in table  # packets/s out from whichever system was measured
    assert "30 subscribers held the bar" in table
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["plots"] == ["side_by_side_cpu.png", "side_by_side_capacity.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in written["plots"])
    assert (tmp_path / "out.md").read_text() == table
    assert set(written["median"]) == set(systems)


def test_side_by_side_reports_the_machines_floor_beside_the_capacity_aim(tmp_path: Path) -> None:
    module = load("side_by_side")
    report = module.assemble(
        {s: {n: [trial(n, COST[s])] for n in (1, 10)} for s in ("sfu", "janus")},
        capacity([step(20, 0.1), step(30, 0.5)]),
        {"video": "640x360 VP8", "audio": "Opus tone", "counts": [1, 10], "trials": 1, "warmup_seconds": 2.0, "window_seconds": 5.0},
        {"cpu": "Test CPU", "cores": 2, "python": "3.11", "aiortc": "1.16.0", "janus": None},
        {"10": {"us_per_copy": 12.5, "copies_per_core_second": 80_000, "path": "native sendmmsg", "packets_per_second": 160},
         "300": {"us_per_copy": 9.5, "copies_per_core_second": 105_263, "path": "native sendmmsg", "packets_per_second": 160},
         "600": {"error": "OSError: too many open files"}},
    )
    table = module.write_report(report, tmp_path / "out.json")
    assert "12.5 µs at 10 copies per packet (80,000 copies/s per core), 9.5 µs at 300" in table
    aim = report["aims"]["forwards_120000_packets_per_second_per_core"]
    assert not aim["met"] and "105,263 copies/s per core here, at 300 copies per packet" in aim["value"]
    assert json.loads((tmp_path / "out.json").read_text())["floor"]["600"]["error"].startswith("OSError")


def test_side_by_side_reports_a_capacity_search_where_nothing_held(tmp_path: Path) -> None:
    module = load("side_by_side")
    report = side_by_side_report(("sfu", "janus"), capacity([step(20, 0.3, "loss 5%")]))
    table = module.write_report(report, tmp_path / "out.json")
    assert "0 subscribers held the bar" in table and "forwarded packets/s per core" not in table
    assert "forwards_120000_packets_per_second_per_core" not in report["aims"]


def test_side_by_side_reports_a_run_without_capacity_search_or_trials(tmp_path: Path) -> None:
    module = load("side_by_side")
    report = side_by_side_report(("sfu",))
    report["median"]["sfu"] = {}  # --trials 0
    table = module.write_report(report, tmp_path / "out.json")
    assert "Capacity" not in table and json.loads((tmp_path / "out.json").read_text())["plots"] == []


# The SFU and TURN benchmarks' summaries ------------------------------------------------------


def sfu_trial(n: int, us: float | None) -> dict[str, Any]:
    rate = 160.0 * n
    return {"cpu_seconds": 0.0 if us is None else us * rate * 5 / 1e6, "packets": int(rate * 5), "wall_seconds": 5.0,
            "packets_per_second": rate, "cpu_share": 0.0 if us is None else us * rate / 1e6, "us_per_packet": us}


@pytest.mark.parametrize("sfu_counts, relay_counts", [([1, 8], [1, 8]), ([1, 8], []), ([], [1, 8]), ([1], [8])])
def test_sfu_bench_summarizes_any_subset_of_counts(sfu_counts: list[int], relay_counts: list[int]) -> None:
    module = load("sfu_bench")
    raw = {"sfu": {n: [sfu_trial(n, 20.0)] for n in sfu_counts}, "relay": {n: [sfu_trial(n, 700.0)] for n in relay_counts}}
    summary = module.summarize(raw)
    assert set(summary["sfu"]) == {str(n) for n in sfu_counts} and set(summary["relay"]) == {str(n) for n in relay_counts}
    assert module.relay_ratios(summary) == {str(n): 35.0 for n in sorted(set(sfu_counts) & set(relay_counts))}
    json.dumps(summary)


def test_sfu_bench_summarizes_trials_that_measured_no_cpu() -> None:
    """A quick run's only trial may read no CPU tick from /proc: no figure, not a crash."""
    module = load("sfu_bench")
    summary = module.summarize({"sfu": {1: [sfu_trial(1, None)], 8: [sfu_trial(8, 20.0)]}, "relay": {1: [sfu_trial(1, 700.0)]}})
    assert summary["sfu"]["1"]["us_per_packet"] is None and summary["sfu"]["8"]["us_per_packet"] == 20.0
    assert module.relay_ratios(summary) == {}
    grid = module.grid_summary({"small": [sfu_trial(90, None) | {"received_per_second": 1.0, "forwarded_per_second": 2.0}], "large": []})
    assert grid["median"]["small"]["us_per_packet"] is None and grid["small_over_large"] == {"cpu_share": None, "packets_per_second": None}


def test_turn_bench_summarizes_a_server_that_relayed_nothing() -> None:
    module = load("turn_bench")
    good = {"sent": 100, "received": 100, "lost": 0, "cpu_us_per_packet": 15.0, "packets_per_cpu_second": 66667, "packets_per_second": 1000}
    failed = {"sent": 0, "received": 0, "lost": None, "cpu_us_per_packet": None, "packets_per_cpu_second": None, "packets_per_second": 0}
    summary = module.summarize({"videoconf": [failed], "coturn": [good]})
    assert summary["videoconf"]["cpu_us_per_packet"] is None and summary["coturn"]["cpu_us_per_packet"] == 15.0
    assert module.cost_ratio(summary) is None
    both = module.summarize({"videoconf": [good | {"cpu_us_per_packet": 30.0}], "coturn": [good, failed]})
    assert module.cost_ratio(both) == 2.0 and both["coturn"]["lost"] == 0
