"""Data sources without a proxy, for tests and for measuring the viewer.

`ScriptedSource` answers each poll with the next item of a script (a Poll, or a
SourceUnavailable to raise); `FloodSource` makes up events at a fixed rate, as a busy
proxy would deliver them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from mysqlproxy.viewer.data import Digest, Poll, ProxyState, SlowQuery, SourceUnavailable


class ScriptedSource:
    """A DataSource that plays a script; after the script, polls are empty."""

    def __init__(
        self,
        script: Iterable[Poll | SourceUnavailable] = (),
        *,
        threshold_us: int = 50_000,
        window_target: str = "ring:viewer-test",
    ) -> None:
        self.threshold_us = threshold_us
        self.window_target = window_target
        self.where = "the fake proxy"
        self.script: deque[Poll | SourceUnavailable] = deque(script)
        self.commands: list[str] = []  # what start/stop_file_log and close were asked
        self.polls = 0
        self.closed = False
        self.fail_commands: str | None = None  # message to raise from file commands

    def push(self, item: Poll | SourceUnavailable) -> None:
        self.script.append(item)

    def poll(self) -> Poll:
        self.polls += 1
        if not self.script:
            return Poll()
        item = self.script.popleft()
        if isinstance(item, SourceUnavailable):
            raise item
        return item

    def start_file_log(self, path: str, minutes: float, slower_than_us: int = 0) -> str:
        self.commands.append(f"start {path} {minutes:g}m {slower_than_us}us")
        if self.fail_commands:
            raise SourceUnavailable(self.fail_commands)
        return f"logging to {path} for {minutes:g}m (slowlog)"

    def stop_file_log(self, path: str) -> str:
        self.commands.append(f"stop {path}")
        if self.fail_commands:
            raise SourceUnavailable(self.fail_commands)
        return f"closed the window on {path}"

    def close(self) -> None:
        self.commands.append("close")
        self.closed = True


class FloodSource(ScriptedSource):
    """Events at `rate` per second (every one slow enough to show), ids without gaps,
    a few hundred digests, the proxy's state each poll. Counts what it delivered."""

    def __init__(
        self,
        rate: float,
        *,
        threshold_us: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(threshold_us=threshold_us)
        self.rate = rate
        self.clock = clock
        self.delivered = 0
        self.stopped = False  # no more events after stop()
        self._started: float | None = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        with self._lock:
            self.stopped = True

    def poll(self) -> Poll:
        with self._lock:
            now = self.clock()
            if self._started is None:
                self._started = now
            due = 0 if self.stopped else int((now - self._started) * self.rate) - self.delivered
            events = [self._event(self.delivered + n + 1) for n in range(max(due, 0))]
            self.delivered += len(events)
            self.polls += 1
            return Poll(
                events=events,
                digests=[self._digest(n) for n in range(200)] if self.polls % 8 == 1 else None,
                proxy=ProxyState(version="flood", backend="nowhere:3306", connections=50,
                                 queries_total=self.delivered, qps=self.rate),
            )

    def _event(self, event_id: int) -> SlowQuery:
        return SlowQuery(
            id=event_id, started_at=time.time(), connection_id=event_id % 50, thread_id=7,
            client=f"10.0.0.{event_id % 200}:5{event_id % 1000:03d}", user="app",
            schema="shop", command="COM_QUERY",
            query=f"SELECT * FROM orders WHERE customer_id = {event_id} AND status = 'open'",
            duration_us=self.threshold_us + (event_id * 7919) % 2_000_000, rows_sent=event_id % 97,
        )

    def _digest(self, n: int) -> Digest:
        return Digest(
            query_id=f"{n:016X}", fingerprint=f"select * from table_{n} where id = ?",
            count=1000 - n, total_us=(1000 - n) * 80_000, mean_us=80_000.0, p50_us=70_000.0,
            p95_us=150_000.0, p99_us=300_000.0, max_us=900_000, rows_per_call=1.0, errors=n % 3,
            schema="shop", example=f"select * from table_{n} where id = 1",
        )
