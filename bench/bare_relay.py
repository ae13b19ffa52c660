"""A bare relay in Python on uvloop: bytes through, no protocol work.

    python bench/bare_relay.py LISTEN_PORT BACKEND_PORT

The benchmark's second reference side (`bench/run.py --bare`). Where socat shows what
the extra hop costs in C, this shows what it costs a Python process on uvloop doing
nothing but forwarding: one `data_received` callback and one `transport.write` per
read. What the proxy costs beyond this figure is its own work (the tracker, the
session's bookkeeping); what this costs beyond socat is Python and asyncio.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop


class Leg(asyncio.Protocol):
    """One side of a relayed connection; writes what it reads to its peer."""

    def __init__(self, peer: Leg | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; cast, do not check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        if not self.peer.transport.is_closing():
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class ClientLeg(Leg):
    """The client's side: connects to the backend, reads once that side is up."""

    backend_port = 3306

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        try:
            # The backend leg knows its peer from the start: the server's greeting may
            # arrive before this coroutine resumes.
            _, self.peer = await asyncio.get_running_loop().create_connection(
                lambda: Leg(peer=self), "127.0.0.1", self.backend_port
            )
        except OSError:
            self.transport.close()
            return
        self.transport.resume_reading()


async def serve(listen_port: int) -> None:
    server = await asyncio.get_running_loop().create_server(
        ClientLeg, "127.0.0.1", listen_port
    )
    await server.serve_forever()


def main() -> None:
    listen_port, ClientLeg.backend_port = int(sys.argv[1]), int(sys.argv[2])
    uvloop.run(serve(listen_port))


if __name__ == "__main__":
    main()
