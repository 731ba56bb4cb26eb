"""The packet path's own counters and histograms: what a scrape reads from them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sfu.metrics import PacketHistogram, SfuMetrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_bound_is_inclusive_and_buckets_are_cumulative() -> None:
    histogram = PacketHistogram((0.001, 0.005))
    for value in (0.0005, 0.001, 0.003, 0.005, 0.2):
        histogram.observe(value)
    family = histogram.family("x_seconds", "x")
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "x_seconds_bucket"}
    assert buckets == {"0.001": 2, "0.005": 4, "+Inf": 5}
    count = [s.value for s in family.samples if s.name == "x_seconds_count"]
    total = [s.value for s in family.samples if s.name == "x_seconds_sum"]
    assert count == [5] and abs(total[0] - 0.2095) < 1e-12


def test_forwarded_received_and_both_delays_reach_the_scrape() -> None:
    registry = CollectorRegistry()
    metrics = SfuMetrics(registry)
    metrics.record_receive("video")
    for delay in (0.0001, 0.0002, 0.004):
        metrics.counts.copy_delay.observe(delay)
    metrics.record_forward("video", 3, 3000, 0.004)
    scraped = samples(registry)
    assert scraped[("videoconf_sfu_packets_forwarded_total", (("kind", "video"),))] == 3
    assert scraped[("videoconf_sfu_packets_forwarded_total", (("kind", "audio"),))] == 0
    assert scraped[("videoconf_sfu_bytes_forwarded_total", (("kind", "video"),))] == 3000
    assert scraped[("videoconf_sfu_packets_received_total", (("kind", "video"),))] == 1
    # The last copy: one observation per packet; each copy: one per copy.
    assert scraped[("videoconf_sfu_forward_delay_seconds_count", ())] == 1
    assert scraped[("videoconf_sfu_forward_delay_seconds_bucket", (("le", "0.0025"),))] == 0
    assert scraped[("videoconf_sfu_forward_copy_delay_seconds_count", ())] == 3
    assert scraped[("videoconf_sfu_forward_copy_delay_seconds_bucket", (("le", "0.00025"),))] == 2
    assert metrics.forwarded_total() == 3
