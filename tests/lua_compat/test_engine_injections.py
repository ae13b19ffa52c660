"""proxy.queries, injections and their results, proxy.response encodings: a front
LuaProxy under test chained to a second LuaProxy whose script fakes a server."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pymysql
import pytest

from lua_compat.engine import LuaProxy
from tests.lua_compat.conftest import ScriptFactory, connect, run_lua_proxy

# The fake server: answers by the query text.
MOCK = r"""
local proto = require("mysql.proto")
function connect_server()
  proxy.response = { type = proxy.MYSQLD_PACKET_RAW,
                     packets = { proto.to_challenge_packet({}) } }
  return proxy.PROXY_SEND_RESULT
end
function read_query(packet)
  local q = packet:sub(2)
  if packet:byte() ~= proxy.COM_QUERY then
    proxy.response = { type = proxy.MYSQLD_PACKET_OK }
  elseif q:find("^ERR") then
    proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "mock says no",
                       errcode = 1054, sqlstate = "42S22" }
  elseif q:find("^WIDE") then
    local n = tonumber(q:match("%d+"))
    local fields, row = {}, {}
    for i = 1, n do fields[i] = { name = "c" .. i } row[i] = i end
    proxy.response = { type = proxy.MYSQLD_PACKET_OK,
                       resultset = { fields = fields, rows = { row } } }
  elseif q:find("^BIG") then
    local n = tonumber(q:match("%d+"))
    proxy.response = { type = proxy.MYSQLD_PACKET_OK,
                       resultset = { fields = { { name = "big" } },
                                     rows = { { string.rep("x", n) } } } }
  elseif q:find("^SELECT") or q:find("^select") then
    proxy.response = { type = proxy.MYSQLD_PACKET_OK,
      resultset = { fields = { { name = "q", type = proxy.MYSQL_TYPE_STRING },
                               { name = "n", type = proxy.MYSQL_TYPE_LONG } },
                    rows = { { q, 1 }, { nil, 2 } } } }
  else
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, affected_rows = 3, insert_id = 7 }
  end
  return proxy.PROXY_SEND_RESULT
end
"""


@pytest.fixture
def mock(script_file: ScriptFactory) -> Iterator[LuaProxy]:
    with run_lua_proxy(script_file(MOCK)) as proxy:
        yield proxy


def front(script_file: ScriptFactory, mock: LuaProxy, source: str, **kw: object):  # type: ignore[no-untyped-def]
    return run_lua_proxy(script_file(source), mock.bound, **kw)  # type: ignore[arg-type]


def test_streamed_injection_replaces_the_query(script_file: ScriptFactory, mock: LuaProxy) -> None:
    source = """
    function read_query(packet)
      if packet:byte() == proxy.COM_QUERY and packet:find("^.select") then
        proxy.queries:append(7, string.char(proxy.COM_QUERY) .. "SELECT 'injected'")
        return proxy.PROXY_SEND_QUERY
      end
    end
    function read_query_result(inj)
      local res = inj.resultset
      proxy.global.seen = { id = inj.id, query = inj.query, rows = res.row_count,
                            bytes = res.bytes, status = res.query_status,
                            affected = res.affected_rows,
                            raw_ok = pcall(function() return res.raw end),
                            err = select(2, pcall(function() return res.rows end)) }
      return proxy.PROXY_SEND_RESULT -- ignored: the result was streamed already
    end
    """
    with front(script_file, mock, source) as proxy:
        with connect(proxy) as conn, conn.cursor() as cur:
            cur.execute("select 1")
            assert cur.fetchall() == (("SELECT 'injected'", 1), (None, 2))
            cur.execute("SELECT 2")  # not injected (capital S)
            assert cur.fetchall() == (("SELECT 2", 1), (None, 2))
        seen = proxy.runtime.eval("proxy.global.seen")
        assert seen[b"id"] == 7
        assert seen[b"query"] == b"\x03SELECT 'injected'"
        assert seen[b"rows"] == 2
        # lenenc "SELECT 'injected'" (18) + lenenc "1" (2) + 4; NULL + "2" (3) + 4
        assert seen[b"bytes"] == 24 + 7
        assert seen[b"status"] == 0
        assert seen[b"affected"] is None
        assert seen[b"raw_ok"] is False
        assert b"isn't available if 'resultset_is_needed ~= true'" in seen[b"err"]


def test_buffered_injections_ignore_and_replace(script_file: ScriptFactory, mock: LuaProxy) -> None:
    source = """
    function read_query(packet)
      if packet:byte() ~= proxy.COM_QUERY then return end
      proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT 'first'",
                           { resultset_is_needed = true })
      proxy.queries:append(2, packet, { resultset_is_needed = true })
      return proxy.PROXY_SEND_QUERY
    end
    function read_query_result(inj)
      if inj.id == 1 then
        local res = inj.resultset
        local fields = res.fields
        local names = {}
        for i = 1, #fields do names[i] = fields[i].name .. ":" .. fields[i].type end
        local values = {}
        for row in res.rows do values[#values + 1] = tostring(row[1]) .. "/" .. tostring(row[2]) end
        proxy.global.first = table.concat(names, ",") .. " " .. table.concat(values, ",")
        proxy.global.field_type = type(fields) .. " " .. type(fields[1]) .. " "
                                  .. tostring(fields[0])
        return proxy.PROXY_IGNORE_RESULT
      end
      if inj.query:find("replace me") then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK,
                           resultset = { fields = { { name = "r" } }, rows = { { "replaced" } } } }
        return proxy.PROXY_SEND_RESULT
      end
    end
    """
    with front(script_file, mock, source) as proxy:
        with connect(proxy) as conn, conn.cursor() as cur:
            cur.execute("SELECT 'forwarded'")
            assert cur.fetchall() == (("SELECT 'forwarded'", 1), (None, 2))
            cur.execute("SELECT 'replace me'")
            assert cur.fetchall() == (("replaced",),)
            cur.execute("UPDATE t SET a = 1")
            assert (cur.rowcount, cur.lastrowid) == (3, 7)
        first = proxy.runtime.eval("proxy.global.first")
        assert first == b"q:254,n:3 SELECT 'first'/1,nil/2"
        assert proxy.runtime.eval("proxy.global.field_type") == b"userdata userdata nil"


def test_error_result_of_an_injection(script_file: ScriptFactory, mock: LuaProxy) -> None:
    source = """
    local proto = require("mysql.proto")
    function read_query(packet)
      if packet:byte() ~= proxy.COM_QUERY then return end
      proxy.queries:append(1, packet, { resultset_is_needed = true })
      return proxy.PROXY_SEND_QUERY
    end
    function read_query_result(inj)
      local res = inj.resultset
      if res.query_status == proxy.MYSQLD_PACKET_ERR then
        local err = proto.from_err_packet(res.raw)
        proxy.global.err = err.errcode .. " " .. err.sqlstate .. " " .. err.errmsg
        proxy.global.fields = #res.fields .. " " .. tostring(res.fields[0]) .. " "
                              .. tostring(res.fields[1])
      end
    end
    """
    with front(script_file, mock, source) as proxy:
        with connect(proxy) as conn, conn.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as info:
                cur.execute("ERR please")
            assert info.value.args == (1054, "mock says no")
            cur.execute("SELECT 'still fine'")
            assert cur.fetchone() == ("SELECT 'still fine'", 1)
        assert proxy.runtime.eval("proxy.global.err") == b"1054 42S22 mock says no"
        assert proxy.runtime.eval("proxy.global.fields") == b"0 nil nil"


def test_injection_appended_from_read_query_result(
    script_file: ScriptFactory, mock: LuaProxy
) -> None:
    source = """
    function read_query(packet)
      if not packet:find("SELECT 'x'") then return end
      proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT 'one'",
                           { resultset_is_needed = true })
      return proxy.PROXY_SEND_QUERY
    end
    function read_query_result(inj)
      if inj.id == 1 then
        local first
        for row in inj.resultset.rows do first = first or row[1] end
        proxy.queries:append(2, string.char(proxy.COM_QUERY) .. first .. " AND 'two'",
                             { resultset_is_needed = true })
        return proxy.PROXY_IGNORE_RESULT
      end
    end
    """
    with front(script_file, mock, source) as proxy, connect(proxy) as conn, conn.cursor() as cur:
        cur.execute("SELECT 'x'")
        assert cur.fetchall() == (("SELECT 'one' AND 'two'", 1), (None, 2))


def test_queued_injections_without_send_query_are_dropped(
    script_file: ScriptFactory, mock: LuaProxy
) -> None:
    source = """
    function read_query(packet)
      proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT 'never'")
      proxy.global.len = #proxy.queries .. " " .. proxy.queries:len()
    end
    function read_query_result(inj) proxy.global.called = true end
    """
    with front(script_file, mock, source) as proxy:
        with connect(proxy) as conn, conn.cursor() as cur:
            cur.execute("SELECT 'mine'")
            assert cur.fetchone() == ("SELECT 'mine'", 1)
        assert proxy.runtime.eval("proxy.global.len") == b"1 1"
        assert proxy.runtime.eval("proxy.global.called") is None


@pytest.mark.parametrize("columns", [249, 250, 251, 256, 300])
def test_wide_results_both_ways(script_file: ScriptFactory, mock: LuaProxy, columns: int) -> None:
    source = """
    function read_query(packet)
      if packet:byte() ~= proxy.COM_QUERY then return end
      proxy.queries:append(1, packet, { resultset_is_needed = true })
      return proxy.PROXY_SEND_QUERY
    end
    function read_query_result(inj)
      proxy.global.width = #inj.resultset.fields
    end
    """
    with front(script_file, mock, source) as proxy:
        with connect(proxy) as conn, conn.cursor() as cur:
            cur.execute(f"WIDE {columns}")
            row = cur.fetchone()
            assert len(row) == columns and row[-1] == str(columns)
        assert proxy.runtime.eval("proxy.global.width") == columns


def test_response_types(script_file: ScriptFactory) -> None:
    source = r"""
    function read_query(packet)
      local q = packet:sub(2)
      if packet:byte() ~= proxy.COM_QUERY or q:find("^SET") then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK }
      elseif q == "raw" then
        proxy.response = { type = proxy.MYSQLD_PACKET_RAW, packets = {
          "\001",
          "\003def\000\000\000\001a\000\012\008\000\032\000\000\000\253\002\000"
            .. "\000\000\000",
          "\254\000\000\002\000", "\001x", "\254\000\000\002\000" } }
      elseif q == "bad type" then
        proxy.response = { type = 25 }
      elseif q == "no errmsg" then
        proxy.response = { type = proxy.MYSQLD_PACKET_ERR }
      elseif q == "errcode" then
        proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "custom", errcode = "1234" }
      elseif q == "short sqlstate" then
        proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "s", sqlstate = "4" }
      elseif q == "nulls" then
        proxy.response = { type = "0", resultset = {
          fields = { { name = "a" }, { name = 12 }, { name = true } },
          rows = { { nil, "b", 3 }, { {}, true, 0.1 } } } }
      elseif q == "no fields" then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = {}, rows = {} } }
      elseif q == "ok" then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, affected_rows = "5", insert_id = 9 }
      end
      return proxy.PROXY_SEND_RESULT
    end
    function connect_server()
      proxy.response = { type = proxy.MYSQLD_PACKET_RAW,
                         packets = { require("mysql.proto").to_challenge_packet({}) } }
      return proxy.PROXY_SEND_RESULT
    end
    """
    with run_lua_proxy(script_file(source)) as proxy, connect(proxy) as conn, conn.cursor() as cur:
        cur.execute("raw")
        assert cur.fetchall() == (("x",),)
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("bad type")
        assert info.value.args == (
            1105,
            "(lua) handling proxy.response failed, check error-log",
        )
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("no errmsg")
        assert info.value.args == (1105, "(lua) proxy.response.errmsg is nil")
        with pytest.raises(pymysql.err.OperationalError) as info:
            cur.execute("errcode")
        assert info.value.args == (1234, "custom")
        cur.execute("nulls")
        assert cur.fetchall() == ((None, "b", "3"), (None, None, "0.1"))
        assert [d[0] for d in cur.description] == ["a", "12", "no-field-name"]
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("no fields")
        cur.execute("ok")
        assert (cur.rowcount, cur.lastrowid) == (5, 9)


def test_err_sqlstate_is_padded_to_five_bytes(script_file: ScriptFactory) -> None:
    source = r"""
    function connect_server()
      proxy.response = { type = proxy.MYSQLD_PACKET_RAW,
                         packets = { require("mysql.proto").to_challenge_packet({}) } }
      return proxy.PROXY_SEND_RESULT
    end
    function read_query(packet)
      proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "s", sqlstate = "4" }
      return proxy.PROXY_SEND_RESULT
    end
    """
    with run_lua_proxy(script_file(source)) as proxy:
        sock = login_raw(proxy)
        sock.sendall(b"\x02\x00\x00\x00\x03x")
        header = recv_exact(sock, 4)
        payload = recv_exact(sock, int.from_bytes(header[:3], "little"))
        assert header[3] == 1
        assert payload == b"\xff\x51\x04#47000s"


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_packet(sock: socket.socket) -> tuple[int, bytes]:
    header = recv_exact(sock, 4)
    return header[3], recv_exact(sock, int.from_bytes(header[:3], "little"))


def login_raw(proxy: LuaProxy) -> socket.socket:
    """Log in with a minimal 4.1 handshake response; returns the socket."""
    sock = socket.create_connection((proxy.bound[0].host, proxy.bound[0].port), timeout=10)
    read_packet(sock)
    caps = 0x200 | 0x8000 | 0x1
    payload = struct.pack("<IIB23s", caps, 1 << 24, 8, b"") + b"root\x00\x00"
    sock.sendall(len(payload).to_bytes(3, "little") + b"\x01" + payload)
    seq, ok = read_packet(sock)
    assert (seq, ok[:1]) == (2, b"\x00")
    return sock


def test_overlong_query_replaced_by_a_small_injection(
    script_file: ScriptFactory, mock: LuaProxy
) -> None:
    """A 17 MiB command comes in two packets (ids 0, 1): the answer starts at id 2 even
    though the server got a one-packet injection and answered from id 1."""
    source = """
    function read_query(packet)
      proxy.global.length = #packet
      proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT 'small'")
      return proxy.PROXY_SEND_QUERY
    end
    """
    with front(script_file, mock, source) as proxy:
        sock = login_raw(proxy)
        query = b"\x03SELECT '" + b"y" * (17 * 1024 * 1024) + b"'"
        sock.sendall(b"\xff\xff\xff\x00" + query[:0xFFFFFF])
        rest = query[0xFFFFFF:]
        sock.sendall(len(rest).to_bytes(3, "little") + b"\x01" + rest)
        ids = []
        eofs = 0
        while eofs < 2:
            seq, payload = read_packet(sock)
            ids.append(seq)
            eofs += payload[:1] == b"\xfe"
        assert ids == [2, 3, 4, 5, 6, 7, 8]
        assert proxy.runtime.eval("proxy.global.length") == len(query)


def test_overlong_result_and_query_pass_through(script_file: ScriptFactory, mock: LuaProxy) -> None:
    source = """
    function read_query(packet)
      proxy.global.length = math.max(proxy.global.length or 0, #packet)
    end
    """
    with front(script_file, mock, source) as proxy:
        with connect(proxy, max_allowed_packet=64 * 1024 * 1024) as conn, conn.cursor() as cur:
            n = 17 * 1024 * 1024
            cur.execute(f"BIG {n}")
            (value,) = cur.fetchone()
            assert value == "x" * n
            big = "SELECT '" + "z" * n + "'"
            cur.execute(big)
            assert cur.fetchone()[0] == big
        assert proxy.runtime.eval("proxy.global.length") == len(big) + 1
