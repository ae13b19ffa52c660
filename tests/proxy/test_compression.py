"""The compressed protocol (CLIENT_COMPRESS) through the proxy, against the private
MariaDB, with real clients: the mariadb command-line client (`--compress`, libmariadb)
and mysql-connector-python (`compress=True`, pure Python and C extension). PyMySQL does
not implement compression (its `compress` argument raises NotImplementedError), so it
cannot be one of them.

Each client run is made directly and through the proxy and the two must agree; the
proxy's QueryEvents must show the queries as they were sent (the tracker reads the
decompressed stream), and each connection must really have been compressed: the client
asked, the proxy let the capability through, and the session relayed frames.
"""

from __future__ import annotations

import hashlib
import os
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from mysqlproxy.hooks import ConnectionInfo
from mysqlproxy.protocol import messages
from mysqlproxy.protocol.compression import CompressedFrame, CompressedLink
from mysqlproxy.protocol.constants import Capability, Command
from mysqlproxy.protocol.packets import PacketBuffer
from mysqlproxy.proxy.limits import Limits
from mysqlproxy.testing.proxythread import ProxyThread, running_proxy
from tests.conftest import MariaDB, run_cli
from tests.proxy.test_clients_connector import use_pure  # noqa: F401  (a fixture)
from tests.proxy.test_clients_mariadb_cli import both, event_for, events
from tests.proxy.test_faults import wait_until
from tests.proxyproc import running_proxy as running_proxy_process
from tests.querylog.test_end_to_end import jsonl, log_on, wait_written

MIB = 1 << 20


class CompressedSessions:
    """An addon noting, for each connection when its login succeeds, whether its tracker
    switched to compressed framing (read on the proxy's loop)."""

    def __init__(self, proxy: ProxyThread) -> None:
        self.proxy = proxy
        self.compressed: dict[int, bool] = {}

    def connection_opened(self, connection: ConnectionInfo) -> None:
        for session in self.proxy.server.sessions:
            if session.connection_id == connection.connection_id and session.tracker:
                self.compressed[connection.connection_id] = session.tracker.compressed


@pytest.fixture
def compressed(proxy: ProxyThread) -> CompressedSessions:
    sessions = CompressedSessions(proxy)
    proxy.call(proxy.server.addons.add, sessions)
    return sessions


def _greeting_capabilities(port: int) -> Capability:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buffer = PacketBuffer()
        while True:
            packets = list(buffer)
            if packets:
                return messages.parse_greeting(packets[0].payload).capabilities
            data = sock.recv(65536)
            assert data
            buffer.feed(data)


def test_compression_is_offered_through_the_proxy_and_zstd_is_not(
    mariadb: MariaDB, proxy: ProxyThread
) -> None:
    direct = _greeting_capabilities(mariadb.port)
    proxied = _greeting_capabilities(proxy.port)
    assert direct & Capability.CLIENT_COMPRESS
    assert proxied & Capability.CLIENT_COMPRESS
    # MariaDB has no zstd protocol compression, so keeping the bit masked (no zstd in
    # Python 3.11's standard library) costs nothing against it.
    assert not direct & Capability.CLIENT_ZSTD_COMPRESSION_ALGORITHM
    assert not proxied & Capability.CLIENT_ZSTD_COMPRESSION_ALGORITHM


def test_pymysql_cannot_be_one_of_the_clients(proxy: ProxyThread) -> None:
    """If a PyMySQL release learns compression, this fails: add it to the clients here."""
    with pytest.raises(NotImplementedError, match="compress"):
        pymysql.connect(host="127.0.0.1", port=proxy.port, user="root", compress=True)


# --- the mariadb command-line client ---------------------------------------------------


def test_cli_compressed_session(
    mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread, compressed: CompressedSessions
) -> None:
    multi = (
        "SELECT 1 AS a; SELECT 'two' AS b, NULL AS c UNION ALL SELECT 'three', 3; "
        "INSERT INTO cz_multi VALUES (1), (2); SELECT COUNT(*) AS n FROM cz_multi"
    )
    big = "SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 300) AS r FROM seq_1_to_50000"
    sql = (
        "DROP TABLE IF EXISTS cz_multi;\n"
        "CREATE TABLE cz_multi (id INT PRIMARY KEY);\n"
        f"DELIMITER //\n{multi}//\nDELIMITER ;\n"
        f"{big};\n"
        "SELECT * FROM cz_no_such_table;\n"
        "SELECT 'after an error' AS still;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql, "--compress", "--force")
    expected_rows = b"".join(
        f"{i}\t{chr(65 + i % 26) * (i % 300)}\n".encode() for i in range(1, 50_001)
    )
    assert out.stdout == (
        b"a\n1\nb\tc\ntwo\tNULL\nthree\t3\nn\n2\nseq\tr\n"
        + expected_rows
        + b"still\nafter an error\n"
    )
    assert b"ERROR 1146 (42S02) at line 7" in out.stderr
    assert list(compressed.compressed.values()) == [True]
    event = event_for(proxy, multi)
    assert (event.result_sets, event.rows_sent, event.rows_affected) == (3, 4, 2)
    select = event_for(proxy, big)
    assert select.rows_sent == 50_000
    # Bytes are counted as the protocol carries them before compression: the result's
    # rows alone are larger than that, and the wire (compressed) is much smaller.
    assert select.bytes_sent > len(expected_rows)
    error = event_for(proxy, "SELECT * FROM cz_no_such_table")
    assert error.error_code == 1146


def test_cli_uncompressed_stays_uncompressed(
    mariadb_cli: str, proxy: ProxyThread, compressed: CompressedSessions
) -> None:
    run_cli(mariadb_cli, proxy.port, "SELECT 1;\n", check=True)
    assert list(compressed.compressed.values()) == [False]


def test_cli_load_data_local_infile_compressed(
    mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread, tmp_path: Path,
    compressed: CompressedSessions,
) -> None:
    lines = [f"{i},row {i} {'x' * (i % 230)}" for i in range(1, 50_001)]
    data = tmp_path / "rows.csv"
    data.write_text("\n".join(lines) + "\n")
    sql = (
        "DROP TABLE IF EXISTS cz_infile;\n"
        "CREATE TABLE cz_infile (id INT PRIMARY KEY, txt VARCHAR(250));\n"
        f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE cz_infile FIELDS TERMINATED BY ',';\n"
        "SELECT COUNT(*), SUM(id), SUM(CRC32(txt)) FROM cz_infile;\n"
        f"LOAD DATA LOCAL INFILE '{tmp_path}/missing.csv' INTO TABLE cz_infile;\n"
        "SELECT 'alive after a missing file' AS after;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql, "--compress", "--local-infile=1", "--force")
    crc_sum = sum(zlib.crc32(line.split(",", 1)[1].encode()) for line in lines)
    assert out.stdout == (
        b"COUNT(*)\tSUM(id)\tSUM(CRC32(txt))\n"
        + f"50000\t{50_000 * 50_001 // 2}\t{crc_sum}\n".encode()
        + b"after\nalive after a missing file\n"
    )
    assert list(compressed.compressed.values()) == [True]
    load = next(e for e in events(proxy) if e.query.startswith("LOAD DATA") and "rows" in e.query)
    assert (load.rows_affected, load.error_code) == (50_000, 0)
    assert load.bytes_received > data.stat().st_size  # the file, before compression


def test_cli_values_over_16_mib_compressed(
    mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread, compressed: CompressedSessions
) -> None:
    value = os.urandom(17 * MIB // 2).hex()  # 17 MiB of text: frames of 0xFFFFFF plain bytes
    digest = hashlib.md5(value.encode()).hexdigest()
    sql = (
        "DROP TABLE IF EXISTS cz_big;\n"
        "CREATE TABLE cz_big (id INT PRIMARY KEY, v LONGTEXT);\n"
        f"INSERT INTO cz_big VALUES (1, '{value}');\n"
        "SELECT LENGTH(v), MD5(v) FROM cz_big;\n"
        "SELECT v FROM cz_big;\n"
        "SELECT 'small' AS after;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql, "--compress", "--max-allowed-packet=64M")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        f"LENGTH(v)\tMD5(v)\n{len(value)}\t{digest}\nv\n".encode()
        + value.encode()
        + b"\nafter\nsmall\n"
    )
    assert list(compressed.compressed.values()) == [True]
    insert = next(e for e in events(proxy) if e.query.startswith("INSERT INTO cz_big"))
    assert insert.bytes_received > 17 * MIB and insert.rows_affected == 1
    select = event_for(proxy, "SELECT v FROM cz_big")
    assert select.rows_sent == 1 and select.bytes_sent > 17 * MIB


# --- mysql-connector-python --------------------------------------------------------------


def _connector(mariadb: MariaDB, port: int, pure: bool, **extra: Any) -> Any:
    return mysql.connector.connect(
        host=mariadb.host,
        port=port,
        user=mariadb.user,
        password=mariadb.password,
        database="mpt",
        use_pure=pure,
        ssl_disabled=True,
        compress=True,
        charset="utf8mb4",
        collation="utf8mb4_general_ci",
        **extra,
    )


def _connector_workload(conn: Any) -> list[object]:
    seen: list[object] = []
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS cz_conn")
    cur.execute("CREATE TABLE cz_conn (id INT PRIMARY KEY, v LONGTEXT)")
    cur.execute("INSERT INTO cz_conn VALUES (1, %s), (2, %s)", ("é" * 1000, "x" * (3 * MIB)))
    seen.append(cur.rowcount)
    conn.commit()
    cur.execute("SELECT id, LENGTH(v), MD5(v) FROM cz_conn ORDER BY id")
    seen.append(cur.fetchall())
    cur.execute("SELECT seq, REPEAT('ab', seq % 100) FROM seq_1_to_20000")
    rows = cur.fetchall()
    seen.append((len(rows), hashlib.md5(repr(rows).encode()).hexdigest()))
    cur.close()
    prepared = conn.cursor(prepared=True)
    prepared.execute("SELECT id, v FROM cz_conn WHERE id = %s", (2,))
    ((row_id, value),) = prepared.fetchall()
    seen.append((row_id, len(value)))
    prepared.close()
    return seen


def test_connector_compressed(
    mariadb: MariaDB, proxy: ProxyThread, compressed: CompressedSessions, use_pure: bool  # noqa: F811
) -> None:
    with _connector(mariadb, mariadb.port, use_pure) as conn:
        direct = _connector_workload(conn)
    with _connector(mariadb, proxy.port, use_pure) as conn:
        proxied = _connector_workload(conn)
    assert proxied == direct
    assert direct[0] == 2
    assert direct[3] == (2, 3 * MIB)
    assert proxy.recorder.wait_for(lambda: compressed.compressed)
    assert list(compressed.compressed.values()) == [True]
    assert proxy.recorder.wait_for(lambda: len(proxy.recorder.closed) == 1)
    assert [reason for _, reason in proxy.recorder.closed] == [None]
    insert = next(e for e in events(proxy) if e.query.startswith("INSERT INTO cz_conn"))
    assert insert.query.startswith("INSERT INTO cz_conn VALUES (1, '" + "é" * 1000 + "')")
    assert insert.rows_affected == 2
    execute = [e for e in list(proxy.events) if e.command == Command.COM_STMT_EXECUTE]
    assert [(e.query, e.params, e.rows_sent) for e in execute] == [
        ("SELECT id, v FROM cz_conn WHERE id = ?", (2,), 1)
    ]


def test_connector_values_over_16_mib_compressed(
    mariadb: MariaDB, proxy: ProxyThread, compressed: CompressedSessions, use_pure: bool  # noqa: F811
) -> None:
    value = os.urandom(9 * MIB).hex()  # 18 MiB: a logical packet of two 0xFFFFFF pieces

    def roundtrip(port: int) -> tuple[int, str, int]:
        with _connector(mariadb, port, use_pure) as conn:
            cur = conn.cursor()
            cur.execute("SELECT LENGTH(%s), MD5(%s)", (value, value))
            ((length, digest),) = cur.fetchall()
            cur.execute("SELECT REPEAT(%s, 2)", (value[: 9 * MIB],))
            ((echo,),) = cur.fetchall()
            return length, digest, len(echo)

    expected = (len(value), hashlib.md5(value.encode()).hexdigest(), 18 * MIB)
    assert roundtrip(mariadb.port) == expected
    assert roundtrip(proxy.port) == expected
    assert list(compressed.compressed.values()) == [True]
    (query,) = [e for e in events(proxy) if e.query.startswith("SELECT LENGTH(")]
    assert query.bytes_received > 2 * len(value) and query.truncated


# --- limits ------------------------------------------------------------------------------


def test_oversized_packet_refused_with_err_1153_when_compressed(
    mariadb: MariaDB, use_pure: bool  # noqa: F811
) -> None:
    with running_proxy(mariadb.address, limits=Limits(max_packet_size=MIB)) as proxy:
        sessions = CompressedSessions(proxy)
        proxy.call(proxy.server.addons.add, sessions)
        conn = _connector(mariadb, proxy.port, use_pure)
        cur = conn.cursor()
        cur.execute("SELECT LENGTH(%s)", ("x" * (MIB // 2),))
        assert cur.fetchall() == [(MIB // 2,)]
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute("SELECT LENGTH(%s)", ("x" * (2 * MIB),))
            cur.fetchall()
        assert list(sessions.compressed.values()) == [True]
        assert info.value.errno == 1153
        assert "max_packet_size is 1048576" in str(info.value.msg)
        assert wait_until(lambda: not proxy.server.sessions)
        conn.close()
        with _connector(mariadb, proxy.port, use_pure) as again:
            cur = again.cursor()
            cur.execute("SELECT 'still serving'")
            assert cur.fetchall() == [("still serving",)]


def test_oversized_packet_refused_with_err_1153_for_the_compressed_cli(
    mariadb_cli: str, mariadb: MariaDB
) -> None:
    """libmariadb reads the ERR in a frame of the proxy's making: its compressed sequence
    id follows the client's last frame, as the server's would."""
    sql = f"SELECT 'small' AS first;\nSELECT LENGTH('{'x' * (2 * MIB)}');\n"
    with running_proxy(mariadb.address, limits=Limits(max_packet_size=MIB)) as proxy:
        sessions = CompressedSessions(proxy)
        proxy.call(proxy.server.addons.add, sessions)
        out = run_cli(mariadb_cli, proxy.port, sql, "--compress", "--max-allowed-packet=64M")
        assert list(sessions.compressed.values()) == [True]
        assert out.stdout == b"first\nsmall\n"
        assert out.stderr.endswith(
            b"ERROR 1153 (08S01) at line 2: Got a packet bigger than 'max_allowed_packet' bytes"
            b" (mysqlproxy: max_packet_size is 1048576)\n"
        ), out.stderr[-300:]
        assert wait_until(lambda: not proxy.server.sessions)


def test_idle_timeout_tells_a_compressed_client_and_quits_the_backend(
    mariadb: MariaDB, use_pure: bool  # noqa: F811
) -> None:
    """The ERR for inactivity reaches the client in a frame it accepts, and the backend
    gets a COM_QUIT frame: a clean goodbye, not an aborted connection."""
    with running_proxy(mariadb.address, limits=Limits(idle_timeout=0.5)) as proxy:
        admin = mariadb.connect()
        with admin.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")
            aborted_before = cur.fetchall()
        conn = _connector(mariadb, proxy.port, use_pure)
        cur = conn.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        ((thread_id,),) = cur.fetchall()
        assert wait_until(lambda: not proxy.server.sessions, 5)
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute("SELECT 1")
            cur.fetchall()
        assert info.value.errno == 4031, info.value
        with admin.cursor() as check:
            check.execute("SELECT ID FROM information_schema.PROCESSLIST")
            assert (thread_id,) not in check.fetchall()
            check.execute("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")
            assert check.fetchall() == aborted_before
        admin.close()


# --- a logging window ----------------------------------------------------------------------


def test_logging_window_sees_compressed_queries(
    mariadb_cli: str, mariadb: MariaDB, tmp_path: Path
) -> None:
    """`mysqlproxy run` with a window opened by `mysqlproxy log on`: the queries of a
    compressed client are written with their text and sizes as sent."""
    target = tmp_path / "window.jsonl"
    long_text = "SELECT '" + "compressible " * 500 + "' AS long_text"
    queries = [
        "SELECT 'cz-window' AS marker",
        long_text,
        "SELECT seq FROM seq_1_to_1000",
        "SELECT * FROM cz_window_missing",
    ]
    with running_proxy_process(mariadb.address, tmp_path / "proxy") as proxy:
        assert log_on(proxy, "--for", "30s", "--to", str(target), "--format", "jsonl") == (
            f"logging to {target} for 30s (jsonl)"
        )
        out = run_cli(
            mariadb_cli, proxy.port, "".join(q + ";\n" for q in queries), "--compress", "--force"
        )
        assert b"ERROR 1146" in out.stderr
        wait_written(proxy, target, len(queries))
        logged = {e["query"]: e for e in jsonl(target)}
    for query in queries:
        assert query in logged, (query, list(logged))
        # Uncompressed sizes: the command packet as the server reads it.
        assert logged[query]["bytes_received"] == len(query.encode()) + 5
    assert logged["SELECT seq FROM seq_1_to_1000"]["rows_sent"] == 1000
    assert logged["SELECT * FROM cz_window_missing"]["error_code"] == 1146
    assert len(long_text) > 6000  # a command that compresses to a fraction of that



class FrameLog:
    """Records, on the proxy's loop, the compressed sequence id and plain length of each
    client frame the relay takes, and the sequence id of each reply the proxy frames
    itself."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.client: list[tuple[int, int]] = []
        self.replies: list[int] = []
        client_frames = CompressedLink.client_frames
        reply_to_client = CompressedLink.reply_to_client

        def logged_client_frames(link: CompressedLink, data: bytes) -> Iterator[CompressedFrame]:
            for frame in client_frames(link, data):
                self.client.append((frame.sequence_id, len(frame.payload)))
                yield frame

        def logged_reply(link: CompressedLink, packets: bytes) -> bytes:
            framed = reply_to_client(link, packets)
            self.replies.append(framed[3])
            return framed

        monkeypatch.setattr(CompressedLink, "client_frames", logged_client_frames)
        monkeypatch.setattr(CompressedLink, "reply_to_client", logged_reply)


@pytest.mark.parametrize("mib", [2, 17])
def test_oversized_packet_over_many_frames_refused_after_its_last_frame_for_the_cli(
    mariadb_cli: str, mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch, mib: int
) -> None:
    """libmariadb writes a packet larger than its 16 KiB net buffer in several frames:
    the buffer's, then the rest, at most 0xFFFFFF plain bytes each (any packet over
    that needs several frames whatever the client). The header over the limit is in the
    first; the ERR must wait for the last and be numbered after it, as a client that
    checks the compressed sequence id (libmysqlclient) requires. libmariadb itself does
    not check it, so its output alone cannot tell: the frames the proxy read can."""
    frames = FrameLog(monkeypatch)
    query = f"SELECT LENGTH('{'x' * (mib * MIB)}')"
    sql = f"SELECT 'small' AS first;\n{query};\n"
    with running_proxy(mariadb.address, limits=Limits(max_packet_size=MIB)) as proxy:
        out = run_cli(mariadb_cli, proxy.port, sql, "--compress", "--max-allowed-packet=64M")
        assert out.stdout == b"first\nsmall\n"
        assert out.stderr.endswith(
            b"ERROR 1153 (08S01) at line 2: Got a packet bigger than 'max_allowed_packet' bytes"
            b" (mysqlproxy: max_packet_size is 1048576)\n"
        ), out.stderr[-300:]
        assert wait_until(lambda: not proxy.server.sessions)
    # The first SELECT, then the refused one's frames: all of them were read...
    refused = frames.client[1:]
    payload_length = 1 + len(query)
    plain_length = payload_length + 4 * (payload_length // 0xFFFFFF + 1)
    assert sum(length for _, length in refused) == plain_length
    assert [seq for seq, _ in refused] == list(range(len(refused)))
    assert len(refused) >= (2 if mib < 16 else 3)
    # ... and the ERR follows the last.
    assert frames.replies == [len(refused)]
