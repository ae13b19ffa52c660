"""Prometheus metrics: ProxyMetrics as an addon and a collector (unit), and
`mysqlproxy run --metrics` serving /metrics for queries through a real proxy."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from mysqlproxy.addons.metrics import LATENCY_BOUNDS_US, ProxyMetrics
from mysqlproxy.hooks import ConnectionInfo
from mysqlproxy.protocol.constants import Command
from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.events import make_query_event
from tests.conftest import MariaDB
from tests.proxyproc import (
    ADMIN_PASSWORD,
    PYTHON,
    RunningProxy,
    one_line_error,
    run_cli,
    wait_until,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_text(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, sorted labels), and each family's type."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, str]]:
    return scrape_text(generate_latest(registry).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) in order, +Inf last."""
    out = [(float(dict(labels)["le"]), v) for (n, labels), v in samples.items()
           if n == name + "_bucket"]
    return sorted(out)


def connection(n: int = 1) -> ConnectionInfo:
    return ConnectionInfo(connection_id=n, client_address=f"127.0.0.1:{50000 + n}",
                          backend_address="127.0.0.1:3306", user="app")


# --- unit ---------------------------------------------------------------------------


@pytest.fixture
def metrics() -> tuple[ProxyMetrics, CollectorRegistry, list[int]]:
    active = [0]
    proxy_metrics = ProxyMetrics(active_connections=lambda: active[0])
    registry = CollectorRegistry()
    registry.register(proxy_metrics)
    return proxy_metrics, registry, active


def test_an_idle_proxy_exposes_every_family_at_zero(
    metrics: tuple[ProxyMetrics, CollectorRegistry, list[int]],
) -> None:
    _, registry, _ = metrics
    samples, types = scrape(registry)
    assert types == {
        "mysqlproxy_queries": "counter",
        "mysqlproxy_query_errors": "counter",
        "mysqlproxy_query_duration_seconds": "histogram",
        "mysqlproxy_client_received_bytes": "counter",
        "mysqlproxy_client_sent_bytes": "counter",
        "mysqlproxy_rows_sent": "counter",
        "mysqlproxy_connections_opened": "counter",
        "mysqlproxy_connections_closed": "counter",
        "mysqlproxy_connections_aborted": "counter",
        "mysqlproxy_authentication_failures": "counter",
        "mysqlproxy_connections": "gauge",
    }
    assert value(samples, "mysqlproxy_query_duration_seconds_count") == 0
    assert value(samples, "mysqlproxy_query_duration_seconds_sum") == 0
    assert all(count == 0 for _, count in buckets(samples, "mysqlproxy_query_duration_seconds"))
    assert value(samples, "mysqlproxy_connections") == 0
    assert value(samples, "mysqlproxy_connections_opened_total") == 0


def test_queries_and_errors_by_command(
    metrics: tuple[ProxyMetrics, CollectorRegistry, list[int]],
) -> None:
    proxy_metrics, registry, _ = metrics
    for _ in range(3):
        proxy_metrics.query_completed(make_query_event())
    proxy_metrics.query_completed(make_query_event(error_code=1146, rows_sent=0))
    for _ in range(2):
        proxy_metrics.query_completed(make_query_event(
            command=Command.COM_STMT_EXECUTE, query="SELECT ?", params=(1,), statement_id=1))
    proxy_metrics.query_completed(make_query_event(
        command=Command.COM_STMT_EXECUTE, query="SELECT ?", params=(1,), statement_id=1,
        error_code=1064))
    proxy_metrics.query_completed(make_query_event(command=Command.COM_PING, query=""))
    proxy_metrics.query_completed(make_query_event(command=0x7E, query=""))  # unknown byte
    samples, _ = scrape(registry)
    assert value(samples, "mysqlproxy_queries_total", command="query") == 4
    assert value(samples, "mysqlproxy_queries_total", command="stmt_execute") == 3
    assert value(samples, "mysqlproxy_queries_total", command="ping") == 1
    assert value(samples, "mysqlproxy_queries_total", command="unknown_0x7e") == 1
    assert value(samples, "mysqlproxy_query_errors_total", command="query") == 1
    assert value(samples, "mysqlproxy_query_errors_total", command="stmt_execute") == 1
    assert ("mysqlproxy_query_errors_total", (("command", "ping"),)) not in samples
    assert value(samples, "mysqlproxy_query_duration_seconds_count") == 9


def test_the_latency_histogram_is_cumulative_in_seconds(
    metrics: tuple[ProxyMetrics, CollectorRegistry, list[int]],
) -> None:
    proxy_metrics, registry, _ = metrics
    durations_us = [0, 50, 100, 101, 2_500, 99_999, 1_000_000, 60_000_000, 61_000_000,
                    3_600_000_000]
    for duration in durations_us:
        proxy_metrics.query_completed(make_query_event(duration_us=duration))
    samples, _ = scrape(registry)
    points = buckets(samples, "mysqlproxy_query_duration_seconds")
    bounds = [bound for bound, _ in points]
    assert bounds == [b / 1e6 for b in LATENCY_BOUNDS_US] + [float("inf")]
    assert bounds[0] == 0.0001 and bounds[-2] == 60.0  # 100 µs to 60 s, in seconds
    for bound, cumulative in points:
        # le: a value equal to the bound is in its bucket
        assert cumulative == sum(1 for d in durations_us if d / 1e6 <= bound), bound
    counts = [count for _, count in points]
    assert counts == sorted(counts)
    assert points[-1][1] == len(durations_us)
    assert value(samples, "mysqlproxy_query_duration_seconds_count") == len(durations_us)
    assert value(samples, "mysqlproxy_query_duration_seconds_sum") == pytest.approx(
        sum(durations_us) / 1e6)
    assert value(samples, "mysqlproxy_query_duration_seconds_bucket", le="0.0001") == 3
    assert value(samples, "mysqlproxy_query_duration_seconds_bucket", le="60") == 8


def test_bytes_rows_and_connections(
    metrics: tuple[ProxyMetrics, CollectorRegistry, list[int]],
) -> None:
    proxy_metrics, registry, active = metrics
    proxy_metrics.query_completed(make_query_event(bytes_received=30, bytes_sent=300,
                                                   rows_sent=3))
    proxy_metrics.query_completed(make_query_event(bytes_received=12, bytes_sent=7,
                                                   rows_sent=0))
    for n in range(1, 5):
        proxy_metrics.connection_opened(connection(n))
    proxy_metrics.connection_closed(connection(1), None)
    proxy_metrics.connection_closed(connection(2), "backend went away")
    proxy_metrics.authentication_failed(connection(5), 1045, "Access denied")
    active[0] = 2
    samples, _ = scrape(registry)
    assert value(samples, "mysqlproxy_client_received_bytes_total") == 42
    assert value(samples, "mysqlproxy_client_sent_bytes_total") == 307
    assert value(samples, "mysqlproxy_rows_sent_total") == 3
    assert value(samples, "mysqlproxy_connections_opened_total") == 4
    assert value(samples, "mysqlproxy_connections_closed_total") == 2
    assert value(samples, "mysqlproxy_connections_aborted_total") == 1
    assert value(samples, "mysqlproxy_authentication_failures_total") == 1
    assert value(samples, "mysqlproxy_connections") == 2  # asked at scrape time
    active[0] = 0
    samples, _ = scrape(registry)
    assert value(samples, "mysqlproxy_connections") == 0


def test_extra_families_are_collected_too() -> None:
    def extra() -> Iterator[Metric]:
        yield GaugeMetricFamily("mysqlproxy_log_windows", "Logging windows open now.", value=2)

    registry = CollectorRegistry()
    registry.register(ProxyMetrics(extra=extra))
    samples, types = scrape(registry)
    assert types["mysqlproxy_log_windows"] == "gauge"
    assert value(samples, "mysqlproxy_log_windows") == 2


# Prometheus naming: snake case with the application prefix, base units (seconds,
# bytes) as a suffix, counters ending in _total, no other unit words.
_NAME = re.compile(r"mysqlproxy_[a-z][a-z0-9_]*")
_OTHER_UNITS = re.compile(r"_(?:ms|us|microseconds|milliseconds|minutes|kb|mb|kilobytes)\b")


def check_names(text: str) -> None:
    samples, types = scrape_text(text)
    ours = {name: kind for name, kind in types.items() if name.startswith("mysqlproxy")}
    assert ours
    for name in ours:
        assert _NAME.fullmatch(name), name
        assert not _OTHER_UNITS.search(name), name
        assert not name.endswith("_total"), name  # the family; samples add _total
        if "duration" in name or "time" in name:
            assert name.endswith("_seconds"), name
        if "bytes" in name:
            assert name.endswith("_bytes"), name
    for (name, _), _value in samples.items():
        if not name.startswith("mysqlproxy"):
            continue
        family = re.sub(r"_(?:total|bucket|count|sum|created)$", "", name)
        if ours.get(family) == "counter":
            assert name == family + "_total" or name == family + "_created", name
    # the exposition itself says so
    assert "# TYPE mysqlproxy_queries_total counter" in text
    assert "# TYPE mysqlproxy_query_duration_seconds histogram" in text


def test_names_follow_prometheus_conventions(
    metrics: tuple[ProxyMetrics, CollectorRegistry, list[int]],
) -> None:
    proxy_metrics, registry, _ = metrics
    proxy_metrics.query_completed(make_query_event(error_code=1))
    check_names(generate_latest(registry).decode())


# --- end to end ---------------------------------------------------------------------------

_READY = re.compile(
    r"^mysqlproxy: listening on (?P<listen>\S+), forwarding to \S+, admin on (?P<admin>\S+), "
    r"metrics on (?P<metrics>http://\S+/metrics)$",
    re.M,
)


@pytest.fixture(scope="module")
def metrics_proxy(mariadb: MariaDB,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, str]]:
    """`mysqlproxy run --metrics 127.0.0.1:0` and its metrics URL (from the first line)."""
    workdir = tmp_path_factory.mktemp("metrics")
    stdout, stderr = workdir / "proxy.stdout", workdir / "proxy.stderr"
    env = dict(os.environ, PYTHONUNBUFFERED="1", MYSQLPROXY_ADMIN_PASSWORD=ADMIN_PASSWORD)
    argv = [PYTHON, "-m", "mysqlproxy.cli", "run", "--listen", "127.0.0.1:0", "--admin",
            "127.0.0.1:0", "--backend", str(mariadb.address), "--metrics", "127.0.0.1:0"]
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, cwd=workdir, env=env)
    proxy = RunningProxy(process, workdir, stdout, stderr, mariadb.address, ADMIN_PASSWORD)
    try:
        assert wait_until(lambda: _READY.search(proxy.stdout()) or process.poll() is not None,
                          timeout=20)
        first_line = proxy.stdout().splitlines()[0] if proxy.stdout() else ""
        match = _READY.fullmatch(first_line)
        assert match, (first_line, proxy.stderr())
        proxy.ready_line = first_line
        proxy.port = Address.parse(match.group("listen")).port
        proxy.admin_port = Address.parse(match.group("admin")).port
        url = match.group("metrics")
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*/metrics", url)
        yield proxy, url
    finally:
        assert proxy.stop() == 0
        assert "Traceback" not in proxy.stderr()


def get_metrics(url: str) -> tuple[Samples, dict[str, str], str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples, types = scrape_text(text)
    return samples, types, text


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def synced(url: str, conn: pymysql.connections.Connection) -> Samples:
    """Metrics once every command sent so far on `conn` is counted: a ping's event
    comes after theirs."""
    pings = get(get_metrics(url)[0], "mysqlproxy_queries_total", command="ping")
    conn.ping(reconnect=False)
    samples: Samples = {}

    def counted() -> bool:
        nonlocal samples
        samples = get_metrics(url)[0]
        return get(samples, "mysqlproxy_queries_total", command="ping") > pings

    assert wait_until(counted, timeout=10)
    return samples


def test_metrics_endpoint_counts_queries_through_the_proxy(
    metrics_proxy: tuple[RunningProxy, str],
) -> None:
    proxy, url = metrics_proxy
    with proxy.connect(database="mpt", autocommit=True) as conn, conn.cursor() as cur:
        before = synced(url, conn)  # PyMySQL's own SET NAMES is counted by now
        assert get(before, "mysqlproxy_connections") == 1
        cur.execute("SELECT 1")
        cur.execute("SELECT SLEEP(0.3)")
        cur.execute("SELECT REPEAT('x', 1000)")
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM no_such_table_for_metrics")
        after = synced(url, conn)

        def delta(name: str, **labels: str) -> float:
            return get(after, name, **labels) - get(before, name, **labels)

        assert delta("mysqlproxy_queries_total", command="query") == 4
        assert delta("mysqlproxy_queries_total", command="ping") == 1
        assert delta("mysqlproxy_query_errors_total", command="query") == 1
        assert get(after, "mysqlproxy_query_errors_total", command="ping") == 0
        assert delta("mysqlproxy_query_duration_seconds_count") == 5
        total = delta("mysqlproxy_query_duration_seconds_sum")
        assert 0.3 <= total < 5, total  # seconds, not microseconds
        # the SLEEP is above the 0.25 s bucket
        assert delta("mysqlproxy_query_duration_seconds_bucket", le="+Inf") - delta(
            "mysqlproxy_query_duration_seconds_bucket", le="0.25") >= 1
        assert delta("mysqlproxy_query_duration_seconds_bucket", le="+Inf") == 5
        assert delta("mysqlproxy_client_sent_bytes_total") > 1000  # the REPEAT
        assert delta("mysqlproxy_client_received_bytes_total") >= len(
            "SELECT * FROM no_such_table_for_metrics")
        assert delta("mysqlproxy_rows_sent_total") == 3
        assert get(after, "mysqlproxy_connections") == 1
    assert wait_until(lambda: get(get_metrics(url)[0], "mysqlproxy_connections") == 0,
                      timeout=10)
    final, _, text = get_metrics(url)
    assert get(final, "mysqlproxy_connections_closed_total") >= 1
    assert get(final, "mysqlproxy_connections_opened_total") >= 1
    points = buckets(final, "mysqlproxy_query_duration_seconds")
    assert [count for _, count in points] == sorted(count for _, count in points)
    assert points[-1] == (float("inf"), get(final, "mysqlproxy_query_duration_seconds_count"))
    check_names(text)


def test_metrics_include_the_logging_windows(metrics_proxy: tuple[RunningProxy, str]) -> None:
    proxy, url = metrics_proxy
    proxy.admin_query("LOG ON FOR 30s TO 'ring:m'")
    try:
        samples, types, _ = get_metrics(url)
        assert types["mysqlproxy_log_windows"] == "gauge"
        assert get(samples, "mysqlproxy_log_windows") == 1
        assert ("mysqlproxy_log_events_written_total", (("target", "ring:m"),)) in samples
    finally:
        proxy.admin_query("LOG OFF ALL")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_metrics_port_in_use_is_a_one_line_error(mariadb: MariaDB, busy_port: int,
                                                   tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_cli("run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                     "--backend", str(mariadb.address), "--metrics", f"127.0.0.1:{busy_port}",
                     "--log-level", "warning", cwd=tmp_path, timeout=30)
    line = one_line_error(result)
    assert f"127.0.0.1:{busy_port}" in line and "metrics" in line, line
    assert "in use" in line.lower(), line
    assert result.stdout == ""
    assert time.monotonic() - started < 20


def _default_admin_is_free() -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", 4041))
        except OSError:
            return False
    return True


def test_a_metrics_port_in_use_with_the_default_admin(mariadb: MariaDB, busy_port: int,
                                                      tmp_path: Path) -> None:
    # Not the admin port's fault: no "admin interface disabled" warning, one line.
    if not _default_admin_is_free():
        pytest.skip("the default admin port 127.0.0.1:4041 is in use on this host")
    result = run_cli("run", "--listen", "127.0.0.1:0", "--backend", str(mariadb.address),
                     "--metrics", f"127.0.0.1:{busy_port}", "--log-level", "warning",
                     cwd=tmp_path, timeout=30)
    line = one_line_error(result)
    assert "metrics" in line and "admin" not in line, line


def test_sigterm_stops_the_metrics_server(mariadb: MariaDB, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1", MYSQLPROXY_ADMIN_PASSWORD=ADMIN_PASSWORD)
    process = subprocess.Popen(
        [PYTHON, "-m", "mysqlproxy.cli", "run", "--listen", "127.0.0.1:0", "--admin", "off",
         "--backend", str(mariadb.address), "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        match = re.search(r", metrics on (http://\S+/metrics)$", line.strip())
        assert match, line
        assert get_metrics(match.group(1))[1]["mysqlproxy_connections"] == "gauge"
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(match.group(1), timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_a_busy_default_admin_port_still_serves_metrics(mariadb: MariaDB, tmp_path: Path) -> None:
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 4041))
        holder.listen()
    except OSError:
        pass  # someone else holds it: the same situation
    env = dict(os.environ, PYTHONUNBUFFERED="1", MYSQLPROXY_ADMIN_PASSWORD=ADMIN_PASSWORD)
    process = subprocess.Popen(
        [PYTHON, "-m", "mysqlproxy.cli", "run", "--listen", "127.0.0.1:0",
         "--backend", str(mariadb.address), "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline().decode().strip()
        assert ", admin on" not in line, line
        match = re.search(r", metrics on (http://\S+/metrics)$", line)
        assert match, line
        assert "mysqlproxy_queries" in get_metrics(match.group(1))[1]
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        stderr = process.stderr.read().decode()
        assert "admin interface disabled: 127.0.0.1:4041 is in use" in stderr
    finally:
        holder.close()
        if process.poll() is None:
            process.kill()
            process.wait(10)
