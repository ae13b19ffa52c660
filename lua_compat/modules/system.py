"""glib2, posix, lfs and lpeg: the host-system modules of mysql-proxy 0.8 (reference
sections 8.5 and 8.6), registered in ``package.preload``.

* ``glib2``: ``usleep(microseconds)``, ``md5(s)`` (lowercase hex), ``get_current_time()``.
* ``posix``: ``getpid()``, ``getuid()``, ``getpwuid(uid)``, ``kill(pid, sig)``. ``getpid``
  is the pid of the process that listens, so ``posix.kill(posix.getpid(), 9)`` takes the
  proxy down as the failover test expects.
* ``lfs``: the LuaFileSystem calls mysql-proxy shipped (attributes, dir, currentdir,
  chdir, mkdir, rmdir, touch, lock, unlock).
* ``lpeg``: not ours; Debian's lua-lpeg (a C module built against Lua 5.1 but not
  linked to it) is loaded from ``package.cpath`` or Debian's path, after the Lua
  symbols of lupa's runtime are made global so the module can bind to them.

Like the C modules, requiring one sets the global of its name.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import hashlib
import importlib
import logging
import math
import os
import pwd
import stat
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lua_compat.runtime import HookBudget

log = logging.getLogger("lua_compat")

# Debian's lua-lpeg, per architecture (x86_64-linux-gnu, aarch64-linux-gnu, ...)
DEBIAN_LPEG_PATTERNS = ("/usr/lib/*-linux-gnu*/lua/5.1/lpeg.so", "/usr/lib/lua/5.1/lpeg.so")
LPEG_MISSING = (
    "module 'lpeg' not found: mysql-proxy's lib/proxy/auto-config.lua needs LPeg for "
    "Lua 5.1; install Debian's lua-lpeg (apt-get install lua-lpeg) or put an lpeg.so "
    "built for Lua 5.1 on --lua-cpath"
)

_BOOTSTRAP = b"""
local py = ...
local G = _G
local type, error, tonumber, tostring = type, error, tonumber, tostring

-- luaL_checkinteger: numbers and numeric strings, truncated
local function int_arg(fname, n, v)
  local x = tonumber(v)
  if x == nil then
    local got = v == nil and "no value" or type(v)
    error("bad argument #" .. n .. " to '" .. fname .. "' (number expected, got " .. got .. ")", 3)
  end
  return x >= 0 and math.floor(x) or math.ceil(x)
end

local function str_arg(fname, n, v)
  if type(v) == "number" then return tostring(v) end
  if type(v) ~= "string" then
    local got = v == nil and "no value" or type(v)
    error("bad argument #" .. n .. " to '" .. fname .. "' (string expected, got " .. got .. ")", 3)
  end
  return v
end

local function opt_num(fname, n, v, default)
  if v == nil then return default end
  local x = tonumber(v)
  if x == nil then
    local got = type(v)
    error("bad argument #" .. n .. " to '" .. fname .. "' (number expected, got " .. got .. ")", 3)
  end
  return x
end

local function register(name, lib)
  package.preload[name] = function()
    local m = {}
    for k, v in pairs(lib) do m[k] = v end
    G[name] = m
    return m
  end
end

-- glib2 ---------------------------------------------------------------------------
register("glib2", {
  usleep = function(us)
    local err = py.usleep(int_arg("usleep", 1, us))
    if err ~= nil then error(err, 2) end
  end,
  md5 = function(s) return py.md5(str_arg("md5", 1, s)) end,
  get_current_time = function()
    local sec, usec = py.now()
    return {tv_sec = sec, tv_usec = usec}
  end,
  _DESCRIPTION = "export glib2-functions as glib.*",
  _VERSION = "LuaGlib2 0.1",
})

-- posix ---------------------------------------------------------------------------
register("posix", {
  getpid = function() return py.getpid() end,
  getuid = function() return py.getuid() end,
  getpwuid = function(uid)
    local name, pw_uid, gid, dir, shell = py.getpwuid(int_arg("getpwuid", 1, uid))
    if name == nil then return nil end
    return {name = name, uid = pw_uid, gid = gid, dir = dir, shell = shell}
  end,
  kill = function(pid, sig)
    return py.kill(int_arg("kill", 1, pid), int_arg("kill", 2, sig))
  end,
  _DESCRIPTION = "export posix-functions as posix.*",
  _VERSION = "LuaPosix 0.1",
})

-- lfs -----------------------------------------------------------------------------
-- lock/unlock need the file behind a Lua file handle; Lua 5.1 does not expose its
-- descriptor, so io.open is wrapped (transparently) to remember each handle's path.
local handle_paths = setmetatable({}, {__mode = "k"})
local io_open = io.open
io.open = function(path, ...)
  local fh, err, code = io_open(path, ...)
  if fh then handle_paths[fh] = path end
  return fh, err, code
end

local function file_arg(fname, fh)
  local t = io.type(fh)
  if t == nil then error(fname .. ": not a file", 3) end
  if t == "closed file" then error(fname .. ": closed file", 3) end
  local path = handle_paths[fh]
  if path == nil then
    error(fname .. ": file handle was not opened with io.open", 3)
  end
  return path
end

local attribute_names = {mode = true, dev = true, ino = true, nlink = true, uid = true,
  gid = true, rdev = true, access = true, modification = true, change = true,
  size = true, blocks = true, blksize = true}

register("lfs", {
  attributes = function(path, want)
    path = str_arg("attributes", 1, path)
    local attrs, err = py.stat(path)
    if attrs == nil then return nil, err end
    if type(want) == "string" then
      if not attribute_names[want] then return nil end
      return attrs[want]
    end
    local t = type(want) == "table" and want or {}
    for k, v in pairs(attrs) do rawset(t, k, v) end
    return t
  end,
  chdir = function(path)
    path = str_arg("chdir", 1, path)
    local ok, err = py.chdir(path)
    if not ok then
      return nil, "Unable to change working directory to '" .. path .. "'\\n" .. err .. "\\n"
    end
    return true
  end,
  currentdir = function()
    return py.getcwd()
  end,
  dir = function(path)
    path = str_arg("dir", 1, path)
    local names, err = py.listdir(path)
    if names == nil then error("cannot open " .. path .. ": " .. err, 2) end
    local i, closed = 0, false
    return function()
      if closed then error("bad argument #1 to '?' (closed directory)", 2) end
      i = i + 1
      local name = names[i]
      if name == nil then closed = true end
      return name
    end
  end,
  mkdir = function(path)
    return py.mkdir(str_arg("mkdir", 1, path))
  end,
  rmdir = function(path)
    return py.rmdir(str_arg("rmdir", 1, path))
  end,
  touch = function(path, atime, mtime)
    path = str_arg("touch", 1, path)
    if atime == nil and mtime == nil then return py.touch(path) end
    atime = opt_num("touch", 2, atime, 0)
    mtime = opt_num("touch", 3, mtime, atime)
    return py.touch(path, atime, mtime)
  end,
  lock = function(fh, mode, start, len)
    local path = file_arg("lock", fh)
    mode = str_arg("lock", 2, mode)
    local m = mode:sub(1, 1)
    if m ~= "r" and m ~= "w" then error("lock: invalid mode", 2) end
    return py.lock(path, m, opt_num("lock", 3, start, 0), opt_num("lock", 4, len, 0))
  end,
  unlock = function(fh, start, len)
    local path = file_arg("unlock", fh)
    return py.lock(path, "u", opt_num("unlock", 2, start, 0), opt_num("unlock", 3, len, 0))
  end,
  _DESCRIPTION = "LuaFileSystem is a Lua library developed to complement the set of "
    .. "functions related to file systems offered by the standard Lua distribution",
  _VERSION = "LuaFileSystem 1.2",
})

-- lpeg ----------------------------------------------------------------------------
local function find_on_cpath(name)
  for template in package.cpath:gmatch("[^;]+") do
    local path = template:gsub("%?", name)
    local f = io_open(path, "rb")
    if f then f:close() return path end
  end
  return nil
end

package.preload["lpeg"] = function(name)
  local path = find_on_cpath("lpeg") or py.debian_lpeg()
  if path == nil then error(py.lpeg_missing, 2) end
  py.promote_lua_symbols()
  local open, err = package.loadlib(path, "luaopen_lpeg")
  if open == nil then
    error("module 'lpeg' could not be loaded from " .. path .. ": " .. tostring(err), 2)
  end
  local m = open(name)
  if m == nil then m = G.lpeg end
  G.lpeg = m
  return m
end
"""


def _mode_name(mode: int) -> bytes:
    for test, name in (
        (stat.S_ISREG, b"file"),
        (stat.S_ISDIR, b"directory"),
        (stat.S_ISLNK, b"link"),
        (stat.S_ISSOCK, b"socket"),
        (stat.S_ISFIFO, b"named pipe"),
        (stat.S_ISCHR, b"char device"),
        (stat.S_ISBLK, b"block device"),
    ):
        if test(mode):
            return name
    return b"other"


def _strerror(exc: OSError) -> bytes:
    return os.strerror(exc.errno or errno.EIO).encode()


class _FileLocks:
    """POSIX record locks for lfs.lock: one descriptor per locked path, kept open while
    a lock is held (closing any descriptor of a file drops the process's locks on it)."""

    def __init__(self) -> None:
        self._fds: dict[bytes, int] = {}

    def lock(self, path: bytes, mode: bytes, start: float, length: float) -> tuple[Any, ...]:
        try:
            fd = self._fds.get(path)
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDWR)
                except OSError:
                    fd = os.open(path, os.O_RDONLY)
                self._fds[path] = fd
            op = {b"w": fcntl.LOCK_EX, b"r": fcntl.LOCK_SH, b"u": fcntl.LOCK_UN}[mode]
            if op != fcntl.LOCK_UN:
                op |= fcntl.LOCK_NB
            fcntl.lockf(fd, op, int(length), int(start), os.SEEK_SET)
        except OSError as exc:
            return None, _strerror(exc)
        return (True,)


def find_debian_lpeg() -> str | None:
    for pattern in DEBIAN_LPEG_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _promote_lua_symbols() -> None:
    """Make the Lua C API of lupa's Lua 5.1 runtime visible to modules dlopen()ed later
    (Debian's lpeg.so expects a host that exports lua_*). Re-opening the already
    loaded extension with RTLD_NOLOAD | RTLD_GLOBAL does that whatever the import order."""
    lua51 = importlib.import_module("lupa.lua51")
    ctypes.CDLL(lua51.__file__, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL | os.RTLD_NOW)


def install(lua: Any, budget: HookBudget | None = None) -> None:
    """Register glib2, posix, lfs and lpeg in ``package.preload`` of a lupa Lua state.
    `budget`: the hook time limit that ``glib2.usleep`` may not sleep past."""
    locks = _FileLocks()

    def usleep(microseconds: int) -> bytes | None:
        """Sleep (on the event loop: scripts may block, reference 12), but never past
        the running hook's time limit: a longer sleep is cut short, logged, and the
        hook then fails with the time-limit error, as a loop running too long does."""
        seconds = max(microseconds, 0) / 1_000_000
        remaining = budget.remaining() if budget is not None else math.inf
        if seconds < remaining or budget is None:
            time.sleep(seconds)
            return None
        if not budget.capped_logged:
            budget.capped_logged = True
            log.warning(
                "glib2.usleep(%d) cut to %.3fs: the hook's time limit of %gs ends then",
                microseconds, max(remaining, 0.0), budget.seconds,
            )
        time.sleep(max(remaining, 0.0))
        return f"hook ran longer than its time limit of {budget.seconds:g}s".encode()

    def md5(data: bytes) -> bytes:
        return hashlib.md5(data).hexdigest().encode()

    def now() -> tuple[int, int]:
        ns = time.time_ns()
        return ns // 1_000_000_000, (ns // 1000) % 1_000_000

    def getpwuid(uid: int) -> tuple[Any, ...]:
        try:
            p = pwd.getpwuid(uid)
        except (KeyError, OverflowError):
            return (None,)
        return p.pw_name.encode(), p.pw_uid, p.pw_gid, p.pw_dir.encode(), p.pw_shell.encode()

    def kill(pid: int, sig: int) -> int:
        try:
            os.kill(pid, sig)
        except (OSError, OverflowError, ValueError):
            return -1
        return 0

    def stat_path(path: bytes) -> tuple[Any, ...]:
        try:
            st = os.stat(path)
        except OSError:
            return None, b"cannot obtain information from file `" + path + b"'"
        attrs = {
            b"mode": _mode_name(st.st_mode),
            b"dev": st.st_dev,
            b"ino": st.st_ino,
            b"nlink": st.st_nlink,
            b"uid": st.st_uid,
            b"gid": st.st_gid,
            b"rdev": st.st_rdev,
            b"access": int(st.st_atime),
            b"modification": int(st.st_mtime),
            b"change": int(st.st_ctime),
            b"size": st.st_size,
            b"blocks": st.st_blocks,
            b"blksize": st.st_blksize,
        }
        return (lua.table_from(attrs),)

    def chdir(path: bytes) -> tuple[Any, ...]:
        try:
            os.chdir(path)
        except OSError as exc:
            return None, _strerror(exc)
        return (True,)

    def getcwd() -> tuple[Any, ...]:
        try:
            return (os.getcwd().encode(),)
        except OSError as exc:
            return None, _strerror(exc)

    def listdir(path: bytes) -> tuple[Any, ...]:
        try:
            names = [b".", b"..", *os.listdir(path)]
        except OSError as exc:
            return None, _strerror(exc)
        return (lua.table_from(names),)

    def mkdir(path: bytes) -> tuple[Any, ...]:
        # LuaFileSystem creates directories rwxrwxr-x regardless of the umask
        old = os.umask(0)
        try:
            os.mkdir(path, 0o775)
        except OSError as exc:
            return None, _strerror(exc)
        finally:
            os.umask(old)
        return (True,)

    def rmdir(path: bytes) -> tuple[Any, ...]:
        try:
            os.rmdir(path)
        except OSError as exc:
            return None, _strerror(exc)
        return (True,)

    def touch(
        path: bytes, atime: float | None = None, mtime: float | None = None
    ) -> tuple[Any, ...]:
        try:
            if atime is None:
                os.utime(path)
            else:
                os.utime(path, (int(atime), int(mtime if mtime is not None else atime)))
        except OSError as exc:
            return None, _strerror(exc)
        return (True,)

    def debian_lpeg() -> bytes | None:
        path = find_debian_lpeg()
        return path.encode() if path else None

    py = lua.table_from(
        {
            b"usleep": usleep,
            b"md5": md5,
            b"now": now,
            b"getpid": os.getpid,
            b"getuid": os.getuid,
            b"getpwuid": getpwuid,
            b"kill": kill,
            b"stat": stat_path,
            b"chdir": chdir,
            b"getcwd": getcwd,
            b"listdir": listdir,
            b"mkdir": mkdir,
            b"rmdir": rmdir,
            b"touch": touch,
            b"lock": locks.lock,
            b"debian_lpeg": debian_lpeg,
            b"lpeg_missing": LPEG_MISSING.encode(),
            b"promote_lua_symbols": _promote_lua_symbols,
        }
    )
    lua.execute(_BOOTSTRAP, py)
