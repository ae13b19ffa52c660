"""Framing: exact headers, 0xFFFFFF continuations, sequence ids; PacketBuffer fed
whole, byte by byte and with trailing data."""

from __future__ import annotations

import pytest

from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.packets import Packet, PacketBuffer, encode_packet, next_sequence_id
from mysqlproxy.testing.packets import frame

MAX = 0xFFFFFF

# (sequence id, payload, exact bytes)
SMALL_PACKETS = [
    (0, b"", b"\x00\x00\x00\x00"),
    (0, b"\x0e", b"\x01\x00\x00\x00\x0e"),
    (3, b"\x03SELECT 1", b"\x09\x00\x00\x03\x03SELECT 1"),
    (255, b"ab", b"\x02\x00\x00\xffab"),
    (1, b"x" * 300, b"\x2c\x01\x00\x01" + b"x" * 300),
]


@pytest.mark.parametrize(("seq", "payload", "encoded"), SMALL_PACKETS)
def test_encode_packet(seq: int, payload: bytes, encoded: bytes) -> None:
    assert encode_packet(seq, payload) == encoded


def _headers(data: bytes) -> list[tuple[int, int]]:
    """(length, sequence id) of each piece."""
    out = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "little")
        out.append((length, data[pos + 3]))
        pos += 4 + length
    assert pos == len(data)
    return out


# (payload length, first sequence id, pieces as (length, seq))
BIG_PACKETS = [
    (MAX - 1, 0, [(MAX - 1, 0)]),
    (MAX, 0, [(MAX, 0), (0, 1)]),
    (MAX + 1, 5, [(MAX, 5), (1, 6)]),
    (2 * MAX, 254, [(MAX, 254), (MAX, 255), (0, 0)]),
    (2 * MAX + 10, 1, [(MAX, 1), (MAX, 2), (10, 3)]),
]


@pytest.mark.parametrize(("length", "seq", "pieces"), BIG_PACKETS)
def test_encode_packet_splits_at_0xffffff(
    length: int, seq: int, pieces: list[tuple[int, int]]
) -> None:
    payload = bytes(range(256)) * (length // 256) + b"\x07" * (length % 256)
    data = encode_packet(seq, payload)
    assert _headers(data) == pieces
    assert len(data) == length + 4 * len(pieces)
    assert next_sequence_id(seq, length) == (seq + len(pieces)) & 0xFF
    buffer = PacketBuffer()
    buffer.feed(data)
    assert list(buffer) == [Packet(seq, payload)]
    assert buffer.pending == 0


@pytest.mark.parametrize(
    ("seq", "length", "following"),
    [(0, 0, 1), (0, 10, 1), (255, 10, 0), (0, MAX - 1, 1), (0, MAX, 2), (7, 2 * MAX, 10)],
)
def test_next_sequence_id(seq: int, length: int, following: int) -> None:
    assert next_sequence_id(seq, length) == following


def test_frame_numbers_consecutive_packets() -> None:
    assert frame(1, [b"\x01", b"", b"ab"]) == (
        b"\x01\x00\x00\x01\x01" + b"\x00\x00\x00\x02" + b"\x02\x00\x00\x03ab"
    )
    big = frame(0, [b"z" * MAX, b"\x00"])
    assert _headers(big) == [(MAX, 0), (0, 1), (1, 2)]


STREAM = b"".join(encode_packet(seq, payload) for seq, payload, _ in SMALL_PACKETS)
EXPECTED = [Packet(seq, payload) for seq, payload, _ in SMALL_PACKETS]


def test_packet_buffer_whole() -> None:
    buffer = PacketBuffer()
    buffer.feed(STREAM)
    assert list(buffer) == EXPECTED
    assert buffer.pending == 0


def test_packet_buffer_byte_by_byte() -> None:
    buffer = PacketBuffer()
    got: list[Packet] = []
    for i in range(len(STREAM)):
        buffer.feed(STREAM[i : i + 1])
        got.extend(buffer)
    assert got == EXPECTED


@pytest.mark.parametrize("trailing", [b"\x05", b"\x05\x00\x00", b"\x05\x00\x00\x00abc"])
def test_packet_buffer_keeps_trailing_partial_packet(trailing: bytes) -> None:
    buffer = PacketBuffer()
    buffer.feed(STREAM + trailing)
    assert list(buffer) == EXPECTED
    assert buffer.pending == len(trailing)
    buffer.feed(b"\x05\x00\x00\x00abcde"[len(trailing) :])
    assert list(buffer) == [Packet(0, b"abcde")]


def test_packet_buffer_rejects_out_of_sequence_continuation() -> None:
    data = encode_packet(0, b"q" * MAX + b"tail")
    bad = data[: 4 + MAX] + b"\x04\x00\x00\x05" + data[4 + MAX + 4 :]
    buffer = PacketBuffer()
    buffer.feed(bad)
    with pytest.raises(ProtocolError, match="sequence id 5, expected 1"):
        list(buffer)


def test_packet_buffer_limits_assembled_payload() -> None:
    buffer = PacketBuffer(max_payload=100)
    buffer.feed(b"\x64\x00\x00\x00" + b"a" * 100)
    assert list(buffer) == [Packet(0, b"a" * 100)]
    buffer.feed(b"\x65\x00\x00\x00")  # the header alone is enough to refuse it
    with pytest.raises(ProtocolError, match="exceeds 100 bytes"):
        list(buffer)
