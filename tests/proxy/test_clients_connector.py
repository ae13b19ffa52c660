"""mysql-connector-python with server-side prepared statements (`cursor(prepared=True)`)
behaves the same through the proxy as directly: COM_STMT_PREPARE, EXECUTE with binary
parameters, SEND_LONG_DATA, RESET, CLOSE, and binary result rows of every common type.

Each test runs the same client code directly and through the proxy, compares what the
client saw, and checks the direct outcome is the expected one. The connector
negotiates no CLIENT_DEPRECATE_EOF, so the prepare responses carry EOF packets.
"""

from __future__ import annotations

import datetime
import hashlib
import io
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from typing import Any, cast

import mysql.connector
import pytest

from mysqlproxy.protocol.constants import Capability, Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.proxy.session import Session
from mysqlproxy.testing.proxythread import ProxyThread
from tests.conftest import MariaDB

MIB = 1 << 20


def _c_extension_problem() -> str | None:
    """Why the connector's C extension cannot be used here, or None if it can."""
    try:
        import _mysql_connector  # noqa: F401
    except ImportError as exc:
        return f"mysql-connector's C extension does not load: {exc}"
    return None


@pytest.fixture(params=[True, False], ids=["pure", "c-extension"])
def use_pure(request: pytest.FixtureRequest) -> Iterator[bool]:
    if not request.param:
        problem = _c_extension_problem()
        if problem:
            pytest.skip(problem)
    yield request.param


def connect(mariadb: MariaDB, port: int, use_pure: bool) -> Any:
    return mysql.connector.connect(
        host=mariadb.host,
        port=port,
        user=mariadb.user,
        password=mariadb.password,
        database="mpt",
        use_pure=use_pure,
        ssl_disabled=True,
        charset="utf8mb4",
        collation="utf8mb4_general_ci",
    )


def outcome(fn: Callable[[Any], object], conn: Any) -> Any:
    try:
        return fn(conn)
    except mysql.connector.Error as exc:
        return ("raised", type(exc).__name__, exc.errno, exc.sqlstate, exc.msg)


def both(
    mariadb: MariaDB, proxy: ProxyThread, use_pure: bool, fn: Callable[[Any], object]
) -> Any:
    """fn on a direct connection, then through the proxy: the same outcome, returned."""
    conn = connect(mariadb, mariadb.port, use_pure)
    try:
        direct = outcome(fn, conn)
    finally:
        conn.close()
    conn = connect(mariadb, proxy.port, use_pure)
    try:
        proxied = outcome(fn, conn)
    finally:
        conn.close()
    assert proxied == direct
    opened = len(proxy.recorder.opened)
    assert proxy.recorder.wait_for(lambda: len(proxy.recorder.closed) >= opened)
    assert [reason for _, reason in proxy.recorder.closed] == [None] * opened
    return direct


def commands(proxy: ProxyThread, command: int) -> list[QueryEvent]:
    return [e for e in list(proxy.events) if e.command == command]


def test_connector_negotiates_eof_packets(
    mariadb: MariaDB, proxy: ProxyThread, use_pure: bool
) -> None:
    conn = connect(mariadb, proxy.port, use_pure)
    try:
        (session,) = cast(list[Session], proxy.call(lambda: list(proxy.server.sessions)))
        assert session.tracker is not None
        assert not session.tracker.capabilities & Capability.CLIENT_DEPRECATE_EOF
    finally:
        conn.close()


TYPES_TABLE = """
CREATE TABLE cx_types (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  dec_ DECIMAL(30, 10), f FLOAT, d DOUBLE, b BIT(12),
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6),
  c CHAR(10), vc VARCHAR(200), tx TEXT, bl BLOB, lb LONGBLOB,
  e ENUM('small', 'medium', 'large'), s SET('x', 'y', 'z'), j JSON
) CHARACTER SET utf8mb4
"""
BLOB = bytes(range(256)) * 64
LONG_DATA = bytes(range(255, -1, -1)) * 4096  # 1 MiB, sent with COM_STMT_SEND_LONG_DATA
# (parameters sent, values read back), in table order after the id.
TYPES_ROWS = [
    (
        (
            -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
            Decimal("-12345678901234567890.0123456789"), -1.5, -2.2250738585072014e-308, 0,
            datetime.date(1000, 1, 1), datetime.datetime(1000, 1, 1),
            datetime.datetime(1970, 1, 2, 0, 0, 0, 1),
            datetime.timedelta(hours=-838, minutes=-59, seconds=-59),
            "", "", "", b"", b"", "small", "", "[]",
        ),
        (
            -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
            Decimal("-12345678901234567890.0123456789"), -1.5, -2.2250738585072014e-308,
            b"\x00\x00",
            datetime.date(1000, 1, 1), datetime.datetime(1000, 1, 1),
            datetime.datetime(1970, 1, 2, 0, 0, 0, 1),
            None,  # the connector misreads negative binary TIME: checked as text below
            "", "", "", b"", b"", "small", "", "[]",
        ),
    ),
    (
        (
            127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
            9223372036854775807, 18446744073709551615,
            Decimal("12345678901234567890.0123456789"), 0.25, 1.7976931348623157e308, 4095,
            datetime.date(9999, 12, 31), datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
            datetime.datetime(2038, 1, 19, 3, 14, 7, 999999),
            datetime.timedelta(hours=838, minutes=59, seconds=59),
            "char \U0001f600", "varchar ünïcödé \U0001f680 \x00 \\ ' \"", "text " * 1000,
            BLOB, io.BytesIO(LONG_DATA), "large", "x,z",
            '{"key": [1, 2.5, "three", null, true], "emoji": "\U0001f600"}',
        ),
        (
            127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
            9223372036854775807, 18446744073709551615,
            Decimal("12345678901234567890.0123456789"), 0.25, 1.7976931348623157e308,
            b"\x0f\xff",
            datetime.date(9999, 12, 31), datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
            datetime.datetime(2038, 1, 19, 3, 14, 7, 999999),
            datetime.timedelta(hours=838, minutes=59, seconds=59),
            "char \U0001f600", "varchar ünïcödé \U0001f680 \x00 \\ ' \"", "text " * 1000,
            BLOB, LONG_DATA, "large", "x,z",
            '{"key": [1, 2.5, "three", null, true], "emoji": "\U0001f600"}',
        ),
    ),
    ((None,) * 26, (None,) * 26),
]
TIME_AS_TEXT = ["-838:59:59.000000", "838:59:59.000000", None]


def test_binary_protocol_types_nulls_and_blobs(
    mariadb: MariaDB, proxy: ProxyThread, use_pure: bool
) -> None:
    def run(conn: Any) -> object:
        setup = conn.cursor()
        setup.execute("SET time_zone = '+00:00'")
        setup.execute("DROP TABLE IF EXISTS cx_types")
        setup.execute(TYPES_TABLE)
        setup.close()
        cur = conn.cursor(prepared=True)
        placeholders = ", ".join(["?"] * 27)
        for row_id, (sent, _) in enumerate(TYPES_ROWS, 1):
            params = [io.BytesIO(p.getvalue()) if isinstance(p, io.BytesIO) else p for p in sent]
            cur.execute(f"INSERT INTO cx_types VALUES ({placeholders})", (row_id, *params))
        conn.commit()
        read: list[object] = []
        for row_id in range(1, len(TYPES_ROWS) + 1):
            cur.execute("SELECT *, CAST(tm AS CHAR) FROM cx_types WHERE id = ?", (row_id,))
            read.append(cur.fetchall())
        description = cur.description
        cur.close()
        return read, description

    read, description = both(mariadb, proxy, use_pure, run)
    for (row,), (_, expected), time_text in zip(read, TYPES_ROWS, TIME_AS_TEXT, strict=True):
        values = list(row)
        assert values[-1] == time_text
        if expected[17] is None and time_text is not None:
            values[18] = None  # the connector's own reading of a negative TIME
        assert [bytes(v) if isinstance(v, bytearray) else v for v in values[1:-1]] == list(
            expected
        )
    assert [column[0] for column in description][:3] == ["id", "ti", "tiu"]
    # Binary protocol: prepared once per statement text, executed with parameters.
    prepares = [e.query for e in commands(proxy, Command.COM_STMT_PREPARE)]
    assert prepares.count("SELECT *, CAST(tm AS CHAR) FROM cx_types WHERE id = ?") == 1
    selects = [e for e in commands(proxy, Command.COM_STMT_EXECUTE) if e.query.startswith("SELECT")]
    assert [(e.rows_sent, e.error_code) for e in selects] == [(1, 0)] * 3
    long_data = commands(proxy, Command.COM_STMT_SEND_LONG_DATA)
    assert sum(e.bytes_received for e in long_data) > len(LONG_DATA)


def test_parameters_of_each_type_and_null(
    mariadb: MariaDB, proxy: ProxyThread, use_pure: bool
) -> None:
    params = (
        None, 0, -1, 2**63 - 1, 2**64 - 1, 1.5, Decimal("-0.001"), "text \U0001f600",
        b"\x00\xffbytes", datetime.date(2020, 2, 29), datetime.datetime(2020, 2, 29, 1, 2, 3, 4),
        datetime.time(23, 59, 59, 999999), datetime.timedelta(hours=-1, minutes=-1), True,
    )

    def run(conn: Any) -> object:
        cur = conn.cursor(prepared=True)
        select = ", ".join(["?"] * len(params))
        cur.execute(f"SELECT {select}", params)
        first = cur.fetchall()
        # The same statement again, with other types in the same places (rebinding).
        cur.execute(f"SELECT {select}", tuple(reversed(params)))
        second = cur.fetchall()
        cur.execute(f"SELECT {select}", (None,) * len(params))
        nulls = cur.fetchall()
        cur.close()
        return first, second, nulls

    first, second, nulls = both(mariadb, proxy, use_pure, run)
    assert first[0][:5] == (None, 0, -1, 2**63 - 1, 2**64 - 1)
    assert first[0][5:7] == (1.5, Decimal("-0.001"))
    assert len(second[0]) == len(params) and second[0][-1] is None
    assert nulls == [(None,) * len(params)]
    executes = [
        e for e in commands(proxy, Command.COM_STMT_EXECUTE) if e.query.startswith("SELECT ?")
    ]
    assert [e.rows_sent for e in executes] == [1, 1, 1]
    assert executes[0].params is not None and len(executes[0].params) == len(params)


def test_values_over_16_mib_both_ways(
    mariadb: MariaDB, proxy: ProxyThread, use_pure: bool
) -> None:
    """A 17 MiB parameter goes up in one COM_STMT_EXECUTE. The pure connector cannot
    read a binary row of 16 MiB or more (it does not join continuation packets, even
    directly), so the value comes back as a 15 MiB binary row and whole as text."""
    blob = bytes(range(256)) * (17 * MIB // 256)
    digest = hashlib.md5(blob).hexdigest()
    part = 15 * MIB

    def run(conn: Any) -> object:
        setup = conn.cursor()
        setup.execute("DROP TABLE IF EXISTS cx_big")
        setup.execute("CREATE TABLE cx_big (id INT PRIMARY KEY, v LONGBLOB)")
        cur = conn.cursor(prepared=True)
        cur.execute("INSERT INTO cx_big VALUES (?, ?)", (1, blob))  # a >16 MiB execute
        conn.commit()
        cur.execute("SELECT LENGTH(v), MD5(v) FROM cx_big WHERE id = ?", (1,))
        stored = cur.fetchall()
        cur.execute("SELECT SUBSTRING(v, 1, ?), ? FROM cx_big WHERE id = ?", (part, "after", 1))
        ((prefix, after),) = cur.fetchall()
        cur.close()
        setup.execute("SELECT v, 'text' FROM cx_big WHERE id = 1")  # a >16 MiB text row
        ((whole, text),) = setup.fetchall()
        setup.close()
        return stored, hashlib.md5(prefix).hexdigest(), after, hashlib.md5(whole).hexdigest(), text

    assert both(mariadb, proxy, use_pure, run) == (
        [(len(blob), digest)], hashlib.md5(blob[:part]).hexdigest(), "after", digest, "text"
    )
    executes = commands(proxy, Command.COM_STMT_EXECUTE)
    (insert,) = [e for e in executes if e.query.startswith("INSERT")]
    assert insert.bytes_received > 17 * MIB and insert.rows_affected == 1
    (prefix_select,) = [e for e in executes if e.query.startswith("SELECT SUBSTRING")]
    assert prefix_select.rows_sent == 1 and prefix_select.bytes_sent > part
    (text_select,) = [e for e in proxy.events if e.query.startswith("SELECT v, 'text'")]
    assert text_select.rows_sent == 1 and text_select.bytes_sent > 17 * MIB


def execute(cur: Any, sql: str, params: tuple[object, ...], conn: Any) -> object:
    return cur.execute(sql, params)


def test_errors_and_executemany(mariadb: MariaDB, proxy: ProxyThread, use_pure: bool) -> None:
    def run(conn: Any) -> object:
        setup = conn.cursor()
        setup.execute("DROP TABLE IF EXISTS cx_many")
        setup.execute("CREATE TABLE cx_many (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)")
        setup.close()
        seen: list[object] = []
        cur = conn.cursor(prepared=True)
        cur.executemany(
            "INSERT INTO cx_many VALUES (?, ?)", [(i, f"name {i}") for i in range(200)]
        )
        seen.append(cur.rowcount)
        conn.commit()
        for bad, params in (
            ("SELEC ?", (1,)),  # refused at prepare
            ("INSERT INTO cx_many VALUES (?, ?)", (1, "duplicate")),  # refused at execute
            ("INSERT INTO cx_many VALUES (?, ?)", (500, None)),  # NOT NULL
            ("SELECT * FROM cx_no_such_table WHERE id = ?", (1,)),
        ):
            seen.append(outcome(partial(execute, cur, bad, params), conn))
        cur.execute("SELECT COUNT(*), SUM(id) FROM cx_many WHERE id >= ?", (0,))
        seen.append(cur.fetchall())
        cur.close()
        return seen

    seen = both(mariadb, proxy, use_pure, run)
    assert seen[0] == 200
    assert [s[2:4] for s in seen[1:5]] == [
        (1064, "42000"), (1062, "23000"), (1048, "23000"), (1146, "42S02")
    ]
    assert seen[5] == [(200, sum(range(200)))]
    executes = [e for e in commands(proxy, Command.COM_STMT_EXECUTE) if "cx_many" in e.query]
    assert len(executes) == 200 + 2 + 1
    assert [e.error_code for e in executes[200:]] == [1062, 1048, 0]
    failed_prepares = [e for e in commands(proxy, Command.COM_STMT_PREPARE) if e.error_code]
    assert [e.error_code for e in failed_prepares] == [1064, 1146]


def test_server_side_cursor_and_fetch(
    mariadb: MariaDB, proxy: ProxyThread, use_pure: bool
) -> None:
    """COM_STMT_EXECUTE opening a read-only cursor, then COM_STMT_FETCH in batches."""
    cursor_exists, last_row_sent = 0x40, 0x80

    def run(conn: Any) -> object:
        statement = conn.cmd_stmt_prepare(b"SELECT seq, CONCAT('r', seq) FROM seq_1_to_10")
        _, columns, eof = conn.cmd_stmt_execute(
            statement["statement_id"], (), statement["parameters"], flags=1
        )
        batches: list[object] = [eof["status_flag"] & (cursor_exists | last_row_sent)]
        while True:
            conn.cmd_stmt_fetch(statement["statement_id"], 4)
            rows, eof = conn.get_rows(binary=True, columns=columns)
            batches.append((rows, eof["status_flag"] & (cursor_exists | last_row_sent)))
            if eof["status_flag"] & last_row_sent:
                break
        conn.cmd_stmt_close(statement["statement_id"])
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT ?", ("after",))
        batches.append(cur.fetchall())
        cur.close()
        return batches

    rows = [(i, f"r{i}") for i in range(1, 11)]
    assert both(mariadb, proxy, use_pure, run) == [
        cursor_exists,
        (rows[0:4], cursor_exists),
        (rows[4:8], cursor_exists),
        (rows[8:10], last_row_sent),
        [("after",)],
    ]
    fetches = commands(proxy, Command.COM_STMT_FETCH)
    assert [(e.query, e.rows_sent) for e in fetches] == [
        ("SELECT seq, CONCAT('r', seq) FROM seq_1_to_10", n) for n in (4, 4, 2)
    ]
    (opened,) = [e for e in commands(proxy, Command.COM_STMT_EXECUTE) if "seq_1_to_10" in e.query]
    assert opened.rows_sent == 0 and opened.error_code == 0


def test_session_commands(mariadb: MariaDB, proxy: ProxyThread, use_pure: bool) -> None:
    """COM_STATISTICS, COM_DEBUG, COM_CHANGE_USER, COM_RESET_CONNECTION, COM_INIT_DB and
    COM_PING from the connector's own command methods."""

    def run(conn: Any) -> object:
        seen: list[object] = []
        seen.append(sorted(conn.cmd_statistics()))  # the values change; the names do not
        seen.append(conn.cmd_debug()["warning_count"])
        cur = conn.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS mpt_cx_other")
        cur.execute("SET @kept = 'user variable'")
        cur.close()
        conn.cmd_change_user(username=mariadb.user, password=mariadb.password,
                             database="mpt_cx_other")
        cur = conn.cursor()
        cur.execute("SELECT DATABASE(), @kept")  # a new session: the variable is gone
        seen.append(cur.fetchall())
        cur.execute("SET @kept = 'again'")
        cur.close()
        seen.append(conn.cmd_reset_connection())
        conn.cmd_init_db("mpt")
        cur = conn.cursor()
        cur.execute("SELECT DATABASE(), @kept")
        seen.append(cur.fetchall())
        cur.close()
        seen.append(conn.cmd_ping()["warning_count"])
        return seen

    seen = both(mariadb, proxy, use_pure, run)
    assert "Uptime" in seen[0] and "Threads" in seen[0]
    assert seen[1:] == [0, [("mpt_cx_other", None)], True, [("mpt", None)], 0]
    codes = [e.command for e in list(proxy.events) if e.command != Command.COM_QUERY]
    for command in (
        Command.COM_STATISTICS, Command.COM_DEBUG, Command.COM_CHANGE_USER,
        Command.COM_RESET_CONNECTION, Command.COM_INIT_DB, Command.COM_PING,
    ):
        assert command in codes, Command(command).name
    schemas = [e.schema for e in proxy.events if e.query == "SELECT DATABASE(), @kept"]
    assert schemas == ["mpt_cx_other", "mpt"]
