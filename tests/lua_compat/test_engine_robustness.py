"""What a bad script or a hostile client must not do to the Lua engine: stall the event
loop, leak a backend connection, or make the proxy buffer without bound."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

from lua_compat.engine import READ_HIGH_WATER, LuaProxy, LuaProxyOptions, _Leg
from lua_compat.scope import Scope
from tests.conftest import MariaDB
from tests.lua_compat.conftest import ScriptFactory, connect, run_lua_proxy
from tests.lua_compat.test_engine_injections import MOCK, login_raw, read_packet


def test_a_sleeping_hook_is_stopped_and_other_clients_are_served(
    script_file: ScriptFactory,
) -> None:
    """The time limit is wall-clock time: a hook sleeping in a loop (no CPU time) blocks
    the one event loop, so it must be stopped like a busy loop."""
    source = """
    local glib2 = require("glib2")
    function read_query(packet)
      if packet:find("nap") then
        for i = 1, 40 do glib2.usleep(100000) end -- 4 s in all
      end
    end
    """
    with (
        run_lua_proxy(script_file(MOCK)) as mock,
        run_lua_proxy(script_file(source), mock.bound, hook_time_limit=0.5) as proxy,
        connect(proxy) as sleeper,
        connect(proxy) as other,
    ):
        answered: list[float] = []

        def query_meanwhile() -> None:
            time.sleep(0.1)  # while the hook sleeps
            with other.cursor() as cur:
                cur.execute("SELECT 2")
                assert cur.fetchone() == ("SELECT 2", 1)
            answered.append(time.monotonic())

        started = time.monotonic()
        thread = threading.Thread(target=query_meanwhile)
        thread.start()
        with sleeper.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("SELECT 'nap'")
        took = time.monotonic() - started
        thread.join(10)
        assert took < 2.0
        assert info.value.args[0] == 1105
        assert "hook ran longer than its time limit of 0.5s" in info.value.args[1]
        assert answered and answered[0] - started < 2.0
        with sleeper.cursor() as cur:  # that client goes on too
            cur.execute("SELECT 3")
            assert cur.fetchone() == ("SELECT 3", 1)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def released(proxy: LuaProxy, mock: LuaProxy) -> bool:
    """The front proxy dropped the session, counts no client on the backend, and the
    backend (the mock) saw its connection close."""
    return (
        not proxy.sessions
        and proxy.backends[0].connected_clients == 0
        and not mock.sessions
    )


def test_non_finite_hook_returns_are_no_decision(script_file: ScriptFactory) -> None:
    source = """
    function read_query(packet) return 1/0 end
    function disconnect_client() return 0/0 end
    """
    with (
        run_lua_proxy(script_file(MOCK)) as mock,
        run_lua_proxy(script_file(source), mock.bound) as proxy,
    ):
        with connect(proxy) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")  # forwarded as it was
            assert cur.fetchone() == ("SELECT 1", 1)
        assert wait_for(lambda: released(proxy, mock))


def test_teardown_releases_everything_whatever_disconnect_client_raises(
    script_file: ScriptFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    call_hook = Scope.call_hook

    def failing(self: Scope, name: str, *args: Any, **kw: Any) -> int | None:
        if name == "disconnect_client":
            raise RuntimeError("a bug anywhere under the hook call")
        return call_hook(self, name, *args, **kw)

    monkeypatch.setattr(Scope, "call_hook", failing)
    source = "function disconnect_client() end\n"
    with (
        run_lua_proxy(script_file(MOCK)) as mock,
        run_lua_proxy(script_file(source), mock.bound) as proxy,
    ):
        with connect(proxy) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
        assert wait_for(lambda: released(proxy, mock))


def test_a_response_python_cannot_convert_gets_the_handling_err(
    script_file: ScriptFactory,
) -> None:
    source = """
    function read_query(packet)
      if packet:find("infinite") then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, affected_rows = 1/0 }
        return proxy.PROXY_SEND_RESULT
      end
    end
    """
    with (
        run_lua_proxy(script_file(MOCK)) as mock,
        run_lua_proxy(script_file(source), mock.bound) as proxy,
        connect(proxy) as conn,
    ):
        for _ in range(2):  # the connection lives on
            with conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("SELECT 'infinite'")
            assert info.value.args == (
                1105,
                "(lua) handling proxy.response failed, check error-log",
            )


def test_an_oversized_packet_before_login_is_refused_on_its_header(
    script_file: ScriptFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Before login nothing bounded what a client could make the proxy buffer."""
    with (
        run_lua_proxy(script_file(MOCK)) as mock,
        run_lua_proxy(None, mock.bound, max_packet_size=4096) as proxy,
    ):
        sock = socket.create_connection(("127.0.0.1", proxy.bound[0].port), timeout=5)
        with sock:
            read_packet(sock)  # the greeting
            # a handshake response announcing 5000 bytes: refused before they come
            sock.sendall((5000).to_bytes(3, "little") + b"\x01" + b"x" * 100)
            seq, payload = read_packet(sock)
            assert seq == 2
            assert payload[:3] == b"\xff" + (1153).to_bytes(2, "little")
            assert b"max_packet_size is 4096" in payload
            assert sock.recv(1) == b""  # closed
        assert wait_for(lambda: released(proxy, mock))
    assert "client packet of 5000 bytes refused, max_packet_size is 4096" in caplog.text


def test_the_default_limit_is_run_s_64_mib() -> None:
    assert LuaProxyOptions(listen=[]).max_packet_size == 64 << 20


def test_a_client_that_never_logs_in_is_closed(
    script_file: ScriptFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        run_lua_proxy(script_file(MOCK)) as mock,
        run_lua_proxy(None, mock.bound, login_timeout=0.5) as proxy,
    ):
        sock = socket.create_connection(("127.0.0.1", proxy.bound[0].port), timeout=5)
        with sock:
            read_packet(sock)  # the greeting; then nothing
            started = time.monotonic()
            assert sock.recv(1) == b""
            assert 0.4 < time.monotonic() - started < 3
        assert wait_for(lambda: released(proxy, mock))
        with connect(proxy) as conn, conn.cursor() as cur:  # a client that does log in
            cur.execute("SELECT 1")
    assert "no login within 0.5s" in caplog.text


def test_pipelined_data_past_the_high_water_mark_pauses_reading(
    script_file: ScriptFactory,
) -> None:
    """While a command runs, what the client sends next waits in the buffer: reading
    stops once READ_HIGH_WATER bytes wait, and the commands are all answered later."""
    slow_mock = MOCK.replace(
        "local q = packet:sub(2)\n",
        "local q = packet:sub(2)\n  if q:find('slow') then require('glib2').usleep(500000) end\n",
        1,
    )
    assert slow_mock != MOCK
    with (
        run_lua_proxy(script_file(slow_mock)) as mock,  # the backend is slow, not the proxy
        run_lua_proxy(None, mock.bound) as proxy,
    ):
        sock = login_raw(proxy)
        with sock:
            query = b"\x03SELECT 'slow'"
            ping = (16384).to_bytes(3, "little") + b"\x00\x0e" + b"x" * 16383  # padded
            n = 8 * READ_HIGH_WATER // len(ping)
            sock.sendall(len(query).to_bytes(3, "little") + b"\x00" + query + ping * n)
            time.sleep(0.3)
            (conn,) = proxy.sessions
            # (past the mark, one more read can come: asyncio reads up to 256 KiB)
            assert len(conn.client.buffer) <= READ_HIGH_WATER + 256 * 1024
            # every command gets its answer
            sock.settimeout(10)
            _seq, payload = read_packet(sock)
            assert payload[:1] == b"\x02"  # the result set's column count
            received = b""
            expected = b"\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00" * n
            while not received.endswith(expected):
                chunk = sock.recv(1 << 16)
                assert chunk
                received += chunk


# --- waiting for data -------------------------------------------------------------------


async def test_a_wait_registered_before_it_is_awaited_sees_data_that_arrives_first() -> None:
    # asyncio.wait_for starts what it is given a loop turn later; data arriving in that
    # turn must still wake the waiter (it once did not: the login hung until its timeout).
    leg = _Leg()
    waiter = leg.wait()
    leg.data_received(b"\x01\x00\x00\x00\x0e")
    await asyncio.wait_for(waiter, 1.0)
    assert leg.take_packet() == (0, b"\x0e", b"\x01\x00\x00\x00\x0e")


def test_many_logins_in_a_row_through_a_script_none_waits(
    mariadb: MariaDB, script_file: ScriptFactory
) -> None:
    script = script_file("function read_query(packet) end\n")
    with run_lua_proxy(script, [mariadb.address]) as proxy:
        for n in range(60):
            started = time.monotonic()
            with connect(proxy, connect_timeout=5, read_timeout=5) as conn, conn.cursor() as cur:
                cur.execute("SELECT %s", (n,))
                assert cur.fetchone() == (n,)
            assert time.monotonic() - started < 2.0, f"login {n} waited"


def test_max_connections_applies_to_the_lua_engine(
    mariadb: MariaDB, script_file: ScriptFactory
) -> None:
    script = script_file("function read_query(packet) end\n")
    with run_lua_proxy(script, [mariadb.address]) as proxy:
        proxy.limits.max_connections = 1  # as `run --max-connections 1` or SET sets it
        with connect(proxy) as first, first.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as refused:
                connect(proxy)
            assert refused.value.args == (1040, "Too many connections")
            cur.execute("SELECT 1")  # the one within the limit is served
            assert cur.fetchone() == (1,)
        assert proxy.connections_refused == 1
        deadline = time.monotonic() + 5
        while proxy.sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        with connect(proxy) as again, again.cursor() as cur:  # room again once it left
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)
