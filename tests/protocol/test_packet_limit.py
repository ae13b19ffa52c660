"""The tracker's max_packet_size: refused on the header that crosses it (fed whole, in
random pieces and byte by byte), with the sequence id of the answer, the bytes before it
and whether earlier commands still await answers. Also `waiting_for_client`, which the
idle timeout relies on."""

from __future__ import annotations

import pytest

from mysqlproxy.protocol.constants import MAX_PACKET_PAYLOAD
from mysqlproxy.protocol.errors import PacketTooLarge
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import ConnectionTracker
from mysqlproxy.testing import packets as pf
from tests.protocol.support import SPLITTERS, Splitter

LIMIT = 1000


def logged_in(limit: int = LIMIT) -> tuple[ConnectionTracker, pf.Conversation]:
    conv = pf.login()
    tracker = ConnectionTracker()
    for chunk in conv.chunks:
        if chunk.direction == pf.CLIENT:
            tracker.client_data(chunk.data)
        else:
            tracker.server_data(chunk.data)
    tracker.max_packet_size = limit
    return tracker, conv


def feed_client(tracker: ConnectionTracker, data: bytes, split: Splitter) -> bytes:
    """Feed the client's bytes in pieces; returns what the tracker passed on."""
    out = bytearray()
    for piece in split(data):
        out += tracker.client_data(piece)
    return bytes(out)


@pytest.mark.parametrize("split", SPLITTERS.values(), ids=SPLITTERS.keys())
def test_at_the_limit_passes_over_it_is_refused(split: Splitter) -> None:
    tracker, _ = logged_in()
    at_limit = encode_packet(0, b"\x03" + b"x" * (LIMIT - 1))
    assert feed_client(tracker, at_limit, split) == at_limit
    tracker.server_data(encode_packet(1, pf.ok()))
    over = encode_packet(0, b"\x03" + b"x" * LIMIT)
    passed = bytearray()
    with pytest.raises(PacketTooLarge) as info:
        for piece in split(over):
            passed += tracker.client_data(piece)
    exc = info.value
    assert (exc.size, exc.limit, exc.sequence_id) == (LIMIT + 1, LIMIT, 1)
    assert not exc.behind_commands
    # Nothing of the oversized packet's payload went on: at most part of its header, from
    # earlier pieces of a split feed.
    assert len(passed) <= 4
    assert tracker.waiting_for_client


def test_refused_on_the_header() -> None:
    tracker, _ = logged_in()
    header = (LIMIT + 1).to_bytes(3, "little") + b"\x00"
    # The framer reads a header with the payload's first byte (the command code).
    assert tracker.client_data(header) == header
    with pytest.raises(PacketTooLarge) as info:
        tracker.client_data(b"\x03")
    assert info.value.forward == b""


def test_pieces_are_added_up() -> None:
    limit = MAX_PACKET_PAYLOAD + 100
    tracker, _ = logged_in(limit)
    first_piece = (
        MAX_PACKET_PAYLOAD.to_bytes(3, "little") + b"\x00\x03" + b"x" * (MAX_PACKET_PAYLOAD - 1)
    )
    assert tracker.client_data(first_piece) == first_piece  # 16 MiB - 1: under the limit
    with pytest.raises(PacketTooLarge) as info:
        tracker.client_data((101).to_bytes(3, "little") + b"\x01x")  # the second piece
    assert (info.value.size, info.value.sequence_id) == (MAX_PACKET_PAYLOAD + 101, 2)


def test_packets_before_it_in_the_chunk_are_forwardable() -> None:
    tracker, _ = logged_in()
    ping = encode_packet(0, b"\x0e")
    close_statement = encode_packet(0, b"\x19\x01\x00\x00\x00")  # no response
    oversized_header = (LIMIT + 1).to_bytes(3, "little") + b"\x00"
    with pytest.raises(PacketTooLarge) as info:
        tracker.client_data(ping + close_statement + oversized_header + b"\x03abc")
    exc = info.value
    assert exc.forward == ping + close_statement
    assert exc.behind_commands  # the ping is still to be answered
    assert not tracker.waiting_for_client
    tracker.server_data(encode_packet(1, pf.ok()))
    assert tracker.current_command is None and tracker.waiting_for_client


def test_file_contents_are_limited_and_answered_at_once() -> None:
    tracker, conv = logged_in()
    sent, answer = conv.command(
        pf.com_query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t"), pf.local_infile_request("f")
    )
    tracker.client_data(sent)
    tracker.server_data(answer)
    with pytest.raises(PacketTooLarge) as info:
        tracker.client_data(encode_packet(2, b"y" * (LIMIT + 1)))
    # The LOAD DATA itself is in flight, but it is the one being refused: answered now,
    # with the file packet's sequence id plus one.
    assert not info.value.behind_commands
    assert info.value.sequence_id == 3


def test_no_limit_by_default() -> None:
    tracker, _ = logged_in(0)
    big = encode_packet(0, b"\x03" + b"x" * 100_000)
    assert tracker.client_data(big) == big


def test_waiting_for_client() -> None:
    conv = pf.login()
    tracker = ConnectionTracker()
    assert not tracker.waiting_for_client  # no greeting yet: waiting for the server
    greeting, response, ok = (c.data for c in conv.chunks)
    tracker.server_data(greeting)
    assert tracker.waiting_for_client  # the greeting is the client's to answer
    tracker.client_data(response)
    assert not tracker.waiting_for_client  # the server's turn: authentication
    tracker.server_data(ok)
    assert tracker.waiting_for_client
    tracker.client_data(b"\x05\x00")  # part of a header
    assert tracker.waiting_for_client and not tracker.idle
    tracker.client_data(b"\x00\x00\x03SELE")
    assert not tracker.waiting_for_client  # a command in flight


@pytest.mark.parametrize("split", SPLITTERS.values(), ids=SPLITTERS.keys())
def test_the_rest_of_a_refused_packet_is_passed_over(split: Splitter) -> None:
    """After the refusal, skip_refused reads the rest of the packet and says where it
    ends (under compression the ERR waits for that); what follows is not read."""
    tracker, _ = logged_in()
    over = encode_packet(0, b"\x03" + b"x" * (3 * LIMIT))
    refused: PacketTooLarge | None = None
    ended = False
    fed = 0
    for piece in split(over + encode_packet(0, b"\x0e")):
        fed += len(piece)
        if refused is None:
            try:
                tracker.client_data(piece)
                continue
            except PacketTooLarge as exc:
                refused, ended = exc, exc.ended
        else:
            ended = tracker.skip_refused(piece)
        if ended:
            break
    # It ended with the piece that holds the packet's last byte.
    assert refused is not None and ended
    assert fed - len(piece) < len(over) <= fed


def test_the_rest_of_a_refused_packet_of_several_pieces_is_passed_over() -> None:
    """The pieces after the one over the limit (0xFFFFFF each) are read by their headers."""
    tracker, _ = logged_in()
    payload = b"\x03" + b"x" * (2 * MAX_PACKET_PAYLOAD + 10)
    data = encode_packet(0, payload)
    with pytest.raises(PacketTooLarge) as info:
        tracker.client_data(data[:100])
    assert info.value.sequence_id == 1 and not info.value.ended
    # Cut inside the second piece's header, then inside the third's payload.
    second_header = 4 + MAX_PACKET_PAYLOAD
    assert not tracker.skip_refused(data[100 : second_header + 2])
    assert not tracker.skip_refused(data[second_header + 2 : -5])
    assert tracker.skip_refused(data[-5:] + b"not read")
    assert tracker.skip_refused(b"")  # nothing more to pass over


def test_a_refused_packet_that_ends_in_its_chunk_has_ended() -> None:
    tracker, _ = logged_in()
    with pytest.raises(PacketTooLarge) as info:
        tracker.client_data(encode_packet(0, b"\x03" + b"x" * LIMIT) + b"\x01\x00\x00")
    assert info.value.ended
    assert tracker.skip_refused(b"\x00\x0e")
