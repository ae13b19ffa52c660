"""Script loading and the per-connection script scope (reference sections 1.2-1.5).

A script file is compiled as ``"return function()" .. source .. "end\\n"`` with the plain
path as chunk name, so line numbers and tracebacks are those of the file. The compiled
factory is cached per path with the file's (mtime, size) and recompiled when either
changes: the first hook of every new connection stats the file (hot reload).

Each connection gets a ``Scope``: a fresh closure of the script body whose environment
``E`` falls back to ``_G`` (globals assigned by the script are per connection), and a
table ``P`` (``E.__proxy``) holding ``queries``, ``connection`` and ``response``. The
shared ``_G.proxy`` table's metatable is pointed at the calling connection's ``P``
before every hook call, so ``proxy.queries`` means this connection's queue while
``proxy.global`` and the constants stay shared.

Hooks are called directly from Python (not through a Lua ``pcall``), so a traceback
shows the script's own frames only. A hook that runs longer than the time limit
(wall-clock time: sleeping counts) is stopped by a count hook that raises a Lua error, and
``glib2.usleep`` never sleeps past it. A blocking call in C or in Python (``io.read``
on a pipe, ``os.execute``) cannot be interrupted: the limit strikes once it returns.

Public API (also used by the admin plugin)::

    scripts = LuaScripts(runtime, hook_time_limit=5.0)
    scope = scripts.new_scope("/path/script.lua", queries=ud, connection=ud)
    decision = scope.call_hook("read_query", packet)   # int, or None (no decision)
    payloads = scope.response_payloads()               # proxy.response as payloads
                                                       # (or the handling-failure ERR)
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

from lua_compat import wire
from lua_compat.runtime import LuaRuntime

try:
    from lupa.lua51 import lua_type as lupa_lua_type
except ImportError:  # LuaRuntime() says what is missing

    def lupa_lua_type(obj: object) -> str | None:
        return None


log = logging.getLogger("lua_compat")

DEFAULT_HOOK_TIME_LIMIT = 5.0
# How many Lua VM instructions run between two looks at the clock: often enough to stop
# a loop within milliseconds of the limit, rarely enough to cost well under 1%.
_TIME_CHECK_INSTRUCTIONS = 9973  # prime: less likely in step with a loop

_SCOPE_LUA = b"""
local overdue = ...
local proxy = proxy
local proxy_mt = {}
setmetatable(proxy, proxy_mt)
-- The time limit: Python starts the state's HookBudget (wall-clock time) around every
-- hook call and bumps limit.call before and after it (no clock read in Lua on the hot
-- path). The count hook asks overdue() and raises once the call has run past its
-- limit. From then on it fires on every instruction, so a loop that catches errors
-- (pcall) cannot dodge it by always being inside the pcall when the hook comes round.
local limit = {call = 0}
local lib = {limit = limit}
local seen_call, escalated = -1, false
local COUNT = %d
local hook
hook = function()
  if limit.call ~= seen_call then
    seen_call = limit.call
    if escalated then
      escalated = false
      debug.sethook(hook, "", COUNT)
    end
  end
  local seconds = overdue()
  if seconds then
    if not escalated then
      escalated = true
      debug.sethook(hook, "", 1)
    end
    error(string.format("hook ran longer than its time limit of %%gs", seconds), 2)
  end
end
debug.sethook(hook, "", COUNT)

function lib.compile(src, path)
  return loadstring("return function()" .. src .. "end\\n", path)
end

function lib.new_env(factory, P)
  local body = factory()
  local E = setmetatable({}, {__index = _G})
  E.__proxy = P
  setfenv(body, E)
  return body, E
end

local pointed = nil

function lib.point(P)
  if pointed ~= P then
    proxy_mt.__index = P
    proxy_mt.__newindex = P
    pointed = P
  end
end

function lib.forget(P)
  if pointed == P then pointed = nil end
end

-- Everything before a hook call in one call into Lua (each crossing costs): start the
-- time limit's count, look the hook up in E, reset proxy.response (read_query), point
-- the proxy metatable at P. Returns what E[name] holds; the hook itself is then called
-- from Python so that tracebacks show the script's frames only.
function lib.prepare(E, P, name, call, reset)
  limit.call = call
  local fn = E[name]
  if type(fn) ~= "function" then return fn end
  if reset then P.response = {} end
  if pointed ~= P then
    proxy_mt.__index = P
    proxy_mt.__newindex = P
    pointed = P
  end
  return fn
end

function lib.new_P(queries, connection)
  return {queries = queries, connection = connection, response = {}}
end

function lib.reset_response(P)
  P.response = {}
end

-- A userdata whose fields, assignments and length are answered by Python callables.
-- With `cache` (a table), keys found there are answered without calling Python: the
-- engine keeps the hot, seldom changing ones there (proxy.connection.server, the
-- server's thread_id: log.lua reads them for every query).
function lib.object(index, newindex, len, name, cache)
  local u = newproxy(true)
  local mt = getmetatable(u)
  if cache then
    mt.__index = function(_, k)
      local v = cache[k]
      if v ~= nil then return v end
      local err
      v, err = index(k)
      if err ~= nil then error(err, 2) end
      return v
    end
  else
    mt.__index = function(_, k)
      local v, err = index(k)
      if err ~= nil then error(err, 2) end
      return v
    end
  end
  if newindex then
    mt.__newindex = function(_, k, v) local err = newindex(k, v)
      if err then error(err, 2) end end
  else
    mt.__newindex = function(_, k) error(name .. "." .. tostring(k) .. " is not writable", 2) end
  end
  if len then mt.__len = function() return len() end end
  mt.__tostring = function() return name end
  return u
end

-- A Python callable as a Lua function; Python returns (nil, message) to raise.
function lib.method(fn)
  return function(...)
    local v, err = fn(...)
    if err ~= nil then error(err, 2) end
    return v
  end
end

-- proxy.response read with the C API's rules: lua_isnumber accepts numeric strings,
-- lua_isstring accepts numbers, numbers become text as %%.14g (tostring does that).
local function isnumber(v)
  local t = type(v)
  if t == "number" then return v end
  if t == "string" then return tonumber(v) end
  return nil
end
local function isstring(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  return nil
end

-- Returns a description table, or nil and a message (handling failure).
function lib.read_response(r)
  if type(r) ~= "table" then return nil, "proxy.response isn't a table" end
  if r.type == nil then return nil, "proxy.response.type isn't set" end
  local kind = isnumber(r.type)
  if kind == nil then return nil, "proxy.response.type isn't a number" end
  if kind == 0 then
    local rs = r.resultset
    if type(rs) ~= "table" then
      return {kind = "ok", affected_rows = isnumber(r.affected_rows) or 0,
              insert_id = isnumber(r.insert_id) or 0}
    end
    local fields, rows = rs.fields, rs.rows
    if type(fields) ~= "table" then return nil, "proxy.response.resultset.fields isn't a table" end
    if type(rows) ~= "table" then return nil, "proxy.response.resultset.rows isn't a table" end
    local names, types = {}, {}
    local n = 0
    while true do
      local f = fields[n + 1]
      if f == nil then break end
      if type(f) ~= "table" then
        return nil, "proxy.response.resultset.fields[" .. (n + 1) .. "] isn't a table"
      end
      n = n + 1
      local name = isstring(f.name)
      if name == nil then
        name = "no-field-name"
      end
      names[n] = name
      types[n] = isnumber(f.type) or 254
    end
    if n == 0 then return nil, "proxy.response.resultset.fields is empty" end
    local out = {}
    local i = 0
    while true do
      local row = rows[i + 1]
      if row == nil then break end
      if type(row) ~= "table" then
        return nil, "proxy.response.resultset.rows[" .. (i + 1) .. "] isn't a table"
      end
      i = i + 1
      local cells = {}
      for j = 1, n do
        local v = isstring(row[j])
        if v == nil then v = false end
        cells[j] = v
      end
      out[i] = cells
    end
    return {kind = "resultset", names = names, types = types, n = n, rows = out, nrows = i}
  elseif kind == 255 then
    local msg = isstring(r.errmsg)
    if msg == nil then
      return {kind = "err", errmsg = "(lua) proxy.response.errmsg is nil", errcode = 1105,
              sqlstate = "07000"}
    end
    local code = isnumber(r.errcode) or 1105
    local state = isstring(r.sqlstate)
    return {kind = "err", errmsg = msg, errcode = code, sqlstate = state}
  elseif kind == 250 then
    local packets = r.packets
    if type(packets) ~= "table" then return nil, "proxy.response.packets isn't a table" end
    local out = {}
    local i = 0
    while true do
      local p = packets[i + 1]
      if p == nil then break end
      local s = isstring(p)
      if s == nil then return nil, "proxy.response.packets[" .. (i + 1) .. "] isn't a string" end
      i = i + 1
      out[i] = s
    end
    return {kind = "raw", packets = out, n = i}
  end
  return nil, "proxy.response.type is unknown: " .. tostring(r.type)
end

return lib
"""

# Numbers the hook calls for the time limit (shared: LuaScripts of one Lua state, the
# proxy's and the admin plugin's, must never hand out the same number twice in a row).
_CALLS = itertools.count(1)

_HOOK_KEYS = {
    name: name.encode()
    for name in (
        "connect_server",
        "read_handshake",
        "read_auth",
        "read_auth_result",
        "read_query",
        "read_query_result",
        "disconnect_client",
    )
}

# Hook return values (reference 2.1).
PROXY_SEND_QUERY = 1
PROXY_SEND_RESULT = 2
PROXY_IGNORE_RESULT = 4


class ScriptLoadError(Exception):
    """The script file could not be read or compiled (reference 2.7)."""


class ScriptExecuteError(Exception):
    """The script body raised while running for a new connection (reference 2.7)."""


class ResponseError(Exception):
    """proxy.response cannot be turned into packets (reference 3, handling failure)."""


@dataclass(slots=True)
class _Compiled:
    mtime: float
    size: int
    factory: Any


def _lua_number(value: Any) -> float | None:
    """Lua's lua_isnumber/lua_tonumber on a value lupa handed over."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, bytes):
        text = value.strip()
        try:
            if text[:2].lower() == b"0x" or text[:3].lower() == b"-0x":
                return int(text, 16)
            return float(text)
        except ValueError:
            return None
    return None


class LuaScripts:
    """The compiled scripts of one Lua state, and the scope plumbing in it."""

    def __init__(self, runtime: LuaRuntime, hook_time_limit: float = DEFAULT_HOOK_TIME_LIMIT):
        self.runtime = runtime
        self.lua = runtime.lua
        self.hook_time_limit = hook_time_limit
        lib = getattr(runtime, "_scope_lib", None)
        if lib is None:
            lib = runtime.lua.execute(
                _SCOPE_LUA % _TIME_CHECK_INSTRUCTIONS, runtime.hook_budget.overdue
            )
            runtime._scope_lib = lib  # type: ignore[attr-defined]
        self.lib = lib
        self._limit = lib[b"limit"]
        self.budget = runtime.hook_budget
        self._point = lib[b"point"]
        self._forget = lib[b"forget"]
        self._prepare = lib[b"prepare"]
        self._reset_response = lib[b"reset_response"]
        self._read_response = lib[b"read_response"]
        self.make_object = lib[b"object"]
        self.make_method = lib[b"method"]
        self._new_p = lib[b"new_P"]
        self._new_env = lib[b"new_env"]
        self._compile = lib[b"compile"]
        self.lua_type = runtime.lua.eval(b"type")
        self._cache: dict[str, _Compiled] = {}

    def load(self, path: str) -> Any:
        """The factory for `path`, recompiled if the file changed. Raises ScriptLoadError."""
        try:
            st = os.stat(path)
        except OSError as exc:
            self._cache.pop(path, None)
            raise ScriptLoadError(f"{path}: {exc.strerror or exc}") from exc
        cached = self._cache.get(path)
        if cached is not None and cached.mtime == st.st_mtime and cached.size == st.st_size:
            return cached.factory
        try:
            with open(path, "rb") as f:
                source = f.read()
        except OSError as exc:
            raise ScriptLoadError(f"{path}: {exc.strerror or exc}") from exc
        result = self._compile(source, path.encode())
        factory, message = result if isinstance(result, tuple) else (result, None)
        if factory is None:
            raise ScriptLoadError(_text(message))
        self._cache[path] = _Compiled(st.st_mtime, st.st_size, factory)
        if cached is not None:
            log.info("script %s changed: reloaded", path)
        return factory

    def new_scope(self, path: str | None, queries: Any = None, connection: Any = None) -> Scope:
        return Scope(self, path, queries, connection)

    def point(self, proxy_table: Any) -> None:
        """Point the shared proxy metatable at this P (the Lua side remembers which P
        it points at, for every LuaScripts of the state: proxy and admin plugin)."""
        self._point(proxy_table)

    def forget(self, proxy_table: Any) -> None:
        self._forget(proxy_table)

    def read_response(self, response: Any) -> Any:
        # proxy.response may hold tables with metamethods: script code, so time-limited.
        self.budget.start(self.hook_time_limit)
        try:
            result = self._read_response(response)
        finally:
            self.budget.stop()
        desc, message = result if isinstance(result, tuple) else (result, None)
        if desc is None:
            raise ResponseError(_text(message))
        return desc


def _lua_type(value: Any) -> str:
    """type() of a value lupa handed over, without a call into Lua."""
    if value is None:
        return "nil"
    kind = lupa_lua_type(value)
    if kind is not None:
        return str(kind)
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, bytes) else "userdata"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class Scope:
    """One connection's view of the script: environment E, table P, and the hooks."""

    def __init__(self, scripts: LuaScripts, path: str | None, queries: Any, connection: Any):
        self.scripts = scripts
        self.path = path
        self.proxy_table: Any = scripts._new_p(queries, connection)
        self.env: Any = None
        self.loaded = False
        self.last_error: str | None = None
        self.timed_out = False
        self._hooks: dict[bytes, Any] = {}

    @property
    def script_name(self) -> str:
        return self.path or "(no script)"

    def ensure_loaded(self) -> None:
        """Load the script and run its body once for this connection (on the first
        hook). Raises ScriptLoadError / ScriptExecuteError; a later call retries."""
        if self.loaded:
            return
        if self.path is None:
            self.loaded = True
            return
        try:
            factory = self.scripts.load(self.path)
        except ScriptLoadError as exc:
            log.critical("lua script %s failed to load: %s", self.path, exc)
            raise
        body, env = self.scripts._new_env(factory, self.proxy_table)
        self.scripts.point(self.proxy_table)
        ok, message = self._run(body)
        if not ok:
            log.critical("lua script %s failed to execute: %s", self.path, message)
            raise ScriptExecuteError(message)
        self.env = env
        self.loaded = True

    def _run(self, fn: Any, *args: Any, counted: bool = False) -> tuple[bool, Any]:
        """Call fn; `counted`: prepare() has started the time limit's count already."""
        scripts = self.scripts
        limit = scripts._limit
        if not counted:
            limit[b"call"] = next(_CALLS)
        budget = scripts.budget
        budget.start(scripts.hook_time_limit)
        try:
            return True, fn(*args)
        except Exception as exc:  # a Lua error, or a Python error raised inside Lua
            message = str(exc)
            self.timed_out = "longer than its time limit" in message
            return False, message
        finally:
            budget.stop()
            limit[b"call"] = next(_CALLS)

    def hook(self, name: str) -> Any:
        """The hook function of that name in E (falling back to _G), or None."""
        if self.env is None:
            return None
        fn = self.env[name.encode()]
        if fn is None:
            return None
        kind = _lua_type(fn)
        if kind != "function":
            log.critical("(%s) %s is a %s, not a function: ignored", name, name, kind)
            return None
        return fn

    def has_hook(self, name: str) -> bool:
        self.ensure_loaded()
        return self.hook(name) is not None

    def call_hook(self, name: str, *args: Any, reset_response: bool = False) -> int | None:
        """Call hook `name` if the script defines it. Returns the decision (a number) or
        None. Load and execute failures raise; an error in the hook, or anything else
        raised while calling it or reading its return value, is logged, leaves
        `last_error` (and `timed_out`) set, and returns None (no decision); inf and nan
        are no decision either. With reset_response, proxy.response is set to {} first
        (read_query; unobservable without the hook)."""
        self.ensure_loaded()
        self.last_error = None
        self.timed_out = False
        env = self.env
        if env is None:
            return None
        try:
            return self._call(name, env, args, reset_response)
        except Exception as exc:  # e.g. a _G metatable (strict.lua) refusing the look-up
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("(%s) calling the hook failed: no decision", name)
            return None

    def _call(self, name: str, env: Any, args: tuple[Any, ...], reset_response: bool) -> int | None:
        key = _HOOK_KEYS.get(name) or name.encode()
        fn = self.scripts._prepare(env, self.proxy_table, key, next(_CALLS), reset_response)
        if fn is None:
            return None
        kind = _lua_type(fn)
        if kind != "function":
            log.critical("(%s) %s is a %s, not a function: ignored", name, name, kind)
            return None
        ok, result = self._run(fn, *args, counted=True)
        if not ok:
            self.last_error = result
            log.critical("(%s) %s", name, result)
            return None
        if isinstance(result, tuple):
            result = result[0] if result else None
        number = _lua_number(result)
        if number is None:
            return None
        if not math.isfinite(number):  # 1/0, 0/0: Lua numbers, but no decision
            log.critical("(%s) returned %s: treated as no decision", name, number)
            return None
        return int(number)

    def reset_for_query(self) -> None:
        """proxy.response = {} (only ever before read_query, reference 1.3)."""
        self.scripts._reset_response(self.proxy_table)

    @property
    def response(self) -> Any:
        return self.proxy_table[b"response"]

    def read_response(self) -> Any:
        return self.scripts.read_response(self.response)

    def response_payloads(self) -> list[bytes]:
        """proxy.response as payloads, or the ERR of a handling failure (reference 3).
        Any exception counts as one: a table the reader refuses (ResponseError), a Lua
        error from a metamethod, a number Python cannot convert (1/0 as affected_rows)."""
        try:
            return wire.response_payloads(self.read_response())
        except ResponseError as exc:
            log.critical("(%s) handling proxy.response failed: %s", self.script_name, exc)
        except Exception as exc:
            log.critical("(%s) handling proxy.response failed: %r", self.script_name, exc)
        return [wire.err_payload(wire.ER_UNKNOWN_ERROR, wire.RESPONSE_FAILED)]

    def close(self) -> None:
        self.scripts.forget(self.proxy_table)
        self.env = None
        self._hooks.clear()
