"""mysql-proxy 0.8 Lua scripting compatibility on lupa's Lua 5.1 runtime."""

from lua_compat.runtime import PROXY_CONSTANTS, LuaRuntime, LuaUnavailableError

__all__ = ["PROXY_CONSTANTS", "LuaRuntime", "LuaUnavailableError"]
