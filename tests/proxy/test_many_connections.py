"""5,000 concurrent idle clients held through one proxy, all served at the end.

The proxy runs as `mysqlproxy run` in its own process (uvloop, as in production) in
front of the fake MySQL server (also its own process: a greeting and an OK cost it
little, where the test MariaDB allows 1,000 connections). The clients are raw asyncio
protocols in this process. The file limit is raised to the hard limit first (the
proxy inherits it); the test is skipped when even that is too low. The memory figure
itself is measured by bench/connections.py; here it only has to stay within a bound.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pymysql
import pymysql.cursors
import pytest

from mysqlproxy.testing.manyclients import (
    FakeServerProcess,
    FileLimitTooLow,
    Held,
    files_needed,
    hold,
    ping_all,
    raise_file_limit,
    rss_bytes,
)
from mysqlproxy.testing.proxyprocess import ProxyProcess
from tests.proxy.test_faults import wait_until

CLIENTS = 5000
# Generous for a 2-core machine shared by the clients, the proxy and the fake server
# (bench/connections.py opens 5,000 in about 4 s and pings them in under 1 s).
CONNECT_SECONDS = 60.0
PING_SECONDS = 30.0
# bench/connections.py measures about 8 KiB; a regression to several times that fails.
BYTES_PER_CONNECTION_BOUND = 32 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def file_limit() -> int:
    try:
        return raise_file_limit(files_needed(CLIENTS))
    except FileLimitTooLow as exc:
        pytest.skip(f"cannot hold {CLIENTS} connections here: {exc}")


@pytest.fixture
def proxied_fake(file_limit: int) -> Iterator[tuple[ProxyProcess, int]]:
    admin_port = _free_port()
    with (
        FakeServerProcess() as fake,
        ProxyProcess(
            fake.address,
            extra_args=["--admin", f"127.0.0.1:{admin_port}", "--log-level", "warning"],
        ) as proxy,
    ):
        yield proxy, admin_port


def _proxy_connections(admin_port: int) -> int:
    with (
        pymysql.connect(host="127.0.0.1", port=admin_port, user="admin", password="",
                        cursorclass=pymysql.cursors.DictCursor) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT * FROM proxy")
        info = {row["name"]: row["value"] for row in cur.fetchall()}
    return int(info["connections"])


def test_five_thousand_idle_connections(proxied_fake: tuple[ProxyProcess, int]) -> None:
    import uvloop

    proxy, admin_port = proxied_fake
    address = proxy.address
    assert address is not None

    async def scenario() -> tuple[Held, list[str], float, int]:
        warm = await hold(address, 100)  # lazy imports, first buffers: not measured
        assert not warm.failures, warm.failures[0]
        for client in warm.clients:
            client.close()
        await asyncio.sleep(0.5)
        before = rss_bytes(proxy.pid)
        held = await hold(address, CLIENTS, timeout=CONNECT_SECONDS)
        if held.failures:
            return held, [], 0.0, 0
        # All held at once: the proxy counts them, then serves each one.
        connections = await asyncio.to_thread(_proxy_connections, admin_port)
        assert connections == CLIENTS, connections
        started = time.monotonic()
        failures = await ping_all(held.clients, timeout=PING_SECONDS)
        seconds = time.monotonic() - started
        grown = rss_bytes(proxy.pid) - before
        for client in held.clients:
            client.close()
        await asyncio.sleep(0.1)
        return held, failures, seconds, grown

    held, ping_failures, ping_seconds, grown = uvloop.run(scenario())
    assert not held.failures, f"{len(held.failures)} failed, first: {held.failures[0]}"
    assert len(held.clients) == CLIENTS
    assert held.seconds < CONNECT_SECONDS, held.seconds
    assert not ping_failures, f"{len(ping_failures)} pings failed: {ping_failures[0]}"
    assert ping_seconds < PING_SECONDS
    per_connection = grown / CLIENTS
    assert per_connection < BYTES_PER_CONNECTION_BOUND, f"{per_connection / 1024:.1f} KiB"
    assert wait_until(lambda: _proxy_connections(admin_port) == 0, 20)
