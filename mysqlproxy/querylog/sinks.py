"""Where logged events go, and the writer that keeps writing off the event loop.

The event loop only puts events on a bounded queue (`SinkWriter.put`); a thread per
sink formats and writes them. When the queue is full the event is dropped and counted:
a slow or stuck disk never slows a query. A write error (disk full, permission denied,
directory removed) disables the sink, which says so in `error`; traffic goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.querylog import formats

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 10_000
# The writer thread wakes this often and takes everything queued in one batch. Waking it
# per event would hand the GIL back and forth with the event loop at query rate, which
# costs the proxy more than the writing itself; 50 ms of delay costs a log file nothing.
WRITE_INTERVAL = 0.05
# Formatting is Python code holding the GIL; left alone, the writer keeps it for up to
# the interpreter's 5 ms switch interval while queries wait on the event loop. Handing
# it back every few events keeps the loop's latency (and so throughput) intact.
YIELD_EVERY = 8
# How long replacing a writer waits, on the event loop, for the old one to close.
REPLACE_WAIT = 0.1


class Sink:
    """A text destination. Subclasses implement open/write/flush/close."""

    name = "sink"

    def open(self) -> bool:
        """Open (or create) the destination; True when it starts empty (a header is due)."""
        return False

    def write(self, text: str) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def reopen(self) -> bool:
        """Close and open again (logrotate moved the file). True when it starts empty."""
        self.close()
        return self.open()

    def should_rotate(self) -> bool:
        return False

    def rotate(self) -> None:
        pass


class StreamSink(Sink):
    """Writes to a text stream it does not own (stdout, a StringIO in tests)."""

    def __init__(self, stream: TextIO, name: str = "stdout") -> None:
        self.stream = stream
        self.name = name

    def write(self, text: str) -> None:
        self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class FileSink(Sink):
    """Appends to a file; rotates by size (path -> path.1 -> ... -> path.keep)."""

    def __init__(self, path: str, max_size: int = 0, keep: int = 5) -> None:
        self.path = path
        self.name = path
        self.max_size = max_size
        self.keep = keep
        self._file: TextIO | None = None

    def open(self) -> bool:
        # errors="surrogateescape" keeps odd bytes writable; queries are already
        # backslash-escaped where they were not UTF-8.
        # O_NONBLOCK: a named pipe nobody reads would block open() (and the event loop
        # that opens the sink) forever; it fails with ENXIO instead. Writes block again:
        # they happen on the writer thread.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o666)
        os.set_blocking(fd, True)
        self._file = open(fd, "a", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        # A pipe (a FIFO, /dev/stderr in a container) has no size: a fresh stream.
        return not self._file.seekable() or self._file.tell() == 0

    def write(self, text: str) -> None:
        if self._file is None:
            raise OSError(f"{self.path} is not open")
        self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def should_rotate(self) -> bool:
        return (
            bool(self.max_size)
            and self._file is not None
            and self._file.seekable()  # a pipe has no size to rotate at
            and self._file.tell() >= self.max_size
        )

    def rotate(self) -> None:
        self.close()
        if self.keep <= 0:
            os.unlink(self.path)
        else:
            oldest = f"{self.path}.{self.keep}"
            if os.path.exists(oldest):
                os.unlink(oldest)
            for index in range(self.keep - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")


class Formatter:
    """Turns events into text for one format, keeping what the slow log needs between
    entries (the schema the last `use` left current)."""

    def __init__(self, fmt: str, header: str = "") -> None:
        if fmt not in formats.FORMATS:
            raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(formats.FORMATS)}")
        self.format = fmt
        self.header = header
        self._schema: str | None = None

    def start_file(self) -> str:
        """Text for the top of a new file."""
        self._schema = None
        return self.header if self.format == "slowlog" else ""

    def __call__(self, event: QueryEvent) -> str:
        if self.format == "slowlog":
            text = formats.format_slowlog(event, self._schema)
            if event.schema:
                self._schema = event.schema
            return text
        if self.format == "text":
            return formats.format_text(event)
        return formats.format_jsonl(event)


class SinkWriter:
    """A bounded queue and a thread writing one sink."""

    def __init__(
        self,
        sink: Sink,
        formatter: Formatter,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        on_error: Callable[[SinkWriter], None] | None = None,
    ) -> None:
        self.sink = sink
        self.formatter = formatter
        self.queue_size = queue_size
        # deque.append and popleft are atomic: the event loop appends, the thread pops.
        self.pending: deque[QueryEvent] = deque()
        self.written = 0
        self.dropped = 0
        self.error: str | None = None
        self.closed = threading.Event()
        self._reopen = threading.Event()
        self._wake = threading.Event()  # close and reopen do not wait for the interval
        self._stopping = False
        self._on_error = on_error
        self._thread = threading.Thread(
            target=self._run, name=f"sink-writer:{sink.name}", daemon=True
        )
        self._started = False
        self._after: SinkWriter | None = None  # the writer to outlive before opening

    def start(self, after: SinkWriter | None = None) -> None:
        """Open the sink (errors show in `error`) and start the thread. With `after`
        (the writer this one replaces on the same file, already told to close): a
        healthy one finishes within milliseconds, and then the sink opens here, so an
        error shows at once; one stuck on a hung disk is not waited for on the event
        loop: the thread opens the sink once it has closed, and events queue meanwhile,
        up to the queue's bound."""
        self._started = True
        if after is None or after.closed.wait(REPLACE_WAIT):
            self._open_sink()
        else:
            self._after = after
        self._thread.start()

    def _open_sink(self) -> None:
        try:
            if self.sink.open():
                self._write_raw(self.formatter.start_file())
        except OSError as exc:
            self._fail(exc)

    @property
    def healthy(self) -> bool:
        return self.error is None

    def put(self, event: QueryEvent) -> bool:
        """Called on the event loop: never blocks. False when the event was dropped."""
        if self.error is not None or len(self.pending) >= self.queue_size:
            self.dropped += 1
            return False
        self.pending.append(event)
        return True

    def reopen(self) -> None:
        """Reopen the file before the next write (SIGHUP after logrotate)."""
        self._reopen.set()
        self._wake.set()

    def close(self) -> None:
        """Drain what is queued, flush and close; returns at once (the thread finishes)."""
        if not self._started:
            self.closed.set()
            return
        self._stopping = True
        self._wake.set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self.closed.wait(timeout)

    # --- writer thread ------------------------------------------------------------

    def _run(self) -> None:
        pending = self.pending
        try:
            if self._after is not None:
                while not self._after.closed.wait(WRITE_INTERVAL) and not self._stopping:
                    pass
                self._after = None
                self._open_sink()
            while True:
                self._wake.wait(WRITE_INTERVAL)
                self._wake.clear()
                stopping = self._stopping  # read before draining: nothing is left behind
                batch = [pending.popleft() for _ in range(len(pending))]
                self._write_batch(batch)
                if stopping:
                    return
        finally:
            with contextlib.suppress(OSError):
                self.sink.close()
            self.closed.set()

    def _write_batch(self, batch: list[QueryEvent]) -> None:
        if self._reopen.is_set() and self.error is None:
            self._reopen.clear()
            try:
                if self.sink.reopen():
                    self._write_raw(self.formatter.start_file())
            except OSError as exc:
                self._fail(exc)
        # Events in the sink's buffer count as written only once a flush (or the close
        # in a rotation) succeeded: a failed flush loses them all (ENOSPC).
        unflushed = 0
        if not batch:
            return
        for count, item in enumerate(batch, 1):
            if self.error is not None:
                self.dropped += 1
                continue
            if not count % YIELD_EVERY:
                time.sleep(0)  # let the event loop have the GIL (see YIELD_EVERY)
            unflushed += 1
            try:
                self.sink.write(self.formatter(item))
                if self.sink.should_rotate():
                    self.sink.rotate()
                    self.written += unflushed
                    unflushed = 0
                    if self.sink.open():
                        self._write_raw(self.formatter.start_file())
            except OSError as exc:
                self._fail(exc)
                self.dropped += unflushed
                unflushed = 0
        if self.error is None:
            try:
                self.sink.flush()
                self.written += unflushed
            except OSError as exc:
                self._fail(exc)
                self.dropped += unflushed

    def _write_raw(self, text: str) -> None:
        if text:
            self.sink.write(text)

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = f"{exc.strerror or exc} ({self.sink.name})" if isinstance(
                exc, OSError
            ) else str(exc)
            log.error("query log sink %s disabled: %s; traffic goes on", self.sink.name, exc)
            if self._on_error is not None:
                try:
                    self._on_error(self)
                except Exception:  # the callback must not kill the writer
                    log.exception("sink error callback failed")
