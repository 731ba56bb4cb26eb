"""The churn soak's short version (benchmarks/churn_soak.py; the full one runs 30 minutes): a
node run as ``videoconf run`` takes about a minute of participants joining, publishing three
simulcast layers, switching the layers they receive and leaving.  Once everyone has gone, the
node's open file descriptors, asyncio tasks and live peer connections are back exactly where they
were after the warm-up, and its resident memory within 16 MiB of it (CPython keeps freed arenas)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_a_minute_of_churn_leaves_nothing_behind(tmp_path: Path) -> None:
    output = tmp_path / "churn_soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.churn_soak", "--minutes", "0.6", "--warmup", "15",
         "--participants", "4", "--settle", "30", "--sample-every", "10", "--rss-tolerance-mib", "16",
         "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert output.exists(), done.stderr[-3000:]
    result = json.loads(output.read_text())
    counts = result["counts"]
    figures = {k: (result["start"][k], result["end"][k]) for k in ("rss_mib", "fds", "tasks", "peer_connections")}
    assert result["all_returned"], (figures, result["returned"], done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    # It churned: people came and went, published, were switched between layers, and saw video.
    assert counts["errors"] == 0, counts["error_samples"]
    assert counts["cycles"] >= 12 and counts["joins"] == counts["leaves"] == counts["cycles"], counts
    assert counts["layer_requests"] >= 50 and counts["layer_changes"] >= 5, counts
    assert counts["cycles_with_video"] >= counts["cycles"] - 2, counts
    assert result["peak"]["peer_connections"] >= 4, result["peak"]  # the node really held connections
    assert result["end"]["participants"] == result["end"]["rooms"] == 0
