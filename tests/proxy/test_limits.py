"""Limits: max_connections (ERR 1040 in place of the greeting), idle_timeout (idle
clients closed, commands in flight never), max_packet_size (ERR 1153 on the header of
an oversized packet, with the sequence id the server would use). Each is changed at
runtime too; the `run` options are checked end to end at the bottom."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pymysql.cursors
import pytest

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.packets import PacketBuffer, encode_packet
from mysqlproxy.proxy.limits import Limits
from mysqlproxy.testing.fakeserver import ResultSet, Stall, running_fake_server
from mysqlproxy.testing.proxythread import ProxyThread, running_proxy
from tests.conftest import MariaDB
from tests.proxy.test_faults import (
    assert_serves,
    connect,
    reading_eof,
    server_thread_ids,
    wait_until,
)
from tests.proxyproc import RunningProxy
from tests.proxyproc import running_proxy as running_proxy_process

MIB = 1 << 20


def read_packet(
    sock: socket.socket, buffer: PacketBuffer, timeout: float = 5.0
) -> tuple[int, bytes]:
    """The next logical packet from a raw socket: (sequence id, payload)."""
    sock.settimeout(timeout)
    while True:
        for packet in buffer:
            return packet.sequence_id, packet.payload
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before a whole packet arrived")
        buffer.feed(data)


def assert_disconnected_for_inactivity(sock: socket.socket, timeout: float) -> None:
    """The idle client on `sock` (its last command answered just now) is told why first,
    as MySQL 8.0.24+ does: ERR 4031 (ER_CLIENT_INTERACTION_TIMEOUT) with sequence id 0;
    then closed. Both within the timeout plus at most one sweep and a bit."""
    started = time.monotonic()
    seq, payload = read_packet(sock, PacketBuffer(), timeout=3)
    elapsed = time.monotonic() - started
    assert (seq, messages.parse_err(payload)) == (
        0,
        messages.ErrPacket(
            4031, "HY000", "The client was disconnected by the server because of inactivity."
        ),
    )
    assert reading_eof(sock, timeout=3)
    assert timeout * 0.9 <= elapsed < timeout + 1.0, elapsed


def global_status(mariadb: MariaDB, name: str) -> int:
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"SHOW GLOBAL STATUS LIKE '{name}'")
        row = cur.fetchone()
        assert row is not None
        return int(row[1])


# --- max_connections ------------------------------------------------------------------------


def test_max_connections_refuses_with_err_1040_in_place_of_the_greeting() -> None:
    with (
        running_fake_server() as fake,
        running_proxy(fake.address, limits=Limits(max_connections=2)) as proxy,
    ):
        held = [connect(proxy.port), connect(proxy.port)]
        # On the wire: one ERR packet, sequence id 0, where the greeting would be; then EOF.
        with socket.create_connection(("127.0.0.1", proxy.port)) as raw:
            seq, payload = read_packet(raw, PacketBuffer())
            assert seq == 0
            err = messages.parse_err(payload)
            assert (err.code, err.sql_state, err.message) == (1040, "08004", "Too many connections")
            assert reading_eof(raw)
        # As a client library reports it.
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(proxy.port)
        assert info.value.args == (1040, "Too many connections")
        assert proxy.server.connections_refused == 2
        assert len(fake.connections) == 2, "the backend was contacted for a refused client"
        assert len(proxy.server.sessions) == 2
        # The held connections are not disturbed.
        for conn in held:
            conn.ping()
        # A slot freed is a slot for the next client.
        held.pop().close()
        assert wait_until(lambda: len(proxy.server.sessions) == 1)
        held.append(connect(proxy.port))
        with pytest.raises(pymysql.err.OperationalError):
            connect(proxy.port)
        # Raised at runtime: applies to the next accept.
        proxy.server.limits.max_connections = 3
        held.append(connect(proxy.port))
        proxy.server.limits.max_connections = 0  # no limit
        held.extend(connect(proxy.port) for _ in range(3))
        assert len(proxy.server.sessions) == 6
        for conn in held:
            conn.close()
        assert wait_until(lambda: not proxy.server.sessions)
        assert len(fake.connections) == 7


# --- idle_timeout ---------------------------------------------------------------------------


@pytest.fixture
def idle_proxy(mariadb: MariaDB) -> Iterator[ProxyThread]:
    with running_proxy(mariadb.address, limits=Limits(idle_timeout=0.5)) as proxy:
        yield proxy


def test_idle_client_is_closed_with_its_backend_connection(
    idle_proxy: ProxyThread, mariadb: MariaDB
) -> None:
    admin = mariadb.connect()
    aborted_before = global_status(mariadb, "Aborted_clients")
    client = connect(idle_proxy.port)
    thread_id = client.thread_id()
    with client.cursor() as cur:
        cur.execute("SELECT 1")
    sock: socket.socket = client._sock  # type: ignore[attr-defined]
    assert_disconnected_for_inactivity(sock, 0.5)
    assert wait_until(lambda: not idle_proxy.server.sessions, 2)
    assert wait_until(lambda: thread_id not in server_thread_ids(admin), 5)
    # The backend was told goodbye (COM_QUIT): not an aborted connection to it.
    assert global_status(mariadb, "Aborted_clients") == aborted_before
    closed = idle_proxy.recorder.closed
    assert closed and "idle_timeout is 0.5s" in (closed[-1][1] or "")
    with pytest.raises(pymysql.err.OperationalError) as info:
        client.ping(reconnect=False)
    assert info.value.args[0] in (2006, 2013)
    admin.close()


def test_idle_timeout_never_cuts_a_command_in_flight(idle_proxy: ProxyThread) -> None:
    with connect(idle_proxy.port, database="mpt") as conn, conn.cursor() as cur:
        cur.execute("SELECT SLEEP(1.2)")  # over twice the timeout, waiting on the server
        assert cur.fetchall() == ((0,),)
    # A result read slowly: the server is held back by the client, still in flight.
    with (
        connect(idle_proxy.port, database="mpt", cursorclass=pymysql.cursors.SSCursor) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT seq, REPEAT('x', 200) FROM seq_1_to_100000")
        rows = 0
        started = time.monotonic()
        while batch := cur.fetchmany(10000):
            rows += len(batch)
            time.sleep(0.12)
        assert rows == 100000
        assert time.monotonic() - started > 1.0
        cur.execute("SELECT 2")
        assert list(cur.fetchall()) == [(2,)]


def test_a_client_that_keeps_working_stays(idle_proxy: ProxyThread) -> None:
    with connect(idle_proxy.port) as conn, conn.cursor() as cur:
        for _ in range(8):
            time.sleep(0.25)
            cur.execute("SELECT 1")
    assert not idle_proxy.recorder.closed or all(
        reason is None for _, reason in idle_proxy.recorder.closed
    )


def test_a_client_stopped_in_the_middle_of_a_packet_is_idle_too(idle_proxy: ProxyThread) -> None:
    client = connect(idle_proxy.port)
    sock: socket.socket = client._sock  # type: ignore[attr-defined]
    sock.sendall(b"\x40\x00")  # two bytes of a header, then nothing
    assert reading_eof(sock, timeout=3)
    assert wait_until(lambda: not idle_proxy.server.sessions, 2)


def test_a_client_that_never_answers_the_greeting_is_idle(idle_proxy: ProxyThread) -> None:
    with socket.create_connection(("127.0.0.1", idle_proxy.port)) as raw:
        seq, payload = read_packet(raw, PacketBuffer())
        assert (seq, payload[:1]) == (0, b"\x0a")
        assert reading_eof(raw, timeout=3)


def test_idle_timeout_switched_on_at_runtime(proxy: ProxyThread) -> None:
    client = connect(proxy.port)
    time.sleep(0.6)
    client.ping(reconnect=False)  # off: nothing happens
    proxy.server.limits.idle_timeout = 0.3
    started = time.monotonic()
    assert reading_eof(client._sock, timeout=4)  # type: ignore[attr-defined]
    assert time.monotonic() - started < 2.5  # noticed within a second, then the timeout
    proxy.server.limits.idle_timeout = 0
    client.close()
    assert_serves(proxy.port)


# --- max_packet_size --------------------------------------------------------------------------


def _err_of(payload: bytes) -> messages.ErrPacket:
    assert payload[:1] == b"\xff", payload[:20]
    return messages.parse_err(payload)


def test_oversized_command_is_refused_on_its_header() -> None:
    """Raw bytes: the ERR arrives while the client is still sending (sequence id 1, the
    answer to a command of sequence id 0), the rest is accepted and dropped without a
    reset, then the proxy closes. The backend never sees the command."""
    with (
        running_fake_server() as fake,
        running_proxy(fake.address, limits=Limits(max_packet_size=MIB)) as proxy,
    ):
        client = connect(proxy.port)
        seen = len(fake.connections[0].commands)  # what PyMySQL sends on connect
        sock: socket.socket = client._sock  # type: ignore[attr-defined]
        size = 2 * MIB
        sock.sendall(size.to_bytes(3, "little") + b"\x00\x03SELECT '")
        seq, payload = read_packet(sock, PacketBuffer())
        err = _err_of(payload)
        assert seq == 1
        assert (err.code, err.sql_state) == (1153, "08S01")
        assert err.message.startswith("Got a packet bigger than 'max_allowed_packet' bytes")
        assert "max_packet_size is 1048576" in err.message
        sock.settimeout(5)
        sock.sendall(b"x" * (size - 9))  # no reset: the proxy lingers, reading
        assert reading_eof(sock)
        client._rfile.close()  # type: ignore[attr-defined]
        sock.close()
        assert wait_until(lambda: not proxy.server.sessions)
        assert wait_until(lambda: fake.connections[0].closed)
        assert len(fake.connections[0].commands) == seen
        with connect(proxy.port) as again:
            again.ping()


def test_oversized_query_through_pymysql(mariadb: MariaDB) -> None:
    with running_proxy(mariadb.address, limits=Limits(max_packet_size=MIB)) as proxy:
        admin = mariadb.connect()
        conn = connect(proxy.port)
        thread_id = conn.thread_id()
        # Exactly at the limit passes: the command byte and the text make MIB.
        prefix, suffix = "SELECT LENGTH('", "')"
        fill = MIB - 1 - len(prefix) - len(suffix)
        with conn.cursor() as cur:
            cur.execute(prefix + "x" * fill + suffix)
            assert cur.fetchall() == ((fill,),)
        with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
            cur.execute(prefix + "x" * (fill + 1) + suffix)
        code, message = info.value.args
        assert code == 1153
        assert message.startswith("Got a packet bigger than 'max_allowed_packet' bytes")
        assert wait_until(lambda: not proxy.server.sessions)
        assert wait_until(lambda: thread_id not in server_thread_ids(admin), 5)
        with pytest.raises(pymysql.err.Error):
            conn.ping(reconnect=False)
        conn.close()
        assert_serves(proxy.port)
        admin.close()


def test_oversized_logical_packet_counts_all_its_pieces(mariadb: MariaDB) -> None:
    """Limits above 16 MiB hold across 0xFFFFFF pieces: refused on the piece that crosses
    it, with that piece's sequence id plus one (here the second piece: 1, so 2)."""
    with running_proxy(mariadb.address, limits=Limits(max_packet_size=20 * MIB)) as proxy:
        conn = connect(proxy.port, max_allowed_packet=64 * MIB)
        with conn.cursor() as cur:
            cur.execute("SELECT LENGTH('" + "x" * (17 * MIB) + "')")  # two pieces, under
            assert cur.fetchall() == ((17 * MIB,),)
        with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
            cur.execute("SELECT LENGTH('" + "x" * (21 * MIB) + "')")
        assert info.value.args[0] == 1153  # PyMySQL checked the sequence id: 2
        conn.close()
        assert wait_until(lambda: not proxy.server.sessions)


def test_pipelined_commands_before_an_oversized_one_are_answered_first() -> None:
    script = {"SELECT 1": [Stall(0.3), ResultSet(["1"], [[b"1"]])]}
    with (
        running_fake_server(script) as fake,
        running_proxy(fake.address, limits=Limits(max_packet_size=MIB)) as proxy,
    ):
        client = connect(proxy.port)
        seen = len(fake.connections[0].commands)
        sock: socket.socket = client._sock  # type: ignore[attr-defined]
        sock.sendall(
            encode_packet(0, b"\x03SELECT 1")
            + encode_packet(0, bytes((Command.COM_PING,)))
            + (2 * MIB).to_bytes(3, "little")
            + b"\x00\x03SELECT"
        )
        buffer = PacketBuffer()
        answers = []
        while True:
            seq, payload = read_packet(sock, buffer)
            answers.append((seq, payload))
            if payload[:1] == b"\xff":
                break
        assert answers[0][1] == b"\x01"  # SELECT 1's column count: answered first
        assert any(p[:1] == b"\x00" for _, p in answers[1:-1])  # and the ping's OK
        seq, payload = answers[-1]
        assert (seq, _err_of(payload).code) == (1, 1153)
        assert reading_eof(sock)
        client._rfile.close()  # type: ignore[attr-defined]
        sock.close()
        assert [c.query for c in fake.connections[0].commands[seen:]] == ["SELECT 1", None]
        assert wait_until(lambda: not proxy.server.sessions)


def test_max_packet_size_changed_at_runtime_applies_to_open_connections(
    proxy: ProxyThread,
) -> None:
    conn = connect(proxy.port)
    with conn.cursor() as cur:
        cur.execute("SELECT LENGTH('" + "x" * (2 * MIB) + "')")
        assert cur.fetchall() == ((2 * MIB,),)
    proxy.server.limits.max_packet_size = MIB
    with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
        cur.execute("SELECT LENGTH('" + "x" * (2 * MIB) + "')")
    assert info.value.args[0] == 1153
    conn.close()


# --- the `run` options, end to end --------------------------------------------------------------


def settings_of(proxy: RunningProxy) -> dict[str, str]:
    return {row["name"]: row["value"] for row in proxy.admin_query("SELECT * FROM settings")}


def test_run_options(mariadb: MariaDB, tmp_path: Path) -> None:
    with running_proxy_process(
        mariadb.address, tmp_path, "--max-connections", "1", "--idle-timeout", "1m",
        "--max-packet-size", "1M",
    ) as proxy:
        settings = settings_of(proxy)
        assert (settings["max_connections"], settings["idle_timeout"],
                settings["max_packet_size"]) == ("1", "60", str(MIB))
        with proxy.connect() as held:
            with pytest.raises(pymysql.err.OperationalError) as info:
                proxy.connect()
            assert info.value.args[0] == 1040
            with pytest.raises(pymysql.err.OperationalError) as info, held.cursor() as cur:
                cur.execute("SELECT '" + "x" * (2 * MIB) + "'")
            assert info.value.args[0] == 1153
        info_rows = {row["name"]: row["value"] for row in proxy.admin_query("SELECT * FROM proxy")}
        assert info_rows["connections_refused"] == "1"
        proxy.admin_query("SET max_connections = 2")
        with proxy.connect(), proxy.connect():
            pass


def test_run_defaults(mariadb: MariaDB, tmp_path: Path) -> None:
    import resource

    with running_proxy_process(mariadb.address, tmp_path) as proxy:
        settings = settings_of(proxy)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        # The proxy raised its file limit to the hard limit and allows two files a client.
        if hard != resource.RLIM_INFINITY:
            assert settings["max_connections"] == str((hard - 64) // 2)
        assert settings["idle_timeout"] == "off"
        assert settings["max_packet_size"] == str(64 * MIB)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--max-packet-size", "100"], "between 1k and 1G"),
        (["--max-packet-size", "2G"], "between 1k and 1G"),
        (["--max-connections", "-1"], "max-connections"),
        (["--idle-timeout", "soon"], "idle-timeout"),
    ],
)
def test_run_rejects_bad_limits(args: list[str], fragment: str, tmp_path: Path) -> None:
    from tests.proxyproc import one_line_error, run_cli

    result = run_cli("run", "--listen", "127.0.0.1:0", "--admin", "off", *args, cwd=tmp_path)
    assert fragment in one_line_error(result)
