"""Framing: the 4-byte packet header, sequence ids and 0xFFFFFF continuations.

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html

A packet is a 3-byte little-endian payload length, a 1-byte sequence id and the
payload. A payload of exactly 0xFFFFFF bytes continues in the next packet; a logical
payload that is a multiple of 0xFFFFFF ends with an empty packet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mysqlproxy.protocol.constants import MAX_PACKET_PAYLOAD
from mysqlproxy.protocol.errors import ProtocolError

HEADER_SIZE = 4

# A peer may announce a payload of up to 1 GiB (max_allowed_packet's ceiling). Whole
# logical packets are only assembled by PacketBuffer (tests, the fake server, the admin
# interface); the relay never assembles rows. The limit keeps a hostile peer from making
# us allocate without bound.
MAX_ASSEMBLED_PAYLOAD = 1 << 30


@dataclass(frozen=True, slots=True)
class Packet:
    """One logical packet: the sequence id of its first piece and the whole payload."""

    sequence_id: int
    payload: bytes


def encode_packet(sequence_id: int, payload: bytes) -> bytes:
    """Frame a logical payload, splitting it into 0xFFFFFF pieces as the protocol requires."""
    out = bytearray()
    seq = sequence_id
    pos = 0
    while True:
        piece = payload[pos : pos + MAX_PACKET_PAYLOAD]
        out += len(piece).to_bytes(3, "little") + bytes((seq & 0xFF,)) + piece
        pos += len(piece)
        seq += 1
        if len(piece) < MAX_PACKET_PAYLOAD:
            return bytes(out)


def next_sequence_id(packet_sequence_id: int, payload_length: int) -> int:
    """The sequence id that follows a logical packet of this length."""
    pieces = payload_length // MAX_PACKET_PAYLOAD + 1
    return (packet_sequence_id + pieces) & 0xFF


class PacketBuffer:
    """Takes bytes, yields complete logical packets. Checks that continuation pieces
    carry consecutive sequence ids."""

    def __init__(self, max_payload: int = MAX_ASSEMBLED_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a complete packet."""
        return len(self._buffer)

    def take_pending(self) -> bytes:
        """Remove and return the bytes not yet part of a complete packet (after an
        SSLRequest: the start of a TLS handshake, for the TLS layer)."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest

    def __iter__(self) -> Iterator[Packet]:
        while True:
            packet = self._take_one()
            if packet is None:
                return
            yield packet

    def _take_one(self) -> Packet | None:
        buf = self._buffer
        pos = 0
        pieces: list[bytes] = []
        first_seq: int | None = None
        expected_seq = 0
        total = 0
        while True:
            if len(buf) - pos < HEADER_SIZE:
                return None
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            if first_seq is None:
                first_seq = seq
            elif seq != expected_seq:
                raise ProtocolError(
                    f"continuation packet has sequence id {seq}, expected {expected_seq}"
                )
            total += length
            if total > self._max_payload:
                raise ProtocolError(f"packet payload exceeds {self._max_payload} bytes")
            end = pos + HEADER_SIZE + length
            if end > len(buf):
                return None
            pieces.append(bytes(buf[pos + HEADER_SIZE : end]))
            pos = end
            expected_seq = (seq + 1) & 0xFF
            if length < MAX_PACKET_PAYLOAD:
                del buf[:pos]
                return Packet(first_seq, b"".join(pieces))
