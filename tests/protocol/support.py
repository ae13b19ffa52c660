"""Helpers shared by the protocol tests: feeding exchanges to a tracker in pieces, and
QueryEvents with the defaults a test tracker produces."""

from __future__ import annotations

import pathlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mysqlproxy.protocol.events import QueryEvent, TrackerEvent
from mysqlproxy.protocol.tracker import ConnectionTracker
from mysqlproxy.testing.capture import Capture, Recording
from mysqlproxy.testing.events import make_query_event
from mysqlproxy.testing.packets import CLIENT, Chunk

CONNECTION_ID = 7
CLIENT_ADDRESS = "10.0.0.1:50000"
BACKEND_ADDRESS = "10.0.0.2:3306"
WALL_CLOCK = 1_700_000_000.5
CAPTURES = pathlib.Path(__file__).parent / "captures"

Splitter = Callable[[bytes], Iterator[bytes]]


def whole(data: bytes) -> Iterator[bytes]:
    yield data


def bytewise(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]


def random_pieces(seed: int, max_piece: int = 17) -> Splitter:
    """Pieces of 1..max_piece bytes, from a seeded generator."""

    def split(data: bytes) -> Iterator[bytes]:
        rng = random.Random(seed * 7919 + len(data))
        pos = 0
        while pos < len(data):
            size = rng.randint(1, max_piece)
            yield data[pos : pos + size]
            pos += size

    return split


def about_n_pieces(n: int, seed: int = 0) -> Splitter:
    """About n random pieces whatever the size (for 16 MiB exchanges)."""

    def split(data: bytes) -> Iterator[bytes]:
        rng = random.Random(seed)
        cuts = sorted({rng.randrange(1, len(data)) for _ in range(n)} if len(data) > 1 else set())
        pos = 0
        for cut in [*cuts, len(data)]:
            yield data[pos:cut]
            pos = cut

    return split


SPLITTERS: dict[str, Splitter] = {
    "whole": whole,
    "bytewise": bytewise,
    "random1": random_pieces(1),
    "random2": random_pieces(2, 5),
    "random3": random_pieces(3, 300),
}


class FakeClock:
    """A monotonic clock the test moves by hand (nanoseconds)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def new_tracker(clock: Callable[[], int] | None = None) -> ConnectionTracker:
    return ConnectionTracker(
        CONNECTION_ID,
        CLIENT_ADDRESS,
        BACKEND_ADDRESS,
        clock_ns=clock or (lambda: 0),
        wall_clock=lambda: WALL_CLOCK,
    )


@dataclass
class Replay:
    """What a tracker made of an exchange."""

    tracker: ConnectionTracker
    to_server: bytes  # what the tracker forwarded from the client
    to_client: bytes  # what the tracker forwarded from the server

    @property
    def events(self) -> list[TrackerEvent]:
        return self.tracker.events

    @property
    def queries(self) -> list[QueryEvent]:
        return [e for e in self.tracker.events if isinstance(e, QueryEvent)]


def replay(
    chunks: Sequence[Chunk],
    split: Splitter = whole,
    tracker: ConnectionTracker | None = None,
) -> Replay:
    """Feed chunks in order, each cut by `split`. ProtocolError propagates."""
    tracker = tracker or new_tracker()
    to_server = bytearray()
    to_client = bytearray()
    for chunk in chunks:
        for piece in split(chunk.data):
            if chunk.direction == CLIENT:
                to_server += tracker.client_data(piece)
            else:
                to_client += tracker.server_data(piece)
    return Replay(tracker, bytes(to_server), bytes(to_client))


def query_event(
    command: int, query: str, *, bytes_received: int, bytes_sent: int, **fields: Any
) -> QueryEvent:
    """The QueryEvent a test tracker (fixed clocks, addresses) emits; keyword arguments
    give every field that differs from a plain successful command. (An unknown field
    name is a TypeError, from QueryEvent itself.)"""
    values: dict[str, Any] = dict(
        started_at=WALL_CLOCK,
        connection_id=CONNECTION_ID,
        client_address=CLIENT_ADDRESS,
        backend_address=BACKEND_ADDRESS,
        schema=None,
        command=command,
        query=query,
        first_byte_us=0,
        duration_us=0,
        rows_sent=0,
        bytes_received=bytes_received,
        bytes_sent=bytes_sent,
        result_sets=0,
    )
    values.update(fields)
    return make_query_event(**values)


def load_recordings() -> list[tuple[str, Recording]]:
    """Every recorded connection of the captures directory, with an id for pytest."""
    found = []
    for path in sorted(CAPTURES.glob("*.json")):
        capture = Capture.load(path)
        for index, recording in enumerate(capture.connections):
            found.append((f"{path.stem}-{index}", recording))
    return found
