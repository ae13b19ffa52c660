"""`mysqlproxy run --lua-script`: ProxyApp serves clients through the Lua engine while
the logging window, the counters and the admin-side server interface keep working."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from mysqlproxy.proxy.app import ProxyApp, ProxyConfig
from mysqlproxy.proxy.backends import Address
from mysqlproxy.querylog.window import WindowSpec
from mysqlproxy.testing.loopthread import running_on_loop_thread
from tests.conftest import MariaDB
from tests.lua_compat.conftest import ScriptFactory
from tests.proxy.test_faults import server_thread_ids, wait_until
from tests.proxy.test_limits import assert_disconnected_for_inactivity, global_status
from tests.test_cli import _run_expecting_failure

# Rewrites one query: the engine, not a pass-through, serves the connection.
REWRITING_SCRIPT = """
function read_query(packet)
  if packet:find("SELECT 'original'") then
    proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT 'rewritten by lua'")
    return proxy.PROXY_SEND_QUERY
  end
end
"""


class _App:
    def __init__(self, app: ProxyApp) -> None:
        self.app = app

    async def start(self) -> None:
        await self.app.start()

    async def close(self) -> None:
        await self.app.shutdown()


def test_logging_window_sees_queries_of_a_lua_proxied_connection(
    mariadb: MariaDB, script_file: ScriptFactory, tmp_path: Path
) -> None:
    script = script_file(REWRITING_SCRIPT)
    log_file = tmp_path / "window.log"
    config = ProxyConfig(
        listen=[Address("127.0.0.1", 0)],
        backend=mariadb.address,
        lua_script=script,
        initial_window=WindowSpec(duration=60, target=str(log_file), format="text"),
        grace_period=1.0,
        max_connections=7,
    )
    app = ProxyApp(config, stdout=io.StringIO())
    assert app.server.limits.max_connections == 7  # `run`'s limit reaches the engine
    with running_on_loop_thread(_App(app), "lua-app"):
        port = app.server.bound[0].port
        with (
            pymysql.connect(host="127.0.0.1", port=port, user="root", password="") as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT 'original'")
            assert cur.fetchone() == ("rewritten by lua",)
            cur.execute("SELECT 40 + 2")
            assert cur.fetchone() == (42,)
        assert app.control.proxy_info()["queries_total"] >= 2
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = log_file.read_text() if log_file.exists() else ""
            if "SELECT 40 + 2" in text:
                break
            time.sleep(0.05)
    text = log_file.read_text()
    assert "SELECT 'rewritten by lua'" in text
    assert "SELECT 40 + 2" in text
    assert "SELECT 'original'" not in text


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tls-self-signed"], "--lua-script cannot be combined with --tls-self-signed"),
        (["--tls-cert", "/nonexistent.pem"], "cannot be combined with --tls-cert"),
        (["--tls-self-signed", "--require-tls"], "with --tls-self-signed, --require-tls"),
        (["--backend-tls", "verify-identity"], "with --backend-tls verify-identity"),
        (["--backend-tls", "required"], "with --backend-tls required"),
        (["--backend-tls", "disabled"], "with --backend-tls disabled"),
    ],
)
def test_run_refuses_tls_options_with_a_lua_script(
    script_file: ScriptFactory, args: list[str], fragment: str
) -> None:
    """The Lua engine has no TLS: accepting the options silently would fail open."""
    script = script_file("function read_query(packet) end\n")
    result = _run_expecting_failure("--lua-script", script, "--listen", "127.0.0.1:0", *args)
    assert fragment in result.stderr
    assert "the Lua engine has no TLS on either leg" in result.stderr


@pytest.fixture
def idle_lua_app(mariadb: MariaDB, script_file: ScriptFactory) -> Iterator[ProxyApp]:
    """`run --lua-script --idle-timeout 0.5s`, with the rewriting script."""
    script = script_file(REWRITING_SCRIPT)
    config = ProxyConfig(
        listen=[Address("127.0.0.1", 0)],
        backend=mariadb.address,
        lua_script=script,
        idle_timeout=0.5,
        grace_period=1.0,
    )
    app = ProxyApp(config, stdout=io.StringIO())
    assert app.server.limits.idle_timeout == 0.5  # `run`'s limit reaches the engine
    with running_on_loop_thread(_App(app), "lua-idle-app"):
        yield app


def test_idle_timeout_closes_an_idle_lua_client_and_quits_its_backend(
    idle_lua_app: ProxyApp, mariadb: MariaDB
) -> None:
    admin = mariadb.connect()
    aborted_before = global_status(mariadb, "Aborted_clients")
    port = idle_lua_app.server.bound[0].port
    client = pymysql.connect(host="127.0.0.1", port=port, user="root", password="")
    thread_id = client.thread_id()
    with client.cursor() as cur:
        cur.execute("SELECT 'original'")
        assert cur.fetchone() == ("rewritten by lua",)
    sock: socket.socket = client._sock  # type: ignore[attr-defined]
    assert_disconnected_for_inactivity(sock, 0.5)  # as on the relay
    assert wait_until(lambda: not idle_lua_app.server.sessions, 2)
    assert wait_until(lambda: thread_id not in server_thread_ids(admin), 5)
    # The backend was told goodbye (COM_QUIT): not an aborted connection to it.
    assert global_status(mariadb, "Aborted_clients") == aborted_before
    admin.close()


def test_idle_timeout_spares_lua_clients_at_work(idle_lua_app: ProxyApp) -> None:
    port = idle_lua_app.server.bound[0].port
    with (
        pymysql.connect(host="127.0.0.1", port=port, user="root", password="") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT SLEEP(1.2)")  # over twice the timeout, waiting on the server
        assert cur.fetchall() == ((0,),)
        for _ in range(6):  # commands more often than the timeout
            time.sleep(0.25)
            cur.execute("SELECT 'original'")
            assert cur.fetchone() == ("rewritten by lua",)
        assert len(idle_lua_app.server.sessions) == 1


def test_tls_settings_say_what_the_lua_engine_does(idle_lua_app: ProxyApp) -> None:
    """The engine's legs are plain: the control plane (admin SHOW/SET) says so and
    refuses to switch TLS on, instead of accepting a setting nothing would read."""
    settings = idle_lua_app.control.settings
    assert settings["backend_tls"].get() == "disabled"
    assert settings["require_tls"].get() == "off"
    with pytest.raises(ValueError, match="no TLS to the backend"):
        settings["backend_tls"].set("required")
    with pytest.raises(ValueError, match="no certificate"):
        settings["require_tls"].set("on")
    settings["backend_tls"].set("disabled")  # what it is: accepted
    assert settings["backend_tls"].get() == "disabled"
    assert settings["idle_timeout"].get() == "0.5"
