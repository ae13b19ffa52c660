"""The slow log as pt-query-digest (Debian's percona-toolkit) reads it.

A varied set of events goes through the real formatter, writer and file sink; then
pt-query-digest's JSON report must show every query once, in the right class, with
the right times and the extra attributes a proxy knows.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import pathlib
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

import pytest

from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.querylog.formats import format_slowlog_header
from mysqlproxy.querylog.sinks import FileSink, Formatter, SinkWriter
from mysqlproxy.testing.events import make_query_event

PT_QUERY_DIGEST = shutil.which("pt-query-digest")

pytestmark = pytest.mark.skipif(
    PT_QUERY_DIGEST is None,
    reason="pt-query-digest is not installed (Debian: apt-get install percona-toolkit)",
)

T0 = calendar.timegm((2024, 5, 1, 10, 0, 0))


@dataclass
class Expected:
    """What pt-query-digest must report for one class of queries."""

    fingerprint: str
    db: str | None = None
    times_us: list[int] = field(default_factory=list)
    rows_affected: int = 0
    bytes_sent: int = 0
    errno: int = 0


def build_events() -> tuple[list[QueryEvent], dict[str, Expected]]:
    events: list[QueryEvent] = []
    expected: dict[str, Expected] = {}

    def add(fingerprint: str, query: str, duration_us: int, **changes: Any) -> None:
        n = len(events)
        changes.setdefault("schema", "shop")
        changes.setdefault("bytes_sent", 100 + n)
        changes.setdefault("rows_affected", 0)
        event = make_query_event(
            started_at=T0 + n + 0.5,
            query=query,
            duration_us=duration_us,
            thread_id=100 + n % 3,
            **changes,
        )
        events.append(event)
        cls = expected.setdefault(fingerprint, Expected(fingerprint, db=event.schema))
        cls.times_us.append(duration_us)
        cls.rows_affected += event.rows_affected
        cls.bytes_sent += event.bytes_sent
        cls.errno = max(cls.errno, event.error_code)

    latest = "select * from orders where customer_id = ? order by created_at desc limit ?"
    pay = "update orders set state = ? where id in(?+)"
    item = "insert into order_items (order_id, sku, qty) values(?+)"
    missing = "select * from missing_table"
    customer = "select name from customers where id = ?"
    report = (
        "select o.id, c.name from orders o join customers c on c.id = o.customer_id "
        "where o.total > ?"
    )
    # One statement class, repeated with different literals and durations.
    for customer_id, duration in [(17, 2_503_112), (4, 120_000), (99, 750_250), (17, 1_000)]:
        add(
            latest,
            f"SELECT * FROM orders WHERE customer_id = {customer_id} "
            "ORDER BY created_at DESC LIMIT 1",
            duration,
            rows_sent=1,
        )
    add(pay, "UPDATE orders SET state = 'paid' WHERE id IN (1, 2, 3)", 45_000, rows_affected=3)
    # a schema change in between: the next entries say `use crm;`
    add(customer, "SELECT name FROM customers WHERE id = 5", 3_000, schema="crm")
    add(customer, "select name\n  from customers\n where id = 6", 5_000, schema="crm")
    add(pay, "UPDATE orders SET state = 'paid' WHERE id IN (7)", 15_000, rows_affected=1)
    # a prepared statement, interpolated
    for params, duration in [((17, "A-1", 2), 900), ((18, "it's", 1), 1_100)]:
        add(
            item,
            "INSERT INTO order_items (order_id, sku, qty) VALUES (?, ?, ?)",
            duration,
            command=Command.COM_STMT_EXECUTE,
            params=params,
            statement_id=1,
            rows_affected=1,
        )
    # an error
    add(
        missing,
        "SELECT * FROM missing_table",
        300,
        error_code=1146,
        error_message="Table 'shop.missing_table' doesn't exist",
        rows_sent=0,
    )
    # multi-line, with comment lines that must not start a new entry
    for total, duration in [(100, 310_000), (250, 290_000)]:
        add(
            report,
            "SELECT o.id, c.name\n# the big report\nFROM orders o\n"
            f"-- joined\nJOIN customers c ON c.id = o.customer_id\nWHERE o.total > {total}",
            duration,
        )
    # trailing semicolon and newline, as scripts send them
    add(pay, "UPDATE orders SET state = 'paid' WHERE id IN (8, 9);\n", 20_000, rows_affected=2)
    # a query that looks like the slow log's own `use db;` line (pt keeps the name)
    add("use crm", "use crm", 150)
    add(customer, "SELECT name FROM customers WHERE id = 7", 4_000, schema="crm")
    # a query that was not valid UTF-8: the tracker escaped its bytes
    add("select ? as raw", "SELECT '\\xff\\xfe' AS raw", 700)
    # administrator commands
    for _ in range(2):
        add("administrator command: Ping", "", 20, command=Command.COM_PING, rows_sent=0)
    return events, expected


def write_slow_log(path: pathlib.Path, events: list[QueryEvent]) -> None:
    header = format_slowlog_header("0.1", "[::1]:3307, unix:/run/mysqlproxy.sock")
    writer = SinkWriter(FileSink(str(path)), Formatter("slowlog", header))
    writer.start()
    for event in events:
        assert writer.put(event)
    writer.close()
    assert writer.wait_closed(10)
    assert writer.healthy and writer.written == len(events)


@pytest.fixture(scope="module")
def digest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    events, expected = build_events()
    path = tmp_path_factory.mktemp("pt-query-digest") / "slow.log"
    write_slow_log(path, events)
    assert PT_QUERY_DIGEST is not None
    result = subprocess.run(
        [PT_QUERY_DIGEST, "--no-version-check", "--output", "json", "--limit", "100%", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    return {"report": report, "events": events, "expected": expected, "log": path.read_text()}


def classes(digest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["fingerprint"]: c for c in digest["report"]["classes"]}


def test_every_query_is_read_once(digest: dict[str, Any]) -> None:
    report = digest["report"]
    assert int(report["global"]["query_count"]) == len(digest["events"])
    assert int(report["global"]["unique_query_count"]) == len(digest["expected"])


def test_classes_and_their_fingerprints(digest: dict[str, Any]) -> None:
    found = classes(digest)
    assert sorted(found) == sorted(digest["expected"])
    for fingerprint, cls in found.items():
        # pt-query-digest's query id: the MD5 of the fingerprint
        assert cls["checksum"] == hashlib.md5(fingerprint.encode()).hexdigest().upper()


def test_query_counts_per_class(digest: dict[str, Any]) -> None:
    found = classes(digest)
    counts = {fp: cls["query_count"] for fp, cls in found.items()}
    assert counts == {fp: len(e.times_us) for fp, e in digest["expected"].items()}


def test_total_and_max_query_time_per_class(digest: dict[str, Any]) -> None:
    found = classes(digest)
    for fingerprint, expected in digest["expected"].items():
        metrics = found[fingerprint]["metrics"]["Query_time"]
        assert float(metrics["sum"]) == pytest.approx(sum(expected.times_us) / 1e6, abs=1e-6)
        assert float(metrics["max"]) == pytest.approx(max(expected.times_us) / 1e6, abs=1e-6)
        assert float(metrics["min"]) == pytest.approx(min(expected.times_us) / 1e6, abs=1e-6)


def test_proxy_attributes_are_read(digest: dict[str, Any]) -> None:
    found = classes(digest)
    for fingerprint, expected in digest["expected"].items():
        metrics = found[fingerprint]["metrics"]
        # pt-query-digest leaves out a Rows_affected that is zero throughout
        rows_affected = metrics.get("Rows_affected", {"sum": "0"})["sum"]
        assert int(rows_affected) == expected.rows_affected, fingerprint
        assert int(metrics["Bytes_sent"]["sum"]) == expected.bytes_sent, fingerprint
        assert int(metrics["Errno"]["max"]) == expected.errno, fingerprint
        assert float(metrics["Lock_time"]["sum"]) == 0.0
        assert int(metrics["Rows_examined"]["sum"]) == 0
        assert metrics["user"]["value"] == "app"
        assert metrics["host"]["value"] == "127.0.0.1"


def test_schema_per_class(digest: dict[str, Any]) -> None:
    found = classes(digest)
    customers = found["select name from customers where id = ?"]
    assert customers["metrics"]["db"]["value"] == "crm"
    orders = found["select * from orders where customer_id = ? order by created_at desc limit ?"]
    assert orders["metrics"]["db"]["value"] == "shop"


def test_examples_keep_the_query_text(digest: dict[str, Any]) -> None:
    found = classes(digest)
    item = found["insert into order_items (order_id, sku, qty) values(?+)"]
    assert item["example"]["query"].startswith("/* prepared */ INSERT INTO order_items")
    latest = found["select * from orders where customer_id = ? order by created_at desc limit ?"]
    # the slowest one is the example, with its time stamp
    assert latest["example"]["Query_time"] == "2.503112"
    assert latest["example"]["ts"] == "2024-05-01T10:00:00"
    ping = found["administrator command: Ping"]
    assert ping["example"]["query"] == "administrator command: Ping"
