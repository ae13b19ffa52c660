"""The compressed protocol: frames as exact bytes, decoded whole, byte by byte and with
trailing data; the limits (a zip bomb, lying lengths); hypothesis over random chunk
splits and mutated frames (only ProtocolError, never a hang); and the tracker's
compressed mode, where the plain sequence ids inside the frames go unchecked."""

from __future__ import annotations

import itertools
import os
import signal
import zlib
from collections.abc import Iterator
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mysqlproxy.protocol.compression import (
    MAX_FRAME_PAYLOAD,
    CompressedFrame,
    CompressedFrameBuffer,
    CompressedLink,
    decompress_payload,
    encode_frames,
)
from mysqlproxy.protocol.constants import MASKED_CAPABILITIES, Capability
from mysqlproxy.protocol.errors import PacketTooLarge, ProtocolError, UnsupportedFeature
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import ConnectionTracker
from mysqlproxy.testing import packets as pk
from tests.protocol.support import new_tracker

# The COM_QUERY of the example in MySQL's page on the compressed protocol: 46 bytes of
# payload, 50 with its header, compressed by zlib at its default level.
QUERY = encode_packet(0, b'\x03select "012345678901234567890123456789012345"')
QUERY_FRAME = bytes.fromhex(
    "220000 00 320000"
    "789cd363606060 2e4ecd494d2e5150 3230343236313533 b7b0c4cd5202000c d10a6c"
)
PING = encode_packet(0, b"\x0e")
PING_FRAME = b"\x05\x00\x00\x00\x00\x00\x00" + PING  # under 50 bytes: stored


def _frames(data: bytes, pieces: Iterator[bytes] | None = None) -> list[CompressedFrame]:
    buffer = CompressedFrameBuffer()
    out: list[CompressedFrame] = []
    for piece in pieces if pieces is not None else iter([data]):
        buffer.feed(piece)
        out.extend(buffer)
    assert buffer.pending == 0
    return out


def _bytewise(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


# --- exact bytes --------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["whole", "bytewise"])
@pytest.mark.parametrize(
    ("wire", "sequence_id", "payload"),
    [(QUERY_FRAME, 0, QUERY), (PING_FRAME, 0, PING)],
    ids=["compressed", "stored"],
)
def test_decode_exact_frames(wire: bytes, sequence_id: int, payload: bytes, split: str) -> None:
    pieces = _bytewise(wire) if split == "bytewise" else None
    assert _frames(wire, pieces) == [CompressedFrame(sequence_id, wire, payload)]


def test_decode_with_trailing_data_keeps_the_incomplete_frame() -> None:
    buffer = CompressedFrameBuffer()
    buffer.feed(QUERY_FRAME + PING_FRAME[:9])
    assert [f.payload for f in buffer] == [QUERY]
    assert buffer.pending == 9
    buffer.feed(PING_FRAME[9:] + QUERY_FRAME[:3])
    assert [f.payload for f in buffer] == [PING]
    assert buffer.pending == 3


def test_encode_compresses_from_50_bytes_on_and_stores_below() -> None:
    frame = encode_frames(0, QUERY)
    assert frame[:7] == len(frame[7:]).to_bytes(3, "little") + b"\x00\x32\x00\x00"
    assert zlib.decompress(frame[7:]) == QUERY
    assert _frames(frame)[0].payload == QUERY
    assert encode_frames(0, PING) == PING_FRAME
    assert encode_frames(7, QUERY, compress=False) == b"\x32\x00\x00\x07\x00\x00\x00" + QUERY


def test_encode_stores_what_zlib_cannot_shrink() -> None:
    noise = os.urandom(200)
    assert encode_frames(3, noise) == b"\xc8\x00\x00\x03\x00\x00\x00" + noise


def test_encode_splits_at_0xffffff_plain_bytes_and_wraps_sequence_ids() -> None:
    data = b"a" * (MAX_FRAME_PAYLOAD + 10)
    frames = _frames(encode_frames(255, data))
    assert [f.sequence_id for f in frames] == [255, 0]
    assert [len(f.payload) for f in frames] == [MAX_FRAME_PAYLOAD, 10]
    assert frames[0].wire[4:7] == b"\xff\xff\xff"  # compressed: its plain length
    assert frames[1].wire[4:7] == b"\x00\x00\x00"  # 10 bytes: stored
    assert b"".join(f.payload for f in frames) == data


def test_link_frames_replies_after_the_clients_last_frame() -> None:
    link = CompressedLink()
    frames = list(link.client_frames(encode_frames(0, QUERY) + encode_frames(1, PING)))
    assert [f.sequence_id for f in frames] == [0, 1]
    err = encode_packet(1, pk.err())
    assert link.reply_to_client(err) == len(err).to_bytes(3, "little") + b"\x02\x00\x00\x00" + err
    assert link.command_to_server(PING) == PING_FRAME


# --- limits and malformed frames ------------------------------------------------------------


def _compressed_frame(body: bytes, plain_length: int, seq: int = 0) -> bytes:
    header = len(body).to_bytes(3, "little") + bytes((seq,)) + plain_length.to_bytes(3, "little")
    return header + body


def test_zip_bomb_is_refused_after_one_byte_more_than_announced() -> None:
    bomb = zlib.compress(b"\x00" * (64 << 20), 9)  # 64 MiB in about 64 KiB
    assert len(bomb) < 100_000
    with pytest.raises(ProtocolError, match="past its announced 100 bytes"):
        _frames(_compressed_frame(bomb, 100))
    with pytest.raises(ProtocolError, match="past its announced"):
        _frames(_compressed_frame(bomb, MAX_FRAME_PAYLOAD))


@pytest.mark.parametrize(
    ("body", "plain_length", "message"),
    [
        (zlib.compress(QUERY), len(QUERY) + 1, "inflates to 50 bytes, announced 51"),
        (zlib.compress(QUERY)[:-6], len(QUERY), "ends inside its zlib stream"),
        (zlib.compress(QUERY) + b"xx", len(QUERY), "data after its zlib stream"),
        (b"not zlib at all", 15, "does not inflate"),
        (b"", 10, "ends inside its zlib stream"),
    ],
    ids=["short", "truncated", "trailing", "garbage", "empty"],
)
def test_malformed_compressed_frames(body: bytes, plain_length: int, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decompress_payload(body, plain_length)
    with pytest.raises(ProtocolError, match=message):
        _frames(_compressed_frame(body, plain_length))


# --- hypothesis -------------------------------------------------------------------------------

payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n, b: b * n, st.integers(1, 2000), st.binary(min_size=1, max_size=3)),
)


def _split(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    start = 0
    for point in points:
        yield data[start:point]
        start = point
    yield data[start:]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(payloads, max_size=8), st.lists(st.integers(0, 1 << 16), max_size=20))
def test_random_chunk_splits_decode_the_same(pieces: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_frames(i, p) for i, p in enumerate(pieces))
    whole = _frames(wire)
    assert [f.payload for f in whole] == pieces
    assert [f.sequence_id for f in whole] == list(range(len(pieces)))
    assert b"".join(f.wire for f in whole) == wire
    assert _frames(wire, _split(wire, cuts)) == whole


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(payloads, min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6),
    st.sampled_from(["flip", "insert", "delete"]),
    st.lists(st.integers(0, 1 << 16), max_size=10),
)
def test_mutated_frames_raise_only_protocol_error(
    pieces: list[bytes], edits: list[tuple[int, int]], how: str, cuts: list[int]
) -> None:
    data = bytearray(b"".join(encode_frames(i, p) for i, p in enumerate(pieces)))
    for position, value in edits:
        at = position % (len(data) + 1)
        if how == "flip" and at < len(data):
            data[at] ^= value or 1
        elif how == "insert":
            data[at:at] = bytes((value,))
        elif how == "delete" and at < len(data):
            del data[at]
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        buffer = CompressedFrameBuffer()
        for piece in _split(bytes(data), cuts):
            buffer.feed(piece)
            for frame in buffer:
                assert len(frame.payload) <= MAX_FRAME_PAYLOAD
    except ProtocolError:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- the tracker in compressed mode -------------------------------------------------------


def _logged_in(
    client_caps: Capability, server_caps: Capability = pk.MARIADB_SERVER_CAPABILITIES
) -> ConnectionTracker:
    tracker = new_tracker()
    tracker.server_data(encode_packet(0, pk.greeting_mariadb(server_caps)))
    response = encode_packet(1, pk.handshake_response(client_caps))
    assert tracker.client_data(response) == response  # CLIENT_COMPRESS passes unmasked
    assert not tracker.compressed  # the handshake itself is never compressed
    tracker.server_data(encode_packet(2, pk.ok()))
    tracker.events.clear()
    return tracker


def test_compressed_mode_starts_after_the_ok_when_both_sides_agree() -> None:
    assert _logged_in(pk.CLIENT_CAPABILITIES | Capability.CLIENT_COMPRESS).compressed
    assert not _logged_in(pk.CLIENT_CAPABILITIES).compressed
    without = pk.MARIADB_SERVER_CAPABILITIES & ~Capability.CLIENT_COMPRESS
    assert not _logged_in(pk.CLIENT_CAPABILITIES, without).compressed


@pytest.mark.parametrize("how", ["masked", "not offered"])
def test_client_asking_for_compression_it_was_not_offered(how: str) -> None:
    """The Lua engine masks CLIENT_COMPRESS; a server may not offer it. A client that
    asks anyway is refused (ERR 1235 from the relay) rather than misread."""
    masked = MASKED_CAPABILITIES | (Capability.CLIENT_COMPRESS if how == "masked" else 0)
    server_caps = pk.MARIADB_SERVER_CAPABILITIES
    if how == "not offered":
        server_caps &= ~Capability.CLIENT_COMPRESS
    tracker = ConnectionTracker(masked_capabilities=masked)
    tracker.server_data(encode_packet(0, pk.greeting_mariadb(server_caps)))
    asking = pk.CLIENT_CAPABILITIES | Capability.CLIENT_COMPRESS
    with pytest.raises(UnsupportedFeature, match="compression, which was not offered"):
        tracker.client_data(encode_packet(1, pk.handshake_response(asking)))


def _two_results_after_a_flush() -> bytes:
    """A multi-statement response as MariaDB writes it compressed: after the first result
    set's EOF it flushes its frame and sets the plain sequence id to the frame count
    (here 2), so the second result restarts there instead of counting on."""
    first = pk.text_result_set(["a"], [[b"1"]], deprecate_eof=False, more_results=True)
    second = pk.text_result_set(["b"], [[b"2"]], deprecate_eof=False)
    return pk.frame(1, first) + pk.frame(2, second)


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "plain"])
def test_plain_sequence_ids_go_unchecked_only_when_compressed(compressed: bool) -> None:
    caps = pk.CLIENT_CAPABILITIES | (Capability.CLIENT_COMPRESS if compressed else 0)
    tracker = _logged_in(caps)
    tracker.client_data(encode_packet(0, pk.com_query("SELECT 1 AS a; SELECT 2 AS b")))
    response = _two_results_after_a_flush()
    if not compressed:
        with pytest.raises(ProtocolError, match="sequence id 2, expected 6"):
            tracker.server_data(response)
        return
    assert tracker.server_data(response) == response
    (event,) = tracker.events
    assert (event.query, event.result_sets, event.rows_sent) == (
        "SELECT 1 AS a; SELECT 2 AS b", 2, 2
    )
    assert tracker.idle


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "plain"])
def test_continuation_pieces_numbered_as_libmariadb_does_when_compressed(compressed: bool) -> None:
    """libmariadb, compressing, gives every 0xFFFFFF piece of a big command the id 0."""
    caps = pk.CLIENT_CAPABILITIES | (Capability.CLIENT_COMPRESS if compressed else 0)
    tracker = _logged_in(caps)
    query = pk.com_query("SELECT '" + "x" * MAX_FRAME_PAYLOAD + "'")
    data = bytearray(encode_packet(0, query))
    data[4 + MAX_FRAME_PAYLOAD + 3] = 0  # the second piece's sequence id: 1 -> 0
    if not compressed:
        with pytest.raises(ProtocolError, match="continuation packet has sequence id 0"):
            tracker.client_data(bytes(data))
        return
    tracker.client_data(bytes(data))
    tracker.server_data(encode_packet(1, pk.ok()))
    (event,) = tracker.events
    assert event.bytes_received == len(data) and event.truncated


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "plain"])
def test_change_user_exchange_inside_the_compressed_stream(compressed: bool) -> None:
    """COM_CHANGE_USER's auth switch is answered inside frames, where the plain ids follow
    the frame count. (No real client here compresses and changes user: the connector
    refuses to, the mariadb client reconnects instead.)"""
    caps = pk.CLIENT_CAPABILITIES | (Capability.CLIENT_COMPRESS if compressed else 0)
    tracker = _logged_in(caps)
    tracker.client_data(encode_packet(0, pk.com_change_user("other")))
    tracker.server_data(encode_packet(1, pk.auth_switch_request()))
    answer = encode_packet(3, b"\x00" * 20)  # plain rules want 2
    if not compressed:
        with pytest.raises(ProtocolError, match="auth packet has sequence id 3, expected 2"):
            tracker.client_data(answer)
        return
    tracker.client_data(answer)
    tracker.server_data(encode_packet(4, pk.ok()))
    assert tracker.user == "other"
    assert tracker.idle


# --- frames and tracker together, as the relay uses them --------------------------------------


class _Relay:
    """The session's use of the two, without sockets: plain until the tracker turns
    compressed, then each leg's bytes go through the link and each frame's payload
    through the tracker."""

    def __init__(self) -> None:
        self.tracker = new_tracker()
        self.link: CompressedLink | None = None

    def client(self, data: bytes) -> None:
        if self.link is None:
            self.tracker.client_data(data)
            return
        for frame in self.link.client_frames(data):
            self.tracker.client_data(frame.payload)

    def server(self, data: bytes) -> None:
        if self.link is None:
            self.tracker.server_data(data)
            if self.tracker.compressed:
                self.link = CompressedLink()
            return
        for frame in self.link.server_frames(data):
            self.tracker.server_data(frame.payload)


def _compressed_session() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(plain login, compressed exchange) as (direction, bytes) chunks."""
    caps = pk.CLIENT_CAPABILITIES | Capability.CLIENT_COMPRESS
    login = [
        ("server", encode_packet(0, pk.greeting_mariadb())),
        ("client", encode_packet(1, pk.handshake_response(caps))),
        ("server", encode_packet(2, pk.ok())),
    ]
    rows = [[str(i).encode(), b"x" * (i % 70)] for i in range(200)]
    result = pk.text_result_set(["id", "v"], rows, deprecate_eof=False)
    exchange = [
        ("client", encode_frames(0, encode_packet(0, pk.com_query("SELECT id, v FROM t")))),
        ("server", encode_frames(1, pk.frame(1, result))),
        ("client", encode_frames(0, encode_packet(0, pk.com_ping()))),
        ("server", encode_frames(1, encode_packet(1, pk.ok()))),
        ("client", encode_frames(0, encode_packet(0, pk.com_query("SELECT nope")))),
        ("server", encode_frames(1, encode_packet(1, pk.err(1054, "Unknown column")))),
    ]
    return login, exchange


def test_relay_of_a_compressed_session_gives_the_plain_sessions_events() -> None:
    login, exchange = _compressed_session()
    relay = _Relay()
    for direction, data in login + exchange:
        if direction == "client":
            relay.client(data)
        else:
            for piece in _bytewise(data):  # frames and packets cut everywhere
                relay.server(piece)
    queries = [e for e in relay.tracker.events if isinstance(e, QueryEvent)]
    assert [(q.query, q.rows_sent, q.error_code) for q in queries] == [
        ("SELECT id, v FROM t", 200, 0),
        ("", 0, 0),
        ("SELECT nope", 0, 1054),
    ]
    assert relay.tracker.idle


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.integers(0, 5),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=4),
    st.sampled_from(["flip", "insert", "delete"]),
    st.lists(st.integers(0, 1 << 16), max_size=6),
)
def test_relay_of_mutated_compressed_data_raises_only_protocol_error(
    which: int, edits: list[tuple[int, int]], how: str, cuts: list[int]
) -> None:
    login, exchange = _compressed_session()
    direction, original = exchange[which]
    data = bytearray(original)
    for position, value in edits:
        at = position % (len(data) + 1)
        if how == "flip" and at < len(data):
            data[at] ^= value or 1
        elif how == "insert":
            data[at:at] = bytes((value,))
        elif how == "delete" and at < len(data):
            del data[at]
    exchange[which] = (direction, bytes(data))
    relay = _Relay()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        for chunk_direction, chunk in login + exchange:
            feed = relay.client if chunk_direction == "client" else relay.server
            for piece in _split(chunk, cuts):
                feed(piece)
    except ProtocolError:
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _refusal_reply(tracker: ConnectionTracker, chunks: list[bytes]) -> bytes:
    """The relay's part in refusing an oversized packet under compression, without
    sockets: frames go through the tracker until PacketTooLarge, then through
    skip_refused until the packet has ended; the ERR is framed after the last frame
    taken. Returns the ERR as framed for the client."""
    link = CompressedLink()
    refused: PacketTooLarge | None = None
    ended = False
    for chunk in chunks:
        if refused is None:
            try:
                for frame in link.client_frames(chunk):
                    tracker.client_data(frame.payload)
                continue
            except PacketTooLarge as exc:
                refused, ended = exc, exc.ended
                chunk = b""  # the chunk's frames after that one are in the link already
        if not ended:
            for frame in link.client_frames(chunk):
                ended = tracker.skip_refused(frame.payload)
                if ended:
                    break  # (taking the next frame would count it)
        if ended:
            break
    assert refused is not None and ended
    return link.reply_to_client(encode_packet(refused.sequence_id, pk.err()))


@pytest.mark.parametrize("split", ["whole", "bytewise", "per frame"])
@pytest.mark.parametrize("cuts", [[100], [4, 3000], [2, 50, 51, 4000]], ids=str)
def test_refusal_answers_the_last_frame_of_the_refused_packet(
    cuts: list[int], split: str
) -> None:
    """libmariadb sends a packet larger than its 16 KiB net buffer as several frames; the
    header over the limit is in the first. The client numbers the answer after its last
    frame: the ERR's compressed sequence id must follow that one, not the first."""
    tracker = _logged_in(pk.CLIENT_CAPABILITIES | Capability.CLIENT_COMPRESS)
    tracker.max_packet_size = 1000
    plain = encode_packet(0, pk.com_query("SELECT '" + "x" * 5000 + "'"))
    bounds = [0, *cuts, len(plain)]
    frames = [
        encode_frames(seq, plain[start:end], compress=seq % 2 == 0)
        for seq, (start, end) in enumerate(itertools.pairwise(bounds))
    ]
    after = encode_frames(0, encode_packet(0, pk.com_ping()))  # not read
    data = b"".join(frames) + after
    chunks = {
        "whole": [data],
        "bytewise": list(_bytewise(data)),
        "per frame": [*frames, after],
    }[split]
    reply = _refusal_reply(tracker, chunks)
    assert reply[3] == len(frames)  # after the last frame (ids 0 .. len - 1)
    assert reply[7:] == encode_packet(1, pk.err())  # the plain id: the header's + 1
