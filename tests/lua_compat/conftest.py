"""One Lua runtime per test module: building it is cheap, but there is no need to repeat it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lua_compat import LuaRuntime


@pytest.fixture(scope="module")
def lua() -> Iterator[LuaRuntime]:
    yield LuaRuntime()
