"""hypothesis against the tracker.

(a) Real captured exchanges (and exchanges from the packet factory), fed in random
    pieces in their causal order, give exactly the events and forwarded bytes they give
    fed whole.
(b) Mutated input (flipped, inserted, deleted bytes, truncation, random chunks) raises
    only ProtocolError (or a subclass), never anything else, and never hangs: each
    example runs under a timer.

Each connection is fed as the session feeds it (`_Feeder`): the tracker offers
CLIENT_SSL, so an SSLRequest moves it to the TLS phase (the rest of that chunk is the
TLS handshake, which the I/O layer would take, and the next client chunk comes after
`tls_established()`); and once it turns compressed, each leg's bytes go through a
CompressedLink and each frame's plain bytes to the tracker. The corpus has sessions in
both modes, and in both at once.

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

from mysqlproxy.protocol.compression import CompressedLink, encode_frames
from mysqlproxy.protocol.constants import Capability, FieldType
from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.messages import ParamValue
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import C_TLS, ConnectionTracker
from mysqlproxy.testing import packets as pk
from mysqlproxy.testing.packets import CLIENT, SERVER, Chunk, Column, Conversation, Direction
from tests.protocol.support import Replay, load_recordings, new_tracker

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


CLIENT_HELLO = b"\x16\x03\x01\x00\x05hello"  # a TLS record, as the tracker sees one


def _tls_login(capabilities: Capability, early_data: bool) -> Conversation:
    """An SSLRequest (with the start of the TLS handshake behind it in the same chunk,
    or not), then, over TLS, the handshake response at sequence id 2 and the OK."""
    conv = Conversation()
    conv.server(pk.greeting_mariadb())
    caps = capabilities | Capability.CLIENT_SSL
    request = conv.client(pk.ssl_request(caps))
    if early_data:
        conv.chunks[-1] = Chunk(CLIENT, request + CLIENT_HELLO)
    conv.client(pk.handshake_response(caps, auth_response=b"\x01" * 20))
    conv.server(pk.ok())
    return conv


def _tls_session() -> list[Chunk]:
    conv = _tls_login(pk.CLIENT_CAPABILITIES, early_data=True)
    conv.command(
        pk.com_query("SELECT 1"), *pk.text_result_set(["1"], [[b"1"]], deprecate_eof=False)
    )
    conv.command(pk.com_change_user("bob", b"", "shop"), pk.auth_switch_request())
    conv.client(b"s" * 20)
    conv.server(pk.ok())
    conv.command(pk.com_quit())
    return conv.chunks


def _compressed_session(tls: bool) -> list[Chunk]:
    """A plain login that negotiates CLIENT_COMPRESS (over TLS, or not), then frames both
    ways as libmariadb and MariaDB write them: a packet cut across frames, a second
    result set whose plain sequence ids restart after a flush, a LOCAL INFILE exchange,
    prepared statements, stored and compressed frames."""
    caps = pk.CLIENT_CAPABILITIES | Capability.CLIENT_COMPRESS
    if tls:
        chunks = list(_tls_login(caps, early_data=False).chunks)
    else:
        chunks = list(pk.login(client_capabilities=caps).chunks)

    def client(seq: int, plain: bytes) -> None:
        chunks.append(Chunk(CLIENT, encode_frames(seq, plain)))

    def server(*frames: bytes) -> None:
        chunks.append(Chunk(SERVER, b"".join(frames)))

    rows = [[str(i).encode(), b"x" * (i % 90)] for i in range(60)]
    result = pk.frame(1, pk.text_result_set(["id", "v"], rows, deprecate_eof=False))
    cut = len(result) // 2 + 1  # inside a row
    client(0, encode_packet(0, pk.com_query("SELECT id, v FROM t")))
    server(encode_frames(1, result[:cut]), encode_frames(2, result[cut:], compress=False))
    first = pk.text_result_set(["a"], [[b"1"]], deprecate_eof=False, more_results=True)
    second = pk.text_result_set(["b"], [[b"2"]], deprecate_eof=False)
    client(0, encode_packet(0, pk.com_query("SELECT 1 AS a; SELECT 2 AS b")))
    server(encode_frames(1, pk.frame(1, first)), encode_frames(2, pk.frame(2, second)))
    client(0, encode_packet(0, pk.com_query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t")))
    server(encode_frames(1, encode_packet(1, pk.local_infile_request("f"))))
    client(2, encode_packet(2, b"1,2\n" * 30) + encode_packet(3, b""))
    server(encode_frames(3, encode_packet(3, pk.ok(30))))
    columns = [Column("c", FieldType.MYSQL_TYPE_LONG)]
    client(0, encode_packet(0, pk.com_stmt_prepare("SELECT ?")))
    server(encode_frames(1, pk.frame(1, pk.prepare_response(
        1, ["?"], columns, deprecate_eof=False))))
    client(0, encode_packet(0, pk.com_stmt_execute(1, [FieldType.MYSQL_TYPE_LONG], [7])))
    server(encode_frames(1, pk.frame(1, pk.binary_result_set(
        columns, [[7]], deprecate_eof=False))))
    client(0, encode_packet(0, pk.com_ping()) + encode_packet(0, pk.com_stmt_close(1)))
    server(encode_frames(1, encode_packet(1, pk.ok())))
    client(0, encode_packet(0, pk.com_query("SELECT nope")))
    server(encode_frames(1, encode_packet(1, pk.err(1054, "Unknown column"))))
    client(0, encode_packet(0, pk.com_quit()))
    return chunks


CORPUS: dict[str, list[Chunk]] = {
    **{name: recording.chunks for name, recording in load_recordings()},
    "factory-eof": _factory_session(False).chunks,
    "factory-deprecate-eof": _factory_session(True).chunks,
    **dict(_login_variants()),
    "factory-tls": _tls_session(),
    "factory-compressed": _compressed_session(tls=False),
    "factory-tls-compressed": _compressed_session(tls=True),
}
_WHOLE: dict[str, Replay] = {}


def _starts_with_ssl_request(data: bytes) -> bool:
    return data[:4] == b"\x20\x00\x00\x01"  # 32 bytes at sequence id 1


class _Feeder:
    """One connection's chunks to a tracker, as the session passes them (see the module
    docstring); returns what the tracker forwards (plain bytes)."""

    def __init__(self) -> None:
        self.tracker: ConnectionTracker = new_tracker()
        self.tracker.offered_capabilities = Capability.CLIENT_SSL
        self.link: CompressedLink | None = None
        self.to_server = bytearray()
        self.to_client = bytearray()

    def chunk(self, chunk: Chunk, pieces: Iterator[bytes]) -> None:
        tracker = self.tracker
        if chunk.direction == CLIENT:
            if tracker.client_phase == C_TLS:
                tracker.tls_established()  # the handshake took the chunks before this one
            for piece in pieces:
                if tracker.client_phase == C_TLS:
                    return  # the rest of the chunk is the TLS handshake's
                out = self._client(piece)
                assert isinstance(out, bytes)
                self.to_server += out
        else:
            for piece in pieces:
                out = self._server(piece)
                assert isinstance(out, bytes)
                self.to_client += out

    def _client(self, data: bytes) -> bytes:
        if self.link is None:
            return self.tracker.client_data(data)
        return b"".join(self.tracker.client_data(f.payload) for f in self.link.client_frames(data))

    def _server(self, data: bytes) -> bytes:
        if self.link is None:
            out = self.tracker.server_data(data)
            if self.tracker.compressed:  # that was the OK ending authentication
                self.link = CompressedLink()
            return out
        return b"".join(self.tracker.server_data(f.payload) for f in self.link.server_frames(data))


def _fed_whole(name: str) -> Replay:
    if name not in _WHOLE:
        feeder = _Feeder()
        for chunk in CORPUS[name]:
            feeder.chunk(chunk, iter([chunk.data]))
        _WHOLE[name] = Replay(feeder.tracker, bytes(feeder.to_server), bytes(feeder.to_client))
    return _WHOLE[name]


def test_corpus_is_valid() -> None:
    assert len(CORPUS) == 16
    for name in CORPUS:
        result = _fed_whole(name)
        assert result.tracker.idle, name
        assert result.events, name


def test_corpus_covers_tls_and_compression() -> None:
    for name in ("factory-tls", "factory-tls-compressed"):
        assert _fed_whole(name).tracker.client_tls, name
    for name in ("factory-compressed", "factory-tls-compressed"):
        tracker = _fed_whole(name).tracker
        assert tracker.compressed, name
        queries = [e for e in tracker.events if getattr(e, "query", None) is not None]
        assert [q.query for q in queries][-2:] == ["SELECT nope", ""], name  # ... COM_QUIT


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
    """Consecutive chunks of one side as one, except across a TLS handshake (which
    separates the SSLRequest from the handshake response)."""
    merged: list[Chunk] = []
    for chunk in chunks:
        if (
            merged
            and merged[-1].direction == chunk.direction
            and not _starts_with_ssl_request(merged[-1].data)
        ):
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
    feeder = _Feeder()
    for chunk in chunks:
        feeder.chunk(chunk, _pieces(chunk.data, sizes))
    assert feeder.tracker.events == expected.events
    assert bytes(feeder.to_server) == expected.to_server
    assert bytes(feeder.to_client) == expected.to_client
    assert feeder.tracker.idle


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
        feeder = _Feeder()
        for chunk in chunks:
            feeder.chunk(chunk, _pieces(chunk.data, sizes))

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


LOGINS: dict[str, Callable[[], list[Chunk]]] = {
    "none": list,
    "eof": lambda: pk.login().chunks,
    "deprecate-eof": lambda: pk.login(deprecate_eof=True).chunks,
    "tls": lambda: _tls_login(pk.CLIENT_CAPABILITIES, early_data=False).chunks,
    "compressed": lambda: pk.login(
        client_capabilities=pk.CLIENT_CAPABILITIES | Capability.CLIENT_COMPRESS
    ).chunks,
}


@settings(max_examples=600, deadline=None)
@given(
    login=st.sampled_from([*LOGINS, "compressed-framed"]),
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
    # compressed-framed: random plain bytes in valid frames, so they reach the tracker.
    framed = login == "compressed-framed"
    chunks = LOGINS["compressed" if framed else login]()
    chunks = chunks + [
        Chunk(CLIENT if d == CLIENT else SERVER, encode_frames(0, data) if framed else data)
        for d, data in tail
    ]
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
