"""Backend choice, DOWN/UNKNOWN timing and pool look-ups (reference 6.3, 6.4), on the
engine's own objects (no sockets needed)."""

from __future__ import annotations

from typing import Any

import pytest

from lua_compat.engine import DOWN_RETRY_SECONDS, LuaProxy, LuaProxyOptions, Pool
from lua_compat.objects import BACKEND_STATE_DOWN, BACKEND_STATE_UNKNOWN, BACKEND_STATE_UP
from mysqlproxy.proxy.backends import Address


def make_proxy() -> LuaProxy:
    return LuaProxy(
        LuaProxyOptions(
            listen=[],
            backends=[Address("127.0.0.1", 1), Address("127.0.0.1", 2)],
            read_only_backends=[Address("127.0.0.1", 3)],
        )
    )


def test_default_choice_is_the_least_used_rw_backend_not_down() -> None:
    proxy = make_proxy()
    assert proxy.default_backend() == 1  # ties: the first
    proxy.backends[0].connected_clients = 2
    proxy.backends[1].connected_clients = 1
    assert proxy.default_backend() == 2
    proxy.backends[1].set_state(BACKEND_STATE_DOWN)
    assert proxy.default_backend() == 1  # read-only backends only when a script asks
    proxy.backends[0].set_state(BACKEND_STATE_DOWN)
    assert proxy.default_backend() == 0


def test_down_becomes_unknown_after_four_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("lua_compat.engine.time.monotonic", lambda: now[0])
    proxy = make_proxy()
    proxy.backends[0].set_state(BACKEND_STATE_DOWN)
    proxy.backends[1].set_state(BACKEND_STATE_UP)
    now[0] += DOWN_RETRY_SECONDS - 0.5
    proxy.refresh_down_backends()
    assert proxy.backends[0].state == BACKEND_STATE_DOWN
    now[0] += 0.6  # past 4 s, but the last look was under a second ago
    proxy.refresh_down_backends()
    assert proxy.backends[0].state == BACKEND_STATE_DOWN
    now[0] += 0.5
    proxy.refresh_down_backends()
    assert proxy.backends[0].state == BACKEND_STATE_UNKNOWN
    assert proxy.backends[1].state == BACKEND_STATE_UP


class _Conn:
    def __init__(self, username: bytes) -> None:
        self.username = username
        self.in_pool = False


def test_pool_lookups() -> None:
    pool = Pool()
    a1, a2, b1 = _Conn(b"a"), _Conn(b"a"), _Conn(b"b")
    for conn in (a1, a2, b1):
        pool.add(conn)  # type: ignore[arg-type]
    assert pool.take(b"a") is a1  # FIFO per user
    assert pool.take(b"b") is b1
    assert b"b" not in pool.users  # emptied through its own name: removed
    assert pool.take(b"nobody") is a2  # no queue of its own: the first non-empty one
    assert b"a" in pool.users  # quirk: emptied through another name, stays registered
    assert pool.take(b"") is None
    pool.min_idle_connections = 1
    pool.add(_Conn(b"c"))  # type: ignore[arg-type]
    assert pool.take(b"") is None  # only queues holding more than min_idle lend out
    assert pool.take(b"c") is not None


def test_backends_from_lua() -> None:
    proxy = make_proxy()
    ev: Any = proxy.runtime.eval
    assert ev("#proxy.global.backends") == 3
    assert ev("proxy.global.backends[3].type") == 2
    assert ev("proxy.global.backends[2].dst.name") == b"127.0.0.1:2"
    assert ev("proxy.global.backends[4]") is None
    proxy.runtime.execute("proxy.global.backends[1].state = proxy.BACKEND_STATE_DOWN")
    assert proxy.backends[0].state == BACKEND_STATE_DOWN
    proxy.runtime.execute("proxy.global.backends[1].uuid = 'abc'")
    assert ev("proxy.global.backends[1].uuid") == b"abc"
    assert ev("(pcall(function() proxy.global.backends[1].type = 2 end))") is False
    assert ev("(pcall(function() return proxy.global.backends.x end))") is False
    assert ev("type(proxy.global.backends[1].pool.users['x'])") == b"userdata"
    assert ev("proxy.global.backends[1].pool.users['x'].cur_idle_connections") == 0
