"""The cluster benchmark's measurements (``benchmarks.cluster_bench``) at their smallest size, on
two real nodes: each gives numbers of the right kind (packets relayed and delivered, CPU used,
the hop's delay, a capacity step).  Only that the numbers are there and sane is checked, never
how fast anything is: speed is measured in ``benchmarks/``, not asserted in tests."""

from __future__ import annotations

from pathlib import Path

from benchmarks import cluster_bench as bench_module
from benchmarks.cluster_bench import Bench, RelaySetup, capacity_search, hop_delay, relay_summary
from sfu.aiortc_hooks import configure_ice


async def test_relay_cost_hop_delay_and_a_capacity_step_each_measure_something(tmp_path: Path) -> None:
    configure_ice(["127.0.0.1"], None)
    bench = Bench(tmp_path)
    await bench.start()
    setup = RelaySetup(bench)
    try:
        await setup.start()
        assert setup.a is not None and setup.b is not None

        # 1. One subscriber on B of the publisher on A, then the same on B alone.
        relay = await setup.relay_trial(1, warmup=0.5, seconds=2.0)
        single = await setup.single_trial(1, warmup=0.5, seconds=2.0)
        a, b = relay["raw"]["nodes"]["a"], relay["raw"]["nodes"]["b"]
        assert a["forwarded"] > 0 and b["received"] > 0, relay  # A relayed to B
        assert relay["delivered_per_second"] > 0 and single["delivered_per_second"] > 0
        assert relay["a_cpu_share"] > 0 and relay["b_cpu_share"] > 0 and single["cpu_share"] > 0
        assert relay["a_us_per_relayed_packet"] > 0 and relay["b_us_per_delivered_packet"] > 0
        assert single["us_per_delivered_packet"] > 0
        summary = relay_summary({"relay": {1: [relay]}, "single": {1: [single]}})
        assert summary["1"]["ratios"]["b_over_single"] > 0, summary

        # 2. The same packets at a subscriber on A and one on B: B minus A.
        delay = await hop_delay(setup, seconds=2.0, warmup=0.5)
        assert delay["video"]["packets"] > 0 and delay["audio"]["packets"] > 0, delay
        assert delay["all"]["p50_ms"] > 0 and delay["all"]["p99_ms"] >= delay["all"]["p50_ms"], delay

        # 3. One capacity step on one node: every bot receives, counted before decryption.
        await setup.close()
        await bench.remove("node-a")
        result = await capacity_search(bench, {"b": setup.b}, [1], warmup=0.5, seconds=2.0, budget=30.0)
        (step,) = result["steps"]
        assert step["delivered_per_second"] > 0 and step["delivered_share"] > 0, step
        assert step["node_cpu_share"]["b"] > 0 and step["load_cpu_share"] > 0, step
        assert result["meetings_by_node"] == {"b": bench_module.CAPACITY_MEETINGS}
    finally:
        await setup.close()
        await bench.close()
