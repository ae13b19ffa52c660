"""Script loading and per-connection scopes (reference 1.2-1.5) without a network."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lua_compat import LuaRuntime
from lua_compat.scope import LuaScripts, ScriptExecuteError, ScriptLoadError
from tests.lua_compat.conftest import ScriptFactory


@pytest.fixture
def scripts() -> LuaScripts:
    return LuaScripts(LuaRuntime(), hook_time_limit=0.2)


def test_return_values_count_only_when_numbers(
    scripts: LuaScripts, script_file: ScriptFactory
) -> None:
    path = script_file(
        """
        function n() return 2 end
        function s() return "4" end
        function hex() return " 0x10 " end
        function t() return {} end
        function b() return true end
        function word() return "two" end
        function many() return 1, 2 end
        """
    )
    scope = scripts.new_scope(path)
    assert [scope.call_hook(h) for h in ("n", "s", "hex", "t", "b", "word", "many")] == [
        2,
        4,
        16,
        None,
        None,
        None,
        1,
    ]
    assert scope.call_hook("undefined") is None


def test_globals_are_per_scope_and_fall_back_to_G(
    scripts: LuaScripts, script_file: ScriptFactory
) -> None:
    path = script_file(
        """
        counter = (counter or 0) + 1
        proxy.global.bodies = (proxy.global.bodies or 0) + 1
        function get() return counter end
        """
    )
    first, second = scripts.new_scope(path), scripts.new_scope(path)
    assert first.call_hook("get") == 1
    assert second.call_hook("get") == 1
    assert scripts.runtime.eval("proxy.global.bodies") == 2
    assert scripts.runtime.eval("counter") is None  # never reached _G
    # hooks defined in _G (by loadstring'ed code) are found through E's fallback
    scripts.runtime.execute("function from_g() return 3 end")
    assert first.call_hook("from_g") == 3


def test_proxy_table_points_at_the_calling_scope(
    scripts: LuaScripts, script_file: ScriptFactory
) -> None:
    path = script_file(
        """
        function set(v) proxy.mine = v end
        function get() return proxy.mine end
        """
    )
    a, b = scripts.new_scope(path), scripts.new_scope(path)
    a.call_hook("set", 5)
    b.call_hook("set", 7)
    assert (a.call_hook("get"), b.call_hook("get")) == (5, 7)
    assert scripts.runtime.eval("rawget(proxy, 'mine')") is None


@pytest.mark.parametrize(
    "body",
    [
        "while true do end",
        "while true do pcall(function() end) end",
        "while true do local ok = pcall(function() local x = 1 + 1 end) end",
        "local t = {} while true do pcall(string.rep, 'x', 10) t[1] = 1 end",
    ],
)
def test_time_limit_stops_loops_even_under_pcall(
    scripts: LuaScripts, script_file: ScriptFactory, body: str
) -> None:
    scope = scripts.new_scope(
        script_file(f"function spin() {body} end\nfunction ok() return 1 end\n")
    )
    assert scope.call_hook("spin") is None
    assert scope.timed_out
    assert "hook ran longer than its time limit of 0.2s" in (scope.last_error or "")
    # the next call starts its own clock
    assert scope.call_hook("ok") == 1 and not scope.timed_out


def test_load_and_execute_failures(
    scripts: LuaScripts, script_file: ScriptFactory, tmp_path: Path
) -> None:
    with pytest.raises(ScriptLoadError):
        scripts.new_scope(str(tmp_path / "missing.lua")).call_hook("read_query")
    with pytest.raises(ScriptLoadError, match=r"unexpected symbol|expected"):
        scripts.new_scope(script_file("function (")).call_hook("read_query")
    with pytest.raises(ScriptExecuteError, match="boom"):
        scripts.new_scope(script_file("error('boom')")).call_hook("read_query")


def test_hot_reload_by_mtime_or_size(scripts: LuaScripts, script_file: ScriptFactory) -> None:
    path = script_file("function v() return 1 end\n")
    old = scripts.new_scope(path)
    assert old.call_hook("v") == 1
    Path(path).write_text("function v() return 22 end\n")
    st = os.stat(path)
    os.utime(path, (st.st_atime, st.st_mtime + 1))
    assert scripts.new_scope(path).call_hook("v") == 22
    assert old.call_hook("v") == 1  # a running scope keeps its closure


def test_two_script_sets_on_one_state_share_the_proxy_table(script_file: ScriptFactory) -> None:
    """The proxy plugin and the admin plugin each have a LuaScripts on one Lua state:
    each call must still see its own connection's proxy.* (and the same proxy.global)."""
    runtime = LuaRuntime()
    proxy_side, admin_side = LuaScripts(runtime), LuaScripts(runtime)
    path = script_file(
        """
        function set(v) proxy.mine = v; proxy.global.last = v end
        function get() return proxy.mine end
        """
    )
    a, b = proxy_side.new_scope(path), admin_side.new_scope(path)
    a.call_hook("set", 1)
    b.call_hook("set", 2)
    assert a.call_hook("get") == 1
    assert b.call_hook("get") == 2
    assert a.call_hook("get") == 1
    assert runtime.eval("proxy.global.last") == 2


@pytest.mark.parametrize(
    "body",
    [
        # (bounded, 5 s: without the wall clock they would end, not hang, the test)
        "for i = 1, 100 do glib2.usleep(50000) end",  # 50 ms at a time: no CPU time used
        "glib2.usleep(5 * 1000000)",  # one long sleep
        # the error caught: no escape either
        "local t = os.time() while os.time() - t < 5 do pcall(glib2.usleep, 1000000) end",
    ],
)
def test_time_limit_is_wall_clock_and_stops_sleeps(
    scripts: LuaScripts,
    script_file: ScriptFactory,
    body: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scope = scripts.new_scope(
        script_file(f"require(\"glib2\")\nfunction nap() {body} end\nfunction ok() return 1 end\n")
    )
    started = time.monotonic()
    assert scope.call_hook("nap") is None
    assert time.monotonic() - started < 1.0  # the limit is 0.2 s
    assert scope.timed_out
    assert "hook ran longer than its time limit of 0.2s" in (scope.last_error or "")
    if "1000000" in body:
        assert "glib2.usleep(" in caplog.text and "cut to" in caplog.text
    # outside a hook, and in the next one, sleeps are whole again
    assert scope.call_hook("ok") == 1 and not scope.timed_out
    started = time.monotonic()
    scripts.runtime.execute("glib2.usleep(300000)")
    assert time.monotonic() - started >= 0.29


def test_non_finite_returns_are_no_decision(
    scripts: LuaScripts, script_file: ScriptFactory, caplog: pytest.LogCaptureFixture
) -> None:
    scope = scripts.new_scope(
        script_file(
            """
            function inf() return 1/0 end
            function ninf() return -1/0 end
            function nan() return 0/0 end
            function text() return "inf" end
            """
        )
    )
    assert [scope.call_hook(h) for h in ("inf", "ninf", "nan", "text")] == [None] * 4
    assert "(inf) returned inf: treated as no decision" in caplog.text


def test_anything_raised_around_a_hook_call_is_no_decision(
    scripts: LuaScripts, script_file: ScriptFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """strict.lua-style scripts make _G refuse unknown names: looking up a hook the
    script does not define then raises in the look-up itself, outside the hook."""
    scope = scripts.new_scope(
        script_file(
            """
            setmetatable(_G, {__index = function(_, k) error("undeclared " .. k, 2) end})
            function ok() return 2 end
            """
        )
    )
    assert scope.call_hook("ok") == 2
    assert scope.call_hook("read_query") is None
    assert "undeclared read_query" in (scope.last_error or "")
    assert "(read_query) calling the hook failed" in caplog.text
