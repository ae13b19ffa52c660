"""The handshake and login hooks: read_handshake, read_auth (answering itself, or
replacing the auth packet), read_auth_result; and LOAD DATA LOCAL against a fake
server, whose file the proxy takes and acknowledges."""

from __future__ import annotations

import socket
from pathlib import Path

import pymysql
import pytest

from tests.conftest import MariaDB
from tests.lua_compat.conftest import ScriptFactory, connect, run_lua_proxy
from tests.lua_compat.test_engine_injections import read_packet


def test_read_handshake_can_reject(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    source = """
    function read_handshake()
      local s = proxy.connection.server
      proxy.global.seen = s.mysqld_version .. " " .. #s.scramble_buffer
      proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "not today", errcode = 1040,
                         sqlstate = "08004" }
      return proxy.PROXY_SEND_RESULT
    end
    """
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.bound[0].port), timeout=10)
        assert read_packet(sock) == (0, b"\xff\x10\x04#08004not today")
        assert sock.recv(10) == b""  # closed
        version, scramble = proxy.runtime.eval("proxy.global.seen").split()
        assert int(version) > 50000 and scramble == b"20"


def test_read_auth_answers_itself(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    source = """
    function read_auth()
      if proxy.connection.client.username == "intruder" then
        proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "go away", errcode = 1045,
                           sqlstate = "28000" }
        return proxy.PROXY_SEND_RESULT
      end
    end
    """
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(proxy, user="intruder")
        assert info.value.args == (1045, "go away")
        with connect(proxy) as conn, conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone()[0].startswith("root@")


def test_read_auth_replaces_the_auth_packet(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    """An alias user: the auth packet the server gets is rebuilt with mysql.proto."""
    source = """
    local proto = require("mysql.proto")
    function read_auth()
      local c = proxy.connection.client
      if c.username == "alias" then
        proxy.queries:append(1, proto.to_response_packet({
          username = "root", response = "", charset = 33, max_packet_size = 16777216,
          capabilities = 0x000ea20d, server_capabilities = 0x000ea20d,
          database = c.default_db }))
        return proxy.PROXY_SEND_QUERY
      end
    end
    function read_auth_result(auth)
      proxy.global.auth = auth.packet:byte()
      proxy.global.server_user = proxy.connection.server.username
    end
    """
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        with connect(proxy, user="alias", database="mpt") as conn, conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER(), DATABASE()")
            user, database = cur.fetchone()
            assert user.startswith("root@") and database == "mpt"
        assert proxy.runtime.eval("proxy.global.auth") == 0
        # the server side shows the client's name (copied from the client side)
        assert proxy.runtime.eval("proxy.global.server_user") == b"alias"


def test_load_data_local_against_a_fake_server(script_file: ScriptFactory, tmp_path: Path) -> None:
    data = tmp_path / "upload.txt"
    data.write_text("line\n" * 50_000)
    source = """
    function connect_server()
      proxy.response = { type = proxy.MYSQLD_PACKET_RAW,
                         packets = { require("mysql.proto").to_challenge_packet({}) } }
      return proxy.PROXY_SEND_RESULT
    end
    function read_query(packet)
      local q = packet:sub(2)
      local file = q:match("LOAD DATA LOCAL INFILE '([^']+)'")
      if file then
        proxy.response = { type = proxy.MYSQLD_PACKET_RAW, packets = { "\\251" .. file } }
      elseif q == "SELECT 'after'" then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK,
                           resultset = { fields = { { name = "a" } }, rows = { { "after" } } } }
      else
        proxy.response = { type = proxy.MYSQLD_PACKET_OK }
      end
      return proxy.PROXY_SEND_RESULT
    end
    """
    with (
        run_lua_proxy(script_file(source)) as proxy,
        connect(proxy, local_infile=True) as conn,
        conn.cursor() as cur,
    ):
        cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE t")
        assert cur.rowcount == 0
        cur.execute("SELECT 'after'")
        assert cur.fetchone() == ("after",)


def test_auth_switch_goes_through_read_auth_result_twice(
    mariadb: MariaDB, script_file: ScriptFactory
) -> None:
    """A client that starts with another auth plugin: the server asks it to switch
    (0xfe), the client's answer is relayed, the server's OK comes through the hook."""
    source = """
    function read_auth_result(auth)
      proxy.global.firsts = (proxy.global.firsts or "") .. string.format("%02x", auth.packet:byte())
    end
    """
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.bound[0].port), timeout=10)
        seq, greeting = read_packet(sock)
        assert seq == 0 and greeting[0] == 10
        caps = 0x200 | 0x8000 | 0x1 | 0x80000  # PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH
        payload = (
            caps.to_bytes(4, "little")
            + (1 << 24).to_bytes(4, "little")
            + b"\x21"
            + b"\x00" * 23
            + b"root\x00"
            + b"\x00"  # empty auth response
            + b"some_other_plugin\x00"
        )
        sock.sendall(len(payload).to_bytes(3, "little") + b"\x01" + payload)
        seq, switch = read_packet(sock)
        assert (seq, switch[:1]) == (2, b"\xfe")
        sock.sendall(b"\x00\x00\x00\x03")  # empty password: empty answer
        seq, ok = read_packet(sock)
        assert (seq, ok[:1]) == (4, b"\x00")
        sock.sendall(b"\x09\x00\x00\x00\x03SELECT 7")
        seq, count = read_packet(sock)
        assert (seq, count) == (1, b"\x01")
        sock.close()
        assert proxy.runtime.eval("proxy.global.firsts") == b"fe00"


def test_backend_err_instead_of_greeting_reaches_the_client(script_file: ScriptFactory) -> None:
    refusing = """
    function connect_server()
      proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "Too many connections",
                         errcode = 1040, sqlstate = "08004" }
      return proxy.PROXY_SEND_RESULT
    end
    """
    front = """
    function read_handshake() proxy.global.handshake_hook_ran = true end
    """
    with (
        run_lua_proxy(script_file(refusing)) as backend,
        run_lua_proxy(script_file(front), backend.bound) as proxy,
    ):
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(proxy)
        assert info.value.args == (1040, "Too many connections")
        assert proxy.runtime.eval("proxy.global.handshake_hook_ran") is None


def test_connection_close_after_the_result(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    source = """
    function read_query(packet)
      if packet:find("last one") then proxy.connection.connection_close = true end
    end
    """
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        conn = connect(proxy)
        with conn.cursor() as cur:
            cur.execute("SELECT 'last one'")
            assert cur.fetchone() == ("last one",)
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("SELECT 'too late'")
            assert info.value.args[0] in (2006, 2013)
