"""The compressed protocol (CLIENT_COMPRESS): compressed frames around the packet stream.

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_compression.html
https://mariadb.com/kb/en/0-packet/#compressed-packet

Once the OK that ends authentication has been sent, both peers of a connection that
negotiated CLIENT_COMPRESS wrap their byte stream in frames::

    int<3>  length of the frame's payload as sent
    int<1>  compressed sequence id
    int<3>  length of the payload before compression; 0: the payload is stored as is
    ...     payload: zlib (deflate, RFC 1950) data, or the plain bytes

A frame carries any slice of the ordinary packet stream: several packets, or a piece of
one (a packet's 4-byte header may end in the next frame). Each frame holds at most
0xFFFFFF plain bytes, since the length before compression has three bytes. The compressed
sequence id resets with each command, as the plain one does, but counts frames; a peer
checks it. The plain sequence ids inside are checked by no peer in compressed mode
(MariaDB's net_serv.cc and libmariadb read only the lengths), and they drift from the
uncompressed rules: after each flush a writer sets its plain counter to the compressed
one (so a second result set, or the OK after a LOCAL INFILE, restarts at the frame
count), and libmariadb numbers every 0xFFFFFF piece of a big command 0. The tracker
therefore stops checking them once compression is on, except that a command's first
packet must still carry 0 (every client resets both counters per command).

Relaying: frames are forwarded unchanged
=========================================

The proxy decompresses every frame to feed the plain bytes to the tracker, then writes
the frame it received, byte for byte, to the other leg. Re-compressing instead would
have the proxy invent compressed sequence ids on both legs, and those must match each
peer's counters exactly (they count frames, and the two legs would frame differently);
a mistake there shows up as "packets out of order" in the application. Forwarding
unchanged keeps every id the peers check as the other peer wrote it, costs one
decompression and no compression, and keeps the compression level the client chose.
Frames are only built by the proxy for what it says itself: an ERR refusing a client's
packet (sent stored, as the server sends its errors), the part of a client's frame
before an oversized packet, and the COM_QUIT of an idle timeout.

The ERR refusing an oversized packet answers the client's *last* frame of that packet:
a packet of more than 0xFFFFFF bytes spans several frames, and libmariadb sends one
larger than its 16 KiB net buffer as that buffer's frame, then the rest. The header
that crosses the limit comes in the first of them, so the relay reads the rest
(dropping it: ConnectionTracker.skip_refused finds where the packet ends in the plain
stream) before it numbers the ERR; a client that does not finish within the session's
LINGER_SECONDS gets it numbered after the last frame seen.

Sizes: the tracker reads the plain stream, so a QueryEvent's bytes_received and
bytes_sent count bytes before compression (headers of the plain packets included): the
size of a command and of its result in the protocol, the same whether a client
compresses or not, so the digests of one query compare across clients and a big result
looks big. What the wire carried depends on the data and the peer's zlib level.

Limits: a frame is relayed once whole, so a connection holds at most one incomplete
frame per direction (under 16 MiB + 7 bytes), and its plain bytes (at most 0xFFFFFF,
the protocol's own bound). Decompression stops one byte past the announced length: a
small frame that inflates without bound (a zip bomb) costs no more than an honest one.

zstd (CLIENT_ZSTD_COMPRESSION_ALGORITHM, MySQL 8.0.18+) stays masked: MariaDB does not
offer it, Python 3.11 has no zstd in its standard library, and a client sets it only
when the server offers it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from mysqlproxy.protocol.errors import ProtocolError

COMPRESSED_HEADER_SIZE = 7
# Both lengths in the frame header have three bytes.
MAX_FRAME_PAYLOAD = 0xFFFFFF
# libmysqlclient and libmariadb store payloads shorter than this (MIN_COMPRESS_LENGTH).
MIN_COMPRESS_LENGTH = 50
# zlib's default, what libmysqlclient uses for CLIENT_COMPRESS.
DEFAULT_LEVEL = 6


@dataclass(frozen=True, slots=True)
class CompressedFrame:
    """One frame: its compressed sequence id, its bytes as received (header included)
    and its payload after decompression (a slice of the plain packet stream)."""

    sequence_id: int
    wire: bytes
    payload: bytes


def decompress_payload(body: bytes, plain_length: int) -> bytes:
    """A frame's zlib payload, which must inflate to exactly `plain_length` bytes and end
    there. At most one byte more than announced is ever produced."""
    inflater = zlib.decompressobj()
    try:
        plain = inflater.decompress(body, plain_length + 1)
    except zlib.error as exc:
        raise ProtocolError(f"compressed frame does not inflate: {exc}") from exc
    if len(plain) > plain_length:
        raise ProtocolError(f"compressed frame inflates past its announced {plain_length} bytes")
    if not inflater.eof:
        raise ProtocolError("compressed frame ends inside its zlib stream")
    if inflater.unused_data:
        raise ProtocolError("compressed frame has data after its zlib stream")
    if len(plain) != plain_length:
        raise ProtocolError(
            f"compressed frame inflates to {len(plain)} bytes, announced {plain_length}"
        )
    return plain


class CompressedFrameBuffer:
    """Takes bytes, yields complete frames, decompressed. Holds at most one incomplete
    frame; a frame's plain bytes are bounded by its header (MAX_FRAME_PAYLOAD)."""

    def __init__(self) -> None:
        # What was fed and not yet taken starts at _pos: the chunk itself when nothing
        # was pending (frames are sliced from it; a chunk that is one frame is that
        # frame's `wire`, uncopied), else a bytearray completing an incomplete frame,
        # compacted once per chunk rather than once per frame.
        self._buffer: bytes | bytearray = b""
        self._pos = 0

    def feed(self, data: bytes) -> None:
        buffer, pos = self._buffer, self._pos
        if not pos and type(buffer) is bytearray:
            buffer += data  # more of an incomplete frame (a big one comes in many chunks)
            return
        if pos >= len(buffer):
            self._buffer, self._pos = data if type(data) is bytes else bytearray(data), 0
            return
        if isinstance(buffer, bytearray):
            del buffer[:pos]
        else:
            with memoryview(buffer) as view:
                buffer = bytearray(view[pos:])
        buffer += data
        self._buffer, self._pos = buffer, 0

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a complete frame."""
        return len(self._buffer) - self._pos

    def __iter__(self) -> Iterator[CompressedFrame]:
        while True:
            frame = self._take_one()
            if frame is None:
                return
            yield frame

    def _take_one(self) -> CompressedFrame | None:
        buf, pos = self._buffer, self._pos
        if len(buf) - pos < COMPRESSED_HEADER_SIZE:
            return None
        length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        end = pos + COMPRESSED_HEADER_SIZE + length
        if len(buf) < end:
            return None
        self._pos = end
        if type(buf) is bytes:
            wire = buf[pos:end]  # the chunk itself when it is exactly this frame
        else:
            with memoryview(buf) as view:
                wire = bytes(view[pos:end])
        plain_length = wire[4] | wire[5] << 8 | wire[6] << 16
        body = wire[COMPRESSED_HEADER_SIZE:]
        payload = body if plain_length == 0 else decompress_payload(body, plain_length)
        return CompressedFrame(wire[3], wire, payload)


def encode_frames(
    sequence_id: int, data: bytes, *, compress: bool = True, level: int = DEFAULT_LEVEL
) -> bytes:
    """Wrap plain packet bytes in frames of at most MAX_FRAME_PAYLOAD plain bytes, with
    compressed sequence ids from `sequence_id` on. A piece is stored when `compress` is
    false, when it is shorter than MIN_COMPRESS_LENGTH, or when zlib would not shrink it
    (as libmysqlclient does)."""
    out = bytearray()
    seq = sequence_id
    pos = 0
    while True:
        piece = data[pos : pos + MAX_FRAME_PAYLOAD]
        body, plain_length = piece, 0
        if compress and len(piece) >= MIN_COMPRESS_LENGTH:
            packed = zlib.compress(piece, level)
            if len(packed) < len(piece):
                body, plain_length = packed, len(piece)
        out += len(body).to_bytes(3, "little")
        out.append(seq & 0xFF)
        out += plain_length.to_bytes(3, "little")
        out += body
        pos += len(piece)
        seq += 1
        if pos >= len(data):
            return bytes(out)


class CompressedLink:
    """The compressed framing of one proxied connection, both legs, for the relay: it
    splits each leg's bytes into frames (the relay forwards each frame's `wire` and
    feeds its `payload` to the tracker) and builds the few frames the proxy writes
    itself, with the compressed sequence ids the receiving peer expects."""

    def __init__(self) -> None:
        self.from_client = CompressedFrameBuffer()
        self.from_server = CompressedFrameBuffer()
        self.client_sequence_id = 0  # of the client's frame taken last

    def client_frames(self, data: bytes) -> Iterator[CompressedFrame]:
        self.from_client.feed(data)
        for frame in self.from_client:
            self.client_sequence_id = frame.sequence_id
            yield frame

    def server_frames(self, data: bytes) -> Iterator[CompressedFrame]:
        self.from_server.feed(data)
        yield from self.from_server

    def reply_to_client(self, packets: bytes) -> bytes:
        """Packets answering the client's last frame taken, as the server would frame
        them: the next compressed sequence id, stored (the server never compresses an
        ERR)."""
        return encode_frames((self.client_sequence_id + 1) & 0xFF, packets, compress=False)

    @staticmethod
    def command_to_server(packets: bytes) -> bytes:
        """A command of the proxy's own (COM_QUIT): compressed sequence ids start at 0."""
        return encode_frames(0, packets)
