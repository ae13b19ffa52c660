"""mysql.proto: packet encoders/decoders of mysql-proxy 0.8 (reference section 8.1).

All packets are payloads without the 4-byte header. Encoders take a dict of the Lua
table's string keys; decoders return a dict whose empty string fields are left out.
Decoders raise ProtoError, which the Lua side turns into a Lua error.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any

CLIENT_LONG_PASSWORD = 0x1
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000

DEFAULT_CHALLENGE = b"01234567" + b"890123456789"

Table = Mapping[str, Any]


class ProtoError(ValueError):
    """Malformed packet or bad argument; becomes a Lua error."""


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def fail(self) -> ProtoError:
        return ProtoError(f"{self.what}() failed")

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail()
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "little")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def lenenc(self) -> int:
        first = self.u8()
        if first < 0xFB:
            return first
        if first == 0xFC:
            return self.u16()
        if first == 0xFD:
            return self.u24()
        if first == 0xFE:
            return int.from_bytes(self.take(8), "little")
        raise self.fail()

    def cstring(self) -> bytes:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise self.fail()
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out

    def rest(self) -> bytes:
        return self.take(self.left())


def _num(t: Table, key: str, default: int = 0) -> int:
    v = t.get(key)
    if v is None:
        return default
    if isinstance(v, bytes):
        try:
            return int(float(v))
        except ValueError:
            raise ProtoError(f".{key} should be a number") from None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ProtoError(f".{key} should be a number")
    return int(v)


def _str(t: Table, key: str, default: bytes = b"") -> bytes:
    v = t.get(key)
    if v is None:
        return default
    if isinstance(v, bytes):
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        return b"%.14g" % v
    raise ProtoError(f".{key} should be a string")


def _lenenc(n: int) -> bytes:
    if n < 0xFB:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def _strip_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v != b""}


def _as_bytes(s: object, what: str) -> bytes:
    if not isinstance(s, bytes):
        raise ProtoError(f"{what}() failed: expected a string")
    return s


# --- ERR ---------------------------------------------------------------------------


def to_err_packet(t: Table) -> bytes:
    sqlstate = _str(t, "sqlstate", b"07000")
    sqlstate = (sqlstate + b"00000")[:5] if sqlstate else b"07000"
    return (
        b"\xff"
        + struct.pack("<H", _num(t, "errcode") & 0xFFFF)
        + b"#"
        + sqlstate
        + _str(t, "errmsg")[:512]
    )


def from_err_packet(s: object) -> dict[str, Any]:
    r = _Reader(
        _as_bytes(s, "network_mysqld_proto_get_err_packet"), "network_mysqld_proto_get_err_packet"
    )
    if r.u8() != 0xFF:
        raise r.fail()
    errcode = r.u16()
    if r.take(1) != b"#":
        raise r.fail()
    sqlstate = r.take(5)
    return _strip_empty({"errcode": errcode, "sqlstate": sqlstate, "errmsg": r.rest()})


# --- OK ----------------------------------------------------------------------------


def to_ok_packet(t: Table) -> bytes:
    return (
        b"\x00"
        + _lenenc(_num(t, "affected_rows"))
        + _lenenc(_num(t, "insert_id"))
        + struct.pack("<HH", _num(t, "server_status") & 0xFFFF, _num(t, "warnings") & 0xFFFF)
    )


def from_ok_packet(s: object) -> dict[str, Any]:
    what = "network_mysqld_proto_get_ok_packet"
    r = _Reader(_as_bytes(s, what), what)
    if r.u8() != 0x00:
        raise r.fail()
    affected = r.lenenc()
    insert_id = r.lenenc()
    status = r.u16()
    warnings = r.u16()
    return {
        "affected_rows": affected,
        "insert_id": insert_id,
        "server_status": status,
        "warnings": warnings,
    }


# --- EOF ---------------------------------------------------------------------------


def to_eof_packet(t: Table) -> bytes:
    return b"\xfe" + struct.pack(
        "<HH", _num(t, "warnings") & 0xFFFF, _num(t, "server_status") & 0xFFFF
    )


def from_eof_packet(s: object) -> dict[str, Any]:
    what = "network_mysqld_proto_get_eof_packet"
    r = _Reader(_as_bytes(s, what), what)
    if r.u8() != 0xFE:
        raise r.fail()
    warnings = r.u16()
    status = r.u16()
    return {"warnings": warnings, "server_status": status}


# --- greeting (challenge) ------------------------------------------------------------

_VERSION_RE = re.compile(rb"^(\d+)\.(\d+)\.(\d+)")


def _version_string(v: int) -> bytes:
    if 30000 < v < 100000:
        return b"%d.%02d.%02d" % (v // 10000, (v // 100) % 100, v % 100)
    return b"5.0.99"


def to_challenge_packet(t: Table) -> bytes:
    version = _num(t, "server_version")
    caps = _num(t, "capabilities", CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION)
    challenge = _str(t, "challenge") or DEFAULT_CHALLENGE
    plugin_auth = bool(caps & CLIENT_PLUGIN_AUTH)
    out = bytearray(b"\x0a")
    out += _version_string(version) + b"\0"
    out += struct.pack("<I", _num(t, "thread_id") & 0xFFFFFFFF)
    out += challenge[:8].ljust(8, b"\0") + b"\0"
    out += struct.pack("<H", caps & 0xFFFF)
    out += struct.pack("<B", _num(t, "charset") & 0xFF)
    out += struct.pack("<H", _num(t, "server_status") & 0xFFFF)
    out += struct.pack("<H", (caps >> 16) & 0xFFFF)
    out += struct.pack("<B", len(challenge) & 0xFF if plugin_auth else 0)
    out += b"\0" * 10
    if plugin_auth:
        out += challenge[8:]
        if 50510 <= version < 50600 or version >= 50602:
            out += b"\0"  # no auth_plugin_name input: an empty name
    elif caps & CLIENT_SECURE_CONNECTION:
        out += challenge[8:] + b"\0"
    return bytes(out)


def from_challenge_packet(s: object) -> dict[str, Any]:
    what = "network_mysqld_proto_get_auth_challenge"
    r = _Reader(_as_bytes(s, what), what)
    protocol_version = r.u8()
    if protocol_version != 0x0A:
        raise r.fail()
    version_text = r.cstring()
    m = _VERSION_RE.match(version_text)
    if not m:
        raise r.fail()
    major, minor, patch = (int(g) for g in m.groups())
    if major > 10 or minor > 100 or patch > 100:
        raise r.fail()
    thread_id = r.u32()
    challenge = r.take(8)
    r.u8()  # filler
    caps = r.u16()
    charset = 0
    status = 0
    plugin_name = b""
    if r.left():
        charset = r.u8()
        status = r.u16()
        caps |= r.u16() << 16
        challenge_len = r.u8()
        r.take(10)
        if caps & CLIENT_PLUGIN_AUTH and challenge_len > 8:
            challenge += r.take(challenge_len - 8)
            if r.left():
                end = r.data.find(b"\0", r.pos)
                plugin_name = r.rest() if end < 0 else r.cstring()
        elif caps & CLIENT_SECURE_CONNECTION:
            challenge += r.take(12)
            r.take(1)
    return _strip_empty(
        {
            "protocol_version": protocol_version,
            "server_version": major * 10000 + minor * 100 + patch,
            "thread_id": thread_id,
            "capabilities": caps,
            "charset": charset,
            "server_status": status,
            "challenge": challenge,
            "auth_plugin_name": plugin_name,
        }
    )


# --- handshake response ----------------------------------------------------------------


def to_response_packet(t: Table) -> bytes:
    server_caps = t.get("server_capabilities")
    if (
        server_caps is None
        or isinstance(server_caps, bool)
        or not isinstance(server_caps, int | float)
    ):
        raise ProtoError(".server_capabilities has to be a number")
    caps = _num(t, "capabilities", CLIENT_SECURE_CONNECTION | CLIENT_PROTOCOL_41)
    username = _str(t, "username")
    response = _str(t, "response")
    out = bytearray()
    if caps & CLIENT_PROTOCOL_41:
        out += struct.pack(
            "<IIB", caps & 0xFFFFFFFF, _num(t, "max_packet_size"), _num(t, "charset")
        )
        out += b"\0" * 23
        out += username + b"\0"
        if caps & CLIENT_SECURE_CONNECTION:
            out += bytes([len(response) & 0xFF]) + response
        else:
            out += response + b"\0"
        if caps & CLIENT_CONNECT_WITH_DB:
            out += _str(t, "database") + b"\0"
        if caps & CLIENT_PLUGIN_AUTH:
            out += _str(t, "auth_plugin_name") + b"\0"
    else:
        out += struct.pack("<H", caps & 0xFFFF)
        out += (_num(t, "max_packet_size") & 0xFFFFFF).to_bytes(3, "little")
        out += username + b"\0"
        out += response
        if caps & CLIENT_CONNECT_WITH_DB:
            out += b"\0" + _str(t, "database") + b"\0"
    return bytes(out)


def from_response_packet(s: object, server_caps: object = None) -> dict[str, Any]:
    what = "network_mysqld_proto_get_auth_response"
    r = _Reader(_as_bytes(s, what), what)
    scaps = int(server_caps) if isinstance(server_caps, int | float) else None
    caps = r.u16()
    database = b""
    plugin_name = b""
    if caps & CLIENT_PROTOCOL_41:
        caps |= r.u16() << 16
        use = caps if scaps is None else caps & scaps
        max_packet = r.u32()
        charset = r.u8()
        r.take(23)
        username = r.cstring()
        response = r.take(r.u8()) if use & CLIENT_SECURE_CONNECTION else r.cstring()
        if use & CLIENT_CONNECT_WITH_DB and r.left():
            database = r.cstring()
        if use & CLIENT_PLUGIN_AUTH and r.left():
            plugin_name = r.cstring()
    else:
        use = caps if scaps is None else caps & scaps
        max_packet = r.u24()
        charset = 0
        username = r.cstring()
        tail = r.rest()
        response, _, rest = tail.partition(b"\0")
        if use & CLIENT_CONNECT_WITH_DB:
            database = rest.rstrip(b"\0")
    return _strip_empty(
        {
            "capabilities": caps,
            "server_capabilities": scaps if scaps is not None else 0,
            "max_packet_size": max_packet,
            "charset": charset,
            "username": username,
            "response": response,
            "auth_plugin_name": plugin_name,
            "database": database,
        }
    )


# --- prepared statements -------------------------------------------------------------


def from_stmt_prepare_packet(s: object) -> dict[str, Any]:
    what = "network_mysqld_proto_get_stmt_prepare_packet"
    r = _Reader(_as_bytes(s, what), what)
    if r.u8() != 0x16:
        raise r.fail()
    return _strip_empty({"stmt_text": r.rest()})


def from_stmt_prepare_ok_packet(s: object) -> dict[str, Any]:
    what = "network_mysqld_proto_get_stmt_prepare_ok_packet"
    r = _Reader(_as_bytes(s, what), what)
    if r.u8() != 0x00:
        raise r.fail()
    stmt_id = r.u32()
    num_columns = r.u16()
    num_params = r.u16()
    r.u8()
    warnings = r.u16()
    return {
        "stmt_id": stmt_id,
        "num_columns": num_columns,
        "num_params": num_params,
        "warnings": warnings,
    }


def stmt_id_from_stmt_execute_packet(s: object) -> int:
    what = "network_mysqld_proto_get_stmt_execute_packet_stmt_id"
    r = _Reader(_as_bytes(s, what), what)
    if r.u8() != 0x17:
        raise r.fail()
    return r.u32()


def from_stmt_close_packet(s: object) -> dict[str, Any]:
    what = "network_mysqld_proto_get_stmt_close_packet"
    r = _Reader(_as_bytes(s, what), what)
    if r.u8() != 0x19:
        raise r.fail()
    return {"stmt_id": r.u32()}


# MYSQL_TYPE_* values used by COM_STMT_EXECUTE parameters
_T_TINY, _T_SHORT, _T_LONG, _T_FLOAT, _T_DOUBLE, _T_NULL = 1, 2, 3, 4, 5, 6
_T_TIMESTAMP, _T_LONGLONG, _T_DATE, _T_TIME, _T_DATETIME = 7, 8, 10, 11, 12
_STRING_TYPES = frozenset({249, 250, 251, 252, 253, 254})  # *_BLOB, VAR_STRING, STRING
_INT_SIZES = {_T_TINY: 1, _T_SHORT: 2, _T_LONG: 4, _T_LONGLONG: 8}


def _param_value(r: _Reader, ptype: int, unsigned: bool) -> Any:
    if ptype in _STRING_TYPES:
        return r.take(r.lenenc())
    if ptype in _INT_SIZES:
        return int.from_bytes(r.take(_INT_SIZES[ptype]), "little", signed=not unsigned)
    if ptype == _T_FLOAT:
        return struct.unpack("<f", r.take(4))[0]
    if ptype == _T_DOUBLE:
        return struct.unpack("<d", r.take(8))[0]
    if ptype == _T_NULL:
        return None
    if ptype in (_T_DATE, _T_DATETIME, _T_TIMESTAMP):
        body = _Reader(r.take(r.u8()), r.what)
        year = month = day = hour = minute = second = micro = 0
        if body.left() >= 4:
            year, month, day = body.u16(), body.u8(), body.u8()
        if body.left() >= 3:
            hour, minute, second = body.u8(), body.u8(), body.u8()
        if body.left() >= 4:
            micro = body.u32()
        if ptype == _T_DATE:
            return b"%04d-%02d-%02d" % (year, month, day)
        # mysql-proxy reads the 4-byte microseconds into its `nsec` field and prints
        # it with %09u unscaled: 1 us -> ".000000001" (tests/unit/lua/mysql-proto.lua).
        return b"%04d-%02d-%02d %02d:%02d:%02d.%09d" % (
            year,
            month,
            day,
            hour,
            minute,
            second,
            micro,
        )
    if ptype == _T_TIME:
        body = _Reader(r.take(r.u8()), r.what)
        negative = days = hour = minute = second = micro = 0
        if body.left() >= 8:
            negative, days = body.u8(), body.u32()
            hour, minute, second = body.u8(), body.u8(), body.u8()
        if body.left() >= 4:
            micro = body.u32()
        return b"%s%d %02d:%02d:%02d.%09d" % (
            b"-" if negative else b"",
            days,
            hour,
            minute,
            second,
            micro,  # unscaled, as above
        )
    raise ProtoError(f"{r.what}() failed: unsupported parameter type {ptype}")


def from_stmt_execute_packet(s: object, num_params: object = None) -> dict[str, Any]:
    what = "network_mysqld_proto_get_stmt_execute_packet"
    r = _Reader(_as_bytes(s, what), what)
    if not isinstance(num_params, int | float) or isinstance(num_params, bool):
        raise ProtoError(f"{what}() failed: num_params has to be a number")
    n = int(num_params)
    if r.u8() != 0x17:
        raise r.fail()
    out: dict[str, Any] = {"stmt_id": r.u32(), "flags": r.u8(), "iteration_count": r.u32()}
    bound = False
    if n > 0:
        nulls = r.take((n + 7) // 8)
        bound = r.u8() == 1
        if bound:
            types = [(r.u8(), r.u8()) for _ in range(n)]
            params: list[dict[str, Any]] = []
            for i, (ptype, flag) in enumerate(types):
                is_null = bool(nulls[i // 8] & (1 << (i % 8)))
                value = None if is_null else _param_value(r, ptype, bool(flag & 0x80))
                param: dict[str, Any] = {"type": ptype}
                if value is not None:
                    param["value"] = value
                params.append(param)
            out["params"] = params
    out["new_params_bound"] = bound
    return out


# --- master.info ----------------------------------------------------------------------

_MASTERINFO_FIELDS: tuple[tuple[str, bool], ...] = (
    ("master_log_file", False),
    ("master_log_pos", True),
    ("master_host", False),
    ("master_user", False),
    ("master_password", False),
    ("master_port", True),
    ("master_connect_retry", True),
    ("master_ssl", True),
    ("master_ssl_ca", False),
    ("master_ssl_capath", False),
    ("master_ssl_cert", False),
    ("master_ssl_cipher", False),
    ("master_ssl_key", False),
    ("master_ssl_verify_server_cert", True),
)


def from_masterinfo_string(s: object) -> dict[str, Any]:
    what = "network_mysqld_masterinfo_get"
    data = _as_bytes(s, what)
    lines = data.split(b"\n")
    try:
        count = int(lines[0])
    except ValueError:
        raise ProtoError(f"{what}() failed") from None
    out: dict[str, Any] = {"master_lines": count}
    for i, (name, numeric) in enumerate(_MASTERINFO_FIELDS, start=1):
        if name == "master_ssl_verify_server_cert" and count < 15:
            break
        text = lines[i] if i < len(lines) else b""
        if numeric:
            try:
                out[name] = int(text or b"0")
            except ValueError:
                raise ProtoError(f"{what}() failed: {name} is not a number") from None
        elif text:
            out[name] = text
    return out


def to_masterinfo_string(t: Table) -> bytes:
    count = _num(t, "master_lines", 15)
    out = [b"%d" % count]
    for name, numeric in _MASTERINFO_FIELDS:
        if name == "master_ssl_verify_server_cert" and count < 15:
            break
        out.append(b"%d" % _num(t, name) if numeric else _str(t, name))
    return b"\n".join(out) + b"\n"
