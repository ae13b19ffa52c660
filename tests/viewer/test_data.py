"""AdminSource, the viewer's poller, against a fake admin interface that answers the
few statements it sends: where it starts reading, drops, its own threshold, renewal,
reconnection after a restart, and closing its window."""

from __future__ import annotations

import re
from typing import Any

import pymysql
import pytest

from mysqlproxy.proxy.backends import Address
from mysqlproxy.viewer.data import (
    EVENTS_PER_QUERY,
    AdminSource,
    Poll,
    SlowQuery,
    SourceUnavailable,
    keep_events,
    parse_threshold,
)
from mysqlproxy.viewer.fake import ScriptedSource

EVENT_COLUMNS = ["id", "started_at", "connection_id", "thread_id", "client", "user", "schema",
                 "command", "query", "duration_us", "first_byte_us", "rows_sent",
                 "rows_affected", "error_code", "error_message", "warnings", "bytes_sent",
                 "bytes_received", "insert_id", "sql_state", "result_sets", "prepared",
                 "no_index_used", "in_transaction", "backend"]


class FakeAdmin:
    """The admin interface's state, and the statements it was sent."""

    def __init__(self) -> None:
        self.pid = "100"
        self.events: list[tuple[Any, ...]] = []
        self.next_id = 1
        self.statements: list[str] = []
        self.windows: dict[str, str] = {}
        self.down = False  # connecting fails
        self.queries_total = 0
        self.with_last_event_id = True

    def add(self, duration_us: int, query: str = "SELECT 1", command: str = "COM_QUERY",
            count: int = 1) -> None:
        for _ in range(count):
            self.events.append((self.next_id, 1.7e9, 1, 2, "10.0.0.1:5000", "app", "shop",
                                command, query, duration_us, 10, 1, 0, 0, "", 0, 100, 20, 0,
                                "", 1, "no", "no", "no", "127.0.0.1:3306"))
            self.next_id += 1

    def evict(self, count: int) -> None:
        """The ring overflowed: its oldest events are gone."""
        del self.events[:count]

    def restart(self) -> None:
        self.pid = str(int(self.pid) + 1)
        self.events = []
        self.next_id = 1
        self.windows = {}

    def connect(self, **params: Any) -> FakeConnection:
        if self.down:
            raise pymysql.err.OperationalError(2003, "Can't connect to MySQL server (refused)")
        return FakeConnection(self)

    def answer(self, statement: str) -> tuple[list[str], list[tuple[Any, ...]], str]:
        self.statements.append(statement)
        if self.down:
            raise pymysql.err.OperationalError(2013, "Lost connection to MySQL server")
        if statement == "SELECT * FROM proxy":
            rows = [("version", "0.1.0"), ("pid", self.pid), ("backend", "db:3306"),
                    ("connections", "3"), ("queries_total", str(self.queries_total))]
            if self.with_last_event_id:
                rows.append(("last_event_id", str(self.next_id - 1)))
            return ["name", "value"], rows, ""
        if statement == "SELECT * FROM status":
            return (["target", "format", "state", "remaining_seconds"],
                    [(t, "ring", "open", 30.0) for t in self.windows], "")
        match = re.fullmatch(r"SELECT \* FROM events WHERE id > (\d+) LIMIT (\d+)", statement)
        if match:
            after, limit = int(match.group(1)), int(match.group(2))
            return EVENT_COLUMNS, [e for e in self.events if e[0] > after][:limit], ""
        if statement.startswith("SELECT * FROM digests"):
            return ["query_id", "fingerprint", "count"], [("ABC", "select ?", 3)], ""
        if "/forbidden/" in statement:
            raise pymysql.err.OperationalError(1105, "cannot open /forbidden/x: Permission denied")
        match = re.match(r"LOG ON FOR \S+ TO '([^']+)'", statement)
        if match:
            self.windows[match.group(1)] = statement
            return [], [], f"logging to {match.group(1)}"
        match = re.match(r"LOG OFF TO '([^']+)'", statement)
        if match:
            self.windows.pop(match.group(1), None)
            return [], [], f"closed the window on {match.group(1)}"
        raise pymysql.err.ProgrammingError(1064, f"unknown {statement!r}")


class FakeConnection:
    def __init__(self, admin: FakeAdmin) -> None:
        self.admin = admin
        self._result: Any = None

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def close(self) -> None:
        pass


class FakeCursor:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.description: list[tuple[str]] | None = None
        self.rows: list[tuple[Any, ...]] = []

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, statement: str) -> None:
        columns, self.rows, message = self.connection.admin.answer(statement)
        self.description = [(c,) for c in columns] or None
        self.connection._result = type("Result", (), {"message": message.encode()})()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def admin() -> FakeAdmin:
    return FakeAdmin()


def make_source(admin: FakeAdmin, clock: Clock | None = None, **kwargs: Any) -> AdminSource:
    return AdminSource(Address("127.0.0.1", 4041), "admin", "pw", connect=admin.connect,
                       clock=clock or Clock(), **kwargs)


def test_it_starts_at_the_newest_event_and_opens_its_window(admin: FakeAdmin) -> None:
    admin.add(900_000, count=5)  # before the viewer: not shown
    source = make_source(admin, threshold_us=50_000)
    poll = source.poll()
    assert poll.events == [] and poll.dropped == 0
    assert source.window_target.startswith("ring:viewer-")
    assert admin.windows[source.window_target] == (
        f"LOG ON FOR 30s TO '{source.window_target}' SLOWER THAN 50000us WITH DIGESTS"
    )
    admin.add(60_000, "SELECT slow")
    assert [e.query for e in source.poll().events] == ["SELECT slow"]


def test_it_keeps_only_what_its_window_would(admin: FakeAdmin) -> None:
    source = make_source(admin, threshold_us=100_000)
    source.poll()
    admin.add(99_999, "SELECT fast")  # another window's (a lower threshold)
    admin.add(100_000, "SELECT exactly")
    admin.add(500_000, "", command="COM_PING")  # another window's COMMAND ALL
    admin.add(500_000, "SELECT ?", command="COM_STMT_EXECUTE")
    assert [e.query for e in source.poll().events] == ["SELECT exactly", "SELECT ?"]


def test_a_gap_in_the_ids_is_counted_as_dropped(admin: FakeAdmin) -> None:
    source = make_source(admin, threshold_us=0)
    source.poll()
    admin.add(1000, count=10)
    admin.evict(7)
    poll = source.poll()
    assert [e.id for e in poll.events] == [8, 9, 10] and poll.dropped == 7
    assert source.poll().dropped == 0


def test_a_big_backlog_is_read_in_batches(admin: FakeAdmin) -> None:
    source = make_source(admin, threshold_us=0)
    source.poll()
    admin.add(1000, count=EVENTS_PER_QUERY * 2 + 10)
    poll = source.poll()
    assert len(poll.events) == EVENTS_PER_QUERY * 2 + 10 and poll.dropped == 0
    assert [e.id for e in poll.events] == list(range(1, EVENTS_PER_QUERY * 2 + 11))


def test_the_window_is_renewed_every_ten_seconds(admin: FakeAdmin) -> None:
    clock = Clock()
    source = make_source(admin, clock)
    source.poll()
    renewals = lambda: sum(s.startswith("LOG ON") for s in admin.statements)  # noqa: E731
    assert renewals() == 1
    clock.now += 9.9
    source.poll()
    assert renewals() == 1
    clock.now += 0.2
    source.poll()
    assert renewals() == 2


def test_proxy_state_and_qps(admin: FakeAdmin) -> None:
    clock = Clock()
    source = make_source(admin, clock)
    first = source.poll()
    assert first.proxy is not None and first.proxy.qps is None
    assert first.proxy.backend == "db:3306" and first.proxy.connections == 3
    assert [w.target for w in first.proxy.windows] == [source.window_target]
    assert first.digests is not None and first.digests[0].fingerprint == "select ?"
    clock.now += 0.5
    assert source.poll().proxy is None  # read once a second
    admin.queries_total = 2000
    clock.now += 1.5
    later = source.poll()
    assert later.proxy is not None and later.proxy.qps == pytest.approx(1000.0)


def test_tail_reads_neither_digests_nor_state(admin: FakeAdmin) -> None:
    source = make_source(admin, purpose="tail", digests=False, proxy_state=False,
                         threshold_us=0)
    poll = source.poll()
    assert poll.digests is None and poll.proxy is None
    assert source.window_target.startswith("ring:tail-")
    assert admin.windows[source.window_target] == f"LOG ON FOR 30s TO '{source.window_target}'"


def test_unreachable_then_back(admin: FakeAdmin) -> None:
    admin.down = True
    source = make_source(admin)
    with pytest.raises(SourceUnavailable, match=r"^cannot reach the admin interface at "
                       r"127\.0\.0\.1:4041: Can't connect"):
        source.poll()
    admin.down = False
    source.poll()
    assert source.window_target in admin.windows


def test_a_restarted_proxy_gets_the_window_back(admin: FakeAdmin) -> None:
    source = make_source(admin, threshold_us=0)
    source.poll()
    admin.add(1000, count=50)
    assert len(source.poll().events) == 50
    admin.down = True
    with pytest.raises(SourceUnavailable, match=r"^lost the admin interface"):
        source.poll()
    admin.restart()  # ids start again at 1, no windows
    admin.down = False
    admin.add(1000, "SELECT before the viewer came back")
    assert source.poll().events == []
    assert source.window_target in admin.windows
    admin.add(1000, "SELECT after")
    poll = source.poll()
    assert [e.query for e in poll.events] == ["SELECT after"] and poll.dropped == 0


def test_a_dropped_connection_to_the_same_proxy_resumes_where_it_was(admin: FakeAdmin) -> None:
    source = make_source(admin, threshold_us=0)
    source.poll()
    admin.down = True
    with pytest.raises(SourceUnavailable):
        source.poll()
    admin.down = False
    admin.add(1000, "SELECT while away", count=2)
    assert [e.query for e in source.poll().events] == ["SELECT while away"] * 2


def test_an_old_proxy_without_last_event_id(admin: FakeAdmin) -> None:
    admin.with_last_event_id = False
    admin.add(1000, count=3)
    admin.events = admin.events[1:]  # the ring rotated before the viewer started
    source = make_source(admin, threshold_us=0)
    poll = source.poll()
    assert [e.id for e in poll.events] == [2, 3] and poll.dropped == 0


def test_file_windows_and_close(admin: FakeAdmin) -> None:
    source = make_source(admin, threshold_us=20_000)
    source.poll()
    message = source.start_file_log("/tmp/slow.log", 5, 20_000)
    assert message == "logging to /tmp/slow.log"
    assert admin.windows["/tmp/slow.log"] == (
        "LOG ON FOR 5m TO '/tmp/slow.log' SLOWER THAN 20000us"
    )
    assert source.stop_file_log("/tmp/slow.log") == "closed the window on /tmp/slow.log"
    source.close()
    assert admin.windows == {}
    with pytest.raises(SourceUnavailable, match="closing"):
        source.poll()


def test_close_reconnects_to_close_the_window(admin: FakeAdmin) -> None:
    source = make_source(admin)
    source.poll()
    admin.down = True
    with pytest.raises(SourceUnavailable):
        source.poll()
    admin.down = False
    source.close()
    assert source.window_target not in admin.windows


def test_close_without_a_proxy_does_not_raise(admin: FakeAdmin) -> None:
    admin.down = True
    source = make_source(admin)
    source.close()
    assert admin.statements == []


def test_a_refused_statement_keeps_the_connection(admin: FakeAdmin) -> None:
    source = make_source(admin)
    source.poll()
    with pytest.raises(SourceUnavailable, match="refused: cannot open /forbidden/x: Permission"):
        source.start_file_log("/forbidden/x", 1)
    connections = admin.statements.count("SELECT * FROM proxy")
    source.poll()
    assert admin.statements.count("SELECT * FROM proxy") == connections  # no reconnection


def test_records_from_admin_rows() -> None:
    row = dict(zip(EVENT_COLUMNS, (7, "1700000000.5", "3", 4, "c:1", "u", "", "COM_QUERY",
                                   "SELECT 1", "1500", 0, 2, 0, 0, "", 0, 0, 0, 0, "", 1, "yes",
                                   "no", "yes", "b"), strict=True))
    event = SlowQuery.from_row(row)
    assert (event.id, event.started_at, event.connection_id, event.duration_us) == (
        7, 1700000000.5, 3, 1500)
    assert event.prepared and event.in_transaction and not event.no_index_used
    assert event.rows == 2


def test_thresholds() -> None:
    assert parse_threshold("50ms") == 50_000
    assert parse_threshold("2") == 2000
    assert parse_threshold("1.5s") == 1_500_000
    assert keep_events([], 0) == []


def test_scripted_source() -> None:
    source = ScriptedSource([Poll(dropped=1), SourceUnavailable("down")])
    assert source.poll().dropped == 1
    with pytest.raises(SourceUnavailable):
        source.poll()
    assert source.poll() == Poll()
