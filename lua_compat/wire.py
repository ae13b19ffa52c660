"""Packets the Lua engine writes itself (reference Appendix B), and helpers to frame,
split and renumber packets. Pure functions: no I/O."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.constants import MAX_PACKET_PAYLOAD
from mysqlproxy.protocol.packets import encode_packet, next_sequence_id
from mysqlproxy.protocol.wire import lenenc_int

ER_UNKNOWN_ERROR = 1105
DEFAULT_SQLSTATE = b"07000"
MAX_ERRMSG = 512
STATUS_AUTOCOMMIT = 2

EOF_PAYLOAD = messages.encode_eof()  # warnings 0, status AUTOCOMMIT: fe 00 00 02 00
# The ERR message when proxy.response cannot be turned into packets (reference 3).
RESPONSE_FAILED = "(lua) handling proxy.response failed, check error-log"


def ok_payload(affected_rows: int = 0, insert_id: int = 0) -> bytes:
    """An OK with status AUTOCOMMIT and no warnings (negative counts become 0)."""
    return messages.encode_ok(max(0, int(affected_rows)), max(0, int(insert_id)))


def err_payload(code: int, message: bytes | str, sqlstate: bytes | str | None = None) -> bytes:
    """An ERR (4.1): 0xff, errno, '#', exactly 5 bytes of sqlstate, message (<=512)."""
    if isinstance(message, str):
        message = message.encode()
    if isinstance(sqlstate, str):
        sqlstate = sqlstate.encode()
    if not sqlstate:
        sqlstate = DEFAULT_SQLSTATE
    # The original copies 5 bytes whatever the string's length (reading past short
    # ones): pad with the default's tail instead.
    state = (
        (sqlstate + DEFAULT_SQLSTATE[len(sqlstate) :])[:5] if len(sqlstate) < 5 else sqlstate[:5]
    )
    return b"\xff" + struct.pack("<H", int(code) & 0xFFFF) + b"#" + state + message[:MAX_ERRMSG]


def pre41_err_payload(code: int, message: str) -> bytes:
    """An ERR without sqlstate (only 'all backends are down' uses it)."""
    return b"\xff" + struct.pack("<H", code) + message.encode()[:MAX_ERRMSG]


PROTOCOL_40_ERR = b"\xff\xd7\x07" + b"4.0 protocol is not supported"


def lenenc_str(value: bytes) -> bytes:
    return lenenc_int(len(value)) + value


def field_payload(name: bytes, field_type: int) -> bytes:
    return (
        lenenc_str(b"def")
        + b"\x00\x00\x00"
        + lenenc_str(name)
        + b"\x00"
        + b"\x0c"
        + struct.pack("<HIBHB", 8, 32, int(field_type) & 0xFF, 2, 0)
        + b"\x00\x00"
    )


def row_payload(values: list[bytes | None]) -> bytes:
    return messages.encode_text_row(values)


def response_payloads(desc: Any) -> list[bytes]:
    """proxy.response as read by the Lua helper (scope.read_response) -> payloads."""
    kind = desc[b"kind"]
    if kind == b"ok":
        return [ok_payload(int(desc[b"affected_rows"]), int(desc[b"insert_id"]))]
    if kind == b"err":
        return [err_payload(int(desc[b"errcode"]), desc[b"errmsg"], desc[b"sqlstate"])]
    if kind == b"raw":
        packets = desc[b"packets"]
        return [packets[i] for i in range(1, int(desc[b"n"]) + 1)]
    n = int(desc[b"n"])
    names, types = desc[b"names"], desc[b"types"]
    out = [lenenc_int(n)]
    for i in range(1, n + 1):
        out.append(field_payload(names[i], int(types[i])))
    out.append(EOF_PAYLOAD)
    rows = desc[b"rows"]
    for r in range(1, int(desc[b"nrows"]) + 1):
        row = rows[r]
        out.append(
            row_payload([v if v is not False else None for v in (row[j] for j in range(1, n + 1))])
        )
    out.append(EOF_PAYLOAD)
    return out


def frame(payloads: list[bytes], first_seq: int) -> tuple[bytes, int]:
    """Frame logical payloads (splitting at 0xffffff); returns the bytes and the next
    sequence id."""
    out = []
    seq = first_seq & 0xFF
    for payload in payloads:
        out.append(encode_packet(seq, payload))
        seq = next_sequence_id(seq, len(payload))
    return b"".join(out), seq


def chunk_count(payload_length: int) -> int:
    return payload_length // MAX_PACKET_PAYLOAD + 1


class PacketSplitter:
    """Physical packets out of a byte stream (keeps a partial packet between feeds)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """Yields (sequence id, payload) of each complete physical packet."""
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            end = pos + 4 + length
            if end > n:
                break
            yield buf[pos + 3], bytes(buf[pos + 4 : end])
            pos = end
        del buf[:pos]

    @property
    def pending(self) -> int:
        return len(self._buf)


def join_logical(physical: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Merge 0xffffff continuation pieces into logical packets (seq of the first)."""
    out: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    first_seq = 0
    for seq, payload in physical:
        if not parts:
            first_seq = seq
        parts.append(payload)
        if len(payload) < MAX_PACKET_PAYLOAD:
            out.append((first_seq, b"".join(parts) if len(parts) > 1 else parts[0]))
            parts = []
    if parts:
        out.append((first_seq, b"".join(parts)))
    return out


def renumber(data: bytes | bytearray, offset: int, state: list[int]) -> bytes:
    """Add `offset` to the sequence id of every packet header in a stream of chunks.
    `state` = [bytes of the current packet still to skip, header bytes pending...] is
    kept by the caller between chunks (start with [0])."""
    if offset == 0:
        return bytes(data)
    out = bytearray(data)
    pos = 0
    n = len(out)
    skip = state[0]
    header = state[1:]
    while pos < n:
        if skip:
            take = min(skip, n - pos)
            skip -= take
            pos += take
            continue
        # a header, possibly split across chunks
        while len(header) < 4 and pos < n:
            if len(header) == 3:
                out[pos] = (out[pos] + offset) & 0xFF
            header.append(out[pos])
            pos += 1
        if len(header) < 4:
            break
        skip = header[0] | header[1] << 8 | header[2] << 16
        header = []
    state[:] = [skip, *header]
    return bytes(out)
