"""mysql.password from Lua: hash, scramble, unscramble, check (reference 8.2)."""

from __future__ import annotations

import hashlib

import pytest

from lua_compat import LuaRuntime
from mysqlproxy.protocol.auth import native_password_hash, native_password_scramble

CHALLENGE = bytes(range(1, 21))


def sha1(b: bytes) -> bytes:
    return hashlib.sha1(b).digest()


@pytest.fixture(scope="module", autouse=True)
def _load(lua: LuaRuntime) -> None:
    lua.execute('password_mod = require("mysql.password")')


def test_hash_is_sha1(lua: LuaRuntime) -> None:
    assert lua.eval("password_mod.hash('secret')") == sha1(b"secret")
    assert lua.eval("#password_mod.hash('')") == 20


def test_scramble_matches_a_real_client(lua: LuaRuntime) -> None:
    got = lua.eval("password_mod.scramble(..., password_mod.hash('secret'))", CHALLENGE)
    assert got == native_password_scramble(b"secret", CHALLENGE)
    assert len(got) == 20


def test_scramble_accepts_21_byte_challenge(lua: LuaRuntime) -> None:
    got = lua.eval("password_mod.scramble(..., password_mod.hash('pw'))", CHALLENGE + b"\0")
    assert got == native_password_scramble(b"pw", CHALLENGE)


@pytest.mark.parametrize(("challenge", "hashed"), [(b"short", sha1(b"x")), (CHALLENGE, b"abc")])
def test_scramble_bad_sizes_give_empty_string(
    lua: LuaRuntime, challenge: bytes, hashed: bytes
) -> None:
    assert lua.eval("password_mod.scramble(...)", challenge, hashed) == b""


def test_check_and_unscramble(lua: LuaRuntime) -> None:
    response = native_password_scramble(b"secret", CHALLENGE)
    dbl = native_password_hash(b"secret")
    assert lua.eval("password_mod.check(...)", CHALLENGE, response, dbl) is True
    assert lua.eval("password_mod.unscramble(...)", CHALLENGE, response, dbl) == sha1(b"secret")
    wrong = native_password_scramble(b"other", CHALLENGE)
    assert lua.eval("password_mod.check(...)", CHALLENGE, wrong, dbl) is False
    assert lua.eval("password_mod.check(...)", CHALLENGE, b"", dbl) is False


def test_round_trip_in_lua(lua: LuaRuntime) -> None:
    assert (
        lua.execute(
            """
            local p = password_mod
            local challenge = ...
            local hashed = p.hash("hello")
            local dbl = p.hash(hashed)
            local resp = p.scramble(challenge, hashed)
            return p.check(challenge, resp, dbl) and p.unscramble(challenge, resp, dbl) == hashed
            """,
            CHALLENGE,
        )
        is True
    )


def test_non_string_argument_is_a_lua_error(lua: LuaRuntime) -> None:
    ok, msg = lua.eval("pcall(password_mod.hash, {})")
    assert ok is False
    assert b"has to be a string" in msg
