"""CPU cost of the relay's Python per command, without sockets: a Session whose two
legs are fake transports, fed a login and then the same point-select exchange in a
loop. What it adds to bench/tracker_micro.py is the session's own work per chunk (the
protocol callbacks, the checks, the writes' Python side); the end-to-end figures are in
bench/run.py.

    .venv/bin/python bench/session_micro.py [--iterations N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mysqlproxy.hooks import AddonManager
from mysqlproxy.protocol.constants import FieldType
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.proxy.backends import Address, Backend
from mysqlproxy.proxy.session import Session
from mysqlproxy.testing import packets as pk


class FakeTransport:
    """The transport methods the relay calls; writes are counted, not sent."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def frame_all(first_seq: int, payloads: list[bytes]) -> bytes:
    return b"".join(encode_packet(first_seq + i, p) for i, p in enumerate(payloads))


async def measure(deprecate: bool, prepared: bool, iterations: int) -> float:
    session = Session(1, Backend(Address("127.0.0.1", 3306)), AddonManager(), lambda s: None)
    client_leg = session.client_protocol()
    client_leg.connection_made(FakeTransport())  # type: ignore[arg-type]
    if session._connect_task is not None:  # no backend to reach: the fake one is put in
        session._connect_task.cancel()
    server_leg = _server_leg(session)
    for chunk in pk.login(deprecate_eof=deprecate).chunks:
        (client_leg if chunk.direction == "client" else server_leg).data_received(chunk.data)
    if prepared:
        client_leg.data_received(
            encode_packet(0, pk.com_stmt_prepare("SELECT c FROM sbtest1 WHERE id=?"))
        )
        server_leg.data_received(
            frame_all(1, pk.prepare_response(1, ["?"], ["c"], deprecate_eof=deprecate))
        )
        request = encode_packet(0, pk.com_stmt_execute(1, [FieldType.MYSQL_TYPE_LONG], [4242]))
        column = pk.Column("c", FieldType.MYSQL_TYPE_STRING)
        response = frame_all(
            1, pk.binary_result_set([column], [[b"x" * 120]], deprecate_eof=deprecate)
        )
    else:
        request = encode_packet(0, pk.com_query("SELECT c FROM sbtest1 WHERE id=4242"))
        response = frame_all(1, pk.text_result_set(["c"], [[b"x" * 120]],
                                                   deprecate_eof=deprecate))
    from_client, from_server = client_leg.data_received, server_leg.data_received
    start = time.perf_counter()
    for _ in range(iterations):
        from_client(request)
        from_server(response)
    elapsed = time.perf_counter() - start
    assert session.tracker is not None and session.tracker.idle and not session.closed
    return elapsed / iterations


def _server_leg(session: Session) -> asyncio.Protocol:
    from mysqlproxy.proxy.session import _Leg

    leg = _Leg(session, is_client=False)
    session.server = FakeTransport()  # type: ignore[assignment]
    return leg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=100_000)
    args = parser.parse_args()

    async def run() -> None:
        for deprecate in (False, True):
            for prepared in (False, True):
                per = await measure(deprecate, prepared, args.iterations)
                label = (f"point select, {'prepared' if prepared else 'text protocol'}, "
                         f"{'DEPRECATE_EOF' if deprecate else 'EOF'}")
                print(f"{label:44s} {per * 1e6:6.2f} µs per command")

    asyncio.run(run())


if __name__ == "__main__":
    main()
