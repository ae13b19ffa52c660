"""`mysqlproxy run` as an operator starts it: a child process, its one line on stdout,
its exit status, its answer to bad arguments and to SIGTERM/SIGINT."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pymysql
import pytest

from mysqlproxy.proxy.backends import Address

# The admin interface has tests of its own; these runs leave it off so that several
# proxies (and other test runs) never compete for its port.
BASE_ARGS = ("--admin", "off")
START_TIMEOUT = 20.0
_LISTENING = re.compile(r"^mysqlproxy: listening on (.+), forwarding to (\S+)$")


class RunningProxy:
    """`python -m mysqlproxy.cli run ...` with its stdout lines in a queue and its
    stderr in a file."""

    def __init__(self, args: Sequence[str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mysqlproxy.cli", "run", *BASE_ARGS, *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.lines.get(timeout=START_TIMEOUT)
        assert first is not None, f"no output; stderr: {self.stderr()}"
        match = _LISTENING.match(first)
        assert match, f"unexpected first line {first!r}"
        self.first_line = first
        self.listening = [Address.parse(text) for text in match.group(1).split(", ")]
        self.forwarding_to = match.group(2)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode().rstrip("\n"))
        self.lines.put(None)

    def port(self, index: int = 0) -> int:
        return self.listening[index].port

    def signal(self, signum: int) -> float:
        self.process.send_signal(signum)
        return time.monotonic()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._stderr.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def more_stdout(self) -> list[str]:
        lines = []
        while True:
            try:
                line = self.lines.get(timeout=2)
            except queue.Empty:
                return lines
            if line is None:
                return lines
            lines.append(line)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._stderr.close()


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[object]:
    started: list[RunningProxy] = []

    def start(*args: str) -> RunningProxy:
        proxy = RunningProxy(args, tmp_path / f"stderr-{len(started)}.txt")
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.kill()


def connect(port: int, **kwargs: object) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    params: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "user": "root",
        "password": "",
        "connect_timeout": 5,
        "read_timeout": 15,
    }
    params.update(kwargs)
    return pymysql.connect(**params)  # type: ignore[arg-type]


def select(conn: pymysql.connections.Connection, sql: str) -> tuple[tuple[object, ...], ...]:  # type: ignore[type-arg]
    with conn.cursor() as cur:
        cur.execute(sql)
        return tuple(cur.fetchall())


# --- starting ------------------------------------------------------------------------


def test_prints_one_line_and_exits_0(start_proxy, mariadb) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy("--listen", "127.0.0.1:0", "--backend", str(mariadb.address))
    assert proxy.listening == [Address("127.0.0.1", proxy.port())]
    assert proxy.port() != 0
    assert proxy.forwarding_to == str(mariadb.address)
    with connect(proxy.port()) as conn:
        assert select(conn, "SELECT 1 + 1") == ((2,),)
    proxy.signal(signal.SIGTERM)
    assert proxy.wait(10) == 0
    assert proxy.more_stdout() == [], "only the one start line belongs on stdout"
    assert "Traceback" not in proxy.stderr()


def test_repeated_listen_and_unix_sockets(start_proxy, mariadb, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if mariadb.unix_socket is None:
        pytest.skip("the test server has no Unix socket")
    listen_socket = str(tmp_path / "proxy.sock")
    proxy = start_proxy(
        "--listen", "127.0.0.1:0",
        "--listen", "127.0.0.1:0",
        "--listen", f"unix:{listen_socket}",
        "--backend", f"unix:{mariadb.unix_socket}",
    )  # fmt: skip
    assert len(proxy.listening) == 3
    assert proxy.listening[2] == Address(unix_path=listen_socket)
    assert proxy.forwarding_to == f"unix:{mariadb.unix_socket}"
    assert proxy.port(0) != proxy.port(1)
    clients = [
        connect(proxy.port(0)),
        connect(proxy.port(1)),
        pymysql.connect(unix_socket=listen_socket, user="root", password=""),
    ]
    for conn in clients:
        # The server sees a Unix socket client ('localhost'), not a TCP peer.
        host = "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"
        assert select(conn, host) == (("localhost",),)
        conn.close()
    proxy.signal(signal.SIGTERM)
    assert proxy.wait(10) == 0
    assert not os.path.exists(listen_socket), "the listening socket file was left behind"


# --- bad arguments -----------------------------------------------------------------------


def _run_expecting_failure(*args: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mysqlproxy.cli", "run", *BASE_ARGS, *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert time.monotonic() - started < 10
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert lines[0].startswith("mysqlproxy: ")
    return result


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--listen", "nonsense"], "expected host:port or unix:/path"),
        (["--listen", "127.0.0.1:70000"], "port 70000 is out of range"),
        (["--listen", "127.0.0.1:-1"], "is not a number"),
        (["--listen", "127.0.0.1:http"], "is not a number"),
        (["--listen", "unix:"], "needs a socket path"),
        (["--listen", "::1:4040"], "[addr]:port"),
        (["--backend", "db.example:"], "is not a number"),
        (["--backend", "[::1"], "expected [ipv6]:port"),
        (["--bogus"], "No such option"),
        (["--connect-timeout", "soon"], "connect-timeout"),
        (["--listen", "192.0.2.1:4040"], "cannot listen on 192.0.2.1:4040"),
        (["--listen", "unix:/nonexistent-dir/x.sock"], "cannot listen on unix:/nonexistent-dir"),
    ],
    ids=[
        "no-port", "port-range", "port-negative", "port-name", "unix-empty", "v6-brackets",
        "backend-no-port", "backend-v6", "unknown-option", "bad-timeout", "not-local",
        "unix-dir",
    ],
)  # fmt: skip
def test_bad_argument_is_one_line(args: list[str], fragment: str) -> None:
    result = _run_expecting_failure(*args)
    assert fragment in result.stderr


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_expecting_failure("--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in result.stderr


def test_live_unix_socket_is_not_taken_over(tmp_path: Path) -> None:
    path = str(tmp_path / "live.sock")
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(path)
        live.listen()
        result = _run_expecting_failure("--listen", f"unix:{path}")
        assert f"cannot listen on unix:{path}: address already in use" in result.stderr
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(path)  # still the other program's socket


def test_second_listen_address_in_use_frees_the_first() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        _run_expecting_failure("--listen", f"127.0.0.1:{free}", "--listen", f"127.0.0.1:{busy}")
    with socket.socket() as again:
        again.bind(("127.0.0.1", free))  # the process is gone; nothing should hold it


# --- SIGTERM and SIGINT ------------------------------------------------------------------


def _in_flight(admin: pymysql.connections.Connection, sql: str) -> bool:  # type: ignore[type-arg]
    rows = select(admin, "SELECT INFO FROM information_schema.PROCESSLIST")
    return any(row[0] == sql for row in rows)


def _wait_until(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_lets_command_in_flight_finish(start_proxy, mariadb, signum: int) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy(
        "--listen", "127.0.0.1:0", "--backend", str(mariadb.address), "--grace-period", "5"
    )
    admin = mariadb.connect()
    idle = connect(proxy.port())
    busy = connect(proxy.port())
    results: list[object] = []

    def run_busy() -> None:
        try:
            results.append(select(busy, "SELECT SLEEP(2)"))
        except Exception as exc:
            results.append(exc)

    worker = threading.Thread(target=run_busy)
    worker.start()
    assert _wait_until(lambda: _in_flight(admin, "SELECT SLEEP(2)"), 5)
    signalled = proxy.signal(signum)

    # It stops accepting at once...
    def refused() -> bool:
        try:
            connect(proxy.port(), connect_timeout=1).close()
        except pymysql.err.OperationalError:
            return True
        return False

    assert _wait_until(refused, 1.0), "still accepting connections after the signal"
    # ...closes idle connections at once...
    with pytest.raises(pymysql.err.OperationalError):
        idle.ping(reconnect=False)
    assert time.monotonic() - signalled < 1.5
    # ...and lets the command in flight finish, then exits 0.
    worker.join(10)
    assert results == [((0,),)]
    assert proxy.wait(5) == 0
    assert time.monotonic() - signalled < 3.5
    busy.close()
    admin.close()


def test_command_longer_than_grace_period_is_cut_off(start_proxy, mariadb) -> None:  # type: ignore[no-untyped-def]
    proxy = start_proxy(
        "--listen", "127.0.0.1:0", "--backend", str(mariadb.address), "--grace-period", "1"
    )
    admin = mariadb.connect()
    busy = connect(proxy.port(), read_timeout=30)
    results: list[object] = []

    def run_busy() -> None:
        try:
            results.append(select(busy, "SELECT SLEEP(20)"))
        except Exception as exc:
            results.append(exc)

    worker = threading.Thread(target=run_busy)
    worker.start()
    assert _wait_until(lambda: _in_flight(admin, "SELECT SLEEP(20)"), 5)
    signalled = proxy.signal(signal.SIGTERM)
    assert proxy.wait(5) == 0
    exited = time.monotonic() - signalled
    assert 0.9 <= exited < 2.5
    worker.join(5)
    assert len(results) == 1 and isinstance(results[0], pymysql.err.OperationalError)
    assert "grace period over" in proxy.stderr()
    # The backend thread sleeps on until it notices; spare the server the wait.
    with admin.cursor() as cur:
        cur.execute(f"KILL {busy.thread_id()}")
    admin.close()
