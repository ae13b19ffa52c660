"""hypothesis against the tracker.

(a) Real captured exchanges (and exchanges from the packet factory), fed in random
    pieces in their causal order, give exactly the events and forwarded bytes they give
    fed whole.
(b) Mutated input (flipped, inserted, deleted bytes, truncation, random chunks) raises
    only ProtocolError (or a subclass), never anything else, and never hangs: each
    example runs under a timer.

The trackers run on constant clocks, so events compare exactly.
"""

from __future__ import annotations

import datetime
import signal
from collections.abc import Callable, Iterator
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mysqlproxy.protocol.constants import Capability, FieldType
from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.messages import ParamValue
from mysqlproxy.testing import packets as pk
from mysqlproxy.testing.packets import CLIENT, SERVER, Chunk, Column, Conversation, Direction
from tests.protocol.support import Replay, load_recordings, replay

# --- the corpus ------------------------------------------------------------------------------


def _factory_session(deprecate_eof: bool) -> Conversation:
    """One connection running every command once, from the packet factory."""
    conv = pk.login(deprecate_eof=deprecate_eof, database="shop")
    d = deprecate_eof
    conv.command(pk.com_query("SET autocommit=1"), pk.ok(0, 0, pk.AUTOCOMMIT, 1))
    conv.command(pk.com_query("SELECT nope"), pk.err(1054, "Unknown column"))
    conv.command(
        pk.com_query("SELECT a, b"),
        *pk.text_result_set(["a", "b"], [[b"1", None], [b"x" * 300, b""]], deprecate_eof=d),
    )
    conv.command(
        pk.com_query("SELECT 1; DO 2; SELECT 3"),
        *pk.text_result_set(["1"], [[b"1"]], deprecate_eof=d, more_results=True),
        pk.ok(0, 0, pk.AUTOCOMMIT | 8),
        *pk.text_result_set(["3"], [[b"3"]], deprecate_eof=d),
    )
    conv.command(pk.com_query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t"), b"\xfbf")
    conv.client(b"1,2\n3,4\n")
    conv.client(b"")
    conv.server(pk.ok(2))
    conv.command(pk.com_init_db("other"), pk.ok())
    conv.command(pk.com_query("USE `x``y`"), pk.ok())
    conv.command(pk.com_ping(), pk.ok())
    conv.command(pk.com_statistics(), pk.STATISTICS_TEXT)
    conv.command(pk.com_field_list("t"), *pk.field_list_response(["a", "b"], deprecate_eof=d))
    conv.command(pk.com_set_option(1), pk.end_of_result(d))
    conv.command(pk.com_process_kill(3), pk.ok())
    conv.command(b"\x99", pk.err(1047, "Unknown command", "08S01"))
    types = [
        FieldType.MYSQL_TYPE_LONG,
        FieldType.MYSQL_TYPE_VAR_STRING,
        FieldType.MYSQL_TYPE_DATETIME,
        FieldType.MYSQL_TYPE_TIME,
        FieldType.MYSQL_TYPE_DOUBLE,
        FieldType.MYSQL_TYPE_BLOB,
    ]
    columns = [Column(f"c{i}", t) for i, t in enumerate(types)]
    values: list[ParamValue] = [
        -1,
        "s",
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        datetime.timedelta(hours=-3),
        2.5,
        None,
    ]
    conv.command(
        pk.com_stmt_prepare("SELECT ?, ?, ?, ?, ?, ?"),
        *pk.prepare_response(1, ["?"] * 6, columns, deprecate_eof=d),
    )
    conv.command(pk.com_stmt_send_long_data(1, 5, b"long"))
    conv.command(
        pk.com_stmt_execute(1, types, values, long_data=frozenset({5})),
        *pk.binary_result_set(columns, [values], deprecate_eof=d),
    )
    conv.command(
        pk.com_stmt_execute(1, types, values, flags=1, new_params_bound=False),
        *pk.binary_result_set(columns, [], deprecate_eof=d, cursor=True),
    )
    conv.command(pk.com_stmt_fetch(1, 1), *pk.fetch_response(columns, [values], deprecate_eof=d))
    conv.command(
        pk.com_stmt_fetch(1, 1), *pk.fetch_response(columns, [], deprecate_eof=d, last=True)
    )
    conv.command(pk.com_stmt_reset(1), pk.ok())
    conv.command(pk.com_stmt_close(1))
    conv.command(pk.com_change_user("bob", b"", "shop"), pk.auth_switch_request())
    conv.client(b"s" * 20)
    conv.server(pk.ok())
    conv.command(pk.com_reset_connection(), pk.ok())
    conv.raw(CLIENT, pk.frame(0, [pk.com_ping()]) + pk.frame(0, [pk.com_query("SELECT 1")]))
    conv.raw(
        SERVER,
        pk.frame(1, [pk.ok()]) + pk.frame(1, pk.text_result_set(["1"], [[b"1"]], deprecate_eof=d)),
    )
    conv.command(pk.com_quit())
    return conv


def _login_variants() -> Iterator[tuple[str, list[Chunk]]]:
    conv = Conversation()
    conv.server(pk.greeting_mysql())
    conv.client(pk.handshake_response(auth_response=b"\x01" * 32))
    conv.server(pk.auth_more_data(b"\x04"))
    conv.client(b"\x02")
    conv.server(pk.auth_more_data(b"-----BEGIN PUBLIC KEY-----"))
    conv.client(b"\x03" * 64)
    conv.server(pk.ok())
    conv.command(pk.com_query("SELECT 1"), pk.ok())
    yield "factory-caching-sha2", conv.chunks
    refused = Conversation()
    refused.server(pk.greeting_mariadb())
    refused.client(pk.handshake_response())
    refused.server(pk.err(1045, "Access denied"))
    yield "factory-refused", refused.chunks
    # MySQL 8.0.23+ query attributes on COM_QUERY and COM_STMT_EXECUTE.
    attributes = Conversation()
    attributes.server(pk.greeting_mysql(auth_plugin=pk.NATIVE_PASSWORD))
    attributes.client(
        pk.handshake_response(pk.CLIENT_CAPABILITIES | Capability.CLIENT_QUERY_ATTRIBUTES)
    )
    attributes.server(pk.ok())
    attributes.command(
        pk.com_query("SELECT 1", [("trace", "x"), ("n", 7), ("none", None)]),
        *pk.text_result_set(["1"], [[b"1"]], deprecate_eof=False),
    )
    attributes.command(pk.com_query("USE shop", []), pk.ok())
    long_column = [Column("c", FieldType.MYSQL_TYPE_LONG)]
    attributes.command(
        pk.com_stmt_prepare("SELECT ?"),
        *pk.prepare_response(1, ["?"], long_column, deprecate_eof=False),
    )
    attributes.command(
        pk.com_stmt_execute(1, [FieldType.MYSQL_TYPE_LONG], [5], query_attributes=[("t", "y")]),
        *pk.binary_result_set(long_column, [[5]], deprecate_eof=False),
    )
    attributes.command(
        pk.com_stmt_execute(
            1, [FieldType.MYSQL_TYPE_LONG], [6], new_params_bound=False,
            query_attributes=[("t", "z")],
        ),
        *pk.binary_result_set(long_column, [[6]], deprecate_eof=False),
    )
    yield "factory-query-attributes", attributes.chunks


CORPUS: dict[str, list[Chunk]] = {
    **{name: recording.chunks for name, recording in load_recordings()},
    "factory-eof": _factory_session(False).chunks,
    "factory-deprecate-eof": _factory_session(True).chunks,
    **dict(_login_variants()),
}
_WHOLE: dict[str, Replay] = {}


def _fed_whole(name: str) -> Replay:
    if name not in _WHOLE:
        _WHOLE[name] = replay(CORPUS[name])
    return _WHOLE[name]


def test_corpus_is_valid() -> None:
    assert len(CORPUS) == 13
    for name in CORPUS:
        result = _fed_whole(name)
        assert result.tracker.idle, name
        assert result.events, name


# --- (a) random splits ----------------------------------------------------------------------


def _pieces(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos = 0
    index = 0
    while pos < len(data):
        size = sizes[index % len(sizes)]
        index += 1
        yield data[pos : pos + size]
        pos += size


def _merge_same_direction(chunks: list[Chunk]) -> list[Chunk]:
    merged: list[Chunk] = []
    for chunk in chunks:
        if merged and merged[-1].direction == chunk.direction:
            merged[-1] = Chunk(chunk.direction, merged[-1].data + chunk.data)
        else:
            merged.append(chunk)
    return merged


@pytest.mark.parametrize("name", sorted(CORPUS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 2000), min_size=1, max_size=8)
    | st.lists(st.integers(1, 6), min_size=1, max_size=8),
    merge=st.booleans(),
)
def test_random_pieces_give_the_same_events(name: str, sizes: list[int], merge: bool) -> None:
    expected = _fed_whole(name)
    chunks = _merge_same_direction(CORPUS[name]) if merge else CORPUS[name]
    tracker = replay([]).tracker
    to_server = bytearray()
    to_client = bytearray()
    for chunk in chunks:
        for piece in _pieces(chunk.data, sizes):
            if chunk.direction == CLIENT:
                to_server += tracker.client_data(piece)
            else:
                to_client += tracker.server_data(piece)
    assert tracker.events == expected.events
    assert bytes(to_server) == expected.to_server
    assert bytes(to_client) == expected.to_client
    assert tracker.idle


# --- (b) mutations ---------------------------------------------------------------------------

# CPU seconds for one example (a whole corpus entry is fed in milliseconds). CPU time, not
# wall-clock time: a loaded machine must not turn a slow example into a "hang".
TIME_LIMIT = 5.0


class Hang(Exception):
    """The tracker did not finish in time: a loop."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang(f"feeding took more than {TIME_LIMIT} s")


def _bounded(work: Callable[[], None], limit: float = TIME_LIMIT) -> None:
    """Run `work` under a timer; a ProtocolError ends it quietly, anything else (Hang
    included) propagates."""
    previous = signal.signal(signal.SIGPROF, _on_alarm)
    signal.setitimer(signal.ITIMER_PROF, limit)
    try:
        work()
    except ProtocolError:
        pass
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def _feed_mutated(chunks: list[Chunk], sizes: list[int]) -> None:
    def work() -> None:
        tracker = replay([]).tracker
        for chunk in chunks:
            for piece in _pieces(chunk.data, sizes):
                if chunk.direction == CLIENT:
                    out = tracker.client_data(piece)
                else:
                    out = tracker.server_data(piece)
                assert isinstance(out, bytes)

    _bounded(work)


MUTATIONS = (
    "flip",
    "set",
    "set_word",
    "insert",
    "delete",
    "truncate",
    "random_chunk",
    "duplicate",
    "drop",
)
# Bytes with a meaning somewhere: packet markers, length prefixes, sign and top bits.
SPECIAL_BYTES = [0x00, 0x01, 0x03, 0x0A, 0x7F, 0x80, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF]


@st.composite
def mutated_exchanges(draw: st.DrawFn) -> list[Chunk]:
    name = draw(st.sampled_from(sorted(CORPUS)))
    chunks = list(CORPUS[name])
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        index = draw(st.integers(0, len(chunks) - 1))
        chunk = chunks[index]
        data = bytearray(chunk.data)
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if mutation == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif mutation == "set" and data:
            data[pos] = draw(st.sampled_from(SPECIAL_BYTES) | st.integers(0, 255))
        elif mutation == "set_word" and data:
            # Lengths, counts, ids, days and microseconds are 2 to 8 byte integers.
            word = draw(st.sampled_from([b"\xff" * 4, b"\x00\x00\x00\x80", b"\xff\xff"]))
            data[pos : pos + len(word)] = word
        elif mutation == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=12))
        elif mutation == "delete":
            del data[pos : pos + draw(st.integers(1, 12))]
        elif mutation == "truncate":
            chunks = chunks[: index + 1]
            del data[pos:]
        elif mutation == "random_chunk":
            direction: Direction = draw(st.sampled_from([CLIENT, SERVER]))
            chunks.insert(index, Chunk(direction, draw(st.binary(min_size=1, max_size=64))))
            continue
        elif mutation == "duplicate":
            chunks.insert(index, chunk)
            continue
        elif mutation == "drop" and len(chunks) > 1:
            del chunks[index]
            continue
        chunks[index] = Chunk(chunk.direction, bytes(data))
    return chunks


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=mutated_exchanges(),
    sizes=st.lists(st.integers(1, 600), min_size=1, max_size=5),
)
def test_mutated_input_raises_only_protocol_errors(chunks: list[Chunk], sizes: list[int]) -> None:
    _feed_mutated(chunks, sizes)


@settings(max_examples=600, deadline=None)
@given(
    login=st.sampled_from(["none", "eof", "deprecate-eof"]),
    tail=st.lists(
        st.tuples(st.sampled_from([CLIENT, SERVER]), st.binary(min_size=1, max_size=80)),
        min_size=1,
        max_size=6,
    ),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=4),
)
def test_random_bytes_raise_only_protocol_errors(
    login: str, tail: list[tuple[str, bytes]], sizes: list[int]
) -> None:
    chunks = [] if login == "none" else pk.login(deprecate_eof=login == "deprecate-eof").chunks
    chunks = chunks + [Chunk(CLIENT if d == CLIENT else SERVER, data) for d, data in tail]
    _feed_mutated(chunks, sizes)


@settings(max_examples=600, deadline=None)
@given(
    command=st.binary(min_size=1, max_size=40),
    response=st.lists(st.binary(max_size=40), min_size=1, max_size=6),
    deprecate_eof=st.booleans(),
)
def test_well_framed_random_payloads_raise_only_protocol_errors(
    command: bytes, response: list[bytes], deprecate_eof: bool
) -> None:
    # Correct headers and sequence ids, random payloads: the parsers, not the framer,
    # meet the garbage.
    conv = pk.login(deprecate_eof=deprecate_eof)
    conv.command(command, *response)
    _feed_mutated(conv.chunks, [7])


def test_the_timer_catches_a_hang() -> None:
    def forever() -> None:
        while True:
            pass

    with pytest.raises(Hang):
        _bounded(forever, limit=0.2)


def test_bounded_lets_only_protocol_errors_pass() -> None:
    def refuse() -> None:
        raise ProtocolError("bad")

    def crash() -> None:
        raise IndexError("bug")

    _bounded(refuse)
    with pytest.raises(IndexError):
        _bounded(crash)
