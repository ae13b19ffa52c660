"""Faults and bad input: an unreachable backend, either side dying in the middle of a
result, malformed or truncated packets from either side. Each must end that one
connection, with a clear error or a logged reason, and nothing else."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pymysql
import pymysql.cursors
import pytest

from mysqlproxy.protocol.auth import native_password_scramble
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.proxy.backends import Address
from mysqlproxy.proxy.tasks import running_tasks
from mysqlproxy.testing.fakeserver import (
    Close,
    FakeServer,
    Raw,
    ResultSet,
    Stall,
    auth_switch_request,
    encode_column_definition,
    encode_eof,
    err,
    ok,
    running_fake_server,
)
from mysqlproxy.testing.proxythread import ProxyThread, running_proxy
from tests.conftest import run_cli

BIG_SELECT = "SELECT seq, REPEAT('x', 100) FROM seq_1_to_1000000"


# --- helpers --------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def forget_result(cursor: pymysql.cursors.SSCursor) -> None:
    """A streamed result on a dead connection: keep PyMySQL from draining it later (in
    __del__, where its failure is only noise)."""
    result = cursor._result  # type: ignore[attr-defined]
    if result is not None:
        result.unbuffered_active = False


def vanish(client: pymysql.connections.Connection) -> None:  # type: ignore[type-arg]
    """Drop a PyMySQL connection the way a killed client does: RST, no COM_QUIT."""
    sock: socket.socket = client._sock  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client._rfile.close()  # type: ignore[attr-defined]  # it holds the fd open too
    sock.close()


def connect(port: int, **kwargs: object) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    params: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "user": "root",
        "password": "",
        "connect_timeout": 10,
        "read_timeout": 10,
    }
    params.update(kwargs)
    return pymysql.connect(**params)  # type: ignore[arg-type]


def assert_serves(port: int, **kwargs: object) -> None:
    """A new connection through the proxy still works."""
    with connect(port, **kwargs) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert [str(value) for (value,) in cur.fetchall()] == ["1"]  # int, or text (fake)


def server_thread_ids(admin: pymysql.connections.Connection) -> set[int]:  # type: ignore[type-arg]
    with admin.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST")
        return {int(row[0]) for row in cur.fetchall()}


def reading_eof(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the peer closes the socket (reads b'' or is reset) within timeout."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.fixture
def proxy_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="mysqlproxy")
    return caplog


def logged(caplog: pytest.LogCaptureFixture, fragment: str) -> bool:
    return any(fragment in record.getMessage() for record in caplog.records)


# --- backend unreachable ----------------------------------------------------------------


def expect_refusal(proxy: ProxyThread, fragment: str, within: float) -> float:
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(proxy.port, read_timeout=within + 5)
    elapsed = time.monotonic() - started
    code, message = info.value.args
    assert code == 1043  # ER_HANDSHAKE_ERROR: see Session._backend_unreachable
    assert f"cannot connect to backend {proxy.server.backend.address}" in message
    assert fragment in message
    assert elapsed < within
    assert wait_until(lambda: not proxy.server.sessions, 2)
    return elapsed


def test_backend_port_closed() -> None:
    with running_proxy(Address("127.0.0.1", closed_port()), connect_timeout=2.0) as proxy:
        expect_refusal(proxy, "Connection refused", within=1.0)
        assert proxy.recorder.wait_for(lambda: proxy.recorder.auth_failures, 2)
        assert proxy.recorder.auth_failures[0][1] == 1043


def test_backend_port_closed_reason_reaches_the_mariadb_cli(mariadb_cli: str) -> None:
    # libmariadb replaces an error code of the client range (2000-2999) sent by a
    # server with "Received malformed packet": the proxy's refusal must not use one.
    with running_proxy(Address("127.0.0.1", closed_port()), connect_timeout=2.0) as proxy:
        result = run_cli(mariadb_cli, proxy.port, "SELECT 1", database="")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "malformed" not in err
    backend = proxy.server.backend.address
    assert f"ERROR 1043 (08S01): mysqlproxy: cannot connect to backend {backend}" in err
    assert "Connection refused" in err


@pytest.fixture
def blackhole() -> Iterator[Address]:
    """A port whose accept queue is full: SYNs are dropped, connect() hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
    except TimeoutError:
        pass
    else:
        pytest.skip("this kernel accepts beyond a full backlog; no blackhole to test")
    finally:
        probe.close()
    yield Address("127.0.0.1", port)
    for filler in fillers:
        filler.close()
    listener.close()


def test_backend_blackholed_times_out(blackhole: Address) -> None:
    with running_proxy(blackhole, connect_timeout=1.0) as proxy:
        elapsed = expect_refusal(proxy, "timed out after 1s", within=1.8)
        assert elapsed >= 0.9


def test_backend_accepts_but_never_greets() -> None:
    # The connect timeout covers the greeting too: a hung backend is unreachable.
    with (
        running_fake_server(on_accept=Stall()) as fake,
        running_proxy(fake.address, connect_timeout=1.0) as proxy,
    ):
        elapsed = expect_refusal(proxy, "no greeting within 1s", within=1.8)
        assert elapsed >= 0.9
        assert wait_until(lambda: fake.open_connections == 0, 2)


@pytest.mark.parametrize(
    ("on_accept", "greeting_payload", "fragment"),
    [
        (Close(), None, "closed the connection before sending a greeting"),
        # The reset may arrive before or after the connect completes: both are reported.
        (Close(abort=True), None, "reset by peer"),
        ([Raw(b"\x4a\x00\x00\x00\x0a5.5"), Close()], None, "before sending a greeting"),
        (None, b"\x09ancient\x00", "malformed greeting: unsupported handshake protocol"),
        (None, b"\x0a8.0\x00\x01", "malformed greeting"),
    ],
    ids=["close", "reset", "truncated", "protocol-9", "short"],
)
def test_backend_fails_before_greeting(
    on_accept: object, greeting_payload: bytes | None, fragment: str
) -> None:
    with (
        running_fake_server(on_accept=on_accept, greeting_payload=greeting_payload) as fake,
        running_proxy(fake.address, connect_timeout=3.0) as proxy,
    ):
        expect_refusal(proxy, fragment, within=1.0)


# --- the backend dies in the middle of a result ------------------------------------------


def _half_a_result(rows: int) -> list[object]:
    column = encode_column_definition("n")
    return [b"\x01", column, encode_eof(), *([b"\x03abc"] * rows)]


@pytest.mark.parametrize(
    ("abort", "fragment"),
    [
        (False, "server closed the connection during a command"),
        (True, "server connection lost: [Errno 104]"),
    ],
    ids=["close", "reset"],
)
def test_fake_backend_dies_mid_result(
    abort: bool, fragment: str, proxy_log: pytest.LogCaptureFixture
) -> None:
    script = {
        "SELECT 1": ResultSet(["1"], [[b"1"]]),
        "SELECT doomed": [*_half_a_result(1000), Close(abort=abort)],  # type: ignore[list-item]
    }
    with running_fake_server(script) as fake, running_proxy(fake.address) as proxy:
        survivor = connect(proxy.port)
        victim = connect(proxy.port)
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as info:
            victim.cursor().execute("SELECT doomed")
        assert time.monotonic() - started < 2
        assert info.value.args[0] == 2013  # lost connection
        assert wait_until(lambda: len(proxy.server.sessions) == 1, 2)
        assert wait_until(lambda: logged(proxy_log, fragment), 2)
        with survivor.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchall() == (("1",),)
        survivor.close()
        victim.close()


def test_server_killed_mid_result(proxy: ProxyThread, mariadb: object) -> None:
    admin = mariadb.connect()  # type: ignore[attr-defined]
    survivor = connect(proxy.port)
    victim = connect(proxy.port, database="mpt", cursorclass=pymysql.cursors.SSCursor)
    try:
        victim_thread = victim.thread_id()
        cur = victim.cursor()
        cur.execute(BIG_SELECT)
        assert len(cur.fetchmany(1000)) == 1000
        with admin.cursor() as admin_cur:
            admin_cur.execute(f"KILL {victim_thread}")
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError):
            while cur.fetchmany(10000):
                assert time.monotonic() - started < 15, "the killed result never ended"
        forget_result(cur)
        assert time.monotonic() - started < 15
        assert wait_until(lambda: len(proxy.server.sessions) == 1, 5)
        with survivor.cursor() as survivor_cur:
            survivor_cur.execute("SELECT 2")
            assert survivor_cur.fetchall() == ((2,),)
        assert_serves(proxy.port)
    finally:
        survivor.close()
        admin.close()
        with contextlib.suppress(pymysql.err.Error):  # already closed by the failure
            victim.close()


# --- the client vanishes in the middle of a result ---------------------------------------


def test_client_vanishes_mid_result(proxy: ProxyThread, mariadb: object) -> None:
    admin = mariadb.connect()  # type: ignore[attr-defined]
    assert_serves(proxy.port)  # warm up: lazy imports, loop internals
    assert wait_until(lambda: not proxy.server.sessions, 2)
    tasks_before = len(running_tasks())
    fds_before = open_fds()
    threads_before = server_thread_ids(admin)

    client = connect(proxy.port, database="mpt", cursorclass=pymysql.cursors.SSCursor)
    backend_thread = client.thread_id()
    assert backend_thread in server_thread_ids(admin)
    cur = client.cursor()
    cur.execute(BIG_SELECT)
    assert len(cur.fetchmany(1000)) == 1000
    time.sleep(0.3)  # let the proxy's buffers fill and backpressure set in
    vanish(client)
    forget_result(cur)

    assert wait_until(lambda: backend_thread not in server_thread_ids(admin), 10), (
        "the server still runs the vanished client's query"
    )
    assert wait_until(lambda: not proxy.server.sessions, 5)
    assert wait_until(lambda: len(running_tasks()) == tasks_before, 5)
    assert wait_until(lambda: open_fds() <= fds_before, 5), (
        f"{open_fds() - fds_before} file descriptors leaked"
    )
    assert server_thread_ids(admin) <= threads_before
    closed = proxy.recorder.closed
    assert closed and closed[-1][1] is not None and "client" in closed[-1][1]
    assert_serves(proxy.port)
    admin.close()


# --- malformed input from the client -------------------------------------------------------


def _wrong_sequence_id(sock: socket.socket) -> None:
    sock.sendall(encode_packet(5, b"\x03SELECT 1"))


def _garbage(sock: socket.socket) -> None:
    sock.sendall(b"\xde\xad\xbe\xef" * 16)


def _continuation_out_of_step(sock: socket.socket) -> None:
    # A 16 MiB packet whose second piece carries the wrong sequence id.
    sock.sendall(b"\xff\xff\xff\x00\x03" + b"x" * 0xFFFFFE + b"\x01\x00\x00\x09x")


def _truncated_header_then_close(sock: socket.socket) -> None:
    sock.sendall(b"\x05\x00")
    sock.shutdown(socket.SHUT_WR)


def _truncated_payload_then_close(sock: socket.socket) -> None:
    sock.sendall(b"\x40\x00\x00\x00\x03SELECT")
    sock.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize(
    ("send", "fragment"),
    [
        (_wrong_sequence_id, "malformed data from client: command packet has sequence id 5"),
        (_garbage, "malformed data from client"),
        (_continuation_out_of_step, "malformed data from client: continuation packet"),
        (_truncated_header_then_close, "client closed the connection in the middle of a packet"),
        (_truncated_payload_then_close, "client closed the connection in the middle of a packet"),
    ],
    ids=["sequence-id", "garbage", "continuation", "truncated-header", "truncated-payload"],
)
def test_malformed_client_input(
    proxy: ProxyThread,
    mariadb: object,
    proxy_log: pytest.LogCaptureFixture,
    send: Callable[[socket.socket], None],
    fragment: str,
) -> None:
    admin = mariadb.connect()  # type: ignore[attr-defined]
    survivor = connect(proxy.port)
    client = connect(proxy.port)
    backend_thread = client.thread_id()
    sock: socket.socket = client._sock  # type: ignore[attr-defined]
    send(sock)
    assert reading_eof(sock), "the proxy kept a connection with malformed input open"
    assert wait_until(lambda: len(proxy.server.sessions) == 1, 5)
    assert wait_until(lambda: logged(proxy_log, fragment), 2), [
        r.getMessage() for r in proxy_log.records
    ]
    assert wait_until(lambda: backend_thread not in server_thread_ids(admin), 5)
    with survivor.cursor() as cur:
        cur.execute("SELECT 3")
        assert cur.fetchall() == ((3,),)
    assert_serves(proxy.port)
    survivor.close()
    admin.close()


def test_client_sends_before_greeting(proxy_log: pytest.LogCaptureFixture) -> None:
    with (
        running_fake_server(on_accept=Stall(1.0)) as fake,
        running_proxy(fake.address) as proxy,
    ):
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        time.sleep(0.2)  # the backend is connected, its greeting not sent yet
        sock.sendall(encode_packet(1, b"\x00" * 40))
        assert reading_eof(sock)
        sock.close()
        assert wait_until(lambda: logged(proxy_log, "before the server greeting"), 2)
        assert wait_until(lambda: not proxy.server.sessions, 2)


# --- malformed input from the server (fake server) -------------------------------------------

_COLUMN = encode_column_definition("n")


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        ([Raw(encode_packet(7, b"\x01"))], "malformed data from server: "),
        ([b"\x01", b"\x07not a column definition"], "malformed data from server: "),
        ([b"\xfc\x01"], "malformed data from server: "),
        (
            [b"\x01", _COLUMN, encode_eof(), b"\x01a", Raw(encode_packet(9, b"\x01b"))],
            "malformed data from server: ",
        ),
        ([Raw(b"\x10\x00\x00\x01\x01"), Close()], "server closed the connection during a command"),
        ([Raw(b"\x10\x00"), Close()], "server closed the connection during a command"),
    ],
    ids=[
        "sequence-id",
        "bad-column",
        "bad-column-count",
        "row-sequence-id",
        "truncated-payload",
        "truncated-header",
    ],
)
def test_malformed_server_input(
    reply: list[object], fragment: str, proxy_log: pytest.LogCaptureFixture
) -> None:
    script = {"SELECT 1": ResultSet(["1"], [[b"1"]]), "SELECT bad": reply}
    with running_fake_server(script) as fake, running_proxy(fake.address) as proxy:  # type: ignore[arg-type]
        survivor = connect(proxy.port)
        victim = connect(proxy.port)
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as info:
            victim.cursor().execute("SELECT bad")
        assert time.monotonic() - started < 3
        assert info.value.args[0] == 2013
        assert wait_until(lambda: len(proxy.server.sessions) == 1, 2)
        assert wait_until(lambda: logged(proxy_log, fragment), 2)
        assert wait_until(lambda: fake.connections[1].closed, 2)
        with survivor.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchall() == (("1",),)
        assert_serves(proxy.port)
        survivor.close()


def test_malformed_auth_packet_from_server(proxy_log: pytest.LogCaptureFixture) -> None:
    with (
        running_fake_server(login=[b"\x42what is this"]) as fake,
        running_proxy(fake.address) as proxy,
    ):
        with pytest.raises(pymysql.err.OperationalError):
            connect(proxy.port)
        assert wait_until(lambda: logged(proxy_log, "during authentication"), 2)
        assert wait_until(lambda: not proxy.server.sessions, 2)


def test_fake_server_is_a_usable_peer() -> None:
    """The fake server itself: greeting, login, scripted and default answers."""
    script = {"SELECT 1": ResultSet(["a"], [[b"1"], [None]])}
    assert FakeServer(script).greeting.auth_plugin == "mysql_native_password"
    with running_fake_server(script) as running:
        with connect(running.address.port, user="anyone", password="anything") as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchall() == (("1",), (None,))
                with pytest.raises(pymysql.err.ProgrammingError):
                    cur.execute("SELECT unscripted")
            conn.ping()
        assert wait_until(lambda: running.connections[0].closed, 2)
        seen = running.connections[0]
        assert seen.handshake is not None and seen.handshake.username == "anyone"
        assert [c.query for c in seen.commands][-3:] == ["SELECT unscripted", None, None]
        assert [c.command for c in seen.commands][-2:] == [0x0E, 0x01]  # PING, QUIT


def test_fake_server_scripted_logins_through_the_proxy() -> None:
    """An auth switch and a refused login, scripted on the fake server, pass through the
    proxy (and show the fake server's login script works)."""
    scramble = b"abcdefghij0123456789"
    switch = [auth_switch_request("mysql_native_password", scramble), ok()]
    with running_fake_server(login=switch) as fake, running_proxy(fake.address) as proxy:
        with connect(proxy.port, user="switcher", password="secret") as conn:
            conn.ping()
        seen = fake.connections[0]
        # The client answered the switch with a scramble over the new data.
        assert seen.auth_packets == [native_password_scramble(b"secret", scramble)]
    refuse = [err(1045, "Access denied for user 'nobody'", "28000")]
    with running_fake_server(login=refuse) as fake, running_proxy(fake.address) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(proxy.port, user="nobody")
        assert info.value.args == (1045, "Access denied for user 'nobody'")
        assert proxy.recorder.wait_for(lambda: proxy.recorder.auth_failures, 2)
        assert proxy.recorder.auth_failures[0][1:] == (1045, "Access denied for user 'nobody'")
