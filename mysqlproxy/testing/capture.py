"""Record real exchanges: a TCP relay that saves what each side sent, chunk by chunk.

Clients connect to the relay as they would to the server. Every chunk the relay reads
is recorded, in the order it was read, with the side it came from; so a recording fed
to a ConnectionTracker in that order respects causality (a server answer comes after
the command that caused it). The relay passes the data through a ConnectionTracker so
that the client sees the greeting the proxy would show it (masked capabilities): the
recorded server bytes are the raw ones, and replaying them through a tracker
reproduces exactly what the client saw. No hooks, no addons, no logging.

Recordings are stored as JSON, bytes in base64:

    {"format": 1, "description": "...",
     "connections": [{"label": "...", "chunks": [["server", "<base64>"], ...]}]}

Used by tests/protocol/captures/make_captures.py; the tests read the JSON files only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import pathlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.tracker import ConnectionTracker
from mysqlproxy.testing.packets import CLIENT, SERVER, Chunk, Direction

CAPTURE_FORMAT = 1
_READ_SIZE = 64 * 1024


@dataclass(slots=True)
class Recording:
    """One client connection as the relay saw it."""

    label: str
    chunks: list[Chunk] = field(default_factory=list)
    error: str | None = None  # the tracker refused the exchange (a bug to look at)


@dataclass(slots=True)
class Capture:
    """A set of recorded connections and what they exercise."""

    description: str
    connections: list[Recording]

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": CAPTURE_FORMAT,
                "description": self.description,
                "connections": [
                    {
                        "label": rec.label,
                        "chunks": [
                            [c.direction, base64.b64encode(c.data).decode("ascii")]
                            for c in rec.chunks
                        ],
                    }
                    for rec in self.connections
                ],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Capture:
        doc = json.loads(text)
        if doc.get("format") != CAPTURE_FORMAT:
            raise ValueError(f"unknown capture format {doc.get('format')!r}")
        connections = []
        for conn in doc["connections"]:
            chunks = []
            for direction, data in conn["chunks"]:
                if direction not in (CLIENT, SERVER):
                    raise ValueError(f"unknown direction {direction!r}")
                side: Direction = CLIENT if direction == CLIENT else SERVER
                chunks.append(Chunk(side, base64.b64decode(data)))
            connections.append(Recording(conn["label"], chunks))
        return cls(doc["description"], connections)

    def save(self, path: pathlib.Path) -> None:
        path.write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: pathlib.Path) -> Capture:
        return cls.from_json(path.read_text())


class RecordingRelay:
    """Relays connections to `backend_host:backend_port` and records them. `label` is
    read when a connection is accepted, so a script can name what it is about to do."""

    def __init__(self, backend_host: str, backend_port: int) -> None:
        self.backend_host = backend_host
        self.backend_port = backend_port
        self.recordings: list[Recording] = []
        self.label = "connection"
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, host, port)
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        recording = Recording(self.label)
        self.recordings.append(recording)
        backend_reader, backend_writer = await asyncio.open_connection(
            self.backend_host, self.backend_port
        )
        tracker = ConnectionTracker()
        lock = asyncio.Lock()

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, side: Direction
        ) -> None:
            while True:
                data = await source.read(_READ_SIZE)
                if not data:
                    break
                async with lock:
                    recording.chunks.append(Chunk(side, data))
                    try:
                        out = (tracker.client_data if side == CLIENT else tracker.server_data)(data)
                    except ProtocolError as e:
                        recording.error = f"{type(e).__name__}: {e}"
                        break
                    sink.write(out)
                await sink.drain()
            with contextlib.suppress(OSError):
                sink.close()

        tasks = [
            asyncio.create_task(pump(reader, backend_writer, CLIENT)),
            asyncio.create_task(pump(backend_reader, writer, SERVER)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # Let the other side finish what is in flight, then end both.
            await asyncio.wait(tasks, timeout=1.0)
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, backend_writer):
                with contextlib.suppress(OSError):
                    w.close()


@contextlib.contextmanager
def running_relay(backend_host: str, backend_port: int) -> Iterator[tuple[RecordingRelay, int]]:
    """A RecordingRelay on its own event loop thread, for blocking clients. Yields the
    relay and the port it listens on (127.0.0.1)."""
    loop = asyncio.new_event_loop()
    relay = RecordingRelay(backend_host, backend_port)
    thread = threading.Thread(target=loop.run_forever, name="recording-relay", daemon=True)
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(relay.start(), loop).result(10)
        yield relay, port
    finally:
        asyncio.run_coroutine_threadsafe(relay.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
