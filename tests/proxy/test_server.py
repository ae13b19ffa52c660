"""ProxyServer: listeners (TCP and Unix), their failures, and graceful shutdown."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest

from mysqlproxy.proxy.backends import Address, Backend
from mysqlproxy.proxy.server import ListenError, ProxyServer
from mysqlproxy.proxy.tasks import running_tasks
from mysqlproxy.testing.fakeserver import ResultSet, Stall, running_fake_server
from mysqlproxy.testing.proxythread import ProxyThread

NOWHERE = Backend(Address("127.0.0.1", 9), connect_timeout=1.0)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def accepts(address: Address) -> bool:
    family = socket.AF_UNIX if address.unix_path is not None else socket.AF_INET
    with socket.socket(family) as probe:
        probe.settimeout(1)
        try:
            probe.connect(address.unix_path or (address.host, address.port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- listeners -------------------------------------------------------------------------


async def test_listens_on_every_address(tmp_path: Path) -> None:
    path = str(tmp_path / "p.sock")
    server = ProxyServer(
        [Address("127.0.0.1", 0), Address("127.0.0.1", 0), Address(unix_path=path)], NOWHERE
    )
    await server.start()
    try:
        tcp1, tcp2, unix = server.bound
        assert tcp1.port and tcp2.port and tcp1.port != tcp2.port
        assert unix == Address(unix_path=path)
        for address in server.bound:
            assert accepts(address)
    finally:
        await server.shutdown(0)
    assert not os.path.exists(path), "the socket file was left behind"
    assert not accepts(tcp1) and not accepts(tcp2)


async def test_stale_unix_socket_is_replaced(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)  # a proxy that died leaves the file behind, nobody listening
    dead.close()
    server = ProxyServer([Address(unix_path=path)], NOWHERE)
    await server.start()
    assert accepts(Address(unix_path=path))
    await server.shutdown(0)


@pytest.mark.parametrize("occupant", ["live-socket", "regular-file"])
async def test_unix_path_in_use_is_refused_and_kept(tmp_path: Path, occupant: str) -> None:
    path = str(tmp_path / "taken.sock")
    live = None
    if occupant == "live-socket":
        live = socket.socket(socket.AF_UNIX)
        live.bind(path)
        live.listen()
    else:
        Path(path).write_text("not a socket")
    server = ProxyServer([Address(unix_path=path)], NOWHERE)
    with pytest.raises(ListenError, match=f"cannot listen on unix:{path}"):
        await server.start()
    assert os.path.exists(path), "another program's socket or file was removed"
    if live is not None:
        assert accepts(Address(unix_path=path))
        live.close()
    else:
        assert Path(path).read_text() == "not a socket"


async def test_failed_listen_releases_the_others() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        first = free_port()
        server = ProxyServer([Address("127.0.0.1", first), Address("127.0.0.1", busy)], NOWHERE)
        with pytest.raises(ListenError, match=f"127.0.0.1:{busy}: address already in use"):
            await server.start()
    with socket.socket() as again:
        again.bind(("127.0.0.1", first))


async def test_address_not_on_this_machine() -> None:
    server = ProxyServer([Address("192.0.2.1", 4040)], NOWHERE)
    with pytest.raises(ListenError, match="address not available on this machine"):
        await server.start()


# --- graceful shutdown ------------------------------------------------------------------


def _connect(port: int, **kwargs: object) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    params: dict[str, object] = {
        "host": "127.0.0.1", "port": port, "user": "u", "read_timeout": 15
    }  # fmt: skip
    params.update(kwargs)
    return pymysql.connect(**params)  # type: ignore[arg-type]


def _stop_in_background(proxy: ProxyThread, grace: float) -> tuple[threading.Thread, list[float]]:
    took: list[float] = []

    def stop() -> None:
        started = time.monotonic()
        proxy.stop(grace)
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=stop)
    thread.start()
    return thread, took


def test_shutdown_with_idle_connections_is_immediate() -> None:
    with running_fake_server() as fake:
        proxy = ProxyThread(fake.address)
        proxy.start()
        clients = [_connect(proxy.port) for _ in range(3)]
        assert wait_until(lambda: len(proxy.server.sessions) == 3)
        started = time.monotonic()
        proxy.stop(grace=10)
        assert time.monotonic() - started < 1.0
        for client in clients:
            with pytest.raises(pymysql.err.OperationalError):
                client.ping(reconnect=False)
        assert wait_until(lambda: fake.open_connections == 0)
        assert not running_tasks()


def test_shutdown_lets_a_command_finish() -> None:
    script = {"SELECT slow": [Stall(1.0), ResultSet(["done"], [[b"yes"]])]}
    with running_fake_server(script) as fake:
        proxy = ProxyThread(fake.address)
        proxy.start()
        busy = _connect(proxy.port)
        idle = _connect(proxy.port)
        results: list[object] = []
        worker = threading.Thread(target=lambda: results.append(_query(busy, "SELECT slow")))
        worker.start()
        assert wait_until(lambda: any(c.commands and c.commands[-1].query == "SELECT slow"
                                      for c in fake.connections))  # fmt: skip
        stopper, took = _stop_in_background(proxy, grace=5)
        assert wait_until(lambda: len(proxy.server.sessions) == 1, 1)
        with pytest.raises(pymysql.err.OperationalError):
            idle.ping(reconnect=False)  # closed at once, while the other still runs
        worker.join(5)
        stopper.join(10)
        assert results == [(("yes",),)]
        assert 0.5 < took[0] < 2.0  # waited for the command, not for the grace period
        assert not accepts(Address("127.0.0.1", proxy.port))


def test_shutdown_cuts_off_after_grace_period() -> None:
    script = {"SELECT forever": Stall()}
    with running_fake_server(script) as fake:
        proxy = ProxyThread(fake.address)
        proxy.start()
        busy = _connect(proxy.port)
        results: list[object] = []
        worker = threading.Thread(target=lambda: results.append(_query(busy, "SELECT forever")))
        worker.start()
        assert wait_until(lambda: any(c.commands and c.commands[-1].query == "SELECT forever"
                                      for c in fake.connections))  # fmt: skip
        stopper, took = _stop_in_background(proxy, grace=0.5)
        stopper.join(10)
        worker.join(5)
        assert 0.4 < took[0] < 1.5
        assert len(results) == 1 and isinstance(results[0], pymysql.err.OperationalError)
        assert wait_until(lambda: fake.open_connections == 0)
        assert not running_tasks()


def test_shutdown_while_backend_connect_pending() -> None:
    """A client whose backend has not answered yet is dropped at once, and its connect
    task does not outlive the server."""
    with running_fake_server(on_accept=Stall()) as fake:
        proxy = ProxyThread(fake.address, connect_timeout=30)
        proxy.start()
        waiting = socket.create_connection(("127.0.0.1", proxy.port))
        assert wait_until(lambda: len(fake.connections) == 1)
        started = time.monotonic()
        proxy.stop(grace=10)
        assert time.monotonic() - started < 1.0
        waiting.settimeout(2)
        assert waiting.recv(100) in (b"", None)
        waiting.close()
        assert not running_tasks()


def _query(conn: pymysql.connections.Connection, sql: str) -> object:  # type: ignore[type-arg]
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return tuple(cur.fetchall())
    except pymysql.err.Error as exc:
        return exc
