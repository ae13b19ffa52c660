"""PyMySQL behaves the same through the proxy as directly.

Each test runs the same client code on a direct connection and on one through the
proxy and compares what the client saw: rows, column descriptions, row counts,
insert ids, warnings, exceptions. It also checks the direct outcome is the expected
one, so a test cannot pass by comparing two equally wrong runs. PyMySQL negotiates no
CLIENT_DEPRECATE_EOF: it covers the EOF-terminated path of the text protocol.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any, cast

import pymysql
import pymysql.cursors
import pytest
from pymysql.constants import CLIENT, COMMAND

from mysqlproxy.protocol.constants import Capability, Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.proxy.session import Session
from mysqlproxy.testing.proxythread import ProxyThread
from tests.conftest import MariaDB

MIB = 1 << 20
MAX_PAYLOAD = 0xFFFFFF


def outcome(fn: Callable[[Any], object], conn: Any) -> Any:
    """What fn(conn) returned, or the error it raised, as a comparable value."""
    try:
        return fn(conn)
    except pymysql.MySQLError as exc:
        return ("raised", type(exc).__name__, exc.args)


def both(
    mariadb: MariaDB, proxy: ProxyThread, fn: Callable[[Any], object], **connect: Any
) -> Any:
    """Run fn on a direct connection, then on one through the proxy; both must give the
    same outcome, which is returned."""
    connect.setdefault("database", "mpt")
    with mariadb.connect(**connect) as conn:
        direct = outcome(fn, conn)
    with mariadb.connect(port=proxy.port, **connect) as conn:
        proxied = outcome(fn, conn)
    assert proxied == direct
    closed_cleanly(proxy)
    return direct


def closed_cleanly(proxy: ProxyThread) -> None:
    """The proxy closed every connection normally, not because it lost step."""
    opened = len(proxy.recorder.opened)
    assert proxy.recorder.wait_for(lambda: len(proxy.recorder.closed) >= opened)
    assert [reason for _, reason in proxy.recorder.closed] == [None] * opened


def queries(proxy: ProxyThread, prefix: str) -> list[QueryEvent]:
    return [e for e in list(proxy.events) if e.query.startswith(prefix)]


def test_pymysql_negotiates_eof_packets(mariadb: MariaDB, proxy: ProxyThread) -> None:
    with mariadb.connect(port=proxy.port) as conn:
        conn.ping(reconnect=False)
        (session,) = cast(list[Session], proxy.call(lambda: list(proxy.server.sessions)))
        assert session.tracker is not None
        assert not session.tracker.capabilities & Capability.CLIENT_DEPRECATE_EOF


TYPES_TABLE = """
CREATE TABLE py_types (
  id INT PRIMARY KEY,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
  mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, biu BIGINT UNSIGNED,
  dec_ DECIMAL(30, 10), f FLOAT, d DOUBLE, b BIT(12),
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), y YEAR,
  c CHAR(10), vc VARCHAR(200), tx TEXT, bl BLOB,
  e ENUM('small', 'medium', 'large'), s SET('x', 'y', 'z'), j JSON
) CHARACTER SET utf8mb4
"""
TYPES_ROWS = [
    (
        1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0,
        -9223372036854775808, 0,
        Decimal("-12345678901234567890.0123456789"), -1.5, -2.2250738585072014e-308,
        b"\x00\x00",
        datetime.date(1000, 1, 1), datetime.datetime(1000, 1, 1, 0, 0, 0, 0),
        datetime.datetime(1970, 1, 2, 0, 0, 0, 1), datetime.timedelta(hours=-838, minutes=-59,
                                                                    seconds=-59),
        1901, "", "", "", b"", "small", "", "[]",
    ),
    (
        2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295,
        9223372036854775807, 18446744073709551615,
        Decimal("12345678901234567890.0123456789"), 0.25, 1.7976931348623157e308,
        b"\x0f\xff",
        datetime.date(9999, 12, 31), datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime.datetime(2038, 1, 19, 3, 14, 7, 999999),
        datetime.timedelta(hours=838, minutes=59, seconds=59),
        2155, "char \U0001f600", "varchar ünïcödé \U0001f680 \x00 \\ ' \"",
        "text " * 1000, bytes(range(256)) * 4, "large", "x,z",
        '{"key": [1, 2.5, "three", null, true], "emoji": "\U0001f600"}',
    ),
    (
        3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, Decimal("0.0000000001"), 3.0, 0.1, b"\x01\x01",
        datetime.date(2024, 2, 29), datetime.datetime(2024, 2, 29, 12, 30, 45, 123456),
        datetime.datetime(2024, 2, 29, 12, 30, 45, 500000),
        datetime.timedelta(days=-1, seconds=86399, microseconds=500000),  # -00:00:00.5
        2024, "c", "v", "t", b"\x00\xff", "medium", "y", '"scalar"',
    ),
    (4, *([None] * 26)),
]


def test_column_types_and_nulls(mariadb: MariaDB, proxy: ProxyThread) -> None:
    def run(conn: Any) -> object:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute("DROP TABLE IF EXISTS py_types")
            cur.execute(TYPES_TABLE)
            placeholders = ", ".join(["%s"] * 27)
            cur.executemany(f"INSERT INTO py_types VALUES ({placeholders})", TYPES_ROWS)
            cur.execute("SELECT * FROM py_types ORDER BY id")
            rows = cur.fetchall()
            return rows, cur.description

    rows, description = both(mariadb, proxy, run, charset="utf8mb4")
    assert [list(row) for row in rows] == [list(row) for row in TYPES_ROWS]
    assert [column[0] for column in description][:3] == ["id", "ti", "tiu"]
    select = queries(proxy, "SELECT * FROM py_types")[0]
    assert (select.rows_sent, select.result_sets, select.error_code) == (4, 1, 0)


def test_sscursor_streams_100000_rows(mariadb: MariaDB, proxy: ProxyThread) -> None:
    sql = "SELECT seq, CONCAT('row-', seq), seq / 7 FROM seq_1_to_100000"

    def run(conn: Any) -> object:
        digest = hashlib.sha256()
        count = 0
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(sql)
            for row in cur.fetchall_unbuffered():
                digest.update(repr(row).encode())
                count += 1
            description = cur.description
        with conn.cursor() as cur:  # the connection is usable after the stream
            cur.execute("SELECT 'after'")
            after = cur.fetchall()
        return count, digest.hexdigest(), description, after

    count, _, _, after = both(mariadb, proxy, run)
    assert (count, after) == (100_000, (("after",),))
    assert queries(proxy, sql)[0].rows_sent == 100_000


def test_executemany(mariadb: MariaDB, proxy: ProxyThread) -> None:
    rows = [(f"name {i}", i * 1.5) for i in range(1000)]

    def run(conn: Any) -> object:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS py_many")
            cur.execute(
                "CREATE TABLE py_many (id INT AUTO_INCREMENT PRIMARY KEY, "
                "name VARCHAR(50) UNIQUE, score DOUBLE)"
            )
            # One multi-row INSERT (PyMySQL batches VALUES lists).
            inserted = cur.executemany("INSERT INTO py_many (name, score) VALUES (%s, %s)", rows)
            insert_id = cur.lastrowid
            # One statement per row.
            updated = cur.executemany(
                "UPDATE py_many SET score = score + %s WHERE id = %s", [(1, 1), (2, 2), (3, 5000)]
            )
            try:
                cur.executemany("INSERT INTO py_many (name) VALUES (%s)", [("new",), ("name 1",)])
                failure = None
            except pymysql.IntegrityError as exc:
                failure = exc.args
            cur.execute("SELECT COUNT(*), SUM(score), MAX(id) FROM py_many")
            return inserted, insert_id, updated, failure, cur.fetchall()

    outcome_ = both(mariadb, proxy, run, autocommit=True)
    assert outcome_ == (
        1000, 1, 2, (1062, "Duplicate entry 'name 1' for key 'name'"),
        ((1000, sum(score for _, score in rows) + 3, 1000),),
    )
    batch = queries(proxy, "INSERT INTO py_many (name, score) VALUES")
    assert [(e.rows_affected, e.insert_id) for e in batch] == [(1000, 1)]
    failed = queries(proxy, "INSERT INTO py_many (name) VALUES")
    assert [(e.error_code, e.rows_affected) for e in failed] == [(1062, 0)]


def all_sets(cur: Any) -> list[object]:
    sets: list[object] = []
    while True:
        sets.append((cur.description, cur.fetchall(), cur.rowcount))
        if not cur.nextset():
            return sets


def test_nextset_over_multi_results(mariadb: MariaDB, proxy: ProxyThread) -> None:
    multi = (
        "SELECT 1 AS a; SELECT 'b' AS b, NULL AS c; DO 1; "
        "UPDATE py_multi SET v = v + 1; SELECT seq FROM seq_1_to_3"
    )

    def run(conn: Any) -> object:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS py_multi")
            cur.execute("CREATE TABLE py_multi (v INT)")
            cur.execute("INSERT INTO py_multi VALUES (1), (2)")
            cur.execute("DROP PROCEDURE IF EXISTS py_proc")
            cur.execute(
                "CREATE PROCEDURE py_proc() BEGIN "
                "SELECT 'first' AS x; SELECT seq, seq * 2 FROM seq_1_to_4; END"
            )
            cur.execute(multi)
            multi_sets = all_sets(cur)
            cur.execute("CALL py_proc()")
            call_sets = all_sets(cur)
            cur.execute("SELECT 'after'")
            return multi_sets, call_sets, cur.fetchall()

    multi_sets, call_sets, after = both(
        mariadb, proxy, run, client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True
    )
    assert [list(rows) for _, rows, _ in multi_sets] == [
        [(1,)], [("b", None)], [], [], [(1,), (2,), (3,)]
    ]
    assert [count for _, _, count in multi_sets][2:4] == [0, 2]
    assert [list(rows) for _, rows, _ in call_sets] == [
        [("first",)], [(1, 2), (2, 4), (3, 6), (4, 8)], []
    ]
    assert after == (("after",),)
    (multi_event,) = queries(proxy, multi)
    assert (multi_event.result_sets, multi_event.rows_sent, multi_event.rows_affected) == (
        3, 5, 2
    )
    (call_event,) = queries(proxy, "CALL py_proc()")
    assert (call_event.result_sets, call_event.rows_sent) == (2, 5)


def run_statement(sql: str, conn: Any) -> object:
    with conn.cursor() as cur:
        return cur.execute(sql)


def test_ping_select_db_and_errors(mariadb: MariaDB, proxy: ProxyThread) -> None:
    def run(conn: Any) -> object:
        results: list[object] = []
        conn.ping(reconnect=False)
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE IF NOT EXISTS mpt_py_other")
            conn.select_db("mpt_py_other")
            cur.execute("SELECT DATABASE()")
            results.append(cur.fetchall())
            results.append(outcome(lambda c: c.select_db("mpt_no_such_db"), conn))
            cur.execute("SELECT DATABASE()")
            results.append(cur.fetchall())
            for bad in (
                "SELECT * FROM no_such_table",
                "SELEC 1",
                "SELECT no_such_column FROM mpt.py_types",
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'from a test', MYSQL_ERRNO = 3999",
                "SELECT 1 FROM seq_1_to_3 WHERE seq = (SELECT seq FROM seq_1_to_2)",
            ):
                results.append(outcome(partial(run_statement, bad), conn))
            conn.ping(reconnect=False)
            cur.execute("SELECT CAST('12abc' AS SIGNED), 1 / 0")
            results.append((cur.fetchall(), cur._result.warning_count, conn.show_warnings()))
        return results

    results = both(mariadb, proxy, run)
    assert results == [
        (("mpt_py_other",),),
        ("raised", "OperationalError", (1049, "Unknown database 'mpt_no_such_db'")),
        (("mpt_py_other",),),
        ("raised", "ProgrammingError", (1146, "Table 'mpt_py_other.no_such_table' doesn't exist")),
        ("raised", "ProgrammingError", (1064, results[4][2][1])),
        ("raised", "OperationalError", (1054, "Unknown column 'no_such_column' in 'SELECT'")),
        ("raised", "OperationalError", (3999, "from a test")),
        ("raised", "OperationalError", (1242, "Subquery returns more than 1 row")),
        (
            ((12, None),),
            2,
            (
                ("Warning", 1292, "Truncated incorrect INTEGER value: '12abc'"),
                ("Warning", 1365, "Division by 0"),
            ),
        ),
    ]
    pings = [e for e in list(proxy.events) if e.command == Command.COM_PING]
    assert len(pings) == 2 and not any(e.error_code for e in pings)
    init_db = [(e.query, e.error_code) for e in proxy.events if e.command == Command.COM_INIT_DB]
    assert init_db[-2:] == [("mpt_py_other", 0), ("mpt_no_such_db", 1049)]


def test_autocommit_and_transactions(mariadb: MariaDB, proxy: ProxyThread) -> None:
    def run(conn: Any) -> object:
        seen: list[object] = []
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS py_tx")
            cur.execute("CREATE TABLE py_tx (id INT PRIMARY KEY) ENGINE=InnoDB")
            conn.autocommit(False)
            seen.append(conn.get_autocommit())  # from the OK packet's status flags
            cur.execute("INSERT INTO py_tx VALUES (1), (2)")
            conn.rollback()
            cur.execute("SELECT COUNT(*) FROM py_tx")
            seen.append(cur.fetchall())
            conn.begin()
            cur.execute("INSERT INTO py_tx VALUES (3)")
            conn.commit()
            cur.execute("INSERT INTO py_tx VALUES (4)")
            conn.rollback()
            conn.autocommit(True)
            seen.append(conn.get_autocommit())
            cur.execute("INSERT INTO py_tx VALUES (5)")
            conn.rollback()  # nothing to roll back
            cur.execute("SELECT id FROM py_tx ORDER BY id")
            seen.append(cur.fetchall())
        return seen

    assert both(mariadb, proxy, run) == [False, ((0,),), True, ((3,), (5,))]
    inserts = queries(proxy, "INSERT INTO py_tx")
    assert [(e.query, e.in_transaction) for e in inserts] == [
        ("INSERT INTO py_tx VALUES (1), (2)", True),
        ("INSERT INTO py_tx VALUES (3)", True),
        ("INSERT INTO py_tx VALUES (4)", True),
        ("INSERT INTO py_tx VALUES (5)", False),
    ]


@pytest.mark.parametrize("delta", [-1, 0, 1], ids=["below", "exactly", "above"])
def test_packets_around_16_mib(mariadb: MariaDB, proxy: ProxyThread, delta: int) -> None:
    """A payload of exactly 0xFFFFFF bytes is followed by an empty packet; one byte less
    or more is framed differently. Both directions, around that edge."""
    # Client to server: a COM_QUERY payload (1 command byte + the text) of that size.
    prefix, suffix = "SELECT LENGTH('", "')"
    text_length = MAX_PAYLOAD + delta - 1 - len(prefix) - len(suffix)
    query = prefix + "q" * text_length + suffix
    # Server to client: a row of that size: a 4-byte length prefix and the value, then
    # 1 + 11 bytes of the second column.
    value_length = MAX_PAYLOAD + delta - 4 - 12

    def run(conn: Any) -> object:
        with conn.cursor() as cur:
            cur.execute(query)
            sent = cur.fetchall()
            cur.execute(f"SELECT REPEAT('r', {value_length}), 'next column'")
            ((value, other),) = cur.fetchall()
            cur.execute("SELECT 'after'")
            return sent, len(value), hashlib.md5(value.encode()).hexdigest(), other, cur.fetchall()

    result = both(mariadb, proxy, run, max_allowed_packet=64 * MIB)
    assert result == (
        ((text_length,),),
        value_length,
        hashlib.md5(b"r" * value_length).hexdigest(),
        "next column",
        (("after",),),
    )
    sent = [e for e in list(proxy.events) if e.query.startswith(prefix)]
    assert len(sent) == 1 and sent[0].error_code == 0
    assert sent[0].bytes_received == 1 + len(query) + 4 * (2 if delta >= 0 else 1)
    (received,) = queries(proxy, "SELECT REPEAT('r'")
    assert received.rows_sent == 1 and received.bytes_sent > value_length


def test_kill_another_connection(mariadb: MariaDB, proxy: ProxyThread) -> None:
    """COM_PROCESS_KILL (PyMySQL's kill() sends a KILL query, so the command goes
    through its lower-level API): the victim sees the same error directly and through
    the proxy, and the proxy closes the victim's connection when the server does."""
    results = []
    for port in (mariadb.port, proxy.port):
        with mariadb.connect(port=port) as killer:
            victim = mariadb.connect(port=port)
            try:
                victim_thread = victim.thread_id()
                killer._execute_command(
                    COMMAND.COM_PROCESS_KILL, struct.pack("<I", victim_thread)
                )
                killer._read_ok_packet()
                with killer.cursor() as cur:  # wait until the server has let it go
                    for _ in range(100):
                        cur.execute("SELECT COUNT(*) FROM information_schema.processlist "
                                    f"WHERE id = {victim_thread}")
                        if cur.fetchall() == ((0,),):
                            break
                results.append(outcome(lambda conn: conn.ping(reconnect=False), victim))
            finally:
                victim._force_close()
    direct, proxied = results
    assert proxied == direct
    assert direct == ("raised", "OperationalError", (2013, direct[2][1]))
    kills = [e for e in list(proxy.events) if e.command == Command.COM_PROCESS_KILL]
    assert [(e.query, e.error_code) for e in kills] == [(str(victim_thread), 0)]
