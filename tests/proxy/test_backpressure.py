"""Backpressure: a client that reads a big result slowly must not make the proxy buffer
it. The proxy runs as its own process (as in production, on uvloop) so that its memory
can be measured alone."""

from __future__ import annotations

import time

import psutil
import pymysql

from mysqlproxy.testing.proxyprocess import ProxyProcess

MIB = 1 << 20
# Well over 50 MB on the wire: about 75 bytes per row, a million rows.
BIG_SELECT = "SELECT seq, REPEAT('x', 64) FROM seq_1_to_1000000"
MIN_RESULT_BYTES = 50_000_000
# What the proxy may grow by while the result streams. The relay holds at most one
# write buffer's high-water mark per leg (256 KiB) plus one read chunk; the bound leaves
# room for the allocator and the interpreter, and is still far below the result.
RSS_GROWTH_BOUND = 16 * MIB
# The slow reader: this many bytes, then a pause.
READ_CHUNK = 256 * 1024
READ_PAUSE = 0.02  # about 12 MB/s, several times slower than the server sends
STALL_SECONDS = 2.0


def _tcp_queues() -> dict[tuple[int, int], tuple[int, int]]:
    """(local port, remote port) -> (send queue, receive queue) of loopback IPv4 TCP
    sockets, from /proc/net/tcp."""
    queues: dict[tuple[int, int], tuple[int, int]] = {}
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, queue = fields[1], fields[2], fields[4]
            tx, rx = (int(part, 16) for part in queue.split(":"))
            queues[int(local.split(":")[1], 16), int(remote.split(":")[1], 16)] = (tx, rx)
    return queues


def _backend_leg_port(proxy_pid: int, backend_port: int) -> int:
    for conn in psutil.Process(proxy_pid).net_connections(kind="tcp4"):
        if conn.raddr and conn.raddr.port == backend_port:
            return int(conn.laddr.port)
    raise AssertionError("the proxy has no connection to the backend")


def test_slow_reader_is_not_buffered(mariadb: object) -> None:
    backend = mariadb.address  # type: ignore[attr-defined]
    with ProxyProcess(backend, extra_args=["--admin", "off", "--log-level", "warning"]) as proxy:
        process = psutil.Process(proxy.pid)
        warm = pymysql.connect(host="127.0.0.1", port=proxy.port, user="root", database="mpt")
        with warm.cursor() as cur:  # lazy imports, first buffers: not what is measured
            cur.execute("SELECT seq, REPEAT('x', 64) FROM seq_1_to_20000")
            cur.fetchall()
        warm.close()
        baseline = process.memory_info().rss
        peak = baseline

        conn = pymysql.connect(
            host="127.0.0.1", port=proxy.port, user="root", database="mpt", read_timeout=30
        )
        conn.query(BIG_SELECT, unbuffered=True)  # reads the column definitions only
        stream = conn._rfile  # type: ignore[attr-defined]

        # 1. Nobody reads. Without backpressure the proxy would read the whole result
        # from the server (it produces it in about a second) and hold it.
        leg = _backend_leg_port(proxy.pid, backend.port)
        deadline = time.monotonic() + STALL_SECONDS
        while time.monotonic() < deadline:
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.05)
        peak = max(peak, process.memory_info().rss)
        assert peak - baseline < RSS_GROWTH_BOUND, (
            f"the proxy grew by {(peak - baseline) / MIB:.1f} MiB while nobody read"
        )
        first = _tcp_queues()
        time.sleep(0.5)
        second = _tcp_queues()
        server_send_queue = second[backend.port, leg][0]
        proxy_receive_queue = second[leg, backend.port][1]
        # The server has bytes it cannot send, the proxy leaves bytes unread, and
        # neither moves: the server's send is stalled by the proxy not reading.
        assert server_send_queue > 0, "the server is not blocked on sending"
        assert proxy_receive_queue > 0, "the proxy's backend socket is not paused"
        assert first[leg, backend.port][1] == proxy_receive_queue

        # 2. Read the whole result slowly, measuring all along.
        received = 0
        tail = b""
        started = time.monotonic()
        while True:
            data = stream.read1(READ_CHUNK)
            assert data, "the proxy closed the connection"
            received += len(data)
            tail = (tail + data)[-16:]
            # The result ends with an EOF packet: length 5, 0xFE, warnings, status.
            if len(tail) >= 9 and tail[-9:-6] == b"\x05\x00\x00" and tail[-5] == 0xFE:
                break
            peak = max(peak, process.memory_info().rss)
            time.sleep(READ_PAUSE)
        elapsed = time.monotonic() - started
        # Read by hand, past PyMySQL: tell its result object there is nothing to drain.
        conn._result.unbuffered_active = False  # type: ignore[attr-defined]
        conn.close()

    growth = peak - baseline
    print(
        f"\nresult {received / MIB:.1f} MiB read in {elapsed:.1f}s; proxy RSS "
        f"{baseline / MIB:.1f} MiB at start, peak growth {growth / MIB:.2f} MiB "
        f"(bound {RSS_GROWTH_BOUND / MIB:.0f} MiB); stalled server send queue "
        f"{server_send_queue / MIB:.2f} MiB, proxy receive queue "
        f"{proxy_receive_queue / MIB:.2f} MiB"
    )
    assert received > MIN_RESULT_BYTES
    assert growth < RSS_GROWTH_BOUND
