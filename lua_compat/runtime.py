"""A Lua 5.1 state (lupa.lua51) set up like mysql-proxy 0.8's.

* ``require("mysql.proto")``, ``require("mysql.password")`` and
  ``require("mysql.tokenizer")`` are served from ``package.preload``; requiring one also
  sets the global of its short name (``proto``, ``password``, ``tokenizer``), as the C
  modules did.
* ``_G.proxy`` holds the constants of reference section 7 and ``proxy.global.config``.

Lua strings are bytes on the Python side (``encoding=None``): packets are binary.
"""

from __future__ import annotations

import importlib
import logging
import math
import struct
import time
from collections.abc import Callable
from typing import Any

from lua_compat.modules import chassis, password, proto, system, tokenizer

log = logging.getLogger(__name__)

COMMANDS = [
    "SLEEP",
    "QUIT",
    "INIT_DB",
    "QUERY",
    "FIELD_LIST",
    "CREATE_DB",
    "DROP_DB",
    "REFRESH",
    "SHUTDOWN",
    "STATISTICS",
    "PROCESS_INFO",
    "CONNECT",
    "PROCESS_KILL",
    "DEBUG",
    "PING",
    "TIME",
    "DELAYED_INSERT",
    "CHANGE_USER",
    "BINLOG_DUMP",
    "TABLE_DUMP",
    "CONNECT_OUT",
    "REGISTER_SLAVE",
    "STMT_PREPARE",
    "STMT_EXECUTE",
    "STMT_SEND_LONG_DATA",
    "STMT_CLOSE",
    "STMT_RESET",
    "SET_OPTION",
    "STMT_FETCH",
    "DAEMON",
]

COLUMN_TYPES = {
    "DECIMAL": 0,
    "TINY": 1,
    "SHORT": 2,
    "LONG": 3,
    "FLOAT": 4,
    "DOUBLE": 5,
    "NULL": 6,
    "TIMESTAMP": 7,
    "LONGLONG": 8,
    "INT24": 9,
    "DATE": 10,
    "TIME": 11,
    "DATETIME": 12,
    "YEAR": 13,
    "NEWDATE": 14,
    "BIT": 16,
    "NEWDECIMAL": 246,
    "ENUM": 247,
    "SET": 248,
    "TINY_BLOB": 249,
    "MEDIUM_BLOB": 250,
    "LONG_BLOB": 251,
    "BLOB": 252,
    "VAR_STRING": 253,
    "STRING": 254,
    "GEOMETRY": 255,
}

PROXY_VERSION = (0 << 16) | (8 << 8) | 5  # 0.8.5 -> 2053

PROXY_CONSTANTS: dict[str, int] = {
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
    "PROXY_VERSION": PROXY_VERSION,
    **{f"COM_{name}": i for i, name in enumerate(COMMANDS)},
    **{f"MYSQL_TYPE_{name}": v for name, v in COLUMN_TYPES.items()},
}


class HookBudget:
    """The wall-clock time left to the hook call running now (one per Lua state).

    Wall time, not CPU time: a hook that sleeps (``glib2.usleep``) or waits in a
    blocking call holds up the one event loop just as much as one that computes. The
    scope starts the budget around every hook call; the count hook in scope.py asks
    `overdue` every few thousand VM instructions, and ``glib2.usleep`` never sleeps
    past `remaining`. Outside a hook call nothing is limited (`deadline` is inf)."""

    __slots__ = ("capped_logged", "deadline", "seconds")

    def __init__(self) -> None:
        self.deadline = math.inf
        self.seconds = 0.0
        self.capped_logged = False

    def start(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds if seconds > 0 else math.inf
        self.capped_logged = False

    def stop(self) -> None:
        self.deadline = math.inf

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def overdue(self) -> float | None:
        """The limit in seconds once the running call is past it, else None."""
        if time.monotonic() > self.deadline:
            return self.seconds
        return None


class LuaUnavailableError(RuntimeError):
    """lupa, or its Lua 5.1 runtime, is not installed."""


def _lua51() -> Any:
    try:
        lua51 = importlib.import_module("lupa.lua51")
    except ImportError as exc:
        raise LuaUnavailableError(
            "mysql-proxy Lua scripts need lupa's Lua 5.1 runtime (lupa.lua51); "
            "install lupa>=2 with its bundled Lua 5.1"
        ) from exc
    return lua51


# The Lua halves of the modules. The chunk receives the Python functions table and the
# token-name table; Python functions return (result, nil) or (nil, message).
_BOOTSTRAP = b"""
local py, token_names = ...

local function call(f, ...)
  local r, e = f(...)
  if e ~= nil then error(e, 3) end
  return r
end

-- mysql.proto ---------------------------------------------------------------------
local proto_funcs = {}
for _, name in ipairs({"to_err_packet", "to_ok_packet", "to_eof_packet",
                       "to_challenge_packet", "to_response_packet",
                       "to_masterinfo_string"}) do
  local f = py.proto[name]
  proto_funcs[name] = function(t)
    if type(t) ~= "table" then
      error(name .. "() expects a table, got " .. type(t), 2)
    end
    return call(f, t)
  end
end
for _, name in ipairs({"from_err_packet", "from_ok_packet", "from_eof_packet",
                       "from_challenge_packet", "from_response_packet",
                       "from_stmt_prepare_packet", "from_stmt_prepare_ok_packet",
                       "stmt_id_from_stmt_execute_packet", "from_stmt_close_packet",
                       "from_stmt_execute_packet", "from_masterinfo_string"}) do
  local f = py.proto[name]
  proto_funcs[name] = function(s, ...)
    if type(s) ~= "string" then
      error(name .. "() expects a string, got " .. type(s), 2)
    end
    return call(f, s, ...)
  end
end

package.preload["mysql.proto"] = function()
  local m = {}
  for k, v in pairs(proto_funcs) do m[k] = v end
  proto = m
  return m
end

-- mysql.password ------------------------------------------------------------------
package.preload["mysql.password"] = function()
  local function strings(name, n, ...)
    for i = 1, n do
      if type((select(i, ...))) ~= "string" then
        error(name .. "(): argument #" .. i .. " has to be a string", 3)
      end
    end
  end
  local m = {
    hash = function(...) strings("hash", 1, ...) return call(py.password.hash, ...) end,
    scramble = function(...)
      strings("scramble", 2, ...) return call(py.password.scramble, ...)
    end,
    unscramble = function(...)
      strings("unscramble", 3, ...) return call(py.password.unscramble, ...)
    end,
    check = function(...) strings("check", 3, ...) return call(py.password.check, ...) end,
  }
  password = m
  return m
end

-- mysql.tokenizer -----------------------------------------------------------------
local token_ids = {}
for id, name in pairs(token_names) do token_ids[name] = id end

local function new_token(id, text)
  local u = newproxy(true)
  local mt = getmetatable(u)
  mt.__index = function(_, key)
    if key == "text" then return text
    elseif key == "token_id" then return id
    elseif key == "token_name" then return token_names[id]
    end
    error("tokens[...] has no " .. tostring(key) .. " field", 2)
  end
  mt.__newindex = function(_, key)
    error("tokens[...] is read-only, can't set " .. tostring(key), 2)
  end
  mt.__tostring = function() return "token(" .. token_names[id] .. ")" end
  return u
end

local function tokenize(sql)
  if type(sql) ~= "string" then
    error("tokenize() expects a string, got " .. type(sql), 2)
  end
  local flat = call(py.tokenizer.tokenize, sql)
  local list, n = {}, 0
  for i = 1, #flat, 2 do
    n = n + 1
    list[n] = new_token(flat[i], flat[i + 1])
  end
  local u = newproxy(true)
  local mt = getmetatable(u)
  mt.__len = function() return n end
  mt.__index = function(_, i)
    if type(i) ~= "number" then return nil end
    return list[i]
  end
  mt.__newindex = function(_, i, v)
    if v ~= nil then error("tokens[...] can only be set to nil", 2) end
    if type(i) == "number" then list[i] = nil end
  end
  mt.__tostring = function() return "tokens(" .. n .. ")" end
  return u
end

local leading_keep = {COMMIT = true, ROLLBACK = true, BEGIN = true, START = true,
                      TRANSACTION = true}

-- normalize(tokens): the query with literal values replaced by "?", as
-- lib/proxy/tokenizer.lua's normalize describes it (reference 8.7).
local function normalize(tokens)
  local out = {}
  local leading = true
  for i = 1, #tokens do
    local tk = tokens[i]
    if tk ~= nil then
      local name, text = tk.token_name, tk.text
      if name == "TK_COMMENT" then
        -- dropped, and does not end the leading run
      else
        if name == "TK_COMMENT_MYSQL" then
          out[#out + 1] = "/*!" .. text .. "*/"
        elseif name == "TK_LITERAL" then
          if text:sub(1, 1) == "@" then
            out[#out + 1] = text
          elseif leading and leading_keep[text:upper()] then
            out[#out + 1] = text
          else
            out[#out + 1] = "`" .. text .. "`"
          end
        elseif name == "TK_STRING" or name == "TK_INTEGER" or name == "TK_FLOAT" then
          out[#out + 1] = "?"
        elseif name:sub(1, 7) == "TK_SQL_" then
          out[#out + 1] = text:upper()
        else
          out[#out + 1] = text
        end
        if not (name == "TK_LITERAL" and leading_keep[text:upper()]) then
          leading = false
        end
      end
    end
  end
  return table.concat(out, " ")
end

package.preload["mysql.tokenizer"] = function()
  local names, ids = {}, {}
  for k, v in pairs(token_names) do names[k] = v end
  for k, v in pairs(token_ids) do ids[k] = v end
  local m = {
    tokenize = tokenize,
    normalize = normalize,
    token_names = names,  -- token_id -> token_name (extension)
    token_ids = ids,      -- token_name -> token_id (extension)
  }
  tokenizer = m
  return m
end
"""


def _guard(fn: Callable[..., Any]) -> Callable[..., tuple[Any, Any]]:
    """Turn Python exceptions into (nil, message) so the Lua side can raise them."""

    def wrapper(*args: Any) -> tuple[Any, Any]:
        try:
            return fn(*args), None
        except (ValueError, TypeError, OverflowError, struct.error) as exc:
            return None, str(exc).encode()

    return wrapper


class LuaRuntime:
    """The process-wide Lua 5.1 state of mysql-proxy, with its modules and constants."""

    def __init__(self) -> None:
        lua51 = _lua51()
        self.lua: Any = lua51.LuaRuntime(
            encoding=None, unpack_returned_tuples=True, register_eval=False
        )
        self.hook_budget = HookBudget()
        self._install_modules()
        self._install_proxy_table()

    # -- helpers for the Python halves ------------------------------------------------

    def _table(self, value: Any) -> Any:
        if isinstance(value, dict):
            return self.lua.table_from(
                {
                    (k.encode() if isinstance(k, str) else k): self._table(v)
                    for k, v in value.items()
                }
            )
        if isinstance(value, list):
            return self.lua.table_from([self._table(v) for v in value])
        return value

    @staticmethod
    def _fields(table: Any) -> dict[str, Any]:
        return {k.decode("utf-8", "replace"): v for k, v in table.items() if isinstance(k, bytes)}

    def _decoder(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def decode(s: Any, *rest: Any) -> Any:
            return self._table(fn(s, *rest))

        return decode

    def _encoder(self, fn: Callable[[proto.Table], bytes]) -> Callable[[Any], bytes]:
        def encode(t: Any) -> bytes:
            return fn(self._fields(t))

        return encode

    def _tokenize(self, sql: bytes) -> Any:
        flat: list[Any] = []
        for token_id, text in tokenizer.tokenize(sql):
            flat += [token_id, text]
        return self.lua.table_from(flat)

    def _install_modules(self) -> None:
        proto_fns: dict[bytes, Any] = {}
        for name in (
            "to_err_packet",
            "to_ok_packet",
            "to_eof_packet",
            "to_challenge_packet",
            "to_response_packet",
            "to_masterinfo_string",
        ):
            proto_fns[name.encode()] = _guard(self._encoder(getattr(proto, name)))
        for name in (
            "from_err_packet",
            "from_ok_packet",
            "from_eof_packet",
            "from_challenge_packet",
            "from_response_packet",
            "from_stmt_prepare_packet",
            "from_stmt_prepare_ok_packet",
            "stmt_id_from_stmt_execute_packet",
            "from_stmt_close_packet",
            "from_stmt_execute_packet",
            "from_masterinfo_string",
        ):
            proto_fns[name.encode()] = _guard(self._decoder(getattr(proto, name)))
        password_fns = {
            name.encode(): _guard(getattr(password, name))
            for name in ("hash", "scramble", "unscramble", "check")
        }
        py = self.lua.table_from(
            {
                b"proto": self.lua.table_from(proto_fns),
                b"password": self.lua.table_from(password_fns),
                b"tokenizer": self.lua.table_from({b"tokenize": _guard(self._tokenize)}),
            }
        )
        names = self.lua.table_from(
            {i: name.encode() for i, name in enumerate(tokenizer.TOKEN_NAMES)}
        )
        self.lua.execute(_BOOTSTRAP, py, names)
        # chassis, glib2, posix, lfs, lpeg (reference 8.4-8.6); the CLI fills in
        # self.chassis (basedir, shutdown) once it knows them.
        self.chassis = chassis.ChassisContext()
        chassis.install(self.lua, self.chassis)
        system.install(self.lua, self.hook_budget)

    def _install_proxy_table(self) -> None:
        constants = {k.encode(): v for k, v in PROXY_CONSTANTS.items()}
        proxy = self.lua.table_from(constants)
        proxy[b"global"] = self.lua.table_from({b"config": self.lua.table()})
        self.lua.globals()[b"proxy"] = proxy

    # -- public --------------------------------------------------------------------------

    def execute(self, code: str | bytes, *args: Any) -> Any:
        """Run a Lua chunk (text) with arguments; returns its results."""
        if isinstance(code, str):
            code = code.encode()
        return self.lua.execute(code, *args)

    def eval(self, expr: str | bytes, *args: Any) -> Any:
        """Evaluate a Lua expression."""
        if isinstance(expr, str):
            expr = expr.encode()
        return self.lua.execute(b"return " + expr, *args)

    def require(self, name: str) -> Any:
        return self.lua.require(name.encode())
