"""Messages of the client/server protocol: parse the ones the proxy reads, encode the
ones it (or a test's fake server) writes.

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html
https://mariadb.com/kb/en/connection/
"""

from __future__ import annotations

import datetime
import decimal
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from mysqlproxy.protocol import wire
from mysqlproxy.protocol.constants import (
    EOF_HEADER,
    ERR_HEADER,
    OK_HEADER,
    Capability,
    FieldType,
    ServerStatus,
    SessionTrack,
)
from mysqlproxy.protocol.errors import ProtocolError, TruncatedPacket, UnsupportedFeature
from mysqlproxy.protocol.wire import Buffer

# --- connection phase -------------------------------------------------------------

# Offsets inside the v10 greeting after the server version string.
_GREETING_RESERVED = 10  # the last 4 reserved bytes carry MariaDB's extended capabilities


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's Protocol::HandshakeV10 packet."""

    server_version: str
    thread_id: int
    auth_data: bytes
    capabilities: Capability
    charset: int
    status: ServerStatus
    auth_plugin: str


@dataclass(frozen=True, slots=True)
class _GreetingLayout:
    caps_low: int
    caps_high: int
    mariadb_caps: int


def _greeting_layout(payload: Buffer) -> tuple[Greeting, _GreetingLayout]:
    if not payload or payload[0] != 10:
        first = payload[0] if payload else None
        raise ProtocolError(f"unsupported handshake protocol version {first!r}, expected 10")
    version, pos = wire.read_nul_bytes(payload, 1)
    thread_id, pos = wire.read_uint(payload, pos, 4)
    auth1, pos = wire.read_fixed_bytes(payload, pos, 8)
    pos += 1  # filler
    caps_low = pos
    caps, pos = wire.read_uint(payload, pos, 2)
    if len(payload) <= pos:
        # A pre-4.1 style greeting that ends after the lower capability flags.
        greeting = Greeting(
            version.decode("utf-8", "replace"),
            thread_id,
            auth1,
            Capability(caps),
            0,
            ServerStatus(0),
            "",
        )
        return greeting, _GreetingLayout(caps_low, -1, -1)
    charset, pos = wire.read_uint(payload, pos, 1)
    status, pos = wire.read_uint(payload, pos, 2)
    caps_high = pos
    high, pos = wire.read_uint(payload, pos, 2)
    caps |= high << 16
    auth_len, pos = wire.read_uint(payload, pos, 1)
    mariadb_caps = pos + 6
    ext, _ = wire.read_uint(payload, mariadb_caps, 4)
    pos += _GREETING_RESERVED
    if not caps & Capability.CLIENT_LONG_PASSWORD:
        # MariaDB clears the CLIENT_MYSQL bit to say the reserved bytes hold more flags.
        caps |= ext << 32
    auth2 = b""
    if caps & Capability.CLIENT_SECURE_CONNECTION:
        auth2_len = max(13, auth_len - 8)
        auth2, pos = wire.read_fixed_bytes(payload, pos, auth2_len)
        auth2 = auth2.rstrip(b"\x00")
    plugin = b""
    if caps & Capability.CLIENT_PLUGIN_AUTH:
        plugin, pos = wire.read_nul_or_eof_bytes(payload, pos)
    greeting = Greeting(
        server_version=version.decode("utf-8", "replace"),
        thread_id=thread_id,
        auth_data=auth1 + auth2,
        capabilities=Capability(caps),
        charset=charset,
        status=ServerStatus(status),
        auth_plugin=plugin.decode("ascii", "replace"),
    )
    return greeting, _GreetingLayout(caps_low, caps_high, mariadb_caps)


def parse_greeting(payload: Buffer) -> Greeting:
    return _greeting_layout(payload)[0]


def mask_greeting(
    payload: Buffer, mask: Capability, offer: Capability | None = None
) -> tuple[Greeting, bytes]:
    """Clear `mask` from the greeting's capability flags and set `offer` (what the proxy
    provides itself whatever the server does: CLIENT_SSL when it terminates TLS),
    leaving every other byte as the server sent it. Returns the greeting as the client
    will see it."""
    greeting, layout = _greeting_layout(payload)
    out = bytearray(payload)
    keep = ~int(mask)
    caps = (int(greeting.capabilities) & keep) | int(offer or 0)
    out[layout.caps_low : layout.caps_low + 2] = (caps & 0xFFFF).to_bytes(2, "little")
    if layout.caps_high >= 0:
        out[layout.caps_high : layout.caps_high + 2] = ((caps >> 16) & 0xFFFF).to_bytes(2, "little")
    if layout.mariadb_caps >= 0 and not greeting.capabilities & Capability.CLIENT_LONG_PASSWORD:
        out[layout.mariadb_caps : layout.mariadb_caps + 4] = ((caps >> 32) & 0xFFFFFFFF).to_bytes(
            4, "little"
        )
    return parse_greeting(out), bytes(out)


def encode_greeting(greeting: Greeting) -> bytes:
    """A HandshakeV10 payload (for fake servers in tests and tools)."""
    caps = int(greeting.capabilities)
    auth = greeting.auth_data
    auth1, auth2 = auth[:8].ljust(8, b"\x00"), auth[8:]
    ext = 0 if caps & Capability.CLIENT_LONG_PASSWORD else (caps >> 32) & 0xFFFFFFFF
    return b"".join(
        [
            b"\x0a",
            greeting.server_version.encode() + b"\x00",
            wire.uint(greeting.thread_id, 4),
            auth1,
            b"\x00",
            wire.uint(caps & 0xFFFF, 2),
            wire.uint(greeting.charset, 1),
            wire.uint(int(greeting.status), 2),
            wire.uint((caps >> 16) & 0xFFFF, 2),
            wire.uint(len(auth) + 1, 1),
            b"\x00" * 6,
            wire.uint(ext, 4),
            auth2 + b"\x00",
            greeting.auth_plugin.encode() + b"\x00",
        ]
    )


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """The client's Protocol::HandshakeResponse41 packet (or an SSLRequest, which is its
    first 32 bytes with CLIENT_SSL set)."""

    capabilities: Capability
    max_packet_size: int
    charset: int
    username: str
    auth_response: bytes
    database: str | None
    auth_plugin: str | None
    is_ssl_request: bool


_HANDSHAKE_RESPONSE_FIXED = 32  # caps(4) max_packet(4) charset(1) filler(19) mariadb caps(4)


def parse_handshake_response(payload: Buffer, server_caps: Capability) -> HandshakeResponse:
    caps, pos = wire.read_uint(payload, 0, 4)
    if not caps & Capability.CLIENT_PROTOCOL_41:
        raise UnsupportedFeature("clients older than protocol 4.1 are not supported")
    max_packet, pos = wire.read_uint(payload, pos, 4)
    charset, pos = wire.read_uint(payload, pos, 1)
    ext, _ = wire.read_uint(payload, 28, 4)
    if not server_caps & Capability.CLIENT_LONG_PASSWORD and not caps & 1:
        caps |= ext << 32
    if len(payload) == _HANDSHAKE_RESPONSE_FIXED and caps & Capability.CLIENT_SSL:
        return HandshakeResponse(Capability(caps), max_packet, charset, "", b"", None, None, True)
    pos = _HANDSHAKE_RESPONSE_FIXED
    user, pos = wire.read_nul_bytes(payload, pos)
    if caps & Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth, pos = wire.read_lenenc_bytes(payload, pos)
    elif caps & Capability.CLIENT_SECURE_CONNECTION:
        auth_len, pos = wire.read_uint(payload, pos, 1)
        auth, pos = wire.read_fixed_bytes(payload, pos, auth_len)
    else:
        auth, pos = wire.read_nul_or_eof_bytes(payload, pos)
    database: bytes | None = None
    if caps & Capability.CLIENT_CONNECT_WITH_DB and pos < len(payload):
        database, pos = wire.read_nul_or_eof_bytes(payload, pos)
    plugin: bytes | None = None
    if caps & Capability.CLIENT_PLUGIN_AUTH and pos < len(payload):
        plugin, pos = wire.read_nul_or_eof_bytes(payload, pos)
    return HandshakeResponse(
        capabilities=Capability(caps),
        max_packet_size=max_packet,
        charset=charset,
        username=user.decode("utf-8", "replace"),
        auth_response=auth,
        database=database.decode("utf-8", "replace") if database else None,
        auth_plugin=plugin.decode("ascii", "replace") if plugin is not None else None,
        is_ssl_request=False,
    )


def mask_handshake_response(payload: Buffer, mask: Capability) -> bytes:
    """Clear `mask` from a handshake response's flags (a client may set bits it was not
    offered; the server would honour them)."""
    out = bytearray(payload)
    caps = int.from_bytes(out[0:4], "little") & ~int(mask) & 0xFFFFFFFF
    out[0:4] = caps.to_bytes(4, "little")
    if len(out) >= _HANDSHAKE_RESPONSE_FIXED:
        ext = int.from_bytes(out[28:32], "little") & ~(int(mask) >> 32) & 0xFFFFFFFF
        out[28:32] = ext.to_bytes(4, "little")
    return bytes(out)


def with_ssl_flag(payload: Buffer, on: bool) -> bytes:
    """A handshake response with CLIENT_SSL set or cleared. The flag must say what the
    leg it is sent on really does: a server that sees CLIENT_SSL in a response reads it
    as an SSLRequest and starts a TLS handshake."""
    out = bytearray(payload)
    caps = int.from_bytes(out[0:4], "little")
    if on:
        caps |= Capability.CLIENT_SSL
    else:
        caps &= ~int(Capability.CLIENT_SSL)
    out[0:4] = caps.to_bytes(4, "little")
    return bytes(out)


def ssl_request_for(response_payload: Buffer) -> bytes:
    """The SSLRequest payload that goes before `response_payload` (a HandshakeResponse41)
    on a TLS leg: its first 32 bytes, with CLIENT_SSL set. The server compares the two,
    so they must carry the same capabilities, max packet size and character set.
    https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_ssl_request.html"""
    if len(response_payload) < _HANDSHAKE_RESPONSE_FIXED:
        raise TruncatedPacket("handshake response shorter than an SSLRequest")
    return with_ssl_flag(bytes(response_payload[:_HANDSHAKE_RESPONSE_FIXED]), True)


def encode_handshake_response(
    capabilities: Capability,
    username: str,
    auth_response: bytes,
    database: str | None = None,
    auth_plugin: str | None = "mysql_native_password",
    charset: int = 45,
    max_packet_size: int = 1 << 24,
) -> bytes:
    caps = int(capabilities)
    parts = [
        wire.uint(caps & 0xFFFFFFFF, 4),
        wire.uint(max_packet_size, 4),
        wire.uint(charset, 1),
        b"\x00" * 19,
        wire.uint((caps >> 32) & 0xFFFFFFFF, 4),
        username.encode() + b"\x00",
    ]
    if caps & Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        parts.append(wire.lenenc_bytes(auth_response))
    else:
        parts.append(wire.uint(len(auth_response), 1) + auth_response)
    if caps & Capability.CLIENT_CONNECT_WITH_DB:
        parts.append((database or "").encode() + b"\x00")
    if caps & Capability.CLIENT_PLUGIN_AUTH:
        parts.append((auth_plugin or "").encode() + b"\x00")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ChangeUser:
    """COM_CHANGE_USER's arguments."""

    username: str
    database: str | None
    auth_plugin: str | None


def parse_change_user(payload: Buffer, caps: Capability) -> ChangeUser:
    user, pos = wire.read_nul_bytes(payload, 1)
    if caps & Capability.CLIENT_SECURE_CONNECTION:
        auth_len, pos = wire.read_uint(payload, pos, 1)
        _, pos = wire.read_fixed_bytes(payload, pos, auth_len)
    else:
        _, pos = wire.read_nul_or_eof_bytes(payload, pos)
    database, pos = wire.read_nul_or_eof_bytes(payload, pos)
    plugin: bytes | None = None
    if pos + 2 <= len(payload):
        pos += 2  # character set
        if caps & Capability.CLIENT_PLUGIN_AUTH and pos < len(payload):
            plugin, pos = wire.read_nul_or_eof_bytes(payload, pos)
    return ChangeUser(
        username=user.decode("utf-8", "replace"),
        database=database.decode("utf-8", "replace") or None,
        auth_plugin=plugin.decode("ascii", "replace") if plugin is not None else None,
    )


# --- generic responses -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OkPacket:
    """OK_Packet, or the OK that replaces EOF (header 0xFE) under CLIENT_DEPRECATE_EOF."""

    affected_rows: int
    last_insert_id: int
    status: ServerStatus
    warnings: int
    info: bytes
    schema: str | None  # the new current schema, when session tracking reports one


def parse_ok(payload: Buffer, caps: Capability) -> OkPacket:
    if not payload or payload[0] not in (OK_HEADER, EOF_HEADER):
        raise ProtocolError("not an OK packet")
    affected, pos = wire.read_lenenc_int(payload, 1)
    insert_id, pos = wire.read_lenenc_int(payload, pos)
    status, pos = wire.read_uint(payload, pos, 2)
    warnings, pos = wire.read_uint(payload, pos, 2)
    info = b""
    schema: str | None = None
    if caps & Capability.CLIENT_SESSION_TRACK:
        if pos < len(payload):
            info, pos = wire.read_lenenc_bytes(payload, pos)
        if status & ServerStatus.SERVER_SESSION_STATE_CHANGED and pos < len(payload):
            state, pos = wire.read_lenenc_bytes(payload, pos)
            schema = _tracked_schema(state)
    else:
        info = bytes(payload[pos:])
    return OkPacket(affected, insert_id, ServerStatus(status), warnings, info, schema)


def _tracked_schema(state: bytes) -> str | None:
    """The schema named by a SESSION_TRACK_SCHEMA entry, if the state info has one."""
    pos = 0
    schema: str | None = None
    while pos < len(state):
        kind = state[pos]
        data, pos = wire.read_lenenc_bytes(state, pos + 1)
        if kind == SessionTrack.SESSION_TRACK_SCHEMA:
            name, _ = wire.read_lenenc_bytes(data, 0)
            schema = name.decode("utf-8", "replace")
    return schema


@dataclass(frozen=True, slots=True)
class ErrPacket:
    """ERR_Packet."""

    code: int
    sql_state: str
    message: str


def parse_err(payload: Buffer) -> ErrPacket:
    if not payload or payload[0] != ERR_HEADER:
        raise ProtocolError("not an ERR packet")
    code, pos = wire.read_uint(payload, 1, 2)
    state = "HY000"
    if pos < len(payload) and payload[pos] == ord("#"):
        raw_state, pos = wire.read_fixed_bytes(payload, pos + 1, 5)
        state = raw_state.decode("ascii", "replace")
    message = bytes(payload[pos:]).decode("utf-8", "replace")
    return ErrPacket(code, state, message)


@dataclass(frozen=True, slots=True)
class EofPacket:
    """EOF_Packet (header 0xFE, payload under 9 bytes)."""

    warnings: int
    status: ServerStatus


def parse_eof(payload: Buffer) -> EofPacket:
    if not payload or payload[0] != EOF_HEADER:
        raise ProtocolError("not an EOF packet")
    if len(payload) < 5:
        # Pre-4.1 servers send a bare 0xFE.
        return EofPacket(0, ServerStatus(0))
    warnings, pos = wire.read_uint(payload, 1, 2)
    status, _ = wire.read_uint(payload, pos, 2)
    return EofPacket(warnings, ServerStatus(status))


def encode_ok(
    affected_rows: int = 0,
    last_insert_id: int = 0,
    status: ServerStatus = ServerStatus.SERVER_STATUS_AUTOCOMMIT,
    warnings: int = 0,
    info: bytes = b"",
    header: int = OK_HEADER,
) -> bytes:
    return (
        bytes((header,))
        + wire.lenenc_int(affected_rows)
        + wire.lenenc_int(last_insert_id)
        + wire.uint(int(status), 2)
        + wire.uint(warnings, 2)
        + info
    )


def encode_err(code: int, message: str, sql_state: str = "HY000") -> bytes:
    return (
        bytes((ERR_HEADER,))
        + wire.uint(code, 2)
        + b"#"
        + sql_state.encode("ascii")[:5].ljust(5, b"0")
        + message.encode("utf-8")
    )


def encode_eof(
    status: ServerStatus = ServerStatus.SERVER_STATUS_AUTOCOMMIT, warnings: int = 0
) -> bytes:
    return bytes((EOF_HEADER,)) + wire.uint(warnings, 2) + wire.uint(int(status), 2)


def encode_column_definition(
    name: str,
    field_type: FieldType = FieldType.MYSQL_TYPE_VAR_STRING,
    table: str = "",
    schema: str = "",
    charset: int = 45,
    length: int = 255,
    flags: int = 0,
    decimals: int = 0,
) -> bytes:
    """Protocol::ColumnDefinition41."""
    return b"".join(
        [
            wire.lenenc_bytes(b"def"),
            wire.lenenc_bytes(schema.encode()),
            wire.lenenc_bytes(table.encode()),
            wire.lenenc_bytes(table.encode()),
            wire.lenenc_bytes(name.encode()),
            wire.lenenc_bytes(name.encode()),
            b"\x0c",
            wire.uint(charset, 2),
            wire.uint(length, 4),
            wire.uint(int(field_type), 1),
            wire.uint(flags, 2),
            wire.uint(decimals, 1),
            b"\x00\x00",
        ]
    )


def encode_text_row(values: list[bytes | None]) -> bytes:
    return b"".join(b"\xfb" if v is None else wire.lenenc_bytes(v) for v in values)


# --- prepared statements -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrepareOk:
    """COM_STMT_PREPARE_OK."""

    statement_id: int
    num_columns: int
    num_params: int
    warnings: int


def parse_prepare_ok(payload: Buffer) -> PrepareOk:
    if not payload or payload[0] != OK_HEADER:
        raise ProtocolError("not a COM_STMT_PREPARE_OK packet")
    statement_id, pos = wire.read_uint(payload, 1, 4)
    num_columns, pos = wire.read_uint(payload, pos, 2)
    num_params, pos = wire.read_uint(payload, pos, 2)
    warnings = 0
    if pos + 3 <= len(payload):
        warnings, _ = wire.read_uint(payload, pos + 1, 2)
    return PrepareOk(statement_id, num_columns, num_params, warnings)


def encode_prepare_ok(statement_id: int, num_columns: int, num_params: int) -> bytes:
    return (
        b"\x00"
        + wire.uint(statement_id, 4)
        + wire.uint(num_columns, 2)
        + wire.uint(num_params, 2)
        + b"\x00"
        + wire.uint(0, 2)
    )


ParamValue = (
    None
    | int
    | float
    | str
    | bytes
    | decimal.Decimal
    | datetime.date
    | datetime.datetime
    | datetime.timedelta
)

_EXECUTE_HEADER = struct.Struct("<IBI")
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_INT_SIZES = {
    FieldType.MYSQL_TYPE_TINY: 1,
    FieldType.MYSQL_TYPE_SHORT: 2,
    FieldType.MYSQL_TYPE_YEAR: 2,
    FieldType.MYSQL_TYPE_LONG: 4,
    FieldType.MYSQL_TYPE_INT24: 4,
    FieldType.MYSQL_TYPE_LONGLONG: 8,
}
_BLOB_TYPES = frozenset(
    {
        FieldType.MYSQL_TYPE_TINY_BLOB,
        FieldType.MYSQL_TYPE_MEDIUM_BLOB,
        FieldType.MYSQL_TYPE_LONG_BLOB,
        FieldType.MYSQL_TYPE_BLOB,
        FieldType.MYSQL_TYPE_GEOMETRY,
        FieldType.MYSQL_TYPE_BIT,
    }
)
_DECIMAL_TYPES = frozenset({FieldType.MYSQL_TYPE_DECIMAL, FieldType.MYSQL_TYPE_NEWDECIMAL})
_UNSIGNED_FLAG = 0x80


QueryAttributes = tuple[tuple[str, ParamValue], ...]
"""(name, value) pairs sent with a command under CLIENT_QUERY_ATTRIBUTES, in order."""


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    """COM_STMT_EXECUTE: the statement, its cursor flags, the parameter types in force and
    the decoded parameter values. Under CLIENT_QUERY_ATTRIBUTES a client may send more
    values than the statement has placeholders: those are query attributes, named."""

    statement_id: int
    flags: int
    param_types: tuple[int, ...]  # all sent (placeholders, then attributes)
    params: tuple[ParamValue, ...]  # the placeholders' values
    attributes: QueryAttributes = ()


# COM_STMT_EXECUTE flag: a parameter count follows even for a statement without
# placeholders (CursorType.PARAMETER_COUNT_AVAILABLE).
_PARAMETER_COUNT_AVAILABLE = 8


def parse_execute(
    payload: Buffer,
    num_params: int | None,
    previous_types: tuple[int, ...] | None,
    long_data: dict[int, bytes] | None = None,
    query_attributes: bool = False,
) -> ExecuteRequest:
    """Decode COM_STMT_EXECUTE. `num_params` comes from the statement's PREPARE_OK;
    `previous_types` are the types bound by an earlier execute of the same statement
    (clients send types only when new_params_bound is 1); parameters sent with
    COM_STMT_SEND_LONG_DATA have no value in this packet and are taken from `long_data`.

    With `query_attributes` (CLIENT_QUERY_ATTRIBUTES negotiated) a parameter_count
    precedes the NULL bitmap and overrides num_params, each type is followed by a name,
    and the values past the statement's own are query attributes.

    https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html
    """
    statement_id, flags, count, null_bitmap, sent_types, names, pos = _read_execute_types(
        payload, num_params, query_attributes, True
    )
    if not count:
        return ExecuteRequest(statement_id, flags, (), ())
    statement_params = num_params or 0
    if sent_types is not None:
        param_types = sent_types
    elif previous_types is not None and len(previous_types) >= count:
        # Attributes sent with earlier types: the names went with those types.
        param_types = previous_types[:count]
    else:
        raise ProtocolError("COM_STMT_EXECUTE reuses parameter types that were never bound")
    values: list[ParamValue] = []
    for index, type_and_flag in enumerate(param_types):
        if null_bitmap[index // 8] & (1 << (index % 8)):
            values.append(None)
            continue
        if long_data and index in long_data and index < statement_params:
            values.append(long_data[index])
            continue
        value, pos = _read_binary_value(payload, pos, type_and_flag)
        values.append(value)
    if count == statement_params:
        return ExecuteRequest(statement_id, flags, param_types, tuple(values))
    attribute_names = (
        [name.decode("utf-8", "replace") for name in names[statement_params:]]
        if names
        else [""] * (count - statement_params)
    )
    attributes = tuple(zip(attribute_names, values[statement_params:], strict=True))
    return ExecuteRequest(
        statement_id, flags, param_types, tuple(values[:statement_params]), attributes
    )


def parse_execute_types(
    payload: Buffer, num_params: int | None, query_attributes: bool = False
) -> tuple[int, ...] | None:
    """The parameter types a COM_STMT_EXECUTE binds (placeholders, then attributes), read
    without decoding any value; None when it binds none (new_params_bound 0, or nothing
    to send). What a tracker needs on every execute, whether or not it logs: the server
    keeps these types for later executes that send none. A payload cut after the types
    (a capture limit) still gives them."""
    return _read_execute_types(payload, num_params, query_attributes, False)[4]


def _read_execute_types(
    payload: Buffer, num_params: int | None, query_attributes: bool, with_names: bool
) -> tuple[int, int, int, bytes, tuple[int, ...] | None, list[bytes] | None, int]:
    """COM_STMT_EXECUTE up to its values: statement id, flags, the number of values,
    the NULL bitmap, the types sent (None when new_params_bound is 0), their names (when
    `with_names` and under query attributes) and where the values start."""
    if len(payload) < 10:
        raise TruncatedPacket("COM_STMT_EXECUTE shorter than its fixed header")
    # statement id, flags, iteration count (always 1)
    statement_id, flags, _ = _EXECUTE_HEADER.unpack_from(payload, 1)
    pos = 10
    statement_params = num_params or 0
    count = statement_params
    if query_attributes and (count or flags & _PARAMETER_COUNT_AVAILABLE):
        count, pos = wire.read_lenenc_int(payload, pos)
        if count < statement_params:
            raise ProtocolError(
                f"COM_STMT_EXECUTE sends {count} parameters, the statement has {statement_params}"
            )
    if not count:
        return statement_id, flags, 0, b"", None, None, pos
    null_bitmap, pos = wire.read_fixed_bytes(payload, pos, (count + 7) // 8)
    new_params_bound, pos = wire.read_uint(payload, pos, 1)
    if not new_params_bound:
        return statement_id, flags, count, null_bitmap, None, None, pos
    if not query_attributes:
        if pos + 2 * count > len(payload):
            raise TruncatedPacket("COM_STMT_EXECUTE ends inside its parameter types")
        param_types = struct.unpack_from(f"<{count}H", payload, pos)
        return statement_id, flags, count, null_bitmap, param_types, None, pos + 2 * count
    types = []
    names: list[bytes] | None = [] if with_names else None
    end = len(payload)
    for _ in range(count):
        if pos + 2 > end:
            raise TruncatedPacket("COM_STMT_EXECUTE ends inside its parameter types")
        types.append(payload[pos] | payload[pos + 1] << 8)
        name_length, pos = wire.read_lenenc_int(payload, pos + 2)
        if pos + name_length > end:
            raise TruncatedPacket("COM_STMT_EXECUTE ends inside a parameter name")
        if names is not None:
            names.append(bytes(payload[pos : pos + name_length]))
        pos += name_length
    return statement_id, flags, count, null_bitmap, tuple(types), names, pos


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """COM_QUERY: the statement text, and the query attributes sent with it under
    CLIENT_QUERY_ATTRIBUTES (empty when none were)."""

    sql: bytes
    attributes: QueryAttributes
    sql_offset: int  # where the text starts in the payload


def parse_query(payload: Buffer, query_attributes: bool) -> QueryRequest:
    """Decode COM_QUERY. With CLIENT_QUERY_ATTRIBUTES negotiated every COM_QUERY starts
    with parameter_count and parameter_set_count (always 1), then, when the count is not
    0, a NULL bitmap, new_params_bind_flag (always 1), a type and a name per attribute
    and the non-NULL values in the binary protocol; the text follows.

    https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query.html
    """
    if not payload:
        raise TruncatedPacket("empty COM_QUERY")
    if not query_attributes:
        return QueryRequest(bytes(payload[1:]), (), 1)
    count, pos = wire.read_lenenc_int(payload, 1)
    _, pos = wire.read_lenenc_int(payload, pos)  # parameter_set_count
    attributes: QueryAttributes = ()
    if count:
        null_bitmap, pos = wire.read_fixed_bytes(payload, pos, (count + 7) // 8)
        bound, pos = wire.read_uint(payload, pos, 1)
        if bound != 1:
            raise ProtocolError(f"COM_QUERY attributes with new_params_bind_flag {bound}")
        typed: list[tuple[str, int]] = []
        for _ in range(count):
            type_and_flag, pos = wire.read_uint(payload, pos, 2)
            name, pos = wire.read_lenenc_bytes(payload, pos)
            typed.append((name.decode("utf-8", "replace"), type_and_flag))
        pairs: list[tuple[str, ParamValue]] = []
        for index, (name_text, type_and_flag) in enumerate(typed):
            value: ParamValue = None
            if not null_bitmap[index // 8] & (1 << (index % 8)):
                value, pos = _read_binary_value(payload, pos, type_and_flag)
            pairs.append((name_text, value))
        attributes = tuple(pairs)
    return QueryRequest(bytes(payload[pos:]), attributes, pos)


def _read_binary_value(buf: Buffer, pos: int, type_and_flag: int) -> tuple[ParamValue, int]:
    """One value of the binary protocol.
    https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_binary_resultset.html"""
    field_type = type_and_flag & 0xFF
    unsigned = bool(type_and_flag >> 8 & _UNSIGNED_FLAG)
    size = _INT_SIZES.get(field_type)  # type: ignore[call-overload]
    if size is not None:
        raw, pos = wire.read_fixed_bytes(buf, pos, size)
        return int.from_bytes(raw, "little", signed=not unsigned), pos
    if field_type == FieldType.MYSQL_TYPE_FLOAT:
        raw, pos = wire.read_fixed_bytes(buf, pos, 4)
        return float(_FLOAT.unpack(raw)[0]), pos
    if field_type == FieldType.MYSQL_TYPE_DOUBLE:
        raw, pos = wire.read_fixed_bytes(buf, pos, 8)
        return float(_DOUBLE.unpack(raw)[0]), pos
    if field_type == FieldType.MYSQL_TYPE_NULL:
        return None, pos
    if field_type in (
        FieldType.MYSQL_TYPE_DATE,
        FieldType.MYSQL_TYPE_DATETIME,
        FieldType.MYSQL_TYPE_TIMESTAMP,
        FieldType.MYSQL_TYPE_NEWDATE,
    ):
        return _read_binary_datetime(buf, pos, field_type)
    if field_type == FieldType.MYSQL_TYPE_TIME:
        return _read_binary_time(buf, pos)
    raw, pos = wire.read_lenenc_bytes(buf, pos)
    if field_type in _DECIMAL_TYPES:
        try:
            return decimal.Decimal(raw.decode("ascii")), pos
        except (decimal.InvalidOperation, UnicodeDecodeError):
            return raw, pos
    if field_type in _BLOB_TYPES:
        return raw, pos
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError:
        return raw, pos


def _read_binary_datetime(buf: Buffer, pos: int, field_type: int) -> tuple[ParamValue, int]:
    length, pos = wire.read_uint(buf, pos, 1)
    raw, pos = wire.read_fixed_bytes(buf, pos, length)
    if length == 0:
        return (datetime.date.min if field_type == FieldType.MYSQL_TYPE_DATE else None), pos
    if length not in (4, 7, 11):
        raise ProtocolError(f"invalid binary date length {length}")
    year = int.from_bytes(raw[0:2], "little")
    month, day = raw[2], raw[3]
    hour = minute = second = micro = 0
    if length >= 7:
        hour, minute, second = raw[4], raw[5], raw[6]
    if length == 11:
        micro = int.from_bytes(raw[7:11], "little")
    try:
        if field_type == FieldType.MYSQL_TYPE_DATE or (
            length == 4 and field_type == FieldType.MYSQL_TYPE_NEWDATE
        ):
            return datetime.date(year, month, day), pos
        return datetime.datetime(year, month, day, hour, minute, second, micro), pos
    except (ValueError, OverflowError):  # OverflowError: microseconds past 2**31
        # Zero dates ('0000-00-00') are legal in MySQL, not in Python: keep the text.
        text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
        return text, pos


def _read_binary_time(buf: Buffer, pos: int) -> tuple[ParamValue, int]:
    length, pos = wire.read_uint(buf, pos, 1)
    raw, pos = wire.read_fixed_bytes(buf, pos, length)
    if length == 0:
        return datetime.timedelta(0), pos
    if length not in (8, 12):
        raise ProtocolError(f"invalid binary time length {length}")
    negative = raw[0] == 1
    days = int.from_bytes(raw[1:5], "little")
    hours, minutes, seconds = raw[5], raw[6], raw[7]
    micro = int.from_bytes(raw[8:12], "little") if length == 12 else 0
    try:
        value = datetime.timedelta(
            days=days, hours=hours, minutes=minutes, seconds=seconds, microseconds=micro
        )
    except OverflowError as e:
        # Four bytes of days reach past timedelta's range (999999999 days).
        raise ProtocolError(f"binary time of {days} days is out of range") from e
    return (-value if negative else value), pos


def statement_id_of(payload: Buffer) -> int:
    """The statement id of COM_STMT_EXECUTE/FETCH/CLOSE/RESET/SEND_LONG_DATA."""
    if len(payload) < 5:
        raise TruncatedPacket("statement command without a statement id")
    return int.from_bytes(payload[1:5], "little")


def parse_long_data(payload: Buffer) -> tuple[int, int, bytes]:
    """COM_STMT_SEND_LONG_DATA: (statement id, parameter index, data)."""
    statement_id = statement_id_of(payload)
    param_id, pos = wire.read_uint(payload, 5, 2)
    return statement_id, param_id, bytes(payload[pos:])


def encode_binary_value(value: ParamValue, type_and_flag: int) -> bytes:
    """One non-NULL value in the binary protocol layout of `type_and_flag` (type in the
    low byte, 0x80 in the high byte for unsigned): the inverse of _read_binary_value."""
    field_type = type_and_flag & 0xFF
    unsigned = bool(type_and_flag >> 8 & _UNSIGNED_FLAG)
    size = _INT_SIZES.get(field_type)  # type: ignore[call-overload]
    if size is not None:
        if not isinstance(value, int):
            raise TypeError(f"type {field_type} needs an int, got {value!r}")
        return value.to_bytes(size, "little", signed=not unsigned)
    if field_type == FieldType.MYSQL_TYPE_FLOAT and isinstance(value, int | float):
        return _FLOAT.pack(value)
    if field_type == FieldType.MYSQL_TYPE_DOUBLE and isinstance(value, int | float):
        return _DOUBLE.pack(value)
    if field_type == FieldType.MYSQL_TYPE_NULL:
        return b""
    if isinstance(value, datetime.datetime):
        raw = wire.uint(value.year, 2) + bytes(
            (value.month, value.day, value.hour, value.minute, value.second)
        )
        if value.microsecond:
            raw += wire.uint(value.microsecond, 4)
        return wire.uint(len(raw), 1) + raw
    if isinstance(value, datetime.date):
        return b"\x04" + wire.uint(value.year, 2) + bytes((value.month, value.day))
    if isinstance(value, datetime.timedelta):
        if not value:
            return b"\x00"
        negative = value < datetime.timedelta(0)
        magnitude = -value if negative else value
        hours, rest = divmod(magnitude.seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        raw = bytes((int(negative),)) + wire.uint(magnitude.days, 4)
        raw += bytes((hours, minutes, seconds))
        if magnitude.microseconds:
            raw += wire.uint(magnitude.microseconds, 4)
        return wire.uint(len(raw), 1) + raw
    if isinstance(value, str):
        return wire.lenenc_bytes(value.encode("utf-8"))
    if isinstance(value, bytes):
        return wire.lenenc_bytes(value)
    if isinstance(value, decimal.Decimal | int | float):
        return wire.lenenc_bytes(str(value).encode("ascii"))
    raise TypeError(f"cannot encode {value!r} as binary type {field_type}")


def _null_bitmap(values: Sequence[ParamValue], offset: int) -> bytes:
    bitmap = bytearray((len(values) + offset + 7) // 8)
    for index, value in enumerate(values):
        if value is None:
            bit = index + offset
            bitmap[bit // 8] |= 1 << (bit % 8)
    return bytes(bitmap)


def encode_execute(
    statement_id: int,
    param_types: Sequence[int],
    params: Sequence[ParamValue],
    flags: int = 0,
    new_params_bound: bool = True,
    long_data: frozenset[int] = frozenset(),
    query_attributes: Sequence[tuple[str, ParamValue]] | None = None,
) -> bytes:
    """COM_STMT_EXECUTE. Parameters whose index is in `long_data` were sent with
    COM_STMT_SEND_LONG_DATA and have no value here. `query_attributes` (not None: the
    CLIENT_QUERY_ATTRIBUTES layout, as mysql-connector-python writes it) are sent after
    the parameters, with PARAMETER_COUNT_AVAILABLE when there are any."""
    if query_attributes is None:
        header = b"\x17" + wire.uint(statement_id, 4) + wire.uint(flags, 1) + wire.uint(1, 4)
        if not params:
            return header
        parts = [header, _null_bitmap(params, 0)]
        if new_params_bound:
            parts.append(b"\x01" + b"".join(wire.uint(t, 2) for t in param_types))
        else:
            parts.append(b"\x00")
        for index, (value, type_and_flag) in enumerate(zip(params, param_types, strict=True)):
            if value is not None and index not in long_data:
                parts.append(encode_binary_value(value, type_and_flag))
        return b"".join(parts)
    if query_attributes:
        flags |= _PARAMETER_COUNT_AVAILABLE
    header = b"\x17" + wire.uint(statement_id, 4) + wire.uint(flags, 1) + wire.uint(1, 4)
    values = list(params) + [value for _, value in query_attributes]
    if not values:
        return header
    types = list(param_types) + [attribute_type(value) for _, value in query_attributes]
    names = [""] * len(params) + [name for name, _ in query_attributes]
    parts = [header, wire.lenenc_int(len(values)), _null_bitmap(values, 0)]
    if new_params_bound:
        parts.append(b"\x01")
        for type_and_flag, name in zip(types, names, strict=True):
            parts.append(wire.uint(type_and_flag, 2) + wire.lenenc_bytes(name.encode()))
    else:
        parts.append(b"\x00")
    for index, (value, type_and_flag) in enumerate(zip(values, types, strict=True)):
        if value is not None and index not in long_data:
            parts.append(encode_binary_value(value, type_and_flag))
    return b"".join(parts)


def attribute_type(value: ParamValue) -> int:
    """The binary protocol type a client would send a query attribute's value as."""
    if value is None:
        return FieldType.MYSQL_TYPE_NULL
    if isinstance(value, int):
        return FieldType.MYSQL_TYPE_LONGLONG
    if isinstance(value, float):
        return FieldType.MYSQL_TYPE_DOUBLE
    if isinstance(value, decimal.Decimal):
        return FieldType.MYSQL_TYPE_NEWDECIMAL
    if isinstance(value, datetime.datetime):
        return FieldType.MYSQL_TYPE_DATETIME
    if isinstance(value, datetime.date):
        return FieldType.MYSQL_TYPE_DATE
    if isinstance(value, datetime.timedelta):
        return FieldType.MYSQL_TYPE_TIME
    if isinstance(value, bytes):
        return FieldType.MYSQL_TYPE_BLOB
    return FieldType.MYSQL_TYPE_VAR_STRING


def encode_query(
    sql: str | bytes, attributes: Sequence[tuple[str, ParamValue]] | None = None
) -> bytes:
    """COM_QUERY; with `attributes` not None, in the CLIENT_QUERY_ATTRIBUTES layout
    (parameter_count, parameter_set_count 1, then the attributes when there are any)."""
    text = sql.encode() if isinstance(sql, str) else sql
    if attributes is None:
        return b"\x03" + text
    parts = [b"\x03", wire.lenenc_int(len(attributes)), b"\x01"]
    if attributes:
        values = [value for _, value in attributes]
        types = [attribute_type(value) for value in values]
        parts += [_null_bitmap(values, 0), b"\x01"]
        for (name, _), type_and_flag in zip(attributes, types, strict=True):
            parts.append(wire.uint(type_and_flag, 2) + wire.lenenc_bytes(name.encode()))
        for value, type_and_flag in zip(values, types, strict=True):
            if value is not None:
                parts.append(encode_binary_value(value, type_and_flag))
    parts.append(text)
    return b"".join(parts)


def encode_binary_row(
    column_types: Sequence[int],
    values: Sequence[ParamValue],
) -> bytes:
    """A ProtocolBinary::ResultsetRow: 0x00, a NULL bitmap offset by 2 bits, values."""
    parts = [b"\x00", _null_bitmap(values, 2)]
    for value, type_and_flag in zip(values, column_types, strict=True):
        if value is not None:
            parts.append(encode_binary_value(value, type_and_flag))
    return b"".join(parts)
