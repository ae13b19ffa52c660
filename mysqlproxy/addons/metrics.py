"""Always-on counters for Prometheus: queries and errors by command, a latency
histogram, connections, bytes.

The hot path only bumps plain integers in dictionaries and lists (no locks, no label
look-ups); a prometheus_client Collector turns them into metric families when
Prometheus scrapes. Names follow Prometheus conventions (base units, _total counters).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mysqlproxy.hooks import ConnectionInfo
from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent

# Upper bounds in microseconds (exposed in seconds): 100 µs to 60 s.
LATENCY_BOUNDS_US = (
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
)


class ProxyMetrics(Collector):
    """An addon (query and connection hooks) and a Prometheus collector."""

    def __init__(
        self,
        active_connections: Callable[[], int] = lambda: 0,
        extra: Callable[[], Iterator[Metric]] | None = None,
    ) -> None:
        self.queries: dict[int, int] = {}
        self.errors: dict[int, int] = {}
        self.latency_buckets = [0] * (len(LATENCY_BOUNDS_US) + 1)
        self.latency_sum_us = 0
        self.bytes_from_clients = 0
        self.bytes_to_clients = 0
        self.rows_sent = 0
        self.connections_opened = 0
        self.connections_closed = 0
        self.connections_aborted = 0
        self.authentication_failures = 0
        self._active_connections = active_connections
        self._extra = extra

    # --- hooks (event loop) ---------------------------------------------------------

    def query_completed(self, event: QueryEvent) -> None:
        command = event.command
        self.queries[command] = self.queries.get(command, 0) + 1
        if event.error_code:
            self.errors[command] = self.errors.get(command, 0) + 1
        duration = event.duration_us
        self.latency_buckets[bisect.bisect_left(LATENCY_BOUNDS_US, duration)] += 1
        self.latency_sum_us += duration
        self.bytes_from_clients += event.bytes_received
        self.bytes_to_clients += event.bytes_sent
        self.rows_sent += event.rows_sent

    def connection_opened(self, connection: ConnectionInfo) -> None:
        self.connections_opened += 1

    def connection_closed(self, connection: ConnectionInfo, reason: str | None) -> None:
        self.connections_closed += 1
        if reason is not None:
            self.connections_aborted += 1

    def authentication_failed(self, connection: ConnectionInfo, code: int, message: str) -> None:
        self.authentication_failures += 1

    # --- collector (scrape thread) ----------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        queries = CounterMetricFamily(
            "mysqlproxy_queries", "Commands completed, by command.", labels=["command"]
        )
        for command, count in sorted(dict(self.queries).items()):
            queries.add_metric([_label(command)], count)
        yield queries
        errors = CounterMetricFamily(
            "mysqlproxy_query_errors", "Commands answered with an error, by command.",
            labels=["command"],
        )
        for command, count in sorted(dict(self.errors).items()):
            errors.add_metric([_label(command)], count)
        yield errors
        buckets = list(self.latency_buckets)
        cumulative = 0
        points = []
        for bound, count in zip(LATENCY_BOUNDS_US, buckets, strict=False):
            cumulative += count
            points.append((_seconds(bound), cumulative))
        cumulative += buckets[-1]
        points.append(("+Inf", cumulative))
        latency = HistogramMetricFamily(
            "mysqlproxy_query_duration_seconds",
            "Time from the command to the last byte of its response.",
        )
        latency.add_metric([], points, self.latency_sum_us / 1e6)
        yield latency
        yield CounterMetricFamily(
            "mysqlproxy_client_received_bytes", "Bytes received from clients in commands.",
            value=self.bytes_from_clients,
        )
        yield CounterMetricFamily(
            "mysqlproxy_client_sent_bytes", "Bytes sent to clients in responses.",
            value=self.bytes_to_clients,
        )
        yield CounterMetricFamily(
            "mysqlproxy_rows_sent", "Result set rows relayed to clients.", value=self.rows_sent
        )
        yield CounterMetricFamily(
            "mysqlproxy_connections_opened", "Client connections authenticated.",
            value=self.connections_opened,
        )
        yield CounterMetricFamily(
            "mysqlproxy_connections_closed", "Client connections ended.",
            value=self.connections_closed,
        )
        yield CounterMetricFamily(
            "mysqlproxy_connections_aborted",
            "Client connections ended abnormally (errors, lost peers, shutdown).",
            value=self.connections_aborted,
        )
        yield CounterMetricFamily(
            "mysqlproxy_authentication_failures",
            "Logins refused by the backend, or the backend unreachable.",
            value=self.authentication_failures,
        )
        yield GaugeMetricFamily(
            "mysqlproxy_connections", "Client connections open now.",
            value=self._active_connections(),
        )
        if self._extra is not None:
            yield from self._extra()


def _label(command: int) -> str:
    return Command.name_of(command).removeprefix("COM_").lower()


def _seconds(microseconds: int) -> str:
    return f"{microseconds / 1e6:g}"
