"""mysql.proto from Lua: encoders, decoders, exact bytes and round trips (reference 8.1)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from lua_compat import LuaRuntime

GREETING_DEFAULT = (
    b"\x0a"
    + b"5.0.99\x00"
    + b"\x00\x00\x00\x00"  # thread id
    + b"01234567"
    + b"\x00"
    + b"\x00\x82"  # capabilities low: PROTOCOL_41 | SECURE_CONNECTION
    + b"\x00"  # charset
    + b"\x00\x00"  # status
    + b"\x00\x00"  # capabilities high
    + b"\x00"  # no PLUGIN_AUTH: 0
    + b"\x00" * 10
    + b"890123456789\x00"
)


@pytest.fixture(scope="module", autouse=True)
def _load(lua: LuaRuntime) -> None:
    lua.execute('proto = require("mysql.proto")')


def fields(lua: LuaRuntime, expr: str, *args: Any) -> dict[str, Any]:
    table = lua.eval(expr, *args)
    return {k.decode(): v for k, v in table.items()}


def lua_error(lua: LuaRuntime, expr: str, *args: Any) -> bytes:
    ok, msg = lua.execute(f"return pcall(function(...) return {expr} end, ...)", *args)
    assert ok is False
    return bytes(msg)


# --- ERR ---------------------------------------------------------------------------


def test_err_packet_reference_size(lua: LuaRuntime) -> None:
    pkt = lua.eval('proto.to_err_packet({errmsg = "123"})')
    assert pkt == b"\xff\x00\x00#07000123"
    assert len(pkt) == 12


def test_err_round_trip(lua: LuaRuntime) -> None:
    pkt = lua.eval('proto.to_err_packet({errcode = 1045, sqlstate = "28000", errmsg = "denied"})')
    assert pkt == b"\xff" + struct.pack("<H", 1045) + b"#28000denied"
    assert fields(lua, "proto.from_err_packet(...)", pkt) == {
        "errcode": 1045,
        "sqlstate": b"28000",
        "errmsg": b"denied",
    }


def test_err_message_truncated_and_empty_omitted(lua: LuaRuntime) -> None:
    assert len(lua.eval("proto.to_err_packet({errmsg = string.rep('x', 600)})")) == 9 + 512
    assert fields(lua, "proto.from_err_packet(...)", b"\xff\x01\x00#HY000") == {
        "errcode": 1,
        "sqlstate": b"HY000",
    }


@pytest.mark.parametrize("pkt", [b"\x00\x01\x00#HY000x", b"\xff\x01\x00HY000x", b"\xff\x01"])
def test_err_decoder_rejects_malformed(lua: LuaRuntime, pkt: bytes) -> None:
    assert b"failed" in lua_error(lua, "proto.from_err_packet(...)", pkt)


# --- OK / EOF -------------------------------------------------------------------------


def test_ok_packet(lua: LuaRuntime) -> None:
    assert lua.eval("proto.to_ok_packet({})") == b"\x00\x00\x00\x00\x00\x00\x00"
    pkt = lua.eval(
        "proto.to_ok_packet({affected_rows = 300, insert_id = 70000, server_status = 2,"
        " warnings = 1})"
    )
    assert pkt == b"\x00\xfc\x2c\x01\xfd\x70\x11\x01\x02\x00\x01\x00"
    assert fields(lua, "proto.from_ok_packet(...)", pkt) == {
        "affected_rows": 300,
        "insert_id": 70000,
        "server_status": 2,
        "warnings": 1,
    }
    assert b"failed" in lua_error(lua, "proto.from_ok_packet(...)", b"\xfe\x00\x00\x02\x00")
    assert b"failed" in lua_error(lua, "proto.from_ok_packet(...)", b"\x00\x00")


def test_eof_packet(lua: LuaRuntime) -> None:
    pkt = lua.eval("proto.to_eof_packet({warnings = 3, server_status = 0x22})")
    assert pkt == b"\xfe\x03\x00\x22\x00"
    assert fields(lua, "proto.from_eof_packet(...)", pkt) == {"warnings": 3, "server_status": 34}
    assert len(lua.eval("proto.to_eof_packet({})")) == 5
    assert b"failed" in lua_error(lua, "proto.from_eof_packet(...)", b"\x00\x00\x00\x00\x00")


# --- greeting -------------------------------------------------------------------------


def test_challenge_default_is_52_bytes(lua: LuaRuntime) -> None:
    pkt = lua.eval("proto.to_challenge_packet({})")
    assert pkt == GREETING_DEFAULT
    assert len(pkt) == 52
    assert fields(lua, "proto.from_challenge_packet(...)", pkt) == {
        "protocol_version": 10,
        "server_version": 50099,
        "thread_id": 0,
        "capabilities": 0x8200,
        "charset": 0,
        "server_status": 0,
        "challenge": b"01234567890123456789",
    }


def test_challenge_with_version_is_53_bytes(lua: LuaRuntime) -> None:
    pkt = lua.eval("proto.to_challenge_packet({server_status = 2, server_version = 50034})")
    assert len(pkt) == 53
    assert pkt[1:9] == b"5.00.34\x00"
    assert pkt[:1] + pkt[9:] == GREETING_DEFAULT[:1] + GREETING_DEFAULT[8:].replace(
        b"\x00\x82\x00\x00\x00", b"\x00\x82\x00\x02\x00", 1
    )
    decoded = fields(lua, "proto.from_challenge_packet(...)", pkt)
    assert decoded["server_version"] == 50034
    assert decoded["server_status"] == 2


def test_challenge_round_trip_all_fields(lua: LuaRuntime) -> None:
    challenge = bytes(range(65, 85))
    pkt = lua.eval(
        "proto.to_challenge_packet({server_version = 50150, thread_id = 1234,"
        " capabilities = 0xf7ff, charset = 8, server_status = 2, challenge = ...})",
        challenge,
    )
    assert fields(lua, "proto.from_challenge_packet(...)", pkt) == {
        "protocol_version": 10,
        "server_version": 50150,
        "thread_id": 1234,
        "capabilities": 0xF7FF,
        "charset": 8,
        "server_status": 2,
        "challenge": challenge,
    }


def test_challenge_out_of_range_version_defaults(lua: LuaRuntime) -> None:
    pkt = lua.eval("proto.to_challenge_packet({server_version = 200000})")
    assert pkt[1:8] == b"5.0.99\x00"


def test_challenge_from_real_server_with_plugin_auth(lua: LuaRuntime) -> None:
    caps = 0xA7FFF7FF & ~0x800  # modern server caps, includes PLUGIN_AUTH
    scramble = b"abcdefghijklmnopqrst"
    pkt = (
        b"\x0a5.5.5-10.11.19-MariaDB\x00"
        + struct.pack("<I", 42)
        + scramble[:8]
        + b"\x00"
        + struct.pack("<HBHH", caps & 0xFFFF, 45, 2, caps >> 16)
        + b"\x15"
        + b"\x00" * 10
        + scramble[8:]
        + b"\x00"
        + b"mysql_native_password\x00"
    )
    assert fields(lua, "proto.from_challenge_packet(...)", pkt) == {
        "protocol_version": 10,
        "server_version": 50505,
        "thread_id": 42,
        "capabilities": caps,
        "charset": 45,
        "server_status": 2,
        "challenge": scramble + b"\x00",
        "auth_plugin_name": b"mysql_native_password",
    }


@pytest.mark.parametrize(
    "pkt",
    [b"\x09" + GREETING_DEFAULT[1:], b"\x0ax.y.z\x00" + b"\x00" * 40, b"\x0a11.0.0\x00", b""],
)
def test_challenge_decoder_rejects_malformed(lua: LuaRuntime, pkt: bytes) -> None:
    lua_error(lua, "proto.from_challenge_packet(...)", pkt)


# --- handshake response ------------------------------------------------------------------


def test_response_reference_example_43_bytes(lua: LuaRuntime) -> None:
    pkt = lua.eval(
        "proto.to_response_packet({server_capabilities = 0x8208, capabilities = 0x8208,"
        ' username = "foobar", database = "db"})'
    )
    assert len(pkt) == 43
    assert pkt == (
        struct.pack("<IIB", 0x8208, 0, 0) + b"\x00" * 23 + b"foobar\x00" + b"\x00" + b"db\x00"
    )
    assert fields(lua, "proto.from_response_packet(..., 0x8208)", pkt) == {
        "capabilities": 0x8208,
        "server_capabilities": 0x8208,
        "max_packet_size": 0,
        "charset": 0,
        "username": b"foobar",
        "database": b"db",
    }


def test_response_round_trip_with_plugin(lua: LuaRuntime) -> None:
    response = bytes(range(20))
    caps = 0x8200 | 0x8 | 0x80000 | 0x1
    pkt = lua.eval(
        "proto.to_response_packet({server_capabilities = 0xffffffff, capabilities = "
        f"{caps}, max_packet_size = 16777216, charset = 33, username = 'root',"
        " response = ..., database = 'test', auth_plugin_name = 'mysql_native_password'})",
        response,
    )
    assert fields(lua, "proto.from_response_packet(..., 0xffffffff)", pkt) == {
        "capabilities": caps,
        "server_capabilities": 0xFFFFFFFF,
        "max_packet_size": 16777216,
        "charset": 33,
        "username": b"root",
        "response": response,
        "database": b"test",
        "auth_plugin_name": b"mysql_native_password",
    }


def test_response_default_caps_and_mandatory_server_caps(lua: LuaRuntime) -> None:
    pkt = lua.eval("proto.to_response_packet({server_capabilities = 0})")
    assert struct.unpack("<I", pkt[:4])[0] == 0x8200
    assert b"server_capabilities" in lua_error(lua, "proto.to_response_packet({})")
    assert lua_error(lua, "proto.to_response_packet('x')")


def test_response_40_layout(lua: LuaRuntime) -> None:
    pkt = struct.pack("<H", 0x0001 | 0x0004) + b"\xff\xff\xff" + b"bob\x00" + b"12345678"
    assert fields(lua, "proto.from_response_packet(...)", pkt) == {
        "capabilities": 5,
        "server_capabilities": 0,
        "max_packet_size": 0xFFFFFF,
        "charset": 0,
        "username": b"bob",
        "response": b"12345678",
    }


# --- prepared statements -------------------------------------------------------------


def test_stmt_packets(lua: LuaRuntime) -> None:
    assert fields(lua, "proto.from_stmt_prepare_packet(...)", b"\x16SELECT ?") == {
        "stmt_text": b"SELECT ?"
    }
    ok = b"\x00" + struct.pack("<IHHBH", 7, 2, 3, 0, 1)
    assert fields(lua, "proto.from_stmt_prepare_ok_packet(...)", ok) == {
        "stmt_id": 7,
        "num_columns": 2,
        "num_params": 3,
        "warnings": 1,
    }
    assert lua.eval("proto.stmt_id_from_stmt_execute_packet(...)", b"\x17\x09\x00\x00\x00") == 9
    assert fields(lua, "proto.from_stmt_close_packet(...)", b"\x19\x05\x00\x00\x00") == {
        "stmt_id": 5
    }
    assert lua_error(lua, "proto.from_stmt_close_packet(...)", b"\x17\x05\x00\x00\x00")


@pytest.mark.parametrize(
    "name", ["from_ok_packet", "from_err_packet", "from_eof_packet", "from_challenge_packet"]
)
def test_decoders_need_a_string(lua: LuaRuntime, name: str) -> None:
    assert b"string" in lua_error(lua, f"proto.{name}({{}})")


def execute_packet(params: list[tuple[int, int, bytes | None]], bound: bool = True) -> bytes:
    """COM_STMT_EXECUTE for stmt 3 with (type, flag, encoded value or None for NULL)."""
    n = len(params)
    nulls = bytearray((n + 7) // 8)
    for i, (_, _, value) in enumerate(params):
        if value is None:
            nulls[i // 8] |= 1 << (i % 8)
    out = b"\x17" + struct.pack("<IBI", 3, 0, 1)
    if n:
        out += bytes(nulls) + (b"\x01" if bound else b"\x00")
        if bound:
            out += b"".join(bytes([t, f]) for t, f, _ in params)
            out += b"".join(v for _, _, v in params if v is not None)
    return out


def test_stmt_execute_all_value_kinds(lua: LuaRuntime) -> None:
    params: list[tuple[int, int, bytes | None]] = [
        (253, 0, b"\x03abc"),  # VAR_STRING
        (252, 0, b"\x00"),  # empty BLOB
        (1, 0, b"\xff"),  # TINY -1
        (1, 0x80, b"\xff"),  # unsigned TINY 255
        (2, 0, struct.pack("<h", -300)),
        (3, 0, struct.pack("<i", 70000)),
        (8, 0, struct.pack("<q", -(2**40))),
        (4, 0, struct.pack("<f", 1.5)),
        (5, 0, struct.pack("<d", -2.25)),
        (10, 0, b"\x04" + struct.pack("<HBB", 2024, 2, 29)),
        (12, 0, b"\x0b" + struct.pack("<HBBBBBI", 2024, 2, 29, 13, 5, 9, 123456)),
        (7, 0, b"\x07" + struct.pack("<HBBBBB", 1999, 12, 31, 23, 59, 58)),
        (11, 0, b"\x0c" + struct.pack("<BIBBBI", 1, 2, 3, 4, 5, 6)),
        (253, 0, None),  # NULL via the bitmap
        (6, 0, b""),  # MYSQL_TYPE_NULL
    ]
    pkt = execute_packet(params)
    got = lua.execute(
        """
        local t = proto.from_stmt_execute_packet(..., 15)
        local out = {t.stmt_id, t.flags, t.iteration_count, tostring(t.new_params_bound), #t.params}
        for i, p in ipairs(t.params) do
          out[#out + 1] = p.type .. "=" .. (p.value == nil and "nil" or tostring(p.value))
        end
        return table.concat(out, "|")
        """,
        pkt,
    )
    assert got.split(b"|") == [
        b"3",
        b"0",
        b"1",
        b"true",
        b"15",
        b"253=abc",
        b"252=",
        b"1=-1",
        b"1=255",
        b"2=-300",
        b"3=70000",
        b"8=-1099511627776",
        b"4=1.5",
        b"5=-2.25",
        b"10=2024-02-29",
        b"12=2024-02-29 13:05:09.000123456",  # microseconds unscaled, as upstream
        b"7=1999-12-31 23:59:58.000000000",
        b"11=-2 03:04:05.000000006",
        b"253=nil",
        b"6=nil",
    ]
    assert lua.eval("proto.stmt_id_from_stmt_execute_packet(...)", pkt) == 3


def test_stmt_execute_without_new_params(lua: LuaRuntime) -> None:
    pkt = execute_packet([(3, 0, b"\x00\x00\x00\x00")], bound=False)
    got = fields(lua, "proto.from_stmt_execute_packet(..., 1)", pkt)
    assert got == {"stmt_id": 3, "flags": 0, "iteration_count": 1, "new_params_bound": False}
    got = fields(lua, "proto.from_stmt_execute_packet(..., 0)", execute_packet([]))
    assert got["new_params_bound"] is False and "params" not in got


def test_stmt_execute_errors(lua: LuaRuntime) -> None:
    pkt = execute_packet([(246, 0, b"\x011")])  # NEWDECIMAL: not supported
    assert b"unsupported" in lua_error(lua, "proto.from_stmt_execute_packet(..., 1)", pkt)
    assert lua_error(lua, "proto.from_stmt_execute_packet(...)", pkt)  # num_params missing
    assert lua_error(lua, "proto.from_stmt_execute_packet(..., 1)", pkt[:8])


MASTERINFO_15 = b"15\nmysql-bin.000003\n4711\n127.0.0.1\nrepl\nsecret\n3306\n60\n0\n\n\n\n\n\n0\n"
MASTERINFO_14 = (
    b"14\nmysql-bin.000001\n106\nhost\nuser\npw\n3307\n30\n1\nca\ncapath\ncert\ncipher\nkey\n"
)


def test_masterinfo_round_trip(lua: LuaRuntime) -> None:
    got = fields(lua, "proto.from_masterinfo_string(...)", MASTERINFO_15)
    assert got == {
        "master_lines": 15,
        "master_log_file": b"mysql-bin.000003",
        "master_log_pos": 4711,
        "master_host": b"127.0.0.1",
        "master_user": b"repl",
        "master_password": b"secret",
        "master_port": 3306,
        "master_connect_retry": 60,
        "master_ssl": 0,
        "master_ssl_verify_server_cert": 0,
    }
    for text in (MASTERINFO_15, MASTERINFO_14):
        assert (
            lua.eval("proto.to_masterinfo_string(proto.from_masterinfo_string(...))", text) == text
        )
    old = fields(lua, "proto.from_masterinfo_string(...)", MASTERINFO_14)
    assert "master_ssl_verify_server_cert" not in old
    assert old["master_ssl_key"] == b"key"
    assert lua_error(lua, "proto.from_masterinfo_string(...)", b"abc\n")


@pytest.mark.parametrize(
    ("expr", "needle"),
    [
        ("proto.to_err_packet({errmsg = {}})", b"errmsg"),
        ("proto.to_ok_packet({affected_rows = 'many'})", b"affected_rows"),
        (
            "proto.to_response_packet({server_capabilities = 0, max_packet_size = 2^40})",
            b"",
        ),
        ("proto.to_ok_packet(nil)", b"table"),
    ],
)
def test_encoder_bad_fields_are_lua_errors(lua: LuaRuntime, expr: str, needle: bytes) -> None:
    assert needle in lua_error(lua, expr)


def test_challenge_plugin_auth_without_length(lua: LuaRuntime) -> None:
    # PLUGIN_AUTH announced but challenge length 0: fall back to the 12 + NUL layout
    caps = 0x8200 | 0x80000
    pkt = (
        b"\x0a5.1.70\x00"
        + struct.pack("<I", 1)
        + b"ABCDEFGH\x00"
        + struct.pack("<HBHH", caps & 0xFFFF, 8, 2, caps >> 16)
        + b"\x00" * 11
        + b"IJKLMNOPQRST\x00"
    )
    got = fields(lua, "proto.from_challenge_packet(...)", pkt)
    assert got["challenge"] == b"ABCDEFGHIJKLMNOPQRST"
    assert got["server_version"] == 50170
