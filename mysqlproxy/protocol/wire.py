"""Basic data types of the protocol as pure functions over bytes.

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_dt_integers.html
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_dt_strings.html

Readers take a buffer and an offset and return (value, new offset); they raise
TruncatedPacket when the buffer ends early, never IndexError.
"""

from __future__ import annotations

import struct

from mysqlproxy.protocol.errors import ProtocolError, TruncatedPacket

Buffer = bytes | bytearray | memoryview

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def read_uint(buf: Buffer, pos: int, size: int) -> tuple[int, int]:
    """A fixed-length little-endian unsigned integer of `size` bytes."""
    end = pos + size
    if end > len(buf):
        raise TruncatedPacket(f"expected {size}-byte integer at offset {pos}")
    return int.from_bytes(buf[pos:end], "little"), end


def read_lenenc_int(buf: Buffer, pos: int) -> tuple[int, int]:
    """A length-encoded integer. 0xFB (NULL in rows) and 0xFF are not integers here."""
    if pos >= len(buf):
        raise TruncatedPacket(f"expected length-encoded integer at offset {pos}")
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFC:
        return read_uint(buf, pos + 1, 2)
    if first == 0xFD:
        return read_uint(buf, pos + 1, 3)
    if first == 0xFE:
        return read_uint(buf, pos + 1, 8)
    raise ProtocolError(f"invalid length-encoded integer prefix 0x{first:02x} at offset {pos}")


def read_lenenc_bytes(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """A length-encoded string as bytes."""
    length, pos = read_lenenc_int(buf, pos)
    return read_fixed_bytes(buf, pos, length)


def read_fixed_bytes(buf: Buffer, pos: int, length: int) -> tuple[bytes, int]:
    end = pos + length
    if end > len(buf):
        raise TruncatedPacket(f"expected {length} bytes at offset {pos}, have {len(buf) - pos}")
    return bytes(buf[pos:end]), end


def read_nul_bytes(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """A NUL-terminated string as bytes (without the NUL)."""
    data = bytes(buf[pos:])
    end = data.find(b"\x00")
    if end < 0:
        raise TruncatedPacket(f"unterminated string at offset {pos}")
    return data[:end], pos + end + 1


def read_nul_or_eof_bytes(buf: Buffer, pos: int) -> tuple[bytes, int]:
    """A string ended by NUL or by the end of the packet (some clients omit the NUL)."""
    data = bytes(buf[pos:])
    end = data.find(b"\x00")
    if end < 0:
        return data, len(buf)
    return data[:end], pos + end + 1


def lenenc_int(value: int) -> bytes:
    """Encode a length-encoded integer."""
    if value < 0:
        raise ValueError("length-encoded integers are unsigned")
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + _U16.pack(value)
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + _U64.pack(value)


def lenenc_bytes(value: bytes) -> bytes:
    return lenenc_int(len(value)) + value


def uint(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")
