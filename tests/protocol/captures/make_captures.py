"""Record the captures in this directory from real clients and a real MariaDB.

    .venv/bin/python tests/protocol/captures/make_captures.py [--port 3306]

Needs a MariaDB at 127.0.0.1 (root, empty password) with local_infile on, the mariadb
command-line client, PyMySQL and mysql-connector-python. It creates and finally drops
the database `mysqlproxy_capture`. Each client talks to the server through
mysqlproxy.testing.capture's recording relay; the recordings are written as JSON next
to this script. The tests only read those files: they need no server.

The recordings depend on the server (thread ids, scrambles, timings split chunks
differently), so regenerating them changes the files; the tests compare a recording fed
whole with the same recording fed in pieces, never with fixed values.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import decimal
import io
import pathlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import mysql.connector
import pymysql

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.constants import Capability, FieldType
from mysqlproxy.protocol.packets import Packet, PacketBuffer, encode_packet
from mysqlproxy.testing import packets as pk
from mysqlproxy.testing.capture import Capture, RecordingRelay, running_relay

HERE = pathlib.Path(__file__).parent
DB = "mysqlproxy_capture"

SETUP = [
    f"DROP DATABASE IF EXISTS {DB}",
    f"CREATE DATABASE {DB}",
    f"USE {DB}",
    """CREATE TABLE types (
        id INT AUTO_INCREMENT PRIMARY KEY, ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT,
        bi BIGINT, f FLOAT, d DOUBLE, dc DECIMAL(10,3), c CHAR(3), vc VARCHAR(20),
        tx TEXT, bl BLOB, dt DATE, dtm DATETIME(6), ts TIMESTAMP NULL, tm TIME(3),
        yr YEAR, bt BIT(5), en ENUM('a','b'), st SET('x','y'), js JSON)""",
    """INSERT INTO types VALUES
        (NULL, -128, 65535, -8388608, -9223372036854775808, 1.5, -2.25, 1234567.891,
         'abc', 'vé', 'text', x'00ff10', '2024-02-29', '2024-02-29 13:14:15.123456',
         '2024-01-01 00:00:01', '-838:59:59.000', 2024, b'10101', 'b', 'x,y', '{"k": [1]}'),
        (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (NULL, 127, 0, 8388607, 9223372036854775807, -0.0, 1e300, -0.001, '', '', '', '',
         '1000-01-01', '9999-12-31 23:59:59', NULL, '00:00:00', 1901, b'0', 'a', '', 'null')
    """,
    "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20))",
    "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four'), (5, NULL)",
    "CREATE TABLE blobs (id INT AUTO_INCREMENT PRIMARY KEY, data LONGBLOB)",
    "CREATE TABLE load_target (a INT, b VARCHAR(10))",
    """CREATE PROCEDURE multi() BEGIN
        SELECT 1 AS one; SELECT id, name FROM t ORDER BY id; UPDATE t SET name = name;
    END""",
    """CREATE PROCEDURE with_out(IN x INT, OUT y INT) BEGIN
        SELECT x AS x_in; SET y = x * 2;
    END""",
]


def setup(port: int) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
    with conn.cursor() as cur:
        for statement in SETUP:
            cur.execute(statement)
    conn.close()


def teardown(port: int) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
    conn.close()


# --- PyMySQL: the text protocol -------------------------------------------------------


def pymysql_session(relay: RecordingRelay, port: int) -> None:
    relay.label = "pymysql: text protocol, types, multi-statements, CALL, LOCAL INFILE"
    conn = pymysql.connect(
        host="127.0.0.1",
        port=port,
        user="root",
        password="",
        database=DB,
        local_infile=True,
        client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
    )
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM types ORDER BY id")
        cur.fetchall()
        cur.execute("INSERT INTO t VALUES (10, 'ten'), (11, 'eleven')")
        cur.execute("INSERT INTO blobs (data) VALUES (%s)", (b"\x00\x01\xfe\xff" * 10,))
        cur.executemany("INSERT INTO blobs (data) VALUES (%s)", [(b"a",), (None,), (b"c",)])
        cur.execute("UPDATE t SET name = UPPER(name) WHERE id < 4")
        cur.execute("SELECT CAST('12abc' AS SIGNED) AS warned")
        conn.show_warnings()
        with contextlib.suppress(pymysql.err.ProgrammingError):
            cur.execute("SELEC 1")
        with contextlib.suppress(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM does_not_exist")
        cur.execute("SELECT 1 AS a; SELECT 'two' AS b, NULL AS c; DELETE FROM t WHERE id = 11")
        while cur.nextset():
            pass
        cur.execute("CALL multi()")
        while cur.nextset():
            pass
        cur.execute("CALL with_out(21, @y)")
        while cur.nextset():
            pass
        cur.execute("SELECT @y")
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            f.write("".join(f"{i},row{i}\n" for i in range(50)))
        cur.execute(
            f"LOAD DATA LOCAL INFILE '{f.name}' INTO TABLE load_target FIELDS TERMINATED BY ','"
        )
        pathlib.Path(f.name).unlink()
        conn.select_db("test")
        cur.execute(f"USE {DB}")
        conn.ping()
        cur.execute("SELECT REPEAT('y', 20000) AS big")
        cur.fetchall()
        cur.execute("BEGIN")
        cur.execute("INSERT INTO t VALUES (12, 'in-trx')")
        cur.execute("ROLLBACK")
    conn.close()

    relay.label = "pymysql: killed while idle"
    victim = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
    relay.label = "pymysql: COM_PROCESS_KILL"
    killer = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
    killer.kill(victim.thread_id())
    with contextlib.suppress(pymysql.err.OperationalError):
        killer.kill(2**31)
    time.sleep(0.3)
    killer.close()
    with contextlib.suppress(pymysql.err.Error):
        victim.close()

    relay.label = "pymysql: wrong password"
    with contextlib.suppress(pymysql.err.OperationalError):
        pymysql.connect(host="127.0.0.1", port=port, user="root", password="wrong")


# --- the mariadb command-line client ------------------------------------------------------

CLI_SCRIPT = f"""
SELECT * FROM types ORDER BY id;
SELECT 1/0 AS division;
SHOW WARNINGS;
SELEC 1;
SELECT * FROM does_not_exist;
USE test;
USE {DB};
DELIMITER //
SELECT 1 AS a; SELECT 2 AS b; INSERT INTO t VALUES (100, 'multi')//
DELIMITER ;
CALL multi();
LOAD DATA LOCAL INFILE '@FILE@' INTO TABLE load_target FIELDS TERMINATED BY ',';
PREPARE s FROM 'SELECT ? + 1 AS answer';
SET @a = 41;
EXECUTE s USING @a;
DEALLOCATE PREPARE s;
SELECT REPEAT('x', 20000) AS big;
INSERT INTO t VALUES (200, 'ins');
SELECT LAST_INSERT_ID(), ROW_COUNT();
"""


def cli_session(relay: RecordingRelay, port: int) -> None:
    relay.label = "mariadb CLI: script with errors, DELIMITER multi-statement, CALL, LOCAL INFILE"
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write("".join(f"{i},cli{i}\n" for i in range(30)))
    script = CLI_SCRIPT.replace("@FILE@", f.name)
    subprocess.run(
        [
            "mariadb",
            "-h127.0.0.1",
            f"-P{port}",
            "-uroot",
            "--protocol=TCP",
            "--skip-ssl",
            "--local-infile=1",
            "--force",
            DB,
        ],
        input=script.encode(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    pathlib.Path(f.name).unlink()


# --- mysql-connector-python: the binary protocol ---------------------------------------


def connector_session(relay: RecordingRelay, port: int) -> None:
    relay.label = "mysql-connector prepared: binary params and rows, change user, reset"
    conn = mysql.connector.connect(
        host="127.0.0.1", port=port, user="root", password="", database=DB, use_pure=True
    )
    cur = conn.cursor(prepared=True)
    # At most 16 columns: mysql-connector's pure binary row parser fails beyond that.
    columns = "ti, si, mi, bi, f, d, dc, c, vc, tx, bl, dt, dtm, ts, tm, yr"
    cur.execute(f"SELECT {columns} FROM types WHERE id > ? ORDER BY id", (0,))
    cur.fetchall()
    params = (
        42,
        -7,
        2**63 - 1,
        1.25,
        decimal.Decimal("-12.345"),
        "héllo",
        b"\x00\xffblob",
        datetime.date(2024, 2, 29),
        datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
        datetime.timedelta(hours=-5, minutes=-6, seconds=-7),
        None,
        True,
    )
    placeholders = ", ".join("?" for _ in params)
    cur.execute(f"SELECT {placeholders}", params)
    cur.fetchall()
    # A file-like parameter is sent with COM_STMT_SEND_LONG_DATA.
    long_data: Any = io.BytesIO(b"long data " * 100)
    cur.execute("INSERT INTO blobs (data) VALUES (?)", (long_data,))
    cur.execute("INSERT INTO t VALUES (?, ?)", (300, "prepared"))
    with contextlib.suppress(mysql.connector.Error):
        cur.execute("INSERT INTO t VALUES (?, ?)", (300, "duplicate"))
    cur.executemany("INSERT INTO blobs (data) VALUES (?)", [(b"x",), (None,)])
    cur.close()
    conn.cmd_ping()
    conn.cmd_init_db("test")
    conn.cmd_statistics()
    conn.cmd_change_user(username="root", password="", database=DB)
    conn.cmd_reset_connection()
    text = conn.cursor()
    text.execute("SELECT DATABASE(), CONNECTION_ID()")
    text.fetchall()
    text.close()
    conn.close()


# --- a raw client: commands no common client sends -------------------------------------------


class RawClient:
    """A blocking client built on the packet factory. It does not parse responses: it
    reads until the server has been quiet for a moment, which is all a recording needs."""

    QUIET = 0.15

    def __init__(self, port: int, *, deprecate_eof: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buffer = PacketBuffer()
        greeting = self.read()[0]
        self.server_caps = messages.parse_greeting(greeting.payload).capabilities
        caps = pk.CLIENT_CAPABILITIES
        if deprecate_eof:
            caps |= Capability.CLIENT_DEPRECATE_EOF
        self.send(1, pk.handshake_response(caps, "root", b"", DB, connect_attrs={"x": "y"}))
        self.read()

    def send(self, seq: int, payload: bytes) -> None:
        self.sock.sendall(encode_packet(seq, payload))

    def read(self) -> list[Packet]:
        packets: list[Packet] = []
        self.sock.settimeout(self.QUIET)
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.buffer.feed(data)
            packets.extend(self.buffer)
        return packets

    def command(self, payload: bytes) -> list[Packet]:
        self.send(0, payload)
        return self.read()

    def close(self) -> None:
        self.sock.close()


def raw_session(relay: RecordingRelay, port: int, deprecate_eof: bool) -> None:
    mode = "DEPRECATE_EOF" if deprecate_eof else "EOF"
    relay.label = f"raw client ({mode}): field list, set option, cursors, long data, pipelining"
    client = RawClient(port, deprecate_eof=deprecate_eof)
    client.command(pk.com_query("SELECT 1 AS one, NULL AS nothing, 'x' AS ex"))
    client.command(pk.com_field_list("t"))
    client.command(pk.com_field_list("t", "na%"))
    client.command(pk.com_field_list("does_not_exist"))
    client.command(pk.com_set_option(1))
    client.command(pk.com_set_option(0))
    client.command(pk.com_statistics())
    client.command(pk.com_ping())
    client.command(pk.com_init_db("test"))
    client.command(pk.com_init_db("no_such_schema"))
    client.command(pk.com_init_db(DB))

    prepared = client.command(
        pk.com_stmt_prepare("SELECT id, name FROM t WHERE id > ? ORDER BY id")
    )
    select_id = messages.parse_prepare_ok(prepared[0].payload).statement_id
    long_type = FieldType.MYSQL_TYPE_LONGLONG
    # A read-only cursor, fetched in pieces.
    client.command(pk.com_stmt_execute(select_id, [long_type], [0], flags=1))
    client.command(pk.com_stmt_fetch(select_id, 2))
    client.command(pk.com_stmt_fetch(select_id, 100))
    client.command(pk.com_stmt_reset(select_id))
    # No cursor, parameter types not sent again.
    client.command(pk.com_stmt_execute(select_id, [long_type], [3], new_params_bound=False))

    prepared = client.command(pk.com_stmt_prepare("INSERT INTO blobs (data) VALUES (?)"))
    insert_id = messages.parse_prepare_ok(prepared[0].payload).statement_id
    client.command(pk.com_stmt_send_long_data(insert_id, 0, b"first part "))
    client.command(pk.com_stmt_send_long_data(insert_id, 0, b"second part"))
    blob = FieldType.MYSQL_TYPE_BLOB
    client.command(pk.com_stmt_execute(insert_id, [blob], [b""], long_data=frozenset({0})))
    client.command(pk.com_stmt_close(insert_id))
    client.command(pk.com_stmt_close(select_id))
    client.command(pk.com_stmt_prepare("SELEC nothing"))

    prepared = client.command(pk.com_stmt_prepare("CALL with_out(?, @z)"))
    call_id = messages.parse_prepare_ok(prepared[0].payload).statement_id
    client.command(pk.com_stmt_execute(call_id, [long_type], [5]))
    client.command(pk.com_stmt_close(call_id))

    # Three commands in one write, answered in order.
    client.sock.sendall(
        encode_packet(0, pk.com_query("SELECT 1"))
        + encode_packet(0, pk.com_query("SELECT 2, 3"))
        + encode_packet(0, pk.com_ping())
    )
    client.read()
    client.command(b"\x99unknown")
    client.command(pk.com_process_kill(999999))
    change = client.command(pk.com_change_user("root", b"", DB, connect_attrs={"x": "y"}))
    if change and change[-1].payload[:1] == b"\xfe":
        client.send((change[-1].sequence_id + 1) & 0xFF, b"")
        client.read()
    client.command(pk.com_reset_connection())
    client.command(pk.com_query("SELECT DATABASE()"))
    client.send(0, pk.com_quit())
    client.read()
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=3306)
    args = parser.parse_args()
    setup(args.port)
    try:
        sessions: dict[str, tuple[str, list[Callable[[RecordingRelay, int], None]]]] = {
            "pymysql.json": (
                "PyMySQL against MariaDB: text protocol with many types and NULLs, "
                "multi-statements, CALL, LOCAL INFILE, errors, USE, ping, kill",
                [pymysql_session],
            ),
            "mariadb_cli.json": (
                "The mariadb command-line client running a script through the relay",
                [cli_session],
            ),
            "connector_prepared.json": (
                "mysql-connector-python (pure) with prepared=True: binary protocol, "
                "COM_CHANGE_USER, COM_RESET_CONNECTION, COM_STATISTICS",
                [connector_session],
            ),
            "raw_commands.json": (
                "A raw client built on the packet factory, with and without "
                "CLIENT_DEPRECATE_EOF: field list, set option, cursors and fetch, long data, "
                "pipelined commands, unknown command, change user, quit",
                [
                    lambda relay, port: raw_session(relay, port, deprecate_eof=True),
                    lambda relay, port: raw_session(relay, port, deprecate_eof=False),
                ],
            ),
        }
        for filename, (description, functions) in sessions.items():
            with running_relay("127.0.0.1", args.port) as (relay, port):
                for function in functions:
                    function(relay, port)
                time.sleep(0.5)
            for recording in relay.recordings:
                if recording.error:
                    print(f"{filename}: {recording.label}: tracker refused: {recording.error}")
            Capture(description, relay.recordings).save(HERE / filename)
            size = (HERE / filename).stat().st_size
            print(f"{filename}: {len(relay.recordings)} connections, {size} bytes")
    finally:
        teardown(args.port)


if __name__ == "__main__":
    main()
