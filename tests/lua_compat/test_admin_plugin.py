"""The admin plugin (reference section 9) with real clients: PyMySQL, the mariadb CLI,
and raw bytes where a client cannot send what is tested."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
from collections.abc import Iterator

import pymysql
import pytest

from lua_compat import LuaRuntime
from lua_compat.admin import ERR_RESPONSE, AdminConnection, AdminPlugin
from lua_compat.scope import LuaScripts
from mysqlproxy.protocol import auth
from mysqlproxy.protocol.packets import PacketBuffer, encode_packet
from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.loopthread import running_on_loop_thread
from tests.lua_compat.conftest import ScriptFactory

USER = "admin"
PASSWORD = "s3cret"

# Our own admin script: answers a few statements, shows proxy.* state, misbehaves on demand.
ADMIN_SCRIPT = """
local function rows(fields, values)
  proxy.response = { type = proxy.MYSQLD_PACKET_OK,
                     resultset = { fields = fields, rows = values } }
  return proxy.PROXY_SEND_RESULT
end

function read_query(packet)
  if packet:sub(2, 5):lower() == "set " then     -- PyMySQL's SET NAMES
    proxy.response = { type = proxy.MYSQLD_PACKET_OK }
    return proxy.PROXY_SEND_RESULT
  end
  calls = (calls or 0) + 1                     -- per connection
  proxy.global.admin_calls = (proxy.global.admin_calls or 0) + 1
  if packet:byte() ~= proxy.COM_QUERY then
    proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "COM_QUERY only",
                       errcode = 1047, sqlstate = "08S01" }
    return proxy.PROXY_SEND_RESULT
  end
  local q = packet:sub(2):lower()
  if q == "select @@version_comment limit 1" then
    return rows({ { name = "@@version_comment" } }, { { "our admin" } })
  elseif q == "show state" then
    local c = proxy.connection.client
    return rows({ { name = "calls" }, { name = "global" }, { name = "user" },
                  { name = "peer" }, { name = "backends" }, { name = "response_was" } },
                { { calls, proxy.global.admin_calls, c.username, c.src.address,
                    #proxy.global.backends, tostring(proxy.response.leftover) } })
  elseif q == "leave something" then
    proxy.response.leftover = "x"
    return rows({ { name = "ok" } }, { { "1" } })
  elseif q == "nil" then
    return nil
  elseif q == "seven" then
    return 7
  elseif q == "raise" then
    error("raised on purpose")
  elseif q == "inject" then
    proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT 1")
    return proxy.PROXY_SEND_QUERY
  elseif q == "bad response" then
    proxy.response = { type = 99 }
    return proxy.PROXY_SEND_RESULT
  end
  proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "unknown: " .. q }
  return proxy.PROXY_SEND_RESULT
end
"""


@contextlib.contextmanager
def admin_plugin(script: str, runtime: LuaRuntime | None = None) -> Iterator[AdminPlugin]:
    scripts = LuaScripts(runtime or LuaRuntime(), 5.0)
    plugin = AdminPlugin(Address("127.0.0.1", 0), USER, PASSWORD, script, scripts)
    with running_on_loop_thread(plugin, "admin-plugin") as running:
        yield running


def connect(plugin: AdminPlugin, **kwargs: object) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    assert plugin.bound is not None
    params: dict[str, object] = {
        "host": "127.0.0.1",
        "port": plugin.bound.port,
        "user": USER,
        "password": PASSWORD,
        "connect_timeout": 5,
        "read_timeout": 10,
    }
    params.update(kwargs)
    return pymysql.connect(**params)  # type: ignore[arg-type]


@pytest.fixture
def admin(script_file: ScriptFactory) -> Iterator[AdminPlugin]:
    with admin_plugin(script_file(ADMIN_SCRIPT)) as plugin:
        yield plugin


def test_greeting_bytes(admin: AdminPlugin) -> None:
    assert admin.bound is not None
    with socket.create_connection(("127.0.0.1", admin.bound.port), timeout=5) as sock:
        buf = PacketBuffer()
        while True:
            buf.feed(sock.recv(4096))
            packets = list(buf)
            if packets:
                break
    (greeting,) = packets
    assert greeting.sequence_id == 0
    p = greeting.payload
    assert p[0] == 10
    version_end = p.index(b"\x00", 1)
    assert p[1:version_end] == b"5.0.99-agent-admin"
    pos = version_end + 1
    (thread_id,) = struct.unpack_from("<I", p, pos)
    challenge1 = p[pos + 4 : pos + 12]
    caps_low, charset, status, caps_high = struct.unpack_from("<HBHH", p, pos + 13)
    assert thread_id == 1
    assert caps_low | caps_high << 16 == 0x8201  # PROTOCOL_41 | SECURE_CONNECTION | LONG_PASSWORD
    assert charset == 8 and status == 2
    challenge2 = p[pos + 31 : pos + 43]
    assert p[pos + 43 :] == b"\x00"
    challenge = challenge1 + challenge2
    assert len(challenge) == 20 and all(0x20 < b < 0x7F for b in challenge)


def test_login_and_queries_with_pymysql(admin: AdminPlugin) -> None:
    with connect(admin) as conn, conn.cursor() as cur:
        cur.execute("SHOW STATE")
        assert cur.fetchall() == (("1", "1", USER, "127.0.0.1", "0", "nil"),)
        cur.execute("leave something")
        cur.execute("show state")  # proxy.response is reset before every read_query
        assert cur.fetchall() == (("3", "3", USER, "127.0.0.1", "0", "nil"),)
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("what")
        assert info.value.args == (1105, "unknown: what")
        cur.execute("show state")  # an ERR from the script keeps the connection
        assert cur.fetchone()[0] == "5"
    with connect(admin) as conn, conn.cursor() as cur:
        # globals are per connection, proxy.global is not; the first connection's
        # COM_QUIT went to read_query too (as in 0.8.5), hence 7
        cur.execute("show state")
        assert cur.fetchone()[:2] == ("1", "7")


def test_non_query_commands_go_to_the_script(admin: AdminPlugin) -> None:
    with connect(admin) as conn:
        with pytest.raises(pymysql.err.OperationalError) as info:
            conn.ping(reconnect=False)
        assert info.value.args == (1047, "COM_QUERY only")


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("admin2", PASSWORD, "unknown user"),
        ("Admin", PASSWORD, "unknown user"),
        (USER, "wrong", "password doesn't match"),
        (USER, "", "password doesn't match"),
    ],
)
def test_login_refused(admin: AdminPlugin, user: str, password: str, message: str) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(admin, user=user, password=password)
    assert info.value.args == (1045, message)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("nil", "need a resultset + proxy.PROXY_SEND_RESULT"),
        ("seven", "need a resultset + proxy.PROXY_SEND_RESULT ... got something else"),
        ("raise", "need a resultset + proxy.PROXY_SEND_RESULT ... got something else"),
        ("inject", "need a resultset + proxy.PROXY_SEND_RESULT ... got something else"),
        (
            "LOAD DATA LOCAL INFILE 'x' INTO TABLE t",
            "need a resultset + proxy.PROXY_SEND_RESULT ... got something else",
        ),
        ("load stuff", "need a resultset + proxy.PROXY_SEND_RESULT ... got something else"),
        ("", "need a resultset + proxy.PROXY_SEND_RESULT ... got something else"),
    ],
)
def test_wrong_answers_close_the_connection(admin: AdminPlugin, query: str, message: str) -> None:
    with connect(admin) as conn:
        with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
            cur.execute(query)
        assert info.value.args == (1105, message)
        with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
            cur.execute("show state")


def test_load_queries_never_reach_the_script(admin: AdminPlugin) -> None:
    with connect(admin) as conn, pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
        cur.execute("load data")
    with connect(admin) as conn, conn.cursor() as cur:
        cur.execute("show state")
        assert cur.fetchone()[1] == "1"  # proxy.global.admin_calls: only this one


def test_bad_response_keeps_the_connection(admin: AdminPlugin) -> None:
    with connect(admin) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("bad response")
        assert info.value.args == (1105, "(lua) handling proxy.response failed, check error-log")
        cur.execute("show state")
        assert cur.fetchone()[0] == "2"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (None, "MySQL Proxy Lua script failed to load. Check the error log."),
        ("function read_query(", "MySQL Proxy Lua script failed to load. Check the error log."),
        ("error('at load')", "MySQL Proxy Lua script failed to execute. Check the error log."),
    ],
)
def test_script_failures(script_file: ScriptFactory, source: str | None, message: str) -> None:
    path = script_file(source) if source is not None else "/nonexistent/admin.lua"
    with admin_plugin(path) as plugin, pytest.raises(pymysql.err.OperationalError) as info:
        connect(plugin)  # its SET NAMES is the first statement
    assert info.value.args == (1105, message)


def test_proxy_global_is_shared_with_the_runtime(script_file: ScriptFactory) -> None:
    runtime = LuaRuntime()
    runtime.execute("proxy.global.from_proxy_plugin = 'hello'")
    script = script_file(
        """
        function read_query(packet)
          proxy.global.seen_by_admin = true
          if packet:find("^.SET ") then
            proxy.response = { type = proxy.MYSQLD_PACKET_OK }
            return proxy.PROXY_SEND_RESULT
          end
          proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
            fields = { { name = "v" } }, rows = { { proxy.global.from_proxy_plugin } } } }
          return proxy.PROXY_SEND_RESULT
        end
        """
    )
    with admin_plugin(script, runtime) as plugin, connect(plugin) as conn, conn.cursor() as cur:
        cur.execute("select")
        assert cur.fetchone() == ("hello",)
    assert runtime.eval("proxy.global.seen_by_admin") is True


def test_pre_41_client_is_refused(admin: AdminPlugin) -> None:
    assert admin.bound is not None
    with socket.create_connection(("127.0.0.1", admin.bound.port), timeout=5) as sock:
        buf = PacketBuffer()
        while not list(buf):
            buf.feed(sock.recv(4096))
        # a 4.0 handshake response: 2-byte capabilities without PROTOCOL_41
        sock.sendall(
            encode_packet(1, struct.pack("<HI", 0x0001 | 0x0004, 0xFFFFFF)[:5] + b"admin\x00")
        )
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    buf = PacketBuffer()
    buf.feed(data)
    (err,) = list(buf)
    assert err.payload == b"\xff\xd7\x07" + b"4.0 protocol is not supported"


def test_scramble_is_checked_against_the_challenge(admin: AdminPlugin) -> None:
    """A scramble made for another challenge is refused (no replay)."""
    assert admin.bound is not None
    with socket.create_connection(("127.0.0.1", admin.bound.port), timeout=5) as sock:
        buf = PacketBuffer()
        while not list(buf):
            buf.feed(sock.recv(4096))
        response = auth.native_password_scramble(PASSWORD.encode(), b"x" * 20)
        payload = (
            struct.pack("<IIB", 0x8201 | 0x0200, 1 << 24, 8)
            + b"\x00" * 23
            + USER.encode()
            + b"\x00"
            + bytes([len(response)])
            + response
        )
        sock.sendall(encode_packet(1, payload))
        reply = sock.recv(4096)
    assert reply[3] == 2  # sequence id
    assert reply[4:] == b"\xff" + struct.pack("<H", 1045) + b"#28000password doesn't match"


def test_mariadb_cli(admin: AdminPlugin, mariadb_cli: str) -> None:
    assert admin.bound is not None
    result = subprocess.run(
        [
            mariadb_cli,
            "--no-defaults",
            "-h127.0.0.1",
            f"-P{admin.bound.port}",
            f"-u{USER}",
            f"-p{PASSWORD}",
            "--skip-ssl",
            "--batch",
            "-e",
            "show state",
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split("\t") == ["calls", "global", "user", "peer", "backends", "response_was"]
    assert lines[1].split("\t")[2:5] == [USER, "127.0.0.1", "0"]


def test_a_response_python_cannot_convert_gets_the_handling_err(
    script_file: ScriptFactory,
) -> None:
    """wire.response_payloads raised past the ResponseError the plugin caught, out of
    data_received: asyncio dropped the client without an answer."""
    source = """
    function read_query(packet)
      if packet:find("infinite") then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, affected_rows = 1/0 }
      else
        proxy.response = { type = proxy.MYSQLD_PACKET_OK }
      end
      return proxy.PROXY_SEND_RESULT
    end
    """
    with admin_plugin(script_file(source)) as plugin:
        with connect(plugin) as conn, conn.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("SELECT 'infinite'")
            assert info.value.args == (1105, ERR_RESPONSE)
            cur.execute("SELECT 'fine'")  # as for any handling failure, the connection lives
        with connect(plugin) as conn, conn.cursor() as cur:  # and so does the listener
            cur.execute("SELECT 'fine'")


def test_anything_raised_while_handling_a_packet_gets_an_err(
    admin: AdminPlugin, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: AdminConnection, seq: int, payload: bytes) -> None:
        if b"break" in payload:
            raise RuntimeError("a bug under data_received")
        original(self, seq, payload)

    original = AdminConnection._command
    monkeypatch.setattr(AdminConnection, "_command", broken)
    with connect(admin) as conn:
        with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
            cur.execute("break")
        assert info.value.args == (
            1105,
            "need a resultset + proxy.PROXY_SEND_RESULT ... got something else",
        )
        with pytest.raises(pymysql.err.OperationalError), conn.cursor() as cur:
            cur.execute("show state")  # closed
    with connect(admin) as conn, conn.cursor() as cur:  # the listener lives on
        cur.execute("show state")
    assert "admin connection: handling a packet failed" in caplog.text
