"""The packets the engine writes itself, framing, and renumbering across chunks."""

from __future__ import annotations

import pytest

from lua_compat import wire
from mysqlproxy.protocol.constants import MAX_PACKET_PAYLOAD


def test_frame_splits_and_ends_exact_multiples_with_an_empty_packet() -> None:
    data, next_seq = wire.frame([b"x" * MAX_PACKET_PAYLOAD], 3)
    assert next_seq == 5
    assert data[:4] == b"\xff\xff\xff\x03"
    assert data[-4:] == b"\x00\x00\x00\x04"
    assert len(data) == MAX_PACKET_PAYLOAD + 8
    data, next_seq = wire.frame([b"a", b""], 255)
    assert data == b"\x01\x00\x00\xffa\x00\x00\x00\x00" and next_seq == 1


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 1000])
def test_renumber_is_the_same_whatever_the_chunks(step: int) -> None:
    stream, _ = wire.frame([b"", b"abc", b"x" * 300, b"\xfe\x00\x00\x02\x00"], 1)
    whole = wire.renumber(stream, 4, [0])
    state = [0]
    pieces = b"".join(
        wire.renumber(stream[i : i + step], 4, state) for i in range(0, len(stream), step)
    )
    assert pieces == whole
    expected, _ = wire.frame([b"", b"abc", b"x" * 300, b"\xfe\x00\x00\x02\x00"], 5)
    assert whole == expected
    assert wire.renumber(expected, -4, [0]) == stream


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        (None, b"07000"),
        (b"", b"07000"),
        (b"4", b"47000"),
        (b"42S22", b"42S22"),
        (b"toolong", b"toolo"),
    ],
)
def test_err_sqlstate_is_always_five_bytes(sqlstate: bytes | None, expected: bytes) -> None:
    assert wire.err_payload(1105, "m", sqlstate) == b"\xff\x51\x04#" + expected + b"m"


def test_ok_and_pre41_err() -> None:
    assert wire.ok_payload() == b"\x00\x00\x00\x02\x00\x00\x00"
    assert wire.ok_payload(300, 1) == b"\x00\xfc\x2c\x01\x01\x02\x00\x00\x00"
    assert wire.pre41_err_payload(1105, "(proxy) all backends are down") == (
        b"\xff\x51\x04(proxy) all backends are down"
    )
    assert wire.err_payload(1, "x" * 600)[9:] == b"x" * 512
