"""The Lua state: Lua 5.1, require() of the built-in modules, and the proxy.* constants."""

from __future__ import annotations

import sys

import pytest

from lua_compat import PROXY_CONSTANTS, LuaRuntime, LuaUnavailableError

EXPECTED = {
    "PROXY_SEND_QUERY": 1,
    "PROXY_SEND_RESULT": 2,
    "PROXY_IGNORE_RESULT": 4,
    "MYSQLD_PACKET_OK": 0,
    "MYSQLD_PACKET_ERR": 255,
    "MYSQLD_PACKET_RAW": 250,
    "BACKEND_STATE_UNKNOWN": 0,
    "BACKEND_STATE_UP": 1,
    "BACKEND_STATE_DOWN": 2,
    "BACKEND_TYPE_UNKNOWN": 0,
    "BACKEND_TYPE_RW": 1,
    "BACKEND_TYPE_RO": 2,
    "PROXY_VERSION": 2053,
    "COM_SLEEP": 0,
    "COM_QUIT": 1,
    "COM_INIT_DB": 2,
    "COM_QUERY": 3,
    "COM_FIELD_LIST": 4,
    "COM_CREATE_DB": 5,
    "COM_DROP_DB": 6,
    "COM_REFRESH": 7,
    "COM_SHUTDOWN": 8,
    "COM_STATISTICS": 9,
    "COM_PROCESS_INFO": 10,
    "COM_CONNECT": 11,
    "COM_PROCESS_KILL": 12,
    "COM_DEBUG": 13,
    "COM_PING": 14,
    "COM_TIME": 15,
    "COM_DELAYED_INSERT": 16,
    "COM_CHANGE_USER": 17,
    "COM_BINLOG_DUMP": 18,
    "COM_TABLE_DUMP": 19,
    "COM_CONNECT_OUT": 20,
    "COM_REGISTER_SLAVE": 21,
    "COM_STMT_PREPARE": 22,
    "COM_STMT_EXECUTE": 23,
    "COM_STMT_SEND_LONG_DATA": 24,
    "COM_STMT_CLOSE": 25,
    "COM_STMT_RESET": 26,
    "COM_SET_OPTION": 27,
    "COM_STMT_FETCH": 28,
    "COM_DAEMON": 29,
    "MYSQL_TYPE_DECIMAL": 0,
    "MYSQL_TYPE_TINY": 1,
    "MYSQL_TYPE_SHORT": 2,
    "MYSQL_TYPE_LONG": 3,
    "MYSQL_TYPE_FLOAT": 4,
    "MYSQL_TYPE_DOUBLE": 5,
    "MYSQL_TYPE_NULL": 6,
    "MYSQL_TYPE_TIMESTAMP": 7,
    "MYSQL_TYPE_LONGLONG": 8,
    "MYSQL_TYPE_INT24": 9,
    "MYSQL_TYPE_DATE": 10,
    "MYSQL_TYPE_TIME": 11,
    "MYSQL_TYPE_DATETIME": 12,
    "MYSQL_TYPE_YEAR": 13,
    "MYSQL_TYPE_NEWDATE": 14,
    "MYSQL_TYPE_BIT": 16,
    "MYSQL_TYPE_NEWDECIMAL": 246,
    "MYSQL_TYPE_ENUM": 247,
    "MYSQL_TYPE_SET": 248,
    "MYSQL_TYPE_TINY_BLOB": 249,
    "MYSQL_TYPE_MEDIUM_BLOB": 250,
    "MYSQL_TYPE_LONG_BLOB": 251,
    "MYSQL_TYPE_BLOB": 252,
    "MYSQL_TYPE_VAR_STRING": 253,
    "MYSQL_TYPE_STRING": 254,
    "MYSQL_TYPE_GEOMETRY": 255,
}


def test_lua_version(lua: LuaRuntime) -> None:
    assert lua.eval("_VERSION") == b"Lua 5.1"
    assert lua.eval("type(setfenv) == 'function' and type(newproxy) == 'function'") is True


def test_constants_exact(lua: LuaRuntime) -> None:
    assert PROXY_CONSTANTS == EXPECTED
    for name, value in EXPECTED.items():
        assert lua.eval("proxy[...]", name.encode()) == value, name


def test_constants_are_raw_fields(lua: LuaRuntime) -> None:
    assert lua.eval("rawget(proxy, 'COM_QUERY')") == 3
    assert lua.eval("type(proxy.global) == 'table' and type(proxy.global.config)") == b"table"


@pytest.mark.parametrize(
    "name",
    ["MYSQLD_PACKET_EOF", "MYSQLD_PACKET_NULL", "MYSQL_TYPE_VARCHAR", "PROXY_SEND_NONE", "COM_END"],
)
def test_absent_constants_are_nil(lua: LuaRuntime, name: str) -> None:
    assert lua.eval("proxy[...] == nil", name.encode()) is True


def test_require_modules_and_globals() -> None:
    lua = LuaRuntime()  # fresh: the globals must not exist before require
    assert lua.eval("proto == nil and password == nil and tokenizer == nil") is True
    assert (
        lua.execute(
            """
        local p = require("mysql.proto")
        local w = require("mysql.password")
        local t = require("mysql.tokenizer")
        return p == proto and w == password and t == tokenizer
           and require("mysql.proto") == p
           and type(p.to_ok_packet) == "function"
           and type(w.scramble) == "function"
           and type(t.tokenize) == "function"
        """
        )
        is True
    )


def test_lua51_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lupa.lua51", None)
    with pytest.raises(LuaUnavailableError, match=r"lupa\.lua51"):
        LuaRuntime()


def test_script_style_usage(lua: LuaRuntime) -> None:
    """What a read_query hook does: check the command byte, tokenize, answer with proto."""
    script = b"""
    local tk = require("mysql.tokenizer")
    local proto = require("mysql.proto")
    function read_query(packet)
      if packet:byte() ~= proxy.COM_QUERY then return nil end
      local tokens = tk.tokenize(packet:sub(2))
      if tokens[1] and tokens[1].token_name == "TK_SQL_SELECT" then
        return proxy.PROXY_SEND_RESULT, proto.to_ok_packet({affected_rows = #tokens})
      end
      return proxy.PROXY_SEND_QUERY, proto.to_err_packet({errmsg = "no"})
    end
    """
    env = lua.eval("setmetatable({}, {__index = _G})")
    fn = lua.eval("loadstring(...)", script, b"/tmp/x.lua")
    lua.eval("setfenv(...)", fn, env)
    fn()
    read_query = env[b"read_query"]
    assert read_query(b"\x03select 1, 2") == (2, b"\x00\x04\x00\x00\x00\x00\x00")
    assert read_query(b"\x03update t") == (1, b"\xff\x00\x00#07000no")
    assert read_query(b"\x0e") is None
