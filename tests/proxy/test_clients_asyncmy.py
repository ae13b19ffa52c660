"""asyncmy behaves the same through the proxy as directly.

asyncmy negotiates CLIENT_DEPRECATE_EOF whenever the server offers it, so these tests
cover the text protocol without EOF packets: column definitions run straight into
rows, and every result, including each of a multi-result, ends with an OK packet
whose header is 0xFE. Each test runs twice: once through a proxy that passes the
server's offer on, once through one that masks CLIENT_DEPRECATE_EOF in the greeting
(as an older server would not offer it), so the same client also takes the
EOF-terminated path. PyMySQL, the mariadb client and mysql-connector never ask for
it; test_both_eof_modes_are_covered checks that split.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any

import asyncmy
import asyncmy.cursors
import asyncmy.errors
import pytest

import mysqlproxy.proxy.session as session_module
from mysqlproxy.protocol.constants import MASKED_CAPABILITIES, Capability, Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.protocol.tracker import ConnectionTracker
from mysqlproxy.testing.proxythread import ProxyThread
from tests.conftest import MariaDB

MIB = 1 << 20


@pytest.fixture(params=[True, False], ids=["deprecate-eof", "eof-packets"])
def offers_deprecate_eof(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def proxy(
    mariadb: MariaDB, offers_deprecate_eof: bool, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ProxyThread]:
    """The conftest proxy, or one whose trackers also mask CLIENT_DEPRECATE_EOF."""
    if not offers_deprecate_eof:

        def tracker(*args: Any, **kwargs: Any) -> ConnectionTracker:
            kwargs["masked_capabilities"] = MASKED_CAPABILITIES | Capability.CLIENT_DEPRECATE_EOF
            return ConnectionTracker(*args, **kwargs)

        monkeypatch.setattr(session_module, "ConnectionTracker", tracker)
    running = ProxyThread(mariadb.address)
    running.start()
    yield running
    running.stop()


async def connect(mariadb: MariaDB, port: int, **kwargs: Any) -> Any:
    kwargs.setdefault("database", "mpt")
    return await asyncmy.connect(
        host=mariadb.host, port=port, user=mariadb.user, password=mariadb.password,
        charset="utf8mb4", **kwargs,
    )


async def outcome(fn: Callable[[Any], Awaitable[object]], conn: Any) -> Any:
    try:
        return await fn(conn)
    except asyncmy.errors.MySQLError as exc:
        return ("raised", type(exc).__name__, exc.args)


async def both(
    mariadb: MariaDB, proxy: ProxyThread, fn: Callable[[Any], Awaitable[object]], **kwargs: Any
) -> Any:
    """fn on a direct connection, then through the proxy: the same outcome, returned."""
    results = []
    for port in (mariadb.port, proxy.port):
        conn = await connect(mariadb, port, **kwargs)
        try:
            results.append(await outcome(fn, conn))
        finally:
            await conn.ensure_closed()
    direct, proxied = results
    assert proxied == direct
    opened = len(proxy.recorder.opened)
    assert proxy.recorder.wait_for(lambda: len(proxy.recorder.closed) >= opened)
    assert [reason for _, reason in proxy.recorder.closed] == [None] * opened
    return direct


def queries(proxy: ProxyThread, prefix: str) -> list[QueryEvent]:
    return [e for e in list(proxy.events) if e.query.startswith(prefix)]


async def test_both_eof_modes_are_covered(
    mariadb: MariaDB, proxy: ProxyThread, offers_deprecate_eof: bool
) -> None:
    """asyncmy runs without EOF packets when offered, PyMySQL always with them, so the
    client tests exercise both ways a result can end."""
    conn = await connect(mariadb, proxy.port)
    try:
        with mariadb.connect(port=proxy.port) as blocking:
            blocking.ping(reconnect=False)
            sessions = proxy.call(lambda: list(proxy.server.sessions))
            assert isinstance(sessions, list) and len(sessions) == 2
            by_id = {s.connection_id: s.tracker.capabilities for s in sessions}
            first, second = (by_id[key] for key in sorted(by_id))
            # asyncmy connected first, then PyMySQL.
            assert bool(first & Capability.CLIENT_DEPRECATE_EOF) is offers_deprecate_eof
            assert not second & Capability.CLIENT_DEPRECATE_EOF
    finally:
        await conn.ensure_closed()


async def test_queries_types_and_nulls(mariadb: MariaDB, proxy: ProxyThread) -> None:
    async def run(conn: Any) -> object:
        async with conn.cursor() as cur:
            await cur.execute("SET time_zone = '+00:00'")
            await cur.execute("DROP TABLE IF EXISTS am_types")
            await cur.execute(
                "CREATE TABLE am_types (id INT PRIMARY KEY, ti TINYINT, biu BIGINT UNSIGNED, "
                "dec_ DECIMAL(20, 5), f FLOAT, d DOUBLE, b BIT(8), dt DATE, dtm DATETIME(6), "
                "ts TIMESTAMP NULL, tm TIME, y YEAR, vc VARCHAR(50), tx TEXT, bl BLOB, "
                "e ENUM('a', 'b'), s SET('x', 'y'), j JSON)"
            )
            await cur.execute(
                "INSERT INTO am_types VALUES (1, -128, 18446744073709551615, -123.45678, 0.5, "
                "1e300, b'10100101', '2024-02-29', '2024-02-29 23:59:59.999999', "
                "'2038-01-19 03:14:07', '-838:59:59', 2155, 'ünï \U0001f600', REPEAT('t', 500), "
                "x'00ff10', 'b', 'x,y', '{\"k\": [1, null]}'), "
                "(2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
                "NULL, NULL, NULL, NULL, NULL)"
            )
            await cur.execute("SELECT * FROM am_types ORDER BY id")
            rows = await cur.fetchall()
            description = cur.description
            await cur.execute("SELECT * FROM am_types WHERE id > 100")  # no rows
            empty = await cur.fetchall()
            return rows, description, empty, cur.description

    rows, description, empty, empty_description = await both(
        mariadb, proxy, run
    )
    assert list(rows[0]) == [
        1, -128, 18446744073709551615, Decimal("-123.45678"), 0.5, 1e300, b"\xa5",
        datetime.date(2024, 2, 29), datetime.datetime(2024, 2, 29, 23, 59, 59, 999999),
        datetime.datetime(2038, 1, 19, 3, 14, 7),
        -datetime.timedelta(hours=838, minutes=59, seconds=59), 2155, "ünï \U0001f600",
        "t" * 500, b"\x00\xff\x10", "b", "x,y", '{"k": [1, null]}',
    ]
    assert list(rows[1]) == [2, *([None] * 17)]
    assert len(description) == 18 and list(empty) == [] and empty_description == description
    (select,) = queries(proxy, "SELECT * FROM am_types ORDER BY id")
    assert (select.rows_sent, select.error_code) == (2, 0)


async def test_multi_results_procedures_and_streaming(
    mariadb: MariaDB, proxy: ProxyThread
) -> None:
    multi = "SELECT 1 AS a; DO 1; SELECT seq FROM seq_1_to_3 WHERE seq > 5; SELECT 'last'"
    stream = "SELECT seq, MD5(seq) FROM seq_1_to_100000"

    async def run(conn: Any) -> object:
        sets: list[object] = []
        async with conn.cursor() as cur:
            await cur.execute("DROP PROCEDURE IF EXISTS am_proc")
            await cur.execute(
                "CREATE PROCEDURE am_proc() BEGIN SELECT 'p1'; SELECT seq FROM seq_1_to_2; END"
            )
            await cur.execute(multi)
            while True:
                sets.append((cur.description, await cur.fetchall()))
                if not await cur.nextset():
                    break
            await cur.execute("CALL am_proc()")
            while True:
                sets.append((cur.description, await cur.fetchall()))
                if not await cur.nextset():
                    break
        digest, count = hashlib.sha256(), 0
        cur = conn.cursor(asyncmy.cursors.SSCursor)
        await cur.execute(stream)
        while rows := await cur.fetchmany(5000):
            count += len(rows)
            digest.update(repr(rows).encode())
        await cur.close()
        async with conn.cursor() as cur:
            await cur.execute("SELECT 'after'")
            after = await cur.fetchall()
        return sets, count, digest.hexdigest(), after

    sets, count, _, after = await both(mariadb, proxy, run)
    assert [list(rows) for _, rows in sets] == [
        [(1,)], [], [], [("last",)], [("p1",)], [(1,), (2,)], []
    ]
    assert (count, list(after)) == (100_000, [("after",)])
    (multi_event,) = queries(proxy, multi)
    assert (multi_event.result_sets, multi_event.rows_sent) == (3, 2)
    (call_event,) = queries(proxy, "CALL am_proc()")
    assert (call_event.result_sets, call_event.rows_sent) == (2, 3)
    (stream_event,) = queries(proxy, stream)
    assert stream_event.rows_sent == 100_000


async def test_executemany_errors_and_session_commands(
    mariadb: MariaDB, proxy: ProxyThread
) -> None:
    async def run(conn: Any) -> object:
        seen: list[object] = []
        async with conn.cursor() as cur:
            await cur.execute("DROP TABLE IF EXISTS am_many")
            await cur.execute(
                "CREATE TABLE am_many (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20) UNIQUE)"
            )
            seen.append(
                await cur.executemany(
                    "INSERT INTO am_many (v) VALUES (%s)", [(f"v{i}",) for i in range(500)]
                )
            )
            seen.append(cur.lastrowid)
            await conn.commit()
            for bad in (
                "INSERT INTO am_many (v) VALUES ('v1')",
                "SELECT * FROM am_no_such_table",
                "SELEC 1",
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'asyncmy test', MYSQL_ERRNO = 3998",
            ):
                async def execute(conn: Any, bad: str = bad) -> object:
                    async with conn.cursor() as failing:
                        return await failing.execute(bad)

                seen.append(await outcome(execute, conn))
            await conn.ping(reconnect=False)
            await cur.execute("CREATE DATABASE IF NOT EXISTS mpt_am_other")
            await conn.select_db("mpt_am_other")
            await cur.execute("SELECT DATABASE(), CAST('7x' AS SIGNED)")
            selected = await cur.fetchall()
            await cur.execute("SHOW WARNINGS")
            seen.append((selected, await cur.fetchall()))
            await cur.execute("SELECT COUNT(*), MAX(id) FROM mpt.am_many")
            seen.append(await cur.fetchall())
        return seen

    seen = await both(mariadb, proxy, run)
    assert isinstance(seen, list)
    assert seen[:2] == [500, 1]
    assert [s[1:] for s in seen[2:6]] == [
        ("IntegrityError", (1062, "Duplicate entry 'v1' for key 'v'")),
        ("ProgrammingError", (1146, "Table 'mpt.am_no_such_table' doesn't exist")),
        ("ProgrammingError", (1064, seen[4][2][1])),
        ("OperationalError", (3998, "asyncmy test")),
    ]
    assert list(seen[6][0]) == [("mpt_am_other", 7)]
    assert list(seen[6][1]) == [("Warning", 1292, "Truncated incorrect INTEGER value: '7x'")]
    assert list(seen[7]) == [(500, 500)]
    batch = [e for e in queries(proxy, "INSERT INTO am_many (v) VALUES") if not e.error_code]
    assert [(e.rows_affected, e.insert_id) for e in batch] == [(500, 1)]
    assert any(e.command == Command.COM_PING for e in proxy.events)


async def test_values_over_16_mib(mariadb: MariaDB, proxy: ProxyThread) -> None:
    """A 17 MiB value up and down. (asyncmy 0.2 cannot do LOAD DATA LOCAL INFILE: it
    passes the file name as bytes where it wants str; the mariadb client covers it.)"""
    value = "0123456789abcdef" * (17 * MIB // 16)

    async def run(conn: Any) -> object:
        async with conn.cursor() as cur:
            await cur.execute("DROP TABLE IF EXISTS am_big")
            await cur.execute("CREATE TABLE am_big (id INT PRIMARY KEY, v LONGTEXT)")
            await cur.execute("INSERT INTO am_big VALUES (1, %s)", (value,))
            # asyncmy takes a row whose first byte is 0xFE (a value of 16 MiB or more in
            # the first column) for the end of the result, even directly: put it second.
            await cur.execute("SELECT LENGTH(v), v FROM am_big")
            ((length, read),) = await cur.fetchall()
            await cur.execute("SELECT 'after'")
            return length, hashlib.md5(read.encode()).hexdigest(), await cur.fetchall()

    result = await both(mariadb, proxy, run, max_allowed_packet=64 * MIB, autocommit=True)
    assert isinstance(result, tuple)
    assert result[:2] == (len(value), hashlib.md5(value.encode()).hexdigest())
    assert list(result[2]) == [("after",)]
    (insert,) = queries(proxy, "INSERT INTO am_big")
    assert insert.bytes_received > 17 * MIB and insert.rows_affected == 1
    (select,) = queries(proxy, "SELECT LENGTH(v), v FROM am_big")
    assert select.rows_sent == 1 and select.bytes_sent > 17 * MIB
