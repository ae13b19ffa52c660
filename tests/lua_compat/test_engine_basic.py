"""The Lua engine on real connections: transparent relay with hooks, and a fake server
made of a script."""

from __future__ import annotations

import pymysql
import pytest

from tests.conftest import MariaDB
from tests.lua_compat.conftest import ScriptFactory, connect, run_lua_proxy

MOCK = """
local proto = require("mysql.proto")
function connect_server()
  proxy.response = { type = proxy.MYSQLD_PACKET_RAW,
                     packets = { proto.to_challenge_packet({ server_version = 50099 }) } }
  return proxy.PROXY_SEND_RESULT
end
function read_query(packet)
  local q = packet:sub(2)
  if packet:byte() ~= proxy.COM_QUERY or not q:lower():find("^%s*select") then
    proxy.response = { type = proxy.MYSQLD_PACKET_OK }
    return proxy.PROXY_SEND_RESULT
  end
  proxy.response = { type = proxy.MYSQLD_PACKET_OK,
    resultset = { fields = { { name = "q" }, { name = "n" } },
                  rows = { { q, 1 }, { nil, 2.5 }, { true, 2^53 } } } }
  return proxy.PROXY_SEND_RESULT
end
"""


def test_transparent_script_relays_queries(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    path = script_file(
        """
        seen = 0
        function read_query(packet)
          if packet:byte() == proxy.COM_QUERY then
            proxy.global.queries = (proxy.global.queries or 0) + 1
          end
        end
        """
    )
    with run_lua_proxy(path, [mariadb.address]) as proxy:
        with connect(proxy, database="mpt") as conn, conn.cursor() as cur:
            cur.execute("SELECT 1, 'two', NULL")
            assert cur.fetchall() == ((1, "two", None),)
            cur.execute("SELECT seq FROM seq_1_to_2000")
            assert len(cur.fetchall()) == 2000
            cur.execute("DROP TABLE IF EXISTS lua_t1")
            cur.execute("CREATE TABLE lua_t1 (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT)")
            cur.execute("INSERT INTO lua_t1 (v) VALUES ('a'), ('b')")
            assert cur.rowcount == 2
            with pytest.raises(pymysql.err.ProgrammingError) as info:
                cur.execute("SELECT * FROM no_such_table")
            assert info.value.args[0] == 1146
            cur.execute("SELECT COUNT(*) FROM lua_t1")
            assert cur.fetchone() == (2,)
        count = proxy.runtime.eval("proxy.global.queries")
    assert count >= 7


def test_no_script_is_a_transparent_proxy(mariadb: MariaDB) -> None:
    with (
        run_lua_proxy(None, [mariadb.address]) as proxy,
        connect(proxy) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT CONNECTION_ID(), USER()")
        thread_id, user = cur.fetchone()
        assert thread_id > 0 and user.startswith("root@")


def test_fake_server_answers_from_lua(script_file: ScriptFactory) -> None:
    with run_lua_proxy(script_file(MOCK)) as proxy, connect(proxy) as conn, conn.cursor() as cur:
        cur.execute("SELECT 42")
        assert cur.fetchall() == (
            ("SELECT 42", "1"),
            (None, "2.5"),
            (None, "9.007199254741e+15"),
        )
        assert [d[0] for d in cur.description] == ["q", "n"]


def test_chained_to_a_mock_backend(script_file: ScriptFactory) -> None:
    """A front proxy with a read_query hook in front of a proxy that fakes a server."""
    front = script_file(
        """
        function read_query(packet)
          if packet:byte() == proxy.COM_QUERY and packet:find("rewrite me") then
            proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT 'rewritten'")
            return proxy.PROXY_SEND_QUERY
          end
        end
        """
    )
    with (
        run_lua_proxy(script_file(MOCK)) as mock,
        run_lua_proxy(front, mock.bound) as proxy,
        connect(proxy) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 'plain'")
        assert cur.fetchone() == ("SELECT 'plain'", "1")
        cur.execute("SELECT 'rewrite me'")
        assert cur.fetchone() == ("SELECT 'rewritten'", "1")
