"""CPU cost of the tracker per command, without sockets: a login, then the same
point-select exchange (text protocol, and a prepared statement) replayed in a loop.

    .venv/bin/python bench/tracker_micro.py [--events] [--iterations N]

A guide for optimising the hot path; the end-to-end figures are in bench/run.py.
"""

from __future__ import annotations

import argparse
import time

from mysqlproxy.protocol.constants import FieldType
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import ConnectionTracker
from mysqlproxy.testing import packets as pk


def frame_all(first_seq: int, payloads: list[bytes]) -> bytes:
    return b"".join(encode_packet(first_seq + i, p) for i, p in enumerate(payloads))


def logged_in(deprecate_eof: bool, events: bool) -> ConnectionTracker:
    tracker = ConnectionTracker(emit_query_events=events)
    for chunk in pk.login(deprecate_eof=deprecate_eof).chunks:
        if chunk.direction == "client":
            tracker.client_data(chunk.data)
        else:
            tracker.server_data(chunk.data)
    tracker.events.clear()
    return tracker


def measure(label: str, tracker: ConnectionTracker, exchange: list[tuple[bool, bytes]],
            iterations: int) -> None:
    client, server = tracker.client_data, tracker.server_data
    start = time.perf_counter()
    for _ in range(iterations):
        for from_client, data in exchange:
            if from_client:
                client(data)
            else:
                server(data)
        tracker.events.clear()
    elapsed = time.perf_counter() - start
    print(f"{label:44s} {elapsed / iterations * 1e6:6.2f} µs per command")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--events", action="store_true", help="build QueryEvents too")
    args = parser.parse_args()
    for deprecate in (False, True):
        mode = "DEPRECATE_EOF" if deprecate else "EOF"
        tracker = logged_in(deprecate, args.events)
        query = encode_packet(0, pk.com_query("SELECT c FROM sbtest1 WHERE id=4242"))
        response = frame_all(1, pk.text_result_set(
            ["c"], [[b"x" * 120]], deprecate_eof=deprecate))
        measure(f"point select, text protocol, {mode}", tracker,
                [(True, query), (False, response)], args.iterations)

        tracker = logged_in(deprecate, args.events)
        prepare = encode_packet(0, pk.com_stmt_prepare("SELECT c FROM sbtest1 WHERE id=?"))
        tracker.client_data(prepare)
        tracker.server_data(frame_all(1, pk.prepare_response(1, ["?"], ["c"],
                                                             deprecate_eof=deprecate)))
        execute = encode_packet(0, pk.com_stmt_execute(
            1, [FieldType.MYSQL_TYPE_LONG], [4242]))
        column = pk.Column("c", FieldType.MYSQL_TYPE_STRING)
        result = frame_all(1, pk.binary_result_set([column], [[b"x" * 120]],
                                                    deprecate_eof=deprecate))
        measure(f"point select, prepared, {mode}", tracker,
                [(True, execute), (False, result)], args.iterations)


if __name__ == "__main__":
    main()
