"""Messages: exact byte tables for every parser and encoder, and the errors malformed
payloads raise."""

from __future__ import annotations

import datetime
import decimal

import pytest

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.constants import (
    MASKED_CAPABILITIES,
    Capability,
    FieldType,
    ServerStatus,
)
from mysqlproxy.protocol.errors import ProtocolError, TruncatedPacket, UnsupportedFeature
from mysqlproxy.protocol.messages import (
    ChangeUser,
    EofPacket,
    ErrPacket,
    ExecuteRequest,
    Greeting,
    HandshakeResponse,
    OkPacket,
    ParamValue,
    PrepareOk,
)
from mysqlproxy.testing import packets as pk

# --- greetings ------------------------------------------------------------------------

MARIADB_GREETING = (
    b"\x0a"  # protocol version
    b"5.5.5-10.11.6-MariaDB\x00"
    b"\x2a\x00\x00\x00"  # thread id 42
    b"abcdefgh"  # scramble, first part
    b"\x00"
    b"\xfe\xf7"  # capabilities, low: CLIENT_MYSQL (bit 0) clear, COMPRESS set, SSL clear
    b"\x2d"  # utf8mb4_general_ci
    b"\x02\x00"  # SERVER_STATUS_AUTOCOMMIT
    b"\xbf\x01"  # capabilities, high: bits 16-21, 23 (SESSION_TRACK), 24 (DEPRECATE_EOF)
    b"\x15"  # scramble length 21
    b"\x00\x00\x00\x00\x00\x00"
    b"\x1d\x00\x00\x00"  # MariaDB: PROGRESS, STMT_BULK_OPERATIONS, EXTENDED_METADATA, CACHE
    b"ijklmnopqrst\x00"
    b"mysql_native_password\x00"
)
MARIADB_CAPS = Capability(0xF7FE | 0x01BF << 16 | 0x1D << 32)
MARIADB_GREETING_MASKED = (
    MARIADB_GREETING[:50]  # COMPRESS kept: the relay decompresses
    + b"\x08\x00\x00\x00"  # of the extended capabilities, EXTENDED_METADATA only
    + MARIADB_GREETING[54:]
)

MYSQL_GREETING = (
    b"\x0a"
    b"8.0.36\x00"
    b"\x0d\x00\x00\x00"
    b"abcdefgh"
    b"\x00"
    b"\xff\xff"
    b"\xff"
    b"\x02\x00"
    b"\xff\xdf"  # everything up to bit 31 but CLIENT_SSL_VERIFY_SERVER_CERT (bit 29 set)
    b"\x15" + b"\x00" * 10 + b"ijklmnopqrst\x00" + b"caching_sha2_password\x00"
)
MYSQL_GREETING_MASKED = (
    MYSQL_GREETING[:21]
    + b"\xff\xf7"  # SSL cleared (COMPRESS kept)
    + MYSQL_GREETING[23:26]
    + b"\xff\x89"  # ZSTD, OPTIONAL_RESULTSET_METADATA, MFA, EXTENSION... (QUERY_ATTRIBUTES kept)
    + MYSQL_GREETING[28:]
)

GREETINGS = [
    (
        MARIADB_GREETING,
        Greeting(
            "5.5.5-10.11.6-MariaDB",
            42,
            b"abcdefghijklmnopqrst",
            MARIADB_CAPS,
            45,
            ServerStatus.SERVER_STATUS_AUTOCOMMIT,
            "mysql_native_password",
        ),
        MARIADB_GREETING_MASKED,
    ),
    (
        MYSQL_GREETING,
        Greeting(
            "8.0.36",
            13,
            b"abcdefghijklmnopqrst",
            Capability(0xDFFFFFFF),
            255,
            ServerStatus.SERVER_STATUS_AUTOCOMMIT,
            "caching_sha2_password",
        ),
        MYSQL_GREETING_MASKED,
    ),
]


@pytest.mark.parametrize(("payload", "greeting", "masked"), GREETINGS)
def test_parse_greeting(payload: bytes, greeting: Greeting, masked: bytes) -> None:
    assert messages.parse_greeting(payload) == greeting
    assert messages.parse_greeting(bytearray(payload)) == greeting


@pytest.mark.parametrize(("payload", "greeting", "masked"), GREETINGS)
def test_mask_greeting_changes_only_capability_bytes(
    payload: bytes, greeting: Greeting, masked: bytes
) -> None:
    seen, out = messages.mask_greeting(payload, MASKED_CAPABILITIES)
    assert out == masked
    assert len(out) == len(payload)
    assert seen.capabilities == greeting.capabilities & ~MASKED_CAPABILITIES
    assert seen.auth_data == greeting.auth_data
    assert seen.auth_plugin == greeting.auth_plugin


@pytest.mark.parametrize(("payload", "greeting", "masked"), GREETINGS)
def test_encode_greeting_matches_server_bytes(
    payload: bytes, greeting: Greeting, masked: bytes
) -> None:
    assert messages.encode_greeting(greeting) == payload


def test_pre_41_greeting_ends_after_low_capabilities() -> None:
    payload = b"\x0a4.0.1\x00\x01\x00\x00\x00abcdefgh\x00\x2c\x02"
    assert messages.parse_greeting(payload) == Greeting(
        "4.0.1", 1, b"abcdefgh", Capability(0x022C), 0, ServerStatus(0), ""
    )
    _, out = messages.mask_greeting(payload, MASKED_CAPABILITIES)
    assert out == payload  # nothing masked is offered (COMPRESS, 0x20, is kept)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", ProtocolError),
        (b"\x09" + MARIADB_GREETING[1:], ProtocolError),
        (b"\x0a5.5.5", TruncatedPacket),
        (MARIADB_GREETING[:25], TruncatedPacket),
        (MARIADB_GREETING[:40], TruncatedPacket),
        (MARIADB_GREETING[:55], TruncatedPacket),
    ],
)
def test_parse_greeting_errors(payload: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        messages.parse_greeting(payload)


# --- handshake response -------------------------------------------------------------------

PYMYSQL_RESPONSE = (
    b"\x0f\xa2\x3a\x00"  # PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH | ... | CONNECT_WITH_DB
    b"\x00\x00\x00\x01"  # max packet 16 MiB
    b"\x2d"
    + b"\x00" * 23
    + b"root\x00"
    + b"\x14"
    + bytes(range(20))
    + b"shop\x00"
    + b"mysql_native_password\x00"
)
LENENC_RESPONSE = (
    (int(pk.CLIENT_CAPABILITIES) & 0xFFFFFFFF).to_bytes(4, "little")
    + b"\xff\xff\xff\x00"
    + b"\x21"
    + b"\x00" * 23
    + b"app\x00"
    + b"\x00"  # empty auth response, length-encoded
    + b"mysql_native_password\x00"
)
MARIADB_CLIENT_RESPONSE = (
    b"\x86\xa2\x3a\x00"  # CLIENT_MYSQL (bit 0) clear: extended capabilities follow
    + b"\x00\x00\x00\x40"
    + b"\x2d"
    + b"\x00" * 19
    + b"\x01\x00\x00\x00"  # MARIADB_CLIENT_PROGRESS
    + b"u\x00"
    + b"\x00"
    + b"client_ed25519\x00"
)

HANDSHAKE_RESPONSES = [
    (
        PYMYSQL_RESPONSE,
        MARIADB_CAPS,
        HandshakeResponse(
            Capability(0x003AA20F),
            1 << 24,
            45,
            "root",
            bytes(range(20)),
            "shop",
            "mysql_native_password",
            False,
        ),
    ),
    (
        LENENC_RESPONSE,
        MARIADB_CAPS,
        HandshakeResponse(
            pk.CLIENT_CAPABILITIES, 0xFFFFFF, 33, "app", b"", None, "mysql_native_password", False
        ),
    ),
    (
        MARIADB_CLIENT_RESPONSE,
        MARIADB_CAPS,
        HandshakeResponse(
            Capability(0x003AA286 | 1 << 32),
            1 << 30,
            45,
            "u",
            b"",
            None,
            "client_ed25519",
            False,
        ),
    ),
    (
        # The same bytes to a MySQL server: the reserved bytes are not capabilities.
        MARIADB_CLIENT_RESPONSE,
        Capability(0xDFFFFFFF),
        HandshakeResponse(
            Capability(0x003AA286), 1 << 30, 45, "u", b"", None, "client_ed25519", False
        ),
    ),
    (
        pk.ssl_request(),
        MARIADB_CAPS,
        HandshakeResponse(
            pk.CLIENT_CAPABILITIES | Capability.CLIENT_SSL, 1 << 24, 45, "", b"", None, None, True
        ),
    ),
]


@pytest.mark.parametrize(("payload", "server_caps", "expected"), HANDSHAKE_RESPONSES)
def test_parse_handshake_response(
    payload: bytes, server_caps: Capability, expected: HandshakeResponse
) -> None:
    assert messages.parse_handshake_response(payload, server_caps) == expected


def test_encode_handshake_response_exact() -> None:
    caps = Capability(0x003AA20F)
    assert (
        messages.encode_handshake_response(
            caps, "root", bytes(range(20)), "shop", "mysql_native_password", 45, 1 << 24
        )
        == PYMYSQL_RESPONSE
    )


def test_handshake_response_from_pre_41_client_is_unsupported() -> None:
    payload = b"\x0d\x00\x00\x00" + b"\x00" * 28 + b"root\x00"
    with pytest.raises(UnsupportedFeature, match=r"4\.1"):
        messages.parse_handshake_response(payload, MARIADB_CAPS)


@pytest.mark.parametrize("cut", [0, 3, 9, 31, 32, 36, 37, 50])
def test_parse_handshake_response_truncated(cut: int) -> None:
    with pytest.raises(TruncatedPacket):
        messages.parse_handshake_response(PYMYSQL_RESPONSE[:cut], MARIADB_CAPS)


def test_mask_handshake_response() -> None:
    payload = bytearray(MARIADB_CLIENT_RESPONSE)
    payload[0:4] = (0x003AA286 | int(Capability.MULTI_FACTOR_AUTHENTICATION)).to_bytes(4, "little")
    out = messages.mask_handshake_response(bytes(payload), MASKED_CAPABILITIES)
    expected = bytearray(MARIADB_CLIENT_RESPONSE)
    expected[28:32] = b"\x00\x00\x00\x00"
    assert out == bytes(expected)
    # Nothing to clear: unchanged.
    assert messages.mask_handshake_response(PYMYSQL_RESPONSE, MASKED_CAPABILITIES) == (
        PYMYSQL_RESPONSE
    )


# --- COM_CHANGE_USER ------------------------------------------------------------------------

CHANGE_USERS = [
    (
        b"\x11bob\x00\x14" + b"s" * 20 + b"shop\x00\x2d\x00mysql_native_password\x00",
        ChangeUser("bob", "shop", "mysql_native_password"),
    ),
    (b"\x11bob\x00\x00\x00", ChangeUser("bob", None, None)),
    (b"\x11bob\x00\x00db", ChangeUser("bob", "db", None)),
    (
        pk.com_change_user("x", b"", "", connect_attrs={"a": "b"}),
        ChangeUser("x", None, "mysql_native_password"),
    ),
]


@pytest.mark.parametrize(("payload", "expected"), CHANGE_USERS)
def test_parse_change_user(payload: bytes, expected: ChangeUser) -> None:
    assert messages.parse_change_user(payload, pk.CLIENT_CAPABILITIES) == expected


@pytest.mark.parametrize("payload", [b"\x11", b"\x11bob", b"\x11bob\x00", b"\x11bob\x00\x05abc"])
def test_parse_change_user_truncated(payload: bytes) -> None:
    with pytest.raises(TruncatedPacket):
        messages.parse_change_user(payload, pk.CLIENT_CAPABILITIES)


# --- OK, ERR, EOF -------------------------------------------------------------------------

AUTOCOMMIT = ServerStatus.SERVER_STATUS_AUTOCOMMIT
SESSION_TRACK = pk.CLIENT_CAPABILITIES | Capability.CLIENT_SESSION_TRACK
STATE_CHANGED = AUTOCOMMIT | ServerStatus.SERVER_SESSION_STATE_CHANGED

OKS = [
    (
        b"\x00\x00\x00\x02\x00\x00\x00",
        pk.CLIENT_CAPABILITIES,
        OkPacket(0, 0, AUTOCOMMIT, 0, b"", None),
    ),
    (
        b"\x00\xfc\x2c\x01\xfd\x00\x00\x01\x03\x00\x02\x00Rows matched",
        pk.CLIENT_CAPABILITIES,
        OkPacket(300, 0x10000, ServerStatus(3), 2, b"Rows matched", None),
    ),
    (
        b"\xfe\x00\x00\x22\x00\x01\x00",
        pk.CLIENT_CAPABILITIES | Capability.CLIENT_DEPRECATE_EOF,
        OkPacket(0, 0, ServerStatus(0x22), 1, b"", None),
    ),
    (
        b"\x00\x01\x00\x02\x40\x00\x00" + b"\x00" + b"\x0a\x01\x08\x07archive",
        SESSION_TRACK,
        OkPacket(1, 0, STATE_CHANGED, 0, b"", "archive"),
    ),
    (
        # A system variable entry (type 0) then the schema.
        b"\x00\x00\x00\x02\x40\x00\x00\x02hi\x12\x00\x09\x04name\x03abc\x01\x05\x04shop",
        SESSION_TRACK,
        OkPacket(0, 0, STATE_CHANGED, 0, b"hi", "shop"),
    ),
    (b"\x00\x00\x00\x02\x00\x00\x00", SESSION_TRACK, OkPacket(0, 0, AUTOCOMMIT, 0, b"", None)),
]


@pytest.mark.parametrize(("payload", "caps", "expected"), OKS)
def test_parse_ok(payload: bytes, caps: Capability, expected: OkPacket) -> None:
    assert messages.parse_ok(payload, caps) == expected


def test_session_state_schema_builder_matches_table() -> None:
    assert pk.session_state_schema("archive") == b"\x00\x0a\x01\x08\x07archive"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", ProtocolError),
        (b"\xff\x00\x00", ProtocolError),
        (b"\x00", TruncatedPacket),
        (b"\x00\x00\x00\x02", TruncatedPacket),
        (b"\x00\x00\x00\x02\x00\x00", TruncatedPacket),
        (b"\x00\xfc\x01", TruncatedPacket),
        (b"\x00\xff\x00\x02\x00\x00\x00", ProtocolError),
    ],
)
def test_parse_ok_errors(payload: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        messages.parse_ok(payload, pk.CLIENT_CAPABILITIES)


def test_parse_ok_truncated_session_state() -> None:
    with pytest.raises(TruncatedPacket):
        messages.parse_ok(b"\x00\x00\x00\x02\x40\x00\x00\x00\x0a\x01\x08\x07arch", SESSION_TRACK)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\xff\x28\x04#42000You have an error", ErrPacket(1064, "42000", "You have an error")),
        (b"\xff\x10\x04Too many connections", ErrPacket(1040, "HY000", "Too many connections")),
        (b"\xff\x15\x04#28000Acc\xc3\xa8s", ErrPacket(1045, "28000", "Accès")),
        (b"\xff\x15\x04", ErrPacket(1045, "HY000", "")),
        (b"\xff\x15\x04\xff", ErrPacket(1045, "HY000", "\ufffd")),
    ],
)
def test_parse_err(payload: bytes, expected: ErrPacket) -> None:
    assert messages.parse_err(payload) == expected


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", ProtocolError),
        (b"\x00\x01", ProtocolError),
        (b"\xff\x01", TruncatedPacket),
        (b"\xff\x01\x00#420", TruncatedPacket),
    ],
)
def test_parse_err_errors(payload: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        messages.parse_err(payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\xfe\x00\x00\x02\x00", EofPacket(0, AUTOCOMMIT)),
        (b"\xfe\x03\x00\x22\x00", EofPacket(3, ServerStatus(0x22))),
        (b"\xfe", EofPacket(0, ServerStatus(0))),
    ],
)
def test_parse_eof(payload: bytes, expected: EofPacket) -> None:
    assert messages.parse_eof(payload) == expected


def test_parse_eof_rejects_other_headers() -> None:
    with pytest.raises(ProtocolError):
        messages.parse_eof(b"\x00\x00\x00\x02\x00")
    with pytest.raises(ProtocolError):
        messages.parse_eof(b"")


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (messages.encode_ok(), b"\x00\x00\x00\x02\x00\x00\x00"),
        (
            messages.encode_ok(251, 7, ServerStatus(1), 3, b"x"),
            b"\x00\xfc\xfb\x00\x07\x01\x00\x03\x00x",
        ),
        (pk.eof_ok(ServerStatus(0x0A), 2), b"\xfe\x00\x00\x0a\x00\x02\x00"),
        (messages.encode_err(1146, "no table", "42S02"), b"\xff\x7a\x04#42S02no table"),
        (messages.encode_err(1, "", "HY"), b"\xff\x01\x00#HY000"),
        (messages.encode_eof(), b"\xfe\x00\x00\x02\x00"),
        (messages.encode_eof(ServerStatus(0x42), 5), b"\xfe\x05\x00\x42\x00"),
        (pk.local_infile_request("/tmp/f.csv"), b"\xfb/tmp/f.csv"),
        (pk.auth_switch_request("p", b"xy"), b"\xfep\x00xy\x00"),
        (pk.auth_more_data(b"\x03"), b"\x01\x03"),
    ],
)
def test_encoders_exact(encoded: bytes, expected: bytes) -> None:
    assert encoded == expected


# --- column definitions, rows -----------------------------------------------------------------


def test_encode_column_definition_exact() -> None:
    assert messages.encode_column_definition(
        "id", FieldType.MYSQL_TYPE_LONG, table="t", schema="db", charset=63, length=11, flags=0x20
    ) == (
        b"\x03def\x02db\x01t\x01t\x02id\x02id\x0c"
        b"\x3f\x00"  # charset
        b"\x0b\x00\x00\x00"  # length
        b"\x03"  # MYSQL_TYPE_LONG
        b"\x20\x00"  # UNSIGNED
        b"\x00"  # decimals
        b"\x00\x00"
    )


def test_encode_text_row_exact() -> None:
    assert messages.encode_text_row([b"1", None, b"", b"x" * 251]) == (
        b"\x011\xfb\x00\xfc\xfb\x00" + b"x" * 251
    )


def test_encode_binary_row_exact() -> None:
    types = [FieldType.MYSQL_TYPE_LONG, FieldType.MYSQL_TYPE_VAR_STRING, FieldType.MYSQL_TYPE_TINY]
    assert messages.encode_binary_row(types, [5, None, -1]) == (
        b"\x00"
        b"\x08"  # NULL bitmap, offset 2: column 1 is bit 3
        b"\x05\x00\x00\x00"
        b"\xff"
    )
    assert messages.encode_binary_row([FieldType.MYSQL_TYPE_TINY] * 7, [None] * 7) == (
        b"\x00\xfc\x01"
    )


# --- prepared statements -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x00\x01\x00\x00\x00\x02\x00\x03\x00\x00\x04\x00", PrepareOk(1, 2, 3, 4)),
        (b"\x00\xff\xff\xff\xff\x00\x00\x00\x00", PrepareOk(0xFFFFFFFF, 0, 0, 0)),
    ],
)
def test_parse_prepare_ok(payload: bytes, expected: PrepareOk) -> None:
    assert messages.parse_prepare_ok(payload) == expected


def test_encode_prepare_ok_exact() -> None:
    assert (
        messages.encode_prepare_ok(1, 2, 3) == b"\x00\x01\x00\x00\x00\x02\x00\x03\x00\x00\x00\x00"
    )


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", ProtocolError),
        (b"\xff\x01\x00", ProtocolError),
        (b"\x00\x01\x00\x00\x00\x02", TruncatedPacket),
    ],
)
def test_parse_prepare_ok_errors(payload: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        messages.parse_prepare_ok(payload)


U = 0x8000  # unsigned flag in the parameter type

# (type | flag, value, exact encoding)
BINARY_VALUES: list[tuple[int, ParamValue, bytes]] = [
    (FieldType.MYSQL_TYPE_TINY, -1, b"\xff"),
    (FieldType.MYSQL_TYPE_TINY | U, 255, b"\xff"),
    (FieldType.MYSQL_TYPE_SHORT, -2, b"\xfe\xff"),
    (FieldType.MYSQL_TYPE_SHORT | U, 65535, b"\xff\xff"),
    (FieldType.MYSQL_TYPE_YEAR, 2024, b"\xe8\x07"),
    (FieldType.MYSQL_TYPE_INT24, -8388608, b"\x00\x00\x80\xff"),
    (FieldType.MYSQL_TYPE_LONG, -3, b"\xfd\xff\xff\xff"),
    (FieldType.MYSQL_TYPE_LONG | U, 0xFFFFFFFF, b"\xff\xff\xff\xff"),
    (FieldType.MYSQL_TYPE_LONGLONG, 2**63 - 1, b"\xff\xff\xff\xff\xff\xff\xff\x7f"),
    (FieldType.MYSQL_TYPE_LONGLONG, -(2**63), b"\x00\x00\x00\x00\x00\x00\x00\x80"),
    (FieldType.MYSQL_TYPE_LONGLONG | U, 2**64 - 1, b"\xff" * 8),
    (FieldType.MYSQL_TYPE_FLOAT, 1.5, b"\x00\x00\xc0\x3f"),
    (FieldType.MYSQL_TYPE_DOUBLE, -2.25, b"\x00\x00\x00\x00\x00\x00\x02\xc0"),
    (FieldType.MYSQL_TYPE_NULL, None, b""),
    (FieldType.MYSQL_TYPE_DATE, datetime.date(2024, 2, 29), b"\x04\xe8\x07\x02\x1d"),
    (
        FieldType.MYSQL_TYPE_DATETIME,
        datetime.datetime(2024, 2, 29, 13, 14, 15),
        b"\x07\xe8\x07\x02\x1d\x0d\x0e\x0f",
    ),
    (
        FieldType.MYSQL_TYPE_DATETIME,
        datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
        b"\x0b\xe8\x07\x02\x1d\x0d\x0e\x0f\x40\xe2\x01\x00",
    ),
    (
        FieldType.MYSQL_TYPE_TIMESTAMP,
        datetime.datetime(1970, 1, 1, 0, 0, 1),
        b"\x07\xb2\x07\x01\x01\x00\x00\x01",
    ),
    (
        FieldType.MYSQL_TYPE_TIME,
        datetime.timedelta(days=1, hours=2, minutes=3, seconds=4),
        b"\x08\x00\x01\x00\x00\x00\x02\x03\x04",
    ),
    (
        FieldType.MYSQL_TYPE_TIME,
        -datetime.timedelta(days=34, hours=22, minutes=59, seconds=59, microseconds=7),
        b"\x0c\x01\x22\x00\x00\x00\x16\x3b\x3b\x07\x00\x00\x00",
    ),
    (FieldType.MYSQL_TYPE_TIME, datetime.timedelta(0), b"\x00"),
    (FieldType.MYSQL_TYPE_NEWDECIMAL, decimal.Decimal("-12.345"), b"\x07-12.345"),
    (FieldType.MYSQL_TYPE_DECIMAL, decimal.Decimal("0.5"), b"\x030.5"),
    (FieldType.MYSQL_TYPE_VAR_STRING, "héllo", b"\x06h\xc3\xa9llo"),
    (FieldType.MYSQL_TYPE_STRING, "", b"\x00"),
    (FieldType.MYSQL_TYPE_VARCHAR, "v", b"\x01v"),
    (FieldType.MYSQL_TYPE_JSON, '{"a": 1}', b'\x08{"a": 1}'),
    (FieldType.MYSQL_TYPE_ENUM, "a", b"\x01a"),
    (FieldType.MYSQL_TYPE_SET, "x,y", b"\x03x,y"),
    (FieldType.MYSQL_TYPE_BLOB, b"\x00\xff", b"\x02\x00\xff"),
    (FieldType.MYSQL_TYPE_TINY_BLOB, b"t", b"\x01t"),
    (FieldType.MYSQL_TYPE_MEDIUM_BLOB, b"m" * 300, b"\xfc\x2c\x01" + b"m" * 300),
    (FieldType.MYSQL_TYPE_LONG_BLOB, b"", b"\x00"),
    (FieldType.MYSQL_TYPE_GEOMETRY, b"\x01\x02", b"\x02\x01\x02"),
    (FieldType.MYSQL_TYPE_BIT, b"\x15", b"\x01\x15"),
]


@pytest.mark.parametrize(("type_and_flag", "value", "encoded"), BINARY_VALUES)
def test_binary_value_exact(type_and_flag: int, value: ParamValue, encoded: bytes) -> None:
    assert messages.encode_binary_value(value, type_and_flag) == encoded


@pytest.mark.parametrize(("type_and_flag", "value", "encoded"), BINARY_VALUES)
def test_execute_decodes_every_binary_type(
    type_and_flag: int, value: ParamValue, encoded: bytes
) -> None:
    payload = (
        b"\x17\x09\x00\x00\x00"  # statement 9
        b"\x00\x01\x00\x00\x00"  # no cursor, iteration count 1
        + (b"\x01" if value is None else b"\x00")  # NULL bitmap
        + b"\x01"  # new params bound
        + type_and_flag.to_bytes(2, "little")
        + encoded
    )
    assert messages.encode_execute(9, [type_and_flag], [value]) == payload
    assert messages.parse_execute(payload, 1, None) == ExecuteRequest(
        9, 0, (type_and_flag,), (value,)
    )


def test_execute_with_nulls_and_reused_types() -> None:
    types = (FieldType.MYSQL_TYPE_LONG, FieldType.MYSQL_TYPE_VAR_STRING, FieldType.MYSQL_TYPE_TINY)
    first = messages.encode_execute(3, types, [1, None, 2])
    assert first == (
        b"\x17\x03\x00\x00\x00\x00\x01\x00\x00\x00"
        b"\x02"  # parameter 1 is NULL
        b"\x01\x03\x00\xfd\x00\x01\x00"
        b"\x01\x00\x00\x00\x02"
    )
    assert messages.parse_execute(first, 3, None).params == (1, None, 2)
    again = messages.encode_execute(3, types, [None, "s", 4], new_params_bound=False)
    assert again == b"\x17\x03\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x01s\x04"
    assert messages.parse_execute(again, 3, types) == ExecuteRequest(3, 0, types, (None, "s", 4))
    with pytest.raises(ProtocolError, match="never bound"):
        messages.parse_execute(again, 3, None)


def test_execute_takes_long_data_values() -> None:
    types = (FieldType.MYSQL_TYPE_BLOB, FieldType.MYSQL_TYPE_LONG)
    payload = messages.encode_execute(1, types, [b"ignored", 7], long_data=frozenset({0}))
    assert payload.endswith(b"\x07\x00\x00\x00")
    assert messages.parse_execute(payload, 2, None, {0: b"sent long"}).params == (b"sent long", 7)


def test_execute_without_parameters() -> None:
    payload = messages.encode_execute(5, [], [], flags=1)
    assert payload == b"\x17\x05\x00\x00\x00\x01\x01\x00\x00\x00"
    assert messages.parse_execute(payload, 0, None) == ExecuteRequest(5, 1, (), ())


@pytest.mark.parametrize(
    ("type_and_flag", "raw", "value"),
    [
        (FieldType.MYSQL_TYPE_DATE, b"\x00", datetime.date.min),
        (FieldType.MYSQL_TYPE_DATETIME, b"\x00", None),
        (FieldType.MYSQL_TYPE_DATE, b"\x04\x00\x00\x00\x00", "0000-00-00 00:00:00"),
        (FieldType.MYSQL_TYPE_NEWDATE, b"\x04\xe8\x07\x01\x02", datetime.date(2024, 1, 2)),
        (FieldType.MYSQL_TYPE_DATETIME, b"\x04\xe8\x07\x01\x02", datetime.datetime(2024, 1, 2)),
        (
            FieldType.MYSQL_TYPE_DATETIME,
            b"\x0b\xe8\x07\x01\x02\x03\x04\x05\x00\x00\x00\x80",  # 2**31 microseconds
            "2024-01-02 03:04:05",
        ),
        (FieldType.MYSQL_TYPE_NEWDECIMAL, b"\x03abc", b"abc"),
        (FieldType.MYSQL_TYPE_VAR_STRING, b"\x02\xff\xfe", b"\xff\xfe"),
        (
            FieldType.MYSQL_TYPE_TIME,
            b"\x08\x00\x00\x00\x00\x00\x17\x3b\x3b",
            datetime.timedelta(hours=23, minutes=59, seconds=59),
        ),
    ],
)
def test_binary_values_mysql_allows_python_does_not(
    type_and_flag: int, raw: bytes, value: ParamValue
) -> None:
    payload = b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01" + type_and_flag.to_bytes(
        2, "little"
    )
    assert messages.parse_execute(payload + raw, 1, None).params == (value,)


@pytest.mark.parametrize(
    ("type_and_flag", "raw", "error"),
    [
        (FieldType.MYSQL_TYPE_DATE, b"\x05\xe8\x07\x01\x02\x03", ProtocolError),
        (FieldType.MYSQL_TYPE_TIME, b"\x09" + b"\x00" * 9, ProtocolError),
        (FieldType.MYSQL_TYPE_TIME, b"\x08\x00\xff\xff\xff\xff\x00\x00\x00", ProtocolError),
        (FieldType.MYSQL_TYPE_LONG, b"\x01\x00", TruncatedPacket),
        (FieldType.MYSQL_TYPE_VAR_STRING, b"\x05abc", TruncatedPacket),
        (FieldType.MYSQL_TYPE_DATETIME, b"\x07\xe8\x07", TruncatedPacket),
        (FieldType.MYSQL_TYPE_VAR_STRING, b"\xff", ProtocolError),
    ],
)
def test_binary_value_errors(type_and_flag: int, raw: bytes, error: type[ProtocolError]) -> None:
    payload = b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01" + type_and_flag.to_bytes(
        2, "little"
    )
    with pytest.raises(error):
        messages.parse_execute(payload + raw, 1, None)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x17",
        b"\x17\x01\x00\x00\x00",
        b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00",
        b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01\x03",
    ],
)
def test_execute_truncated(payload: bytes) -> None:
    with pytest.raises(TruncatedPacket):
        messages.parse_execute(payload, 2, None)


def test_statement_commands() -> None:
    assert messages.statement_id_of(pk.com_stmt_close(0x01020304)) == 0x01020304
    assert messages.statement_id_of(pk.com_stmt_fetch(7, 100)) == 7
    with pytest.raises(TruncatedPacket):
        messages.statement_id_of(b"\x19\x01\x00\x00")
    assert messages.parse_long_data(pk.com_stmt_send_long_data(4, 2, b"data")) == (4, 2, b"data")
    assert pk.com_stmt_send_long_data(4, 2, b"data") == b"\x18\x04\x00\x00\x00\x02\x00data"
    with pytest.raises(TruncatedPacket):
        messages.parse_long_data(b"\x18\x04\x00\x00\x00\x02")


def test_encode_binary_value_refuses_wrong_python_type() -> None:
    with pytest.raises(TypeError):
        messages.encode_binary_value("1", FieldType.MYSQL_TYPE_LONG)
    with pytest.raises(TypeError):
        messages.encode_binary_value(None, FieldType.MYSQL_TYPE_VAR_STRING)
