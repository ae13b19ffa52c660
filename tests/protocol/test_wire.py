"""Basic data types: exact byte tables, read at offset 0, at an offset, and with
trailing data; truncated input raises TruncatedPacket, invalid input ProtocolError."""

from __future__ import annotations

import pytest

from mysqlproxy.protocol import wire
from mysqlproxy.protocol.errors import ProtocolError, TruncatedPacket

# (encoded, value)
LENENC_INTS = [
    (b"\x00", 0),
    (b"\x01", 1),
    (b"\xfa", 250),
    (b"\xfc\xfb\x00", 251),
    (b"\xfc\x00\x01", 256),
    (b"\xfc\xff\xff", 0xFFFF),
    (b"\xfd\x00\x00\x01", 0x10000),
    (b"\xfd\xff\xff\xff", 0xFFFFFF),
    (b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00", 0x1000000),
    (b"\xfe\x08\x07\x06\x05\x04\x03\x02\x01", 0x0102030405060708),
    (b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff", 2**64 - 1),
]


@pytest.mark.parametrize(("encoded", "value"), LENENC_INTS)
def test_lenenc_int_encodes_exactly(encoded: bytes, value: int) -> None:
    assert wire.lenenc_int(value) == encoded


@pytest.mark.parametrize(("encoded", "value"), LENENC_INTS)
@pytest.mark.parametrize(("prefix", "suffix"), [(b"", b""), (b"\x99\x98", b""), (b"", b"\xfe\x00")])
def test_read_lenenc_int(encoded: bytes, value: int, prefix: bytes, suffix: bytes) -> None:
    buf = prefix + encoded + suffix
    assert wire.read_lenenc_int(buf, len(prefix)) == (value, len(prefix) + len(encoded))
    assert wire.read_lenenc_int(memoryview(buf), len(prefix)) == (
        value,
        len(prefix) + len(encoded),
    )


@pytest.mark.parametrize(("encoded", "value"), LENENC_INTS)
def test_read_lenenc_int_truncated(encoded: bytes, value: int) -> None:
    for cut in range(len(encoded)):
        with pytest.raises(TruncatedPacket):
            wire.read_lenenc_int(encoded[:cut], 0)


@pytest.mark.parametrize("first", [0xFB, 0xFF])
def test_read_lenenc_int_rejects_null_and_err_prefixes(first: int) -> None:
    with pytest.raises(ProtocolError) as info:
        wire.read_lenenc_int(bytes((first, 1, 2, 3, 4, 5, 6, 7, 8)), 0)
    assert not isinstance(info.value, TruncatedPacket)
    assert f"0x{first:02x}" in str(info.value)


def test_lenenc_int_rejects_negative() -> None:
    with pytest.raises(ValueError):
        wire.lenenc_int(-1)


# (buffer, pos, size, value, end)
UINTS = [
    (b"\x01", 0, 1, 1, 1),
    (b"\x34\x12", 0, 2, 0x1234, 2),
    (b"\x00\x56\x34\x12", 1, 3, 0x123456, 4),
    (b"\x78\x56\x34\x12\xff", 0, 4, 0x12345678, 4),
    (b"\xff" * 8, 0, 8, 2**64 - 1, 8),
    (b"", 0, 0, 0, 0),
]


@pytest.mark.parametrize(("buf", "pos", "size", "value", "end"), UINTS)
def test_read_uint(buf: bytes, pos: int, size: int, value: int, end: int) -> None:
    assert wire.read_uint(buf, pos, size) == (value, end)
    assert wire.read_uint(buf + b"\xaa\xbb", pos, size) == (value, end)


@pytest.mark.parametrize(
    ("value", "size", "encoded"), [(1, 1, b"\x01"), (0x1234, 3, b"\x34\x12\x00")]
)
def test_uint_encodes_little_endian(value: int, size: int, encoded: bytes) -> None:
    assert wire.uint(value, size) == encoded


@pytest.mark.parametrize(
    ("buf", "pos", "size"), [(b"", 0, 1), (b"\x01", 0, 2), (b"\x01\x02", 1, 2)]
)
def test_read_uint_truncated(buf: bytes, pos: int, size: int) -> None:
    with pytest.raises(TruncatedPacket):
        wire.read_uint(buf, pos, size)


# (encoded, value)
LENENC_STRINGS = [
    (b"\x00", b""),
    (b"\x03abc", b"abc"),
    (b"\xfa" + b"x" * 250, b"x" * 250),
    (b"\xfc\xfb\x00" + b"y" * 251, b"y" * 251),
    (b"\xfd\x00\x00\x01" + b"z" * 65536, b"z" * 65536),
]


@pytest.mark.parametrize(("encoded", "value"), LENENC_STRINGS)
def test_lenenc_bytes(encoded: bytes, value: bytes) -> None:
    assert wire.lenenc_bytes(value) == encoded
    assert wire.read_lenenc_bytes(encoded, 0) == (value, len(encoded))
    assert wire.read_lenenc_bytes(b"\x00" + encoded + b"tail", 1) == (value, 1 + len(encoded))


@pytest.mark.parametrize(
    "encoded", [b"\x03ab", b"\xfc\x05", b"\xfc\x05\x00abcd", b"\xfd\x00\x00\x01" + b"z" * 65535]
)
def test_read_lenenc_bytes_truncated(encoded: bytes) -> None:
    with pytest.raises(TruncatedPacket):
        wire.read_lenenc_bytes(encoded, 0)


# (buffer, pos, value, end)
NUL_STRINGS = [
    (b"\x00", 0, b"", 1),
    (b"root\x00", 0, b"root", 5),
    (b"root\x00pw\x00", 5, b"pw", 8),
    (b"a\x00b\x00", 0, b"a", 2),
]


@pytest.mark.parametrize(("buf", "pos", "value", "end"), NUL_STRINGS)
def test_read_nul_bytes(buf: bytes, pos: int, value: bytes, end: int) -> None:
    assert wire.read_nul_bytes(buf, pos) == (value, end)
    assert wire.read_nul_or_eof_bytes(buf, pos) == (value, end)


@pytest.mark.parametrize(("buf", "pos"), [(b"", 0), (b"root", 0), (b"a\x00root", 2)])
def test_read_nul_bytes_unterminated(buf: bytes, pos: int) -> None:
    with pytest.raises(TruncatedPacket):
        wire.read_nul_bytes(buf, pos)


@pytest.mark.parametrize(
    ("buf", "pos", "value", "end"),
    [(b"", 0, b"", 0), (b"plugin", 0, b"plugin", 6), (b"x\x00plugin", 2, b"plugin", 8)],
)
def test_read_nul_or_eof_bytes_without_nul(buf: bytes, pos: int, value: bytes, end: int) -> None:
    assert wire.read_nul_or_eof_bytes(buf, pos) == (value, end)


@pytest.mark.parametrize(
    ("buf", "pos", "length", "value", "end"),
    [(b"abc", 0, 3, b"abc", 3), (b"abcdef", 2, 3, b"cde", 5), (b"abc", 3, 0, b"", 3)],
)
def test_read_fixed_bytes(buf: bytes, pos: int, length: int, value: bytes, end: int) -> None:
    assert wire.read_fixed_bytes(buf, pos, length) == (value, end)
    assert wire.read_fixed_bytes(bytearray(buf), pos, length) == (value, end)


def test_read_fixed_bytes_truncated() -> None:
    with pytest.raises(TruncatedPacket, match="expected 4 bytes at offset 1, have 2"):
        wire.read_fixed_bytes(b"abc", 1, 4)
