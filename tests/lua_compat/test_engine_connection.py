"""proxy.connection, addresses, proxy.global.backends, failover, script failures and
hot reload, on real connections."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from mysqlproxy.proxy.backends import Address
from tests.conftest import MariaDB
from tests.lua_compat.conftest import ScriptFactory, connect, run_lua_proxy
from tests.lua_compat.test_engine_injections import MOCK, login_raw, read_packet

ECHO_LUA = """
-- every query is evaluated as a Lua expression; its value comes back as one row
function read_query(packet)
  if packet:byte() ~= proxy.COM_QUERY then return end
  local q = packet:sub(2)
  if not q:find("^EVAL ") then return end
  local f = assert(loadstring("return " .. q:sub(6)))
  proxy.response = { type = proxy.MYSQLD_PACKET_OK,
                     resultset = { fields = { { name = "v" } }, rows = { { f() } } } }
  return proxy.PROXY_SEND_RESULT
end
"""


def evaluate(cur: pymysql.cursors.Cursor, expression: str) -> object:
    cur.execute("EVAL " + expression)
    return cur.fetchone()[0]


def test_connection_and_address_objects(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    with run_lua_proxy(script_file(ECHO_LUA), [mariadb.address]) as proxy:
        port = proxy.bound[0].port
        with connect(proxy, database="mpt") as conn, conn.cursor() as cur:
            c = "proxy.connection.client"
            s = "proxy.connection.server"
            assert evaluate(cur, f"{c}.dst.name") == f"127.0.0.1:{port}"
            assert evaluate(cur, f"{c}.dst.type") == "2"
            assert evaluate(cur, f"{c}.dst.address") == "127.0.0.1"
            assert evaluate(cur, f"{c}.dst.port") == str(port)
            assert evaluate(cur, f"{c}.src.address") == "127.0.0.1"
            src_port = conn._sock.getsockname()[1]
            assert evaluate(cur, f"{c}.src.port") == str(src_port)
            assert evaluate(cur, f"{s}.dst.name") == f"127.0.0.1:{mariadb.port}"
            assert evaluate(cur, f"{s}.src.address") == "127.0.0.1"
            assert evaluate(cur, f"{c}.username") == "root"
            assert evaluate(cur, f"{s}.username") == "root"
            assert evaluate(cur, f"{c}.default_db") == "mpt"
            cur.execute("SELECT CONNECTION_ID()")
            (thread_id,) = cur.fetchone()
            assert evaluate(cur, f"{s}.thread_id") == str(thread_id)
            assert int(evaluate(cur, f"{s}.mysqld_version")) > 50000
            assert evaluate(cur, f"#{s}.scramble_buffer") == "20"
            assert evaluate(cur, "type(proxy.connection)") == "userdata"
            assert evaluate(cur, "proxy.connection.backend_ndx") == "1"
            assert evaluate(cur, "#proxy.global.backends") == "1"
            assert evaluate(cur, "proxy.global.backends[1].dst.name") == f"127.0.0.1:{mariadb.port}"
            assert evaluate(cur, "proxy.global.backends[1].connected_clients") == "1"
            assert evaluate(cur, "proxy.global.backends[1].state") == "1"
            assert evaluate(cur, "proxy.global.backends[1].type") == "1"
            assert evaluate(cur, "tostring(proxy.global.backends[2])") == "nil"
            assert evaluate(cur, "proxy.MYSQLD_PACKET_EOF") is None
            assert evaluate(cur, "proxy.connection.nonsense") is None
            # boolean and table values are NULL in a proxy.response row
            assert evaluate(cur, "true") is None
            with pytest.raises(pymysql.err.ProgrammingError):
                # deprecated: a Lua error, so the query goes to the server as it was
                evaluate(cur, "proxy.connection.thread_id")
            cur.execute("USE mysql")
            assert evaluate(cur, f"{s}.default_db") == "mysql"


def test_backend_ndx_zero_pools_the_server_connection(
    mariadb: MariaDB, script_file: ScriptFactory
) -> None:
    source = """
    function read_auth_result(auth)
      if auth.packet:byte() == proxy.MYSQLD_PACKET_OK then
        proxy.global.before = proxy.global.backends[1].connected_clients
        proxy.connection.backend_ndx = 0
        proxy.global.after = proxy.global.backends[1].connected_clients
        proxy.global.idle = proxy.global.backends[1].pool.users["root"].cur_idle_connections
        proxy.global.server = tostring(proxy.connection.server)
      end
    end
    function read_query(packet)
      if proxy.connection.backend_ndx == 0 then
        proxy.connection.backend_ndx = 1
      end
    end
    """
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        with connect(proxy) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        ev = proxy.runtime.eval
        assert (ev("proxy.global.before"), ev("proxy.global.after")) == (1, 0)
        assert ev("proxy.global.idle") == 1
        assert ev("proxy.global.server") == b"nil"


@contextlib.contextmanager
def dead_backend(how: str) -> Iterator[Address]:
    """'refused': nothing listens. 'closes': a server going down, whose listening
    socket still accepts and then closes before any greeting."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    address = Address("127.0.0.1", dead.getsockname()[1])
    if how == "refused":
        dead.close()
        yield address
        return
    dead.listen(8)
    stop = threading.Event()

    def accept_and_close() -> None:
        dead.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = dead.accept()
                conn.close()

    closer = threading.Thread(target=accept_and_close, daemon=True)
    closer.start()
    try:
        yield address
    finally:
        stop.set()
        closer.join()
        dead.close()


@pytest.mark.parametrize("how", ["refused", "closes"])
def test_failover_to_the_second_backend(script_file: ScriptFactory, how: str) -> None:
    with dead_backend(how) as dead_address, run_lua_proxy(script_file(MOCK)) as mock:
        counting = """
        function connect_server() proxy.global.tries = (proxy.global.tries or 0) + 1 end
        function read_query(packet)
          if packet:find("states") then
            local b = proxy.global.backends
            proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
              fields = { { name = "s1" }, { name = "s2" }, { name = "c2" } },
              rows = { { b[1].state, b[2].state, b[2].connected_clients } } } }
            return proxy.PROXY_SEND_RESULT
          end
        end
        """
        with run_lua_proxy(script_file(counting), [dead_address, mock.bound[0]]) as proxy:
            with connect(proxy) as conn, conn.cursor() as cur:
                cur.execute("states")
                assert cur.fetchone() == ("2", "1", "1")
            assert proxy.runtime.eval("proxy.global.tries") == 2


def test_all_backends_down(script_file: ScriptFactory) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    address = Address("127.0.0.1", dead.getsockname()[1])
    dead.close()
    with run_lua_proxy(None, [address]) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(proxy)
        assert "all backends are down" in str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("function read_query( end", "MySQL Proxy Lua script failed to load. Check the error log."),
        ("error('boom')", "MySQL Proxy Lua script failed to execute. Check the error log."),
    ],
)
def test_broken_script_gets_an_err_at_connect(
    mariadb: MariaDB, script_file: ScriptFactory, source: str, message: str
) -> None:
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.bound[0].port), timeout=10)
        seq, payload = read_packet(sock)
        assert seq == 0
        assert payload == b"\xff\x51\x04#07000" + message.encode()


def test_missing_script_gets_the_load_err(mariadb: MariaDB, tmp_path: Path) -> None:
    with run_lua_proxy(str(tmp_path / "missing.lua"), [mariadb.address]) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(proxy)
        assert info.value.args[0] == 1105


def test_errors_and_endless_loops_in_hooks(
    mariadb: MariaDB, script_file: ScriptFactory, caplog: pytest.LogCaptureFixture
) -> None:
    path = script_file(
        """
        function read_query(packet)
          local q = packet:sub(2)
          if q == "SELECT 'loop'" then
            while true do pcall(function() end) end
          elseif q == "SELECT 'error'" then
            local t = nil
            return t.field
          elseif q == "SELECT 'garbage'" then
            return {}
          end
        end
        """
    )
    with run_lua_proxy(path, [mariadb.address], hook_time_limit=0.3) as proxy:
        with connect(proxy) as conn, conn.cursor() as cur:
            started = time.monotonic()
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("SELECT 'loop'")
            assert time.monotonic() - started < 5
            assert info.value.args[0] == 1105
            assert "time limit" in info.value.args[1]
            assert "stack traceback" not in info.value.args[1]
            # a hook that raises: logged, the query goes to the server as it was
            cur.execute("SELECT 'error'")
            assert cur.fetchone() == ("error",)
            cur.execute("SELECT 'garbage'")
            assert cur.fetchone() == ("garbage",)
        with connect(proxy) as conn, conn.cursor() as cur:  # the proxy lives on
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)
    text = caplog.text
    assert f'(read_query) [string "{path}"]:5: hook ran longer' in text
    assert f"(read_query) [string \"{path}\"]:8: attempt to index local 't'" in text


def test_traceback_shows_the_script_frames_only(
    mariadb: MariaDB, script_file: ScriptFactory
) -> None:
    path = script_file(
        """
        function read_query(packet)
          if packet:find("trace") then
            proxy.response = { type = proxy.MYSQLD_PACKET_OK,
              resultset = { fields = { { name = "t" } }, rows = { { debug.traceback() } } } }
            return proxy.PROXY_SEND_RESULT
          end
        end
        """
    )
    with (
        run_lua_proxy(path, [mariadb.address]) as proxy,
        connect(proxy) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("trace")
        assert cur.fetchone()[0] == (
            f'stack traceback:\n\t[string "{path}"]:5: in function <[string "{path}"]:2>'
        )


def test_script_reloads_for_new_connections(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    template = """
    function read_query(packet)
      if packet:find("version") then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK,
          resultset = { fields = { { name = "v" } }, rows = { { "%s" } } } }
        return proxy.PROXY_SEND_RESULT
      end
    end
    """
    path = script_file(template % "one")
    with (
        run_lua_proxy(path, [mariadb.address]) as proxy,
        connect(proxy) as first,
        first.cursor() as cur,
    ):
        cur.execute("version")
        assert cur.fetchone() == ("one",)
        Path(path).write_text(template % "two!")  # other size
        stat = os.stat(path)
        os.utime(path, (stat.st_atime, stat.st_mtime + 2))
        cur.execute("version")  # an open connection keeps its script
        assert cur.fetchone() == ("one",)
        with connect(proxy) as second, second.cursor() as cur2:
            cur2.execute("version")
            assert cur2.fetchone() == ("two!",)


def test_per_connection_globals_and_shared_proxy_global(
    mariadb: MariaDB, script_file: ScriptFactory
) -> None:
    path = script_file(
        """
        counter = 0
        proxy.global.connections = (proxy.global.connections or 0) + 1
        function read_query(packet)
          if packet:find("count") then
            counter = counter + 1
            proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
              fields = { { name = "mine" }, { name = "all" } },
              rows = { { counter, proxy.global.connections } } } }
            return proxy.PROXY_SEND_RESULT
          end
        end
        """
    )
    with (
        run_lua_proxy(path, [mariadb.address]) as proxy,
        connect(proxy) as a,
        a.cursor() as ca,
        connect(proxy) as b,
        b.cursor() as cb,
    ):
        ca.execute("count")
        ca.execute("count")
        assert ca.fetchone() == ("2", "2")
        cb.execute("count")
        assert cb.fetchone() == ("1", "2")


def test_four_one_protocol_is_required(script_file: ScriptFactory) -> None:
    with run_lua_proxy(script_file(MOCK)) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.bound[0].port), timeout=10)
        read_packet(sock)
        payload = b"\x85\x24\x00\x00\x00root\x00"  # a 4.0 auth packet (2-byte caps)
        sock.sendall(len(payload).to_bytes(3, "little") + b"\x01" + payload)
        assert read_packet(sock) == (2, b"\xff\xd7\x074.0 protocol is not supported")


def test_login_through_raw_socket_to_mock(script_file: ScriptFactory) -> None:
    with run_lua_proxy(script_file(MOCK)) as proxy:
        sock = login_raw(proxy)
        sock.sendall(b"\x01\x00\x00\x00\x0e")  # COM_PING
        assert read_packet(sock) == (1, b"\x00\x00\x00\x02\x00\x00\x00")


def test_unix_socket_listener_and_address_objects(
    mariadb: MariaDB, script_file: ScriptFactory, tmp_path: Path
) -> None:
    path = str(tmp_path / "proxy.sock")
    with run_lua_proxy(
        script_file(ECHO_LUA), [mariadb.address], listen=Address(unix_path=path)
    ) as proxy:
        conn = pymysql.connect(unix_socket=path, user="root", password="")
        with conn, conn.cursor() as cur:
            assert evaluate(cur, "proxy.connection.client.dst.type") == "1"
            assert evaluate(cur, "proxy.connection.client.dst.name") == path
            assert evaluate(cur, "proxy.connection.client.src.address") == ""
            assert evaluate(cur, "tostring(proxy.connection.client.src.port)") == "nil"
        assert proxy.bound[0].unix_path == path
