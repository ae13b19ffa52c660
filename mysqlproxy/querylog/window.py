"""Timed logging windows: "log everything slower than 50 ms to this file for the next
five minutes", ending by itself even if nobody remembers.

Windows are keyed by their target (a file path, `stdout`, or `ring` for the in-memory
buffer the viewer reads); each expires on its own. Opening a window on a target that
has one replaces it. With no window open, the QueryLog takes itself off the hook API,
so the proxy does not even build QueryEvents.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from mysqlproxy.digest import DigestTable
from mysqlproxy.hooks import AddonManager
from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.querylog.filters import LogFilter
from mysqlproxy.querylog.redact import REDACTED, mentions_password, redact_passwords
from mysqlproxy.querylog.sinks import (
    DEFAULT_QUEUE_SIZE,
    FileSink,
    Formatter,
    Sink,
    SinkWriter,
    StreamSink,
)

log = logging.getLogger(__name__)

RING_TARGET = "ring"
RING_PREFIX = "ring:"  # ring:viewer-123: a ring-only window of its own (one per viewer)
STDOUT_TARGET = "stdout"
DEFAULT_RING_SIZE = 10_000
MAX_WINDOW_SECONDS = 7 * 86400  # a window is a window, not a permanent log
_DIGESTED_COMMANDS = frozenset({Command.COM_QUERY, Command.COM_STMT_EXECUTE})


@dataclass(frozen=True)
class WindowSpec:
    """What an operator asks for with `LOG ON`."""

    duration: float  # seconds
    target: str = "mysqlproxy-slow.log"
    format: str = "slowlog"
    filter: LogFilter = dataclasses.field(default_factory=LogFilter)
    max_size: int = 0  # bytes; 0 = never rotate
    keep: int = 5
    digests: bool = False  # aggregate every statement into the digest table meanwhile

    @property
    def ring_only(self) -> bool:
        return self.target == RING_TARGET or self.target.startswith(RING_PREFIX)

    def __post_init__(self) -> None:
        if not 0 < self.duration <= MAX_WINDOW_SECONDS:
            raise ValueError(
                f"window duration must be between 1s and 7d, got {self.duration:g}s"
            )
        Formatter(self.format)  # validates the name
        if self.keep < 0:
            raise ValueError("keep cannot be negative")


@dataclass
class LogWindow:
    """An open window."""

    spec: WindowSpec
    opened_at: float  # wall clock
    expires_at: float  # the QueryLog's clock (monotonic)
    writer: SinkWriter | None  # None for the ring buffer
    matched: int = 0
    replaced_previous: bool = False
    ended: str | None = None  # "expired", "closed" or "replaced" once it is over

    @property
    def target(self) -> str:
        return self.spec.target

    @property
    def written(self) -> int:
        return self.writer.written if self.writer else self.matched

    @property
    def dropped(self) -> int:
        return self.writer.dropped if self.writer else 0

    @property
    def error(self) -> str | None:
        return self.writer.error if self.writer else None


def redact_event(event: QueryEvent) -> QueryEvent:
    """The event with passwords removed from its text and, when the statement names a
    password, from its parameters."""
    if not mentions_password(event.query):
        return event
    params = event.params
    if params:
        # A parameter may be the password itself (CREATE USER ? IDENTIFIED BY ?).
        params = tuple(REDACTED for _ in params)
    return dataclasses.replace(event, query=redact_passwords(event.query), params=params)


class _Observer:
    """The addon the QueryLog registers while windows are open."""

    def __init__(self, query_log: QueryLog) -> None:
        self.query_completed = query_log.observe


class QueryLog:
    """The logging windows and the ring buffer of recent logged events."""

    def __init__(
        self,
        addons: AddonManager,
        *,
        ring_size: int = DEFAULT_RING_SIZE,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        stdout: TextIO | None = None,
        slowlog_header: str = "",
    ) -> None:
        self.addons = addons
        self.queue_size = queue_size
        self.clock = clock
        self.stdout = stdout if stdout is not None else sys.stdout
        self.slowlog_header = slowlog_header
        self.windows: dict[str, LogWindow] = {}
        self.ring: deque[tuple[int, QueryEvent]] = deque(maxlen=ring_size)
        self.last_event_id = 0
        self.closed_windows: deque[LogWindow] = deque(maxlen=20)  # for status
        self.digests = DigestTable()
        self._digesting = False
        self._observer = _Observer(self)
        self._registered = False

    # --- control ------------------------------------------------------------------

    def open(self, spec: WindowSpec) -> LogWindow:
        """Open a window (replacing one on the same target)."""
        previous = self.windows.pop(spec.target, None)
        writer: SinkWriter | None = None
        if not spec.ring_only:
            if (
                previous is not None
                and previous.writer is not None
                and previous.writer.healthy  # a failed sink gets a fresh try
                and _same_output(previous.spec, spec)
            ):
                writer = previous.writer  # keep writing the same file, no reopen
            else:
                replaced = None
                if previous is not None and previous.writer is not None:
                    replaced = previous.writer
                    replaced.close()  # it drains; the new writer opens the file after it
                writer = SinkWriter(
                    self._make_sink(spec),
                    Formatter(spec.format, self.slowlog_header),
                    self.queue_size,
                )
                writer.start(after=replaced)
        window = LogWindow(
            spec=spec,
            opened_at=time.time(),
            expires_at=self.clock() + spec.duration,
            writer=writer,
            replaced_previous=previous is not None,
        )
        if previous is not None and writer is previous.writer:
            window.matched = previous.matched
        self.windows[spec.target] = window
        self._update_registration()
        # A window renewed unchanged (the viewer does so every few seconds) is routine.
        renewed = (
            previous is not None
            and previous.spec.format == spec.format
            and previous.spec.filter.describe() == spec.filter.describe()
        )
        log.log(
            logging.DEBUG if renewed else logging.INFO,
            "logging window %s on %s for %gs%s",
            "replaced" if previous else "opened",
            spec.target,
            spec.duration,
            f" ({spec.filter.describe()})" if spec.filter.describe() else "",
        )
        return window

    def _make_sink(self, spec: WindowSpec) -> Sink:
        if spec.target == STDOUT_TARGET:
            return StreamSink(self.stdout)
        return FileSink(spec.target, spec.max_size, spec.keep)

    def close(self, target: str) -> bool:
        window = self.windows.pop(target, None)
        if window is None:
            return False
        self._retire(window, "closed")
        self._update_registration()
        return True

    def close_all(self) -> int:
        count = len(self.windows)
        for target in list(self.windows):
            self.close(target)
        return count

    def expire(self) -> list[LogWindow]:
        """Close the windows whose time is up. The proxy calls this a few times a second."""
        now = self.clock()
        expired = [w for w in self.windows.values() if w.expires_at <= now]
        for window in expired:
            del self.windows[window.target]
            self._retire(window, "expired")
        if expired:
            self._update_registration()
        return expired

    def reopen_files(self) -> None:
        """SIGHUP: reopen every file (logrotate renamed them)."""
        for window in self.windows.values():
            if window.writer is not None:
                window.writer.reopen()

    def _retire(self, window: LogWindow, how: str) -> None:
        window.ended = how
        if window.writer is not None:
            window.writer.close()
        self.closed_windows.append(window)
        log.info(
            "logging window on %s %s: %d events written, %d dropped",
            window.target,
            how,
            window.written,
            window.dropped,
        )

    def _update_registration(self) -> None:
        self._digesting = any(w.spec.digests for w in self.windows.values())
        wanted = bool(self.windows)
        if wanted and not self._registered:
            self.addons.add(self._observer)
            self._registered = True
        elif not wanted and self._registered:
            self.addons.remove(self._observer)
            self._registered = False

    # --- the hook -----------------------------------------------------------------

    def observe(self, event: QueryEvent) -> None:
        """query_completed: fan the event out to the windows whose filter keeps it."""
        now = self.clock()
        redacted: QueryEvent | None = None
        if self._digesting and event.command in _DIGESTED_COMMANDS:
            self.digests.add(event)
        for window in self.windows.values():
            if window.expires_at <= now or not window.spec.filter.matches(event):
                continue
            if redacted is None:
                redacted = redact_event(event)
                self.last_event_id += 1
                self.ring.append((self.last_event_id, redacted))
            window.matched += 1
            if window.writer is not None:
                window.writer.put(redacted)

    def recent(self, after_id: int = 0, limit: int = 100) -> list[tuple[int, QueryEvent]]:
        """Events from the ring buffer with an id above `after_id`, oldest first."""
        if not self.ring or self.ring[-1][0] <= after_id:
            return []
        out = [(i, e) for i, e in self.ring if i > after_id]
        return out[:limit]

    def remaining(self, window: LogWindow) -> float:
        if window.ended is not None:  # closed early: no time left, whatever expires_at says
            return 0.0
        return max(0.0, window.expires_at - self.clock())


def _same_output(a: WindowSpec, b: WindowSpec) -> bool:
    return (a.target, a.format, a.max_size, a.keep) == (b.target, b.format, b.max_size, b.keep)
