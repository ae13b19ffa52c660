"""Fault injection: a TCP fault proxy (mysqlproxy.testing.faultproxy) between mysqlproxy
and MariaDB delays, stalls, resets and half-closes the backend link, per direction.

What each test shows:
- no hang beyond the configured timeouts: a new connection fails within the connect
  timeout (ERR 1043, which covers the greeting too); a backend that stalls in the middle
  of a result is not detected by the proxy, which has no query timeout (a query may
  legitimately run for hours): the client's own read timeout fires and the client
  closes, and then the proxy must close the backend side; the tests assert it does;
- a correct error for each affected client: ERR 1043 for connects, a closed connection
  (2013) for a command in flight;
- no leaked sessions, tasks or file descriptors;
- unaffected clients carry on: a connection on a healthy link, or opened before a fault
  that only hits new connections.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pymysql
import pymysql.cursors
import pytest

from mysqlproxy.proxy.backends import Address
from mysqlproxy.proxy.tasks import running_tasks
from mysqlproxy.testing.faultproxy import (
    DOWNSTREAM,
    UPSTREAM,
    Delay,
    Direction,
    Fault,
    FaultProxy,
    HalfClose,
    Reset,
    Stall,
    running_fault_proxy,
)
from mysqlproxy.testing.proxythread import ProxyThread, running_proxy
from tests.conftest import MariaDB
from tests.proxy.test_faults import (
    BIG_SELECT,
    connect,
    forget_result,
    open_fds,
    server_thread_ids,
    wait_until,
)

CONNECT_TIMEOUT = 1.0
Connection = pymysql.connections.Connection  # type: ignore[type-arg]


@pytest.fixture(scope="module")
def tolerant_server(mariadb: MariaDB) -> Iterator[MariaDB]:
    """Connections cut during the handshake count against the client host in MariaDB,
    which blocks it after max_connect_errors (100): that must not lock the other tests
    out. Raised for the module, and the host cache flushed after."""
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_connect_errors")
        row = cur.fetchone()
        assert row is not None
        before = int(row[0])
        cur.execute("SET GLOBAL max_connect_errors = 1000000")
    yield mariadb
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("FLUSH HOSTS")
        cur.execute(f"SET GLOBAL max_connect_errors = {before}")


@dataclass
class Rig:
    """mysqlproxy -> fault proxy -> MariaDB, and what was open before the test acted."""

    mariadb: MariaDB
    faults: FaultProxy
    proxy: ProxyThread
    admin: Connection
    tasks: int = 0
    fds: int = 0

    def baseline(self) -> None:
        """Counts to come back to (taken with only the survivors open)."""
        assert wait_until(lambda: self.faults.open_links == len(self.proxy.server.sessions), 5)
        self.tasks = len(running_tasks())
        self.fds = open_fds()

    def assert_no_leaks(self, sessions: int) -> None:
        """Back to the baseline: no session, task, link or descriptor left behind."""
        server = self.proxy.server
        assert wait_until(lambda: len(server.sessions) == sessions, 5), server.sessions
        assert wait_until(lambda: len(running_tasks()) <= self.tasks, 5), running_tasks()
        assert wait_until(lambda: self.faults.open_links == sessions, 5)
        assert wait_until(lambda: open_fds() <= self.fds, 5), (
            f"{open_fds() - self.fds} file descriptors leaked"
        )

    def connect(self, **kwargs: object) -> Connection:
        return connect(self.proxy.port, **kwargs)

    def backend_legs(self) -> int:
        """The proxy's open connections to the backend (the fault proxy's port), as the
        kernel lists this process's sockets: a socket the proxy closed is not among them
        even while the fault proxy, not reading, has not noticed."""
        port = self.faults.address.port
        return sum(
            1
            for c in psutil.Process().net_connections("tcp4")
            if c.raddr and c.raddr.port == port
        )


@pytest.fixture
def rig(tolerant_server: MariaDB) -> Iterator[Rig]:
    with (
        running_fault_proxy(tolerant_server.address) as faults,
        running_proxy(faults.address, connect_timeout=CONNECT_TIMEOUT) as proxy,
    ):
        admin = tolerant_server.connect()
        yield Rig(tolerant_server, faults, proxy, admin)
        admin.close()


def carries_on(conn: Connection, value: int = 7) -> None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {value}")
        assert cur.fetchall() == ((value,),)


# --- new connections --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "fault", "code", "fragment", "at_least"),
    [
        (DOWNSTREAM, Stall(), 1043, "no greeting within 1s", CONNECT_TIMEOUT),
        (DOWNSTREAM, Delay(3.0), 1043, "no greeting within 1s", CONNECT_TIMEOUT),
        (DOWNSTREAM, Reset(), 1043, "reset by peer", 0),
        (DOWNSTREAM, HalfClose(), 1043, "closed the connection before sending a greeting", 0),
        (UPSTREAM, Reset(), 1043, "closed the connection before sending a greeting", 0),
        # MariaDB greets, then reads the FIN and hangs up during the login.
        (UPSTREAM, HalfClose(), 2013, "Lost connection", 0),
        # The handshake response never arrives: past the greeting, the client's read timeout
        # (or the server's connect_timeout, 10s by default) ends the login.
        (UPSTREAM, Stall(), 2013, "timed out", 0),
    ],
    ids=["stall", "slow-greeting", "reset", "half-close", "reset-up", "half-close-up",
         "stall-up"],
)
def test_new_connections_fail_within_the_connect_timeout(
    rig: Rig, direction: Direction, fault: Fault, code: int, fragment: str, at_least: float
) -> None:
    survivor = rig.connect()  # opened before the fault: unaffected
    rig.baseline()
    rig.faults.set(direction, fault, existing=False)
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as info:
        rig.connect(read_timeout=CONNECT_TIMEOUT + 2)
    elapsed = time.monotonic() - started
    got_code, message = info.value.args
    assert (got_code, fragment in message) == (code, True), message
    if code == 1043:
        assert "cannot connect to backend" in message
    assert at_least * 0.9 <= elapsed < CONNECT_TIMEOUT + 2.5, elapsed
    carries_on(survivor)
    rig.faults.heal()  # also delivers what a stall held, to a link already closed
    rig.assert_no_leaks(sessions=1)
    with rig.connect() as healed:  # the proxy serves again once the link is healthy
        carries_on(healed)
    survivor.close()


def test_slow_link_under_the_connect_timeout_works(rig: Rig) -> None:
    rig.faults.set(DOWNSTREAM, Delay(0.3))
    rig.faults.set(UPSTREAM, Delay(0.1))
    started = time.monotonic()
    with rig.connect() as conn:
        carries_on(conn)
    assert time.monotonic() - started >= 0.8  # greeting, login, SET/SELECT: all delayed


# --- a command in flight ------------------------------------------------------------------


def _big_result(rig: Rig, **kwargs: object) -> tuple[Connection, pymysql.cursors.SSCursor, int]:
    conn = rig.connect(database="mpt", cursorclass=pymysql.cursors.SSCursor, **kwargs)
    thread_id = conn.thread_id()
    cur = conn.cursor()
    cur.execute(BIG_SELECT)
    assert len(cur.fetchmany(1000)) == 1000
    return conn, cur, thread_id


def test_backend_stalls_mid_result(rig: Rig) -> None:
    """The proxy does not time out a stalled result (it has no query timeout): the
    client's read timeout does, and then the proxy closes its backend connection."""
    survivor = rig.connect()
    rig.baseline()
    victim, cur, thread_id = _big_result(rig, read_timeout=1)
    link = rig.faults.links[-1]
    link.set(DOWNSTREAM, Stall())
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as info:
        while cur.fetchmany(10000):
            assert time.monotonic() - started < 10, "the stalled result kept coming"
    assert info.value.args[0] == 2013
    assert time.monotonic() - started < 4  # buffered rows, then the one-second timeout
    forget_result(cur)
    victim.close()
    # The proxy ended its side of the backend link: the fault proxy saw it close.
    assert wait_until(lambda: link.client_closed, 3)
    assert rig.backend_legs() == 1  # the survivor's
    assert wait_until(lambda: len(rig.proxy.server.sessions) == 1, 3)
    closed = rig.proxy.recorder.closed
    assert closed and "client" in (closed[-1][1] or "")
    carries_on(survivor)  # a connection on another link goes on meanwhile
    rig.faults.heal()  # the stalled bytes meet a closed socket: MariaDB is released
    assert wait_until(lambda: thread_id not in server_thread_ids(rig.admin), 10)
    rig.assert_no_leaks(sessions=1)
    survivor.close()


@pytest.mark.parametrize(
    ("direction", "fault"),
    [(DOWNSTREAM, Reset()), (DOWNSTREAM, HalfClose()), (UPSTREAM, Reset())],
    ids=["reset", "half-close", "reset-up"],
)
def test_backend_link_breaks_mid_result(rig: Rig, direction: Direction, fault: Fault) -> None:
    survivor = rig.connect()
    rig.baseline()
    victim, cur, thread_id = _big_result(rig, read_timeout=10)
    started = time.monotonic()
    rig.faults.links[-1].set(direction, fault)
    with pytest.raises(pymysql.err.OperationalError) as info:
        while cur.fetchmany(10000):
            assert time.monotonic() - started < 10, "the broken result kept coming"
    assert info.value.args[0] == 2013
    assert time.monotonic() - started < 2  # at once: no timeout involved
    forget_result(cur)
    victim.close()
    carries_on(survivor)
    assert wait_until(lambda: thread_id not in server_thread_ids(rig.admin), 10)
    rig.assert_no_leaks(sessions=1)
    survivor.close()


def test_query_never_reaches_the_backend(rig: Rig) -> None:
    """Stalled upstream: the query is held, nothing comes back; the client times out and
    closes, and the proxy closes the backend connection, whose query never ran."""
    survivor = rig.connect()
    rig.baseline()
    victim = rig.connect(read_timeout=1)
    link = rig.faults.links[-1]
    link.set(UPSTREAM, Stall())
    with pytest.raises(pymysql.err.OperationalError) as info, victim.cursor() as cur:
        cur.execute("SELECT 'never run'")
    assert info.value.args[0] == 2013
    victim.close()
    # The fault proxy is not reading that link (stalled), so it cannot see the FIN; the
    # proxy's own socket list shows its backend connection is gone.
    assert wait_until(lambda: rig.backend_legs() == 1, 3)
    assert not link.client_closed
    carries_on(survivor)
    rig.faults.heal()
    assert wait_until(lambda: link.client_closed, 3)  # the FIN, read once healed
    rig.assert_no_leaks(sessions=1)
    survivor.close()


def test_idle_connection_whose_backend_goes_away(rig: Rig) -> None:
    """A FIN toward MariaDB: it closes its end; the proxy closes the idle client, whose
    next query fails cleanly instead of hanging."""
    survivor = rig.connect()
    rig.baseline()
    victim = rig.connect(read_timeout=5)
    thread_id = victim.thread_id()
    rig.faults.links[-1].set(UPSTREAM, HalfClose())
    assert wait_until(lambda: thread_id not in server_thread_ids(rig.admin), 5)
    assert wait_until(lambda: len(rig.proxy.server.sessions) == 1, 3)
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as info, victim.cursor() as cur:
        cur.execute("SELECT 1")
    assert info.value.args[0] in (2006, 2013)
    assert time.monotonic() - started < 1
    victim.close()
    carries_on(survivor)
    rig.assert_no_leaks(sessions=1)
    survivor.close()


def test_delayed_link_is_slow_not_broken(rig: Rig) -> None:
    survivor = rig.connect()
    conn = rig.connect(database="mpt")
    rig.faults.links[-1].set(DOWNSTREAM, Delay(0.2))
    rig.faults.links[-1].set(UPSTREAM, Delay(0.1))
    started = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM seq_1_to_100000")
        assert cur.fetchall() == ((100000,),)
        cur.execute("SELECT 5")
        assert cur.fetchall() == ((5,),)
    assert time.monotonic() - started >= 0.6
    carries_on(survivor)
    quick = time.monotonic()
    carries_on(survivor)
    assert time.monotonic() - quick < 0.2  # the other link is not delayed
    conn.close()
    survivor.close()


# --- the fault proxy itself --------------------------------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[tuple[Address, list[bytes]]]:
    """A TCP server that echoes, and records what it received and whether it saw EOF."""
    received: list[bytes] = []

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    received.append(b"<reset>")
                    return
                if not data:
                    received.append(b"<eof>")
                    return
                received.append(data)
                with contextlib.suppress(OSError):
                    sock.sendall(data)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Address("127.0.0.1", server.server_address[1]), received
    server.shutdown()
    server.server_close()


def _recv(sock: socket.socket, timeout: float) -> bytes | None:
    """Bytes, b'' at EOF, None when nothing came in time."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None


def test_fault_proxy_faults(echo_server: tuple[Address, list[bytes]]) -> None:
    target, received = echo_server
    with running_fault_proxy(target) as faults:
        with socket.create_connection(("127.0.0.1", faults.address.port)) as sock:
            sock.sendall(b"pass")
            assert _recv(sock, 2) == b"pass"
            faults.set(DOWNSTREAM, Stall())
            sock.sendall(b"held")
            assert _recv(sock, 0.3) is None
            assert wait_until(lambda: b"held" in received, 2)  # upstream still flows
            faults.set(DOWNSTREAM, Delay(0.3))  # what was held comes after the delay
            started = time.monotonic()
            assert _recv(sock, 2) == b"held"
            assert time.monotonic() - started >= 0.25
            faults.set(DOWNSTREAM, HalfClose())
            assert _recv(sock, 2) == b""  # a FIN toward the client
            sock.sendall(b"still up")  # the other direction goes on
            assert wait_until(lambda: b"still up" in received, 2)
        assert wait_until(lambda: faults.open_links == 0, 2)
        faults.heal()
        with socket.create_connection(("127.0.0.1", faults.address.port)) as sock:
            sock.sendall(b"x")
            assert _recv(sock, 2) == b"x"
            faults.links[-1].set(DOWNSTREAM, Reset())
            with pytest.raises(ConnectionResetError):
                sock.recv(10)
        assert wait_until(lambda: received[-1] == b"<eof>", 2)  # the server side: a FIN
        faults.set(UPSTREAM, Reset(), existing=False)  # new links: the server is reset
        with socket.create_connection(("127.0.0.1", faults.address.port)) as sock:
            assert _recv(sock, 2) == b""
        assert wait_until(lambda: received[-1] == b"<reset>", 2)
        assert wait_until(lambda: faults.open_links == 0, 2)
