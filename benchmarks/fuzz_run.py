"""Every fuzz target of ``tests/fuzz`` for many cases: the benchmark-style run.

    python -m benchmarks.fuzz_run [--cases 10000] [--seconds 1800] [--seed 20260101] [--targets a,b] [--append]

Each target's harness is set up once (a real in-process node, server or TURN listener, as in the
suite), then fed ``--cases`` inputs or for ``--seconds``, whichever ends first.  Inputs come from
the targets' hypothesis strategies driven by seeded random bytes (hypothesis's
``fuzz_one_input``), so a run is reproducible from its seed.  Every case must get a defined
outcome; anything else is counted: as a known finding when it matches ``tests.fuzz.targets.KNOWN``
(code others own, reported to them), else as an unhandled exception, with the first inputs kept.
Writes ``benchmarks/results/fuzz.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiortc
import hypothesis
from hypothesis import HealthCheck, given, settings

from tests.fuzz.core import Target, Undefined, attempt
from tests.fuzz.targets import KNOWN, TARGETS, known

ROOT = Path(__file__).resolve().parent.parent

BUFFER_BYTES = 8192  # random bytes per case, more than any strategy draws
EXAMPLES_KEPT = 3


class Tally:
    def __init__(self) -> None:
        self.cases = 0
        self.outcomes: Counter[str] = Counter()
        self.known: Counter[str] = Counter()
        self.unhandled: Counter[str] = Counter()
        self.examples: list[dict[str, str]] = []

    def record(self, target: str, value: Any, run: Any) -> None:
        self.cases += 1
        try:
            self.outcomes[attempt(run, value)] += 1
        except Undefined as exc:
            message = str(exc)
            finding = known(target, message)
            if finding is not None:
                self.known[finding.name] += 1
                return
            self.unhandled[message.split(" | ")[0][:200]] += 1
            if len(self.examples) < EXAMPLES_KEPT:
                self.examples.append({"error": message[:1000], "input": repr(value)[:3000]})


def fuzz(target: Target, cases: int, seconds: float, seed: int) -> dict[str, Any]:
    tally = Tally()
    rng = random.Random(f"{seed}:{target.name}")
    started = time.monotonic()
    harness = target.open()
    run = harness.__enter__()
    setup = time.monotonic() - started

    @settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def case(value: Any) -> None:
        tally.record(target.name, value, run)

    began = time.monotonic()
    attempts = 0
    try:
        while tally.cases < cases and time.monotonic() - began < seconds:
            attempts += 1
            case.hypothesis.fuzz_one_input(rng.randbytes(BUFFER_BYTES))
    finally:
        elapsed = time.monotonic() - began
        teardown = close(harness)
    return {
        "name": target.name,
        "description": target.description,
        "cases": tally.cases,
        "inputs_tried": attempts,
        "seconds": round(elapsed, 1),
        "setup_seconds": round(setup, 1),
        "cases_per_second": round(tally.cases / elapsed, 1) if elapsed else None,
        "unhandled_exceptions": sum(tally.unhandled.values()),
        "unhandled_by_kind": dict(tally.unhandled.most_common()),
        "known_findings": dict(tally.known.most_common()),
        "outcomes": dict(tally.outcomes.most_common(25)),
        "distinct_outcomes": len(tally.outcomes),
        "examples": tally.examples,
        "teardown_error": teardown,
    }


def close(harness: Any) -> str | None:
    """Tear the harness down; what went wrong doing so (it is not a case's outcome)."""
    try:
        harness.__exit__(None, None, None)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:2000]
    return None


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s targets replacing the same targets in ``old``, in the order of ``TARGETS``."""
    by_name = {r["name"]: r for r in old["targets"]} | {r["name"]: r for r in new["targets"]}
    results = [by_name[t.name] for t in TARGETS if t.name in by_name]
    return {**new, "targets": results, **totals(results)}


def totals(results: list[dict[str, Any]]) -> dict[str, Any]:
    seen: Counter[str] = Counter()
    for result in results:
        seen.update(result["known_findings"])
    return {
        "unhandled_exceptions": sum(r["unhandled_exceptions"] for r in results),
        "known_findings": [
            {"name": k.name, "target": k.target, "where": k.where, "cases": seen.get(k.name, 0)} for k in KNOWN
            if any(r["name"] == k.target for r in results)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per target")
    parser.add_argument("--seconds", type=float, default=1800.0, help="time budget per target")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--targets", help="comma-separated names (default: all)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz.json")
    parser.add_argument("--append", action="store_true", help="keep the other targets' results already in --output")
    args = parser.parse_args(argv)
    chosen = [t for t in TARGETS if not args.targets or t.name in args.targets.split(",")]
    results = []
    for target in chosen:
        result = fuzz(target, args.cases, args.seconds, args.seed)
        results.append(result)
        print(f"{result['name']}: {result['cases']} cases in {result['seconds']} s, "
              f"{result['unhandled_exceptions']} unhandled, known {result['known_findings']}", flush=True)
    report = {
        "run": {
            "cases_per_target": args.cases, "seconds_per_target": args.seconds, "seed": args.seed,
            "python": platform.python_version(), "hypothesis": hypothesis.__version__, "aiortc": aiortc.__version__,
            "machine": platform.machine(), "date": time.strftime("%Y-%m-%d"),
        },
        "targets": results,
        **totals(results),
    }
    if args.append and args.output.exists():
        report = merged(json.loads(args.output.read_text()), report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
