"""How many events per second the viewer keeps up with, and whether the screen freezes.

    python -m tests.viewer.measure_throughput                  # fake floods: 1k..50k/s
    python -m tests.viewer.measure_throughput --backend 127.0.0.1:3306 --clients 8
        # a real `mysqlproxy run` in front of that server, SELECT 1 from N threads,
        # every statement logged (threshold 0), the real AdminSource

The app runs headless (textual's run_test) at 140x40, as in a terminal. "lag" is how
late a 20 ms UI timer fires: the longest time the screen could not redraw or take a
key. "kept" is events the app applied over events produced.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mysqlproxy.proxy.backends import Address
from mysqlproxy.viewer.app import TopApp
from mysqlproxy.viewer.data import AdminSource, DataSource, Poll
from mysqlproxy.viewer.fake import FloodSource

TICK = 0.02


@dataclass
class Result:
    produced: int
    applied: int
    rate: float  # events per second offered during the timed part
    dropped: int
    seconds: float
    lag_max: float
    lag_p99: float
    apply_ms_max: float

    def line(self, label: str) -> str:
        return (f"{label:>24}: {self.rate:9,.0f} events/s offered, "
                f"kept {self.applied:,}/{self.produced:,} "
                f"({100 * self.applied / max(self.produced, 1):.1f}%), dropped {self.dropped:,}, "
                f"UI lag max {self.lag_max * 1000:.0f} ms p99 {self.lag_p99 * 1000:.0f} ms, "
                f"slowest batch {self.apply_ms_max:.0f} ms")


class TimedApp(TopApp):
    """Records how long each batch takes to apply."""

    apply_times: list[float]

    def apply_poll(self, poll: Poll) -> None:
        started = time.perf_counter()
        super().apply_poll(poll)
        self.apply_times.append(time.perf_counter() - started)


async def drive(source: DataSource, seconds: float, produced: Callable[[], int],
                start: Callable[[], None] = lambda: None,
                stop: Callable[[], None] = lambda: None) -> Result:
    """Run the app, start the load once its window is open, stop it after `seconds`,
    let the last poll land, and count."""
    app = TimedApp(source)
    app.apply_times = []
    lags: list[float] = []
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause(0.5)  # the window is open, the first poll is in
        app.apply_times.clear()
        loop = asyncio.get_running_loop()
        expected = loop.time() + TICK

        def tick() -> None:
            nonlocal expected
            now = loop.time()
            lags.append(max(0.0, now - expected))
            expected = now + TICK

        timer = app.set_interval(TICK, tick)
        start()
        at_start = produced()
        started = time.monotonic()
        await asyncio.sleep(seconds)
        await asyncio.to_thread(stop)
        elapsed = time.monotonic() - started
        timer.stop()
        total = produced()
        await pilot.pause(1.0)  # the last poll lands
        # Everything since the start: the load began after the app's window opened.
        applied = app.events_received
        dropped = app.dropped
    lags.sort()
    return Result(total, applied, (total - at_start) / elapsed, dropped, elapsed,
                  lags[-1] if lags else 0.0, lags[int(len(lags) * 0.99)] if lags else 0.0,
                  max(app.apply_times, default=0.0) * 1000)


def flood(rates: list[int], seconds: float) -> None:
    for rate in rates:
        source = FloodSource(rate)

        def delivered(source: FloodSource = source) -> int:
            return source.delivered

        result = asyncio.run(drive(source, seconds, delivered, stop=source.stop))
        print(result.line(f"fake source {rate:,}/s"), flush=True)


def through_proxy(backend: Address, clients: int, seconds: float) -> None:
    import pymysql

    from tests.proxyproc import ADMIN_PASSWORD, ADMIN_USER, start_proxy

    workdir = Path(tempfile.mkdtemp(prefix="viewer-measure-"))
    proxy = start_proxy(backend, workdir)
    stop = threading.Event()
    counts = [0] * clients

    def client(index: int) -> None:
        password = os.environ.get("MEASURE_DB_PASSWORD", "")
        with pymysql.connect(host="127.0.0.1", port=proxy.port, user="root",
                             password=password) as conn, conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("SELECT 1")
                cur.fetchall()
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]

    def start_clients() -> None:
        for thread in threads:
            thread.start()

    def stop_clients() -> None:
        stop.set()
        for thread in threads:
            thread.join(5)

    try:
        source = AdminSource(Address("127.0.0.1", proxy.admin_port), ADMIN_USER, ADMIN_PASSWORD,
                             threshold_us=0)
        # Each client's connect adds one statement (PyMySQL's SET AUTOCOMMIT).
        result = asyncio.run(drive(source, seconds, lambda: sum(counts) + clients,
                                   start_clients, stop_clients))
        print(result.line(f"real proxy, {clients} clients"), flush=True)
        rates = [q / result.seconds for q in counts]
        print(f"{'':>24}  client queries/s: {sum(rates):,.0f} total, "
              f"{statistics.mean(rates):,.0f} per client", flush=True)
        source.close()
    finally:
        stop_clients()
        proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", default="1000,5000,20000,50000")
    parser.add_argument("--backend", type=Address.parse, default=None)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    if args.backend is None:
        flood([int(r) for r in args.rates.split(",")], args.seconds)
    else:
        through_proxy(args.backend, args.clients, args.seconds)


if __name__ == "__main__":
    main()
