"""chassis, glib2, posix, lfs and lpeg, called from Lua as scripts call them."""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lua_compat import LuaRuntime
from lua_compat.modules import system


def load_as_script(lua: LuaRuntime, source: str, path: str) -> object:
    """Compile `source` with a file path as chunk name, as scripts are loaded."""
    fn = lua.eval("loadstring(...)", source.encode(), path.encode())
    assert fn is not None
    return fn


# --- chassis -----------------------------------------------------------------------------


def test_require_chassis_sets_global_and_moves_print() -> None:
    lua = LuaRuntime()
    assert lua.eval("chassis == nil and os.print == nil") is True
    lua.execute("original_print = print")
    assert lua.execute("local c = require('chassis'); return c == chassis") is True
    assert lua.eval("os.print == original_print and print ~= original_print") is True
    lua.execute("require('chassis')")  # a second require leaves os.print alone
    assert lua.eval("os.print == original_print") is True
    assert lua.eval("chassis.error") is None  # GLib's error level would abort
    assert lua.eval("chassis._VERSION") == b"LuaChassis 0.2"


def test_log_prefix_is_script_path_and_line(caplog: pytest.LogCaptureFixture) -> None:
    lua = LuaRuntime()
    lua.chassis.basedir = "/srv/proxy"
    script = load_as_script(
        lua,
        "local chassis = require('chassis')\n"
        "chassis.log('critical', 'one')\n"
        "chassis.warning('two')\n"
        "local function helper() chassis.info(3) end\n"
        "helper()\n"
        "print('four', 'ignored')\n"
        "chassis.log()\n",
        "/srv/proxy/lib/script.lua",
    )
    with caplog.at_level(logging.DEBUG, logger="lua_compat.chassis"):
        script()  # type: ignore[operator]
    got = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [
        (logging.CRITICAL, "(lib/script.lua:2) one"),
        (logging.WARNING, "(lib/script.lua:3) two"),
        (logging.INFO, "(lib/script.lua:4) 3"),
        (25, "(lib/script.lua:6) four"),
        (25, "(lib/script.lua:7) nil"),
    ]


def test_log_walks_up_to_the_first_file_chunk(caplog: pytest.LogCaptureFixture) -> None:
    """Code made by loadstring (no file name) logs with the line of the script that
    called it."""
    lua = LuaRuntime()
    script = load_as_script(
        lua,
        "require('chassis')\nlocal f = loadstring('chassis.message(\"from a string\")')\nf()\n",
        "@/other/place.lua",
    )
    with caplog.at_level(logging.DEBUG, logger="lua_compat.chassis"):
        script()  # type: ignore[operator]
    assert [r.getMessage() for r in caplog.records] == ["(/other/place.lua:3) from a string"]


def test_log_without_any_file_chunk_uses_first_caller(caplog: pytest.LogCaptureFixture) -> None:
    lua = LuaRuntime()
    with caplog.at_level(logging.DEBUG, logger="lua_compat.chassis"):
        lua.execute("require('chassis').critical('x')")
    (record,) = caplog.records
    assert record.getMessage() == '([string "<python>"]:1) x'  # lupa's chunk name


def test_log_error_level_does_not_abort(caplog: pytest.LogCaptureFixture) -> None:
    lua = LuaRuntime()
    with caplog.at_level(logging.DEBUG, logger="lua_compat.chassis"):
        lua.execute("require('chassis').log('error', 'bad')")
    assert caplog.records[0].levelno > logging.CRITICAL


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("chassis.log('loud', 'x')", "bad argument #1 to 'log' (invalid option 'loud')"),
        ("chassis.log('message', {})", "bad argument #2 to 'log' (string expected, got table)"),
        ("chassis.critical({})", "bad argument #1 to 'critical' (string expected, got table)"),
        ("print(true)", "bad argument #1 to 'print' (string expected, got boolean)"),
    ],
)
def test_log_argument_errors(call: str, message: str) -> None:
    lua = LuaRuntime()
    ok, err = lua.execute(f"require('chassis'); return pcall(function() {call} end)")
    assert ok is False
    assert message in err.decode()


def test_get_stats_quirks() -> None:
    lua = LuaRuntime()
    lua.execute("require('chassis')")
    assert lua.eval("chassis.get_stats('chassis') == nil and chassis.get_stats('proxy') == nil")
    stats = lua.execute(
        "local s = chassis.get_stats().chassis "
        "return s.lua_mem_alloc, s.lua_mem_free, s.lua_mem_bytes, s.lua_mem_bytes_max"
    )
    alloc, free, used, peak = stats
    assert alloc == 0 and free == 0
    assert used > 10_000 and peak >= used
    ok, err = lua.execute("return pcall(chassis.get_stats, 'a', 'b')")
    assert ok is False and b"bad argument #2 to 'get_stats'" in err
    assert lua.eval("chassis.mem_profile()") is None


def test_set_shutdown_calls_the_program() -> None:
    lua = LuaRuntime()
    calls: list[str] = []
    lua.chassis.shutdown = lambda: calls.append("stop")
    lua.execute("require('chassis').set_shutdown()")
    assert calls == ["stop"]


# --- glib2 -------------------------------------------------------------------------------


def test_glib2() -> None:
    lua = LuaRuntime()
    digest, is_global = lua.execute("local g = require('glib2') return g.md5('abc'), glib2 == g")
    assert digest == hashlib.md5(b"abc").hexdigest().encode()
    assert is_global is True
    assert lua.eval("glib2.md5('\\0\\255')") == hashlib.md5(b"\0\xff").hexdigest().encode()
    before = time.time()
    sec, usec = lua.execute("local t = glib2.get_current_time() return t.tv_sec, t.tv_usec")
    assert abs(sec + usec / 1e6 - before) < 2 and 0 <= usec < 1_000_000
    start = time.monotonic()
    lua.execute("glib2.usleep(200000)")  # microseconds
    assert 0.18 < time.monotonic() - start < 2
    ok, err = lua.execute("return pcall(glib2.usleep, 'x')")
    assert ok is False and b"number expected" in err


# --- posix -------------------------------------------------------------------------------


def test_posix_identity() -> None:
    lua = LuaRuntime()
    pid, uid = lua.execute("local p = require('posix') return p.getpid(), p.getuid()")
    assert (pid, uid) == (os.getpid(), os.getuid())
    me = pwd.getpwuid(os.getuid())
    row = lua.execute(
        "local p = posix.getpwuid(posix.getuid()) return p.name, p.uid, p.gid, p.dir, p.shell"
    )
    assert row == (
        me.pw_name.encode(),
        me.pw_uid,
        me.pw_gid,
        me.pw_dir.encode(),
        me.pw_shell.encode(),
    )
    assert lua.eval("posix.getpwuid(2147483000)") is None


def test_posix_kill_sends_signals() -> None:
    lua = LuaRuntime()
    lua.execute("require('posix')")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert lua.eval("posix.kill(...)", child.pid, 0) == 0
        assert lua.eval("posix.kill(...)", child.pid, signal.SIGKILL) == 0
        assert child.wait(10) == -signal.SIGKILL
        assert lua.eval("posix.kill(...)", child.pid, 0) == -1  # gone (reaped)
    finally:
        child.kill()
        child.wait()


# --- lfs ---------------------------------------------------------------------------------


def test_lfs_directories(tmp_path: Path) -> None:
    lua = LuaRuntime()
    lua.execute("require('lfs')")
    base = str(tmp_path).encode()
    assert lua.eval("lfs.mkdir(...)", base + b"/d") is True
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o775
    ok, err = lua.eval("lfs.mkdir(...)", base + b"/d")
    assert ok is None and err == b"File exists"
    (tmp_path / "d" / "f.txt").write_bytes(b"12345")
    names = lua.execute(
        "local t = {} for n in lfs.dir(...) do t[#t + 1] = n end table.sort(t) "
        "return table.concat(t, ',')",
        base + b"/d",
    )
    assert names == b".,..,f.txt"
    ok, err = lua.execute("return pcall(lfs.dir, ...)", base + b"/nope")
    assert ok is False and b"cannot open " + base + b"/nope" in err
    assert lua.eval("lfs.rmdir(...)", base + b"/d") == (None, b"Directory not empty")
    os.unlink(tmp_path / "d" / "f.txt")
    assert lua.eval("lfs.rmdir(...)", base + b"/d") is True


def test_lfs_attributes_and_touch(tmp_path: Path) -> None:
    lua = LuaRuntime()
    lua.execute("require('lfs')")
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    p = str(path).encode()
    assert lua.eval("lfs.touch(...)", p, 1000, 2000) is True
    attrs = lua.execute("return lfs.attributes(...)", p)
    st = os.stat(path)
    assert attrs[b"mode"] == b"file"
    assert attrs[b"size"] == 3
    assert attrs[b"access"] == 1000 and attrs[b"modification"] == 2000
    assert attrs[b"ino"] == st.st_ino and attrs[b"uid"] == st.st_uid
    assert lua.eval("lfs.attributes(..., 'mode')", str(tmp_path).encode()) == b"directory"
    assert lua.eval("lfs.attributes(..., 'size')", p) == 3
    assert lua.eval("lfs.touch(...)", p, 5000) is True
    assert os.stat(path).st_mtime == 5000  # mtime defaults to atime
    missing = str(tmp_path / "missing").encode()
    assert lua.eval("lfs.attributes(...)", missing) == (
        None,
        b"cannot obtain information from file `" + missing + b"'",
    )


def test_lfs_currentdir_and_chdir(tmp_path: Path) -> None:
    lua = LuaRuntime()
    lua.execute("require('lfs')")
    here = os.getcwd()
    try:
        assert lua.eval("lfs.chdir(...)", str(tmp_path).encode()) is True
        assert lua.eval("lfs.currentdir()") == str(tmp_path).encode()
        ok, err = lua.eval("lfs.chdir('/no/such/dir')")
        assert ok is None and err.startswith(
            b"Unable to change working directory to '/no/such/dir'"
        )
    finally:
        os.chdir(here)


def test_lfs_lock_is_a_posix_record_lock(tmp_path: Path) -> None:
    """Another process cannot take the lock while the script holds it."""
    lua = LuaRuntime()
    lua.execute("require('lfs')")
    path = tmp_path / "lockfile"
    path.write_bytes(b"x")
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n sys.exit(3)\n"
    )

    def other_process_can_lock() -> bool:
        return subprocess.run([sys.executable, "-c", probe, str(path)]).returncode == 0

    lua.execute("fh = io.open(...)", str(path).encode(), b"r+")
    assert lua.eval("lfs.lock(fh, 'w')") is True
    assert not other_process_can_lock()
    assert lua.eval("lfs.unlock(fh)") is True
    assert other_process_can_lock()
    ok, err = lua.execute("return pcall(lfs.lock, fh, 'x')")
    assert ok is False and b"invalid mode" in err
    ok, err = lua.execute("return pcall(lfs.lock, 'not a file', 'w')")
    assert ok is False and b"lock: not a file" in err


# --- lpeg --------------------------------------------------------------------------------


@pytest.mark.skipif(system.find_debian_lpeg() is None, reason="Debian's lua-lpeg missing")
def test_lpeg_from_debian() -> None:
    lua = LuaRuntime()
    version, word, is_global = lua.execute(
        "local lpeg = require('lpeg') "
        "local word = lpeg.C(lpeg.R('az') ^ 1) * lpeg.P(-1) "
        "return lpeg.version(), lpeg.match(lpeg.C(lpeg.R('az') ^ 1), 'abc1'), lpeg == _G.lpeg"
    )
    assert version.startswith(b"1.")
    assert word == b"abc"
    assert is_global is True


def test_lpeg_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system, "DEBIAN_LPEG_PATTERNS", ("/nonexistent/lpeg.so",))
    lua = LuaRuntime()
    lua.execute("package.cpath = '/nonexistent/?.so'")
    ok, err = lua.execute("return pcall(require, 'lpeg')")
    assert ok is False
    assert b"install Debian's lua-lpeg" in err
