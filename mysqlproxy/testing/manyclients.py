"""Thousands of idle clients through the proxy: the connection-count test and
bench/connections.py.

    raise_file_limit(needed)                   # or skip: see FileLimitTooLow
    with FakeServerProcess() as fake, ProxyProcess(fake.address, ...) as proxy:
        clients = asyncio.run(hold(proxy.address, 5000, ...))

The clients are raw asyncio protocols, not a client library: each reads the greeting,
answers with a fixed handshake response, reads the OK and then sits idle, costing the
test process a few kilobytes. The fake server (mysqlproxy.testing.fakeserver, which
accepts any login) runs as its own process on uvloop, so neither it nor the clients
share an interpreter, or a file limit, with the proxy being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.constants import Capability, Command
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.proxy.backends import Address
from mysqlproxy.proxy.limits import raise_file_limit as _raise_soft_limit
from mysqlproxy.testing import packets as pf
from mysqlproxy.testing.privatedb import spawn_owned

# Connections opened at once. The proxy and the fake server listen with asyncio's
# default backlog (100): more at once would overflow it, and a dropped SYN costs a
# second before it is sent again.
CONNECT_CONCURRENCY = 64
START_TIMEOUT = 20.0
_LISTENING = re.compile(r"^fake server listening on (\S+)$")


class FileLimitTooLow(Exception):
    """The hard limit on open files does not allow the connections asked for."""


def raise_file_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children started
    afterwards inherit it); FileLimitTooLow if that is still under `needed`."""
    limit = _raise_soft_limit()
    if limit < needed:
        raise FileLimitTooLow(
            f"{needed} open files needed, the hard limit allows {limit} "
            "(raise it with ulimit -Hn or LimitNOFILE=)"
        )
    return limit


def files_needed(clients: int) -> int:
    """Open files for `clients` connections in the busiest process: the proxy holds two
    per client (the client's and the backend's); the test process one per client."""
    return 2 * clients + 256


# --- the fake server in a process of its own ------------------------------------------


def _serve_fake() -> None:
    """Child process: a FakeServer on uvloop; prints where it listens, serves until
    stdin closes (the parent went away or stop() closed it)."""
    import uvloop

    from mysqlproxy.testing.fakeserver import FakeServer

    async def main() -> None:
        server = FakeServer()
        address = await server.start()
        print(f"fake server listening on {address}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        await server.close()

    uvloop.run(main())


class FakeServerProcess:
    """The fake MySQL server (greeting, OK to any login, OK to COM_PING) as a child
    process; a context manager. `address` is where it listens."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.address = Address("127.0.0.1", 0)

    def __enter__(self) -> FakeServerProcess:
        code = "from mysqlproxy.testing.manyclients import _serve_fake; _serve_fake()"
        self.process = spawn_owned(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line or self.process.poll() is not None:
                break
        match = _LISTENING.match(line.decode(errors="replace").strip())
        if match is None:
            self.__exit__(None, None, None)
            raise RuntimeError(f"the fake server did not start: {line!r}")
        self.address = Address.parse(match.group(1))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            assert process.stdin is not None
            process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()


# --- idle clients -------------------------------------------------------------------------


class IdleClient(asyncio.Protocol):
    """Logs in with a fixed handshake response, then waits. `ping()` sends COM_PING and
    waits for the OK."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= 4:
            length = int.from_bytes(self.buffer[:3], "little")
            if len(self.buffer) >= 4 + length and not self.waiter.done():
                packet = bytes(self.buffer[: 4 + length])
                del self.buffer[: 4 + length]
                self.waiter.set_result(packet)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def _next_packet(self, timeout: float) -> bytes:
        packet = await asyncio.wait_for(self.waiter, timeout)
        self.waiter = asyncio.get_running_loop().create_future()
        self.data_received(b"")  # a packet that came with the last one
        return packet

    async def login(self, timeout: float) -> None:
        greeting = await self._next_packet(timeout)
        if greeting[4:5] != b"\x0a":
            raise ConnectionError(f"no greeting: {greeting[4:60]!r}")
        offered = messages.parse_greeting(greeting[4:]).capabilities
        caps = pf.CLIENT_CAPABILITIES & offered & ~Capability.CLIENT_SSL
        assert self.transport is not None
        self.transport.write(encode_packet(1, pf.handshake_response(caps, self.user)))
        answer = await self._next_packet(timeout)
        if answer[4:5] != b"\x00":
            raise ConnectionError(f"login refused: {answer[4:60]!r}")

    async def ping(self, timeout: float) -> None:
        assert self.transport is not None
        self.transport.write(encode_packet(0, bytes((Command.COM_PING,))))
        answer = await self._next_packet(timeout)
        if answer[4:5] != b"\x00":
            raise ConnectionError(f"ping not answered with OK: {answer[4:60]!r}")

    def close(self) -> None:
        self.waiter.cancel()  # nobody waits for what a closed client would receive
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_packet(0, bytes((Command.COM_QUIT,))))
            self.transport.close()


@dataclass
class Held:
    """Clients logged in and idle, and how long that took."""

    clients: list[IdleClient] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def hold(
    address: Address,
    count: int,
    *,
    user: str = "idle",
    concurrency: int = CONNECT_CONCURRENCY,
    timeout: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> Held:
    """Open `count` connections to `address`, each logged in and left idle."""
    loop = asyncio.get_running_loop()
    held = Held()
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def one() -> None:
        async with gate:
            try:
                _, client = await asyncio.wait_for(
                    loop.create_connection(lambda: IdleClient(user), address.host, address.port),
                    timeout,
                )
                await client.login(timeout)
            except (OSError, TimeoutError) as exc:
                held.failures.append(f"{type(exc).__name__}: {exc}")
                return
            held.clients.append(client)
            if progress is not None and len(held.clients) % 1000 == 0:
                progress(len(held.clients))

    await asyncio.gather(*(one() for _ in range(count)))
    held.seconds = time.monotonic() - started
    return held


async def ping_all(
    clients: Sequence[IdleClient], *, concurrency: int = 256, timeout: float = 30.0
) -> list[str]:
    """COM_PING on every client; the failures, as text."""
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(client: IdleClient) -> None:
        async with gate:
            try:
                await client.ping(timeout)
            except (OSError, TimeoutError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(c) for c in clients))
    return failures


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")
