"""chassis: the mysql-proxy process as seen from Lua (reference section 8.4).

``require("chassis")`` gives ``log(level, msg)`` and its shortcuts, ``set_shutdown()``,
``get_stats([name])`` and ``mem_profile()``, sets the global ``chassis``, and, as the C
module did, moves the global ``print`` to ``os.print`` and makes ``print`` log at the
``message`` level.

Log lines carry ``(source:line)`` of the first calling chunk whose name is a file path
(starts with ``/`` or ``@``), with the proxy's basedir stripped, so the same script logs
the same prefix wherever the proxy is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("lua_compat.chassis")

# GLib's levels above Python's: "error" is the most severe (GLib aborts on it, we do
# not), "message" sits between warning and info. The admin and CLI code share these.
LEVEL_ERROR = 60
LEVEL_MESSAGE = 25
logging.addLevelName(LEVEL_ERROR, "ERROR!")
logging.addLevelName(LEVEL_MESSAGE, "MESSAGE")

LEVELS: dict[str, int] = {
    "error": LEVEL_ERROR,
    "critical": logging.CRITICAL,
    "warning": logging.WARNING,
    "message": LEVEL_MESSAGE,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


@dataclass
class ChassisContext:
    """What the chassis module needs from the running program; the CLI fills it in."""

    basedir: str | None = None
    shutdown: Callable[[], None] | None = None
    logger: logging.Logger = field(default_factory=lambda: log)


_BOOTSTRAP = b"""
local py = ...
local G = _G
local getinfo = debug.getinfo
local tostring, type, error, select = tostring, type, error, select

local level_names = {error = true, critical = true, warning = true, message = true,
                     info = true, debug = true}

-- The first caller (from stack level `depth` up, at most 10 frames) whose chunk name
-- is a file path; else the first caller's short_src. Same walk as the C module.
local function where(depth)
  local first_src, first_line = "unknown", -1
  for lvl = depth, depth + 9 do
    local ar = getinfo(lvl, "Sl")
    if not ar then break end
    if lvl == depth then first_src, first_line = ar.short_src, ar.currentline end
    local s = ar.source
    local c = s:sub(1, 1)
    if c == "@" or c == "/" then
      if c == "@" then s = s:sub(2) end
      return py.strip_basedir(s), ar.currentline
    end
  end
  return first_src, first_line
end

local function message_arg(fname, argn, v)
  if v == nil then return "nil" end
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  error("bad argument #" .. argn .. " to '" .. fname .. "' (string expected, got " .. t .. ")", 3)
end

local function emit(level, msg, src, line)
  py.log(level, "(" .. src .. ":" .. tostring(line) .. ") " .. msg)
end

local chassis = {}

function chassis.log(level, msg)
  if level == nil then
    level = "message"
  elseif type(level) ~= "string" or not level_names[level] then
    error("bad argument #1 to 'log' (invalid option '" .. tostring(level) .. "')", 2)
  end
  msg = message_arg("log", 2, msg)
  local src, line = where(3)
  emit(level, msg, src, line)
end

local function shortcut(level)
  return function(msg)
    msg = message_arg(level, 1, msg)
    local src, line = where(3)
    emit(level, msg, src, line)
  end
end
-- no chassis.error: GLib's error level aborts the process
chassis.critical = shortcut("critical")
chassis.warning = shortcut("warning")
chassis.message = shortcut("message")
chassis.info = shortcut("info")
chassis.debug = shortcut("debug")

function chassis.set_shutdown()
  py.shutdown()
end

local mem_max = 0
function chassis.get_stats(...)
  local n = select("#", ...)
  if n > 1 then
    error("bad argument #2 to 'get_stats' (currently only zero or one arguments are allowed)", 2)
  end
  if n == 1 then
    local name = ...
    if type(name) ~= "string" and type(name) ~= "number" then
      error("bad argument #1 to 'get_stats' (string expected, got " .. type(name) .. ")", 2)
    end
    -- 0.8.5 only looks the name up among plugins that keep stats, and none does
    return nil
  end
  local bytes = math.floor(collectgarbage("count") * 1024)
  if bytes > mem_max then mem_max = bytes end
  return {chassis = {lua_mem_alloc = 0, lua_mem_free = 0,
                     lua_mem_bytes = bytes, lua_mem_bytes_max = mem_max}}
end

function chassis.mem_profile() end

chassis._COPYRIGHT = "mysqlproxy (MIT); API of mysql-proxy 0.8's chassis module"
chassis._DESCRIPTION = "export chassis-functions as chassis.*"
chassis._VERSION = "LuaChassis 0.2"

package.preload["chassis"] = function()
  local m = {}
  for k, v in pairs(chassis) do m[k] = v end
  G.chassis = m
  -- move print aside once, even if the module is required again after a reset
  if rawget(G.os, "print") == nil then
    G.os.print = G.print
  end
  G.print = function(msg)
    msg = message_arg("print", 1, msg)
    local src, line = where(3)
    emit("message", msg, src, line)
  end
  return m
end
"""


def install(lua: Any, context: ChassisContext) -> None:
    """Register ``chassis`` in ``package.preload`` of a lupa Lua 5.1 state."""

    def strip_basedir(source: bytes) -> bytes:
        basedir = context.basedir
        if basedir:
            prefix = basedir.encode()
            if source.startswith(prefix):
                source = source[len(prefix) :]
                if source.startswith(b"/"):
                    source = source[1:]
        return source

    def emit(level: bytes, text: bytes) -> None:
        context.logger.log(LEVELS[level.decode()], "%s", text.decode("utf-8", "replace"))

    def shutdown() -> None:
        if context.shutdown is not None:
            context.shutdown()
        else:
            context.logger.warning("chassis.set_shutdown(): no main loop to stop")

    py = lua.table_from({b"log": emit, b"shutdown": shutdown, b"strip_basedir": strip_basedir})
    lua.execute(_BOOTSTRAP, py)
