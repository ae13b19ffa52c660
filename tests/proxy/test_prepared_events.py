"""QueryEvents of server-side prepared statements (mysql-connector-python with
cursor(prepared=True)): the statement text from COM_STMT_PREPARE and the decoded
parameters of COM_STMT_EXECUTE, compared with what the client sent and with what the
server made of the same parameters (it echoes them back)."""

from __future__ import annotations

import datetime
import io
from decimal import Decimal

import mysql.connector
import pytest
from mysql.connector.constants import ServerCmd

from mysqlproxy.protocol.constants import Command
from tests.proxy.event_support import wait_events

# One value of every type mysql-connector-python binds, and the value the proxy must
# decode from the packet (the wire has no bool and no time of day: TINY and TIME).
SENT_AND_DECODED = [
    (42, 42),
    (-7, -7),
    (-(2**63), -(2**63)),
    (2**64 - 1, 2**64 - 1),
    (70_000, 70_000),
    (1.5, 1.5),
    (-2.25e-300, -2.25e-300),
    (Decimal("-12345.678901"), Decimal("-12345.678901")),
    ("h\u00e9llo \u2713 \u65e5\u672c \U0001f600", "h\u00e9llo \u2713 \u65e5\u672c \U0001f600"),
    ("", ""),
    (b"\x00\xffbin\x80", b"\x00\xffbin\x80"),
    (None, None),
    (datetime.date(2024, 2, 29), datetime.date(2024, 2, 29)),
    (
        datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
        datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
    ),
    (datetime.datetime(1999, 12, 31, 23, 59, 59), datetime.datetime(1999, 12, 31, 23, 59, 59)),
    (datetime.time(1, 2, 3), datetime.timedelta(hours=1, minutes=2, seconds=3)),
    (
        datetime.timedelta(days=1, hours=10, seconds=5, microseconds=7),
        datetime.timedelta(days=1, hours=10, seconds=5, microseconds=7),
    ),
    # Negative: whole days only, the one kind the connector encodes faithfully.
    (-datetime.timedelta(days=2), -datetime.timedelta(days=2)),
    (True, 1),
    (False, 0),
]


def as_bytes(value):
    return bytes(value) if isinstance(value, (bytes, bytearray)) else value


@pytest.fixture
def connector(proxy, mariadb):
    conn = mysql.connector.connect(
        host="127.0.0.1", port=proxy.port, user=mariadb.user, password=mariadb.password,
        database="mpt", use_pure=True, charset="utf8mb4", collation="utf8mb4_general_ci",
    )
    yield conn
    conn.close()


def execute_events(proxy, statement_id, count):
    return wait_events(
        proxy,
        lambda e: e.command == Command.COM_STMT_EXECUTE and e.statement_id == statement_id,
        count,
    )


def test_parameters_of_every_binary_type(proxy, connector):
    sent = [value for value, _ in SENT_AND_DECODED]
    sql = "SELECT " + ", ".join("?" for _ in sent)
    cur = connector.cursor(prepared=True)
    cur.execute(sql, sent)
    (echo,) = cur.fetchall()
    statement_id = cur._prepared["statement_id"]  # from the server's PREPARE_OK

    (prepare,) = wait_events(proxy, lambda e: e.command == Command.COM_STMT_PREPARE)
    assert prepare.query == sql
    assert prepare.statement_id == statement_id
    (event,) = execute_events(proxy, statement_id, 1)
    assert event.query == sql
    assert event.rows_sent == 1 and event.result_sets == 1
    assert event.params is not None
    assert len(event.params) == len(sent)
    for index, ((value, decoded), got, server) in enumerate(
        zip(SENT_AND_DECODED, event.params, echo, strict=True)
    ):
        assert got == decoded, (index, value)
        assert type(got) is type(decoded), (index, value)
        # The server read the same value from the packet.
        if isinstance(got, bytes):
            assert as_bytes(server) == got or server == got.decode("latin-1"), index
        elif isinstance(got, float):
            assert server == pytest.approx(got), index
        else:
            assert server == got, (index, value, server)
    cur.close()


def test_second_execute_and_reused_types(proxy, connector):
    """A second execute of the same statement decodes with its own values, including one
    that sends no types (new_params_bound = 0: the types of the previous execute hold)."""
    sql = "SELECT ?, ?, ?, ?"
    cur = connector.cursor(prepared=True)
    first = (1, "one", datetime.date(2020, 1, 1), Decimal("1.5"))
    second = (2, "\u4e8c", datetime.date(2021, 2, 2), Decimal("-2.25"))
    third = (3, "three", datetime.date(2023, 3, 3), Decimal("3.125"))
    cur.execute(sql, first)
    assert cur.fetchall() == [first]
    cur.execute(sql, second)
    assert cur.fetchall() == [second]
    statement_id = cur._prepared["statement_id"]

    # The connector always resends types; build the packet it would send, drop them
    # and clear new_params_bound, as libmysqlclient does when the binding is unchanged.
    protocol = connector._protocol
    packet = protocol.make_stmt_execute(
        statement_id, third, tuple(cur._prepared["parameters"]), 0, {}, "utf8"
    )
    bound_at = 4 + 1 + 4 + (len(third) + 7) // 8
    assert packet[bound_at] == 1
    packet = packet[:bound_at] + b"\x00" + packet[bound_at + 1 + 2 * len(third) :]
    response = connector._send_cmd(ServerCmd.STMT_EXECUTE, packet=packet)
    _, columns, _ = connector._handle_binary_result(response)
    connector.unread_result = True
    rows, _ = connector.get_rows(binary=True, columns=columns)
    assert [tuple(row) for row in rows] == [third]  # the server decoded it so

    events = execute_events(proxy, statement_id, 3)
    assert [e.params for e in events] == [first, second, third]
    assert all(e.query == sql and e.rows_sent == 1 for e in events)
    cur.close()


def test_long_data_parameter(proxy, connector):
    blob = bytes(range(256)) * 40
    cur = connector.cursor(prepared=True)
    cur.execute("SELECT ?, LENGTH(?)", (io.BytesIO(blob), "x"))
    ((echo, length),) = cur.fetchall()
    assert as_bytes(echo) == blob and length == 1
    statement_id = cur._prepared["statement_id"]
    long_data = wait_events(
        proxy,
        lambda e: e.command == Command.COM_STMT_SEND_LONG_DATA and e.statement_id == statement_id,
    )
    assert long_data[0].bytes_sent == 0  # the server does not answer it
    (event,) = execute_events(proxy, statement_id, 1)
    assert event.params == (blob, "x")
    cur.close()


def test_execute_results_affected_rows_and_errors(proxy, connector, mariadb):
    with mariadb.connect(database="mpt") as direct, direct.cursor() as setup:
        setup.execute("DROP TABLE IF EXISTS qe_prepared")
        setup.execute(
            "CREATE TABLE qe_prepared (id INT AUTO_INCREMENT PRIMARY KEY, k INT UNIQUE)"
        )
    cur = connector.cursor(prepared=True)

    cur.execute("INSERT INTO qe_prepared (k) VALUES (?), (?), (?)", (1, 2, 3))
    rowcount, lastrowid = cur.rowcount, cur.lastrowid
    insert_id = cur._prepared["statement_id"]
    (event,) = execute_events(proxy, insert_id, 1)
    assert (event.rows_affected, event.insert_id) == (rowcount, lastrowid) == (3, 1)
    assert event.params == (1, 2, 3)

    cur.execute("SELECT seq FROM seq_1_to_100000 WHERE seq <= ?", (5000,))
    rows = cur.fetchall()
    (event,) = execute_events(proxy, cur._prepared["statement_id"], 1)
    assert event.rows_sent == len(rows) == 5000
    assert event.params == (5000,)

    with pytest.raises(mysql.connector.Error) as raised:
        cur.execute("INSERT INTO qe_prepared (k) VALUES (?)", (2,))
    error = raised.value
    (event,) = execute_events(proxy, cur._prepared["statement_id"], 1)
    assert (event.error_code, event.sql_state) == (error.errno, error.sqlstate) == (1062, "23000")
    assert event.error_message == error.msg
    assert event.params == (2,)

    with pytest.raises(mysql.connector.Error) as raised:
        cur.execute("SELEC ?", (1,))
    (event,) = wait_events(
        proxy, lambda e: e.command == Command.COM_STMT_PREPARE and e.query == "SELEC ?"
    )
    assert (event.error_code, event.sql_state) == (raised.value.errno, raised.value.sqlstate)
    assert event.error_message == raised.value.msg
    assert event.statement_id is None

    cur.execute("SELECT ? + 1", (41,))
    assert cur.fetchall() == [(42,)]
    (event,) = execute_events(proxy, cur._prepared["statement_id"], 1)
    assert not event.failed and event.params == (41,)
    cur.close()


# asyncmy binds differently (every int as LONGLONG, bytes as BLOB, str as VAR_STRING,
# NEWDECIMAL, 12-byte TIME) and negotiates CLIENT_DEPRECATE_EOF.
ASYNCMY_SENT_AND_DECODED = [
    (42, 42),
    (-(2**63), -(2**63)),
    (2**64 - 1, 2**64 - 1),
    (0.1, 0.1),
    (Decimal("0.000001"), Decimal("0.000001")),
    ("\u00e9\u2713\U0001f600", "\u00e9\u2713\U0001f600"),
    (b"\x00\xff" * 100, b"\x00\xff" * 100),
    (None, None),
    (datetime.date(1, 1, 1), datetime.date(1, 1, 1)),
    (
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
        datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
    ),
    (datetime.time(23, 59, 59, 5), datetime.timedelta(hours=23, minutes=59, seconds=59,
                                                      microseconds=5)),
    (-datetime.timedelta(hours=5, microseconds=1), -datetime.timedelta(hours=5, microseconds=1)),
    (True, 1),
]


async def test_asyncmy_parameters(proxy, mariadb):
    import asyncmy

    conn = await asyncmy.connect(
        host="127.0.0.1", port=proxy.port, user=mariadb.user, password=mariadb.password,
        database="mpt", charset="utf8mb4",
    )
    try:
        sent = tuple(value for value, _ in ASYNCMY_SENT_AND_DECODED)
        sql = "SELECT " + ", ".join("?" for _ in sent)
        statement = await conn.prepare(sql)
        result = await statement.execute(sent)
        (echo,) = result.rows
        again = await statement.execute(sent)
        assert again.rows == result.rows
        single = await conn.prepare("SELECT seq FROM seq_1_to_100000 WHERE seq <= ?")
        rows = (await single.execute((777,))).rows
        assert len(rows) == 777
        statement_id, single_id = statement._statement_id, single._statement_id
        await statement.close()
        await single.close()
    finally:
        conn.close()

    events = execute_events(proxy, statement_id, 2)
    for event in events:
        assert event.query == sql and event.rows_sent == 1
        assert event.params is not None
        for index, ((value, decoded), got, server) in enumerate(
            zip(ASYNCMY_SENT_AND_DECODED, event.params, echo, strict=True)
        ):
            assert got == decoded and type(got) is type(decoded), (index, value)
            if isinstance(got, float):
                assert server == pytest.approx(got)
            else:
                assert as_bytes(server) == got, (index, value, server)
    (event,) = execute_events(proxy, single_id, 1)
    assert event.params == (777,)
    assert event.rows_sent == 777
