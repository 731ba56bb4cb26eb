"""Prometheus metrics for the TURN server, read from its plain counters at scrape time so that the
relay path never touches a metrics library."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from turn.server import TurnServer


class TurnCollector(Collector):
    def __init__(self, server: Callable[[], TurnServer | None]) -> None:
        self._server = server

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        server = self._server()
        if server is None:
            return
        gauges = server.gauges()
        for name, help_text in (
            ("allocations", "TURN allocations"),
            ("permissions", "TURN permissions in force"),
            ("channels", "TURN channel bindings in force"),
        ):
            yield GaugeMetricFamily(f"videoconf_turn_{name}", help_text, value=gauges[name])
        yield GaugeMetricFamily(
            "videoconf_turn_allocation_quota", "Allocations allowed in all (turn.total_quota; 0: no limit)",
            value=server.config.total_quota,
        )
        stats = server.stats
        yield CounterMetricFamily("videoconf_turn_allocations_created", "TURN allocations created", value=stats.allocations_created)
        requests = CounterMetricFamily("videoconf_turn_requests", "Requests answered with success, by method", labels=["method"])
        for method, count in sorted(stats.succeeded.items()):
            requests.add_metric([method], count)
        yield requests
        relayed = stats.relayed()
        packets = CounterMetricFamily("videoconf_turn_relayed_packets", "Packets relayed", labels=["direction"])
        packets.add_metric(["to_peer"], relayed["packets_to_peer"])
        packets.add_metric(["to_client"], relayed["packets_to_client"])
        yield packets
        octets = CounterMetricFamily("videoconf_turn_relayed_bytes", "Payload bytes relayed", labels=["direction"])
        octets.add_metric(["to_peer"], relayed["bytes_to_peer"])
        octets.add_metric(["to_client"], relayed["bytes_to_client"])
        yield octets
        reads = CounterMetricFamily("videoconf_turn_socket_reads", "Reads of the routed path that returned datagrams, by socket",
                                    labels=["socket"])
        datagrams = CounterMetricFamily("videoconf_turn_socket_read_datagrams", "Datagrams those reads returned (over reads: the batch size)",
                                        labels=["socket"])
        for kind, (count, total) in sorted(stats.reads().items()):
            reads.add_metric([kind], count)
            datagrams.add_metric([kind], total)
        yield reads
        yield datagrams
        errors = CounterMetricFamily("videoconf_turn_error_responses", "Error responses sent, by code", labels=["code"])
        for code, count in sorted(stats.errors.items()):
            errors.add_metric([str(code)], count)
        yield errors
        dropped = CounterMetricFamily("videoconf_turn_dropped_packets", "Packets dropped, by reason", labels=["reason"])
        for reason, count in sorted(stats.drops().items()):
            dropped.add_metric([reason], count)
        yield dropped
