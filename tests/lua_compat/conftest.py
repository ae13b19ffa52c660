"""Fixtures for the Lua tests: a Lua runtime, and LuaProxy instances on loop threads
(a proxy under test, chained to a real MariaDB or to a second LuaProxy whose script
plays a fake server, as mysql-proxy's own suite chains them)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from lua_compat import LuaRuntime
from lua_compat.engine import LuaProxy, LuaProxyOptions
from mysqlproxy.hooks import AddonManager
from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.loopthread import running_on_loop_thread


@pytest.fixture(scope="module")
def lua() -> Iterator[LuaRuntime]:
    yield LuaRuntime()


@contextlib.contextmanager
def run_lua_proxy(
    script: str | None,
    backends: list[Address] | None = None,
    *,
    read_only: list[Address] | None = None,
    addons: AddonManager | None = None,
    hook_time_limit: float = 5.0,
    listen: Address | None = None,
    **options: Any,
) -> Iterator[LuaProxy]:
    """`options`: further LuaProxyOptions fields (max_packet_size, login_timeout...)."""
    # mysql-proxy's 2 s connect timeout (which covers the greeting) is too short for a
    # private MariaDB on a loaded 2-core machine: it then counts as down.
    options.setdefault("connect_timeout", 10.0)
    proxy_options = LuaProxyOptions(
        listen=[listen or Address("127.0.0.1", 0)],
        backends=backends or [],
        read_only_backends=read_only or [],
        script=script,
        addons=addons,
        hook_time_limit=hook_time_limit,
        **options,
    )
    with running_on_loop_thread(LuaProxy(proxy_options), "lua-proxy") as proxy:
        yield proxy


ScriptFactory = Callable[[str], str]


@pytest.fixture
def script_file() -> Iterator[ScriptFactory]:
    """Write a Lua script (dedented) to a file; returns its path. The directory has a
    short name: Lua cuts chunk names (the path) in messages at 60 characters."""
    directory = Path(tempfile.mkdtemp(prefix="lua", dir="/tmp"))
    counter = [0]

    def make(source: str) -> str:
        counter[0] += 1
        path = directory / f"s{counter[0]}.lua"
        path.write_text(textwrap.dedent(source))
        return str(path)

    yield make
    shutil.rmtree(directory, ignore_errors=True)


def connect(proxy: LuaProxy, **kwargs: object) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    address = proxy.bound[0]
    params: dict[str, object] = {
        "host": address.host,
        "port": address.port,
        "user": "root",
        "password": "",
        "connect_timeout": 10,
        "read_timeout": 30,
    }
    params.update(kwargs)
    return pymysql.connect(**params)  # type: ignore[arg-type]
