"""`mysqlproxy tail`: the events of a ring window of its own, one line each on stdout,
for grep and jq.

`text` is the line a text-format file window writes (the classic log.lua shape, made
by mysqlproxy.querylog.formats); `jsonl` is one JSON object per event with the columns
of `SELECT * FROM events` plus an ISO `time`. A closed pipe (`| head -3`) or Ctrl-C
ends it cleanly: the window is closed and the exit status is 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from mysqlproxy.protocol.constants import Command, ServerStatus
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.querylog import formats
from mysqlproxy.viewer.data import DataSource, SlowQuery, SourceUnavailable

POLL_INTERVAL = 0.2
RETRY_INTERVAL = 3.0
FORMATS = ("text", "jsonl")


def text_line(event: SlowQuery) -> str:
    """The line a text file window writes for this event. The admin interface gives
    the query as logged already (parameters interpolated, passwords redacted), which
    is what formats.loggable_query returns for a COM_QUERY."""
    logged = QueryEvent(
        started_at=event.started_at, connection_id=event.connection_id,
        thread_id=event.thread_id, client_address=event.client, backend_address=event.backend,
        user=event.user, schema=event.schema or None, command=Command.COM_QUERY,
        query=event.query, statement_id=None, params=None, first_byte_us=event.first_byte_us,
        duration_us=event.duration_us, rows_sent=event.rows_sent,
        rows_affected=event.rows_affected, insert_id=event.insert_id,
        warnings=event.warnings, error_code=event.error_code,
        error_message=event.error_message, sql_state=event.sql_state,
        bytes_received=event.bytes_received, bytes_sent=event.bytes_sent,
        status=ServerStatus(0), result_sets=event.result_sets,
    )
    return formats.format_text(logged)


def json_line(event: SlowQuery) -> str:
    record: dict[str, Any] = {
        "time": datetime.datetime.fromtimestamp(event.started_at, tz=datetime.UTC).isoformat(),
    }
    record.update(dataclasses.asdict(event))
    return json.dumps(record, ensure_ascii=False) + "\n"


def stream(
    source: DataSource,
    out: TextIO,
    err: TextIO,
    fmt: str = "text",
    *,
    stop: threading.Event | None = None,
    poll_interval: float = POLL_INTERVAL,
    retry_interval: float = RETRY_INTERVAL,
    out_closed: Callable[[], bool] = lambda: False,
) -> None:
    """Write events until `stop` is set or `out_closed()` says nobody reads any more.
    The first poll's failure is raised (the operator typed a wrong address); later ones
    are reported on `err` and retried. BrokenPipeError from `out` is left to the
    caller."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    render = text_line if fmt == "text" else json_line
    stop = stop or threading.Event()
    connected = False
    lost = False
    while not stop.is_set() and not out_closed():
        try:
            poll = source.poll()
        except SourceUnavailable as exc:
            if not connected:
                raise
            if not lost:
                err.write(f"mysqlproxy tail: {exc}; retrying every {retry_interval:g}s\n")
                err.flush()
                lost = True
            stop.wait(retry_interval)
            continue
        if lost:
            err.write(f"mysqlproxy tail: connected to {source.where} again\n")
            err.flush()
            lost = False
        connected = True
        if poll.dropped:
            err.write(f"mysqlproxy tail: {poll.dropped} events dropped (the proxy's ring "
                      "overflowed)\n")
            err.flush()
        if poll.events:
            out.write("".join(render(event) for event in poll.events))
            out.flush()
        stop.wait(poll_interval)


def reader_gone(fd: int) -> Callable[[], bool]:
    """A check that a pipe's reader has closed it, before the next write would fail:
    `tail | head -3` must end when head does, even if no event comes after."""

    def check() -> bool:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        try:
            ready = poller.poll(0)
        except OSError:
            return True
        return any(flags & (select.POLLERR | select.POLLHUP) for _, flags in ready)

    return check


def run(source: DataSource, fmt: str = "text", out: TextIO | None = None,
        err: TextIO | None = None) -> None:
    """`mysqlproxy tail`: stream until the pipe closes, Ctrl-C or SIGTERM; then close
    the window. SourceUnavailable on the first poll propagates (nothing to close)."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    stop = threading.Event()
    try:
        fd: int | None = out.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        stream(source, out, err, fmt, stop=stop,
               out_closed=reader_gone(fd) if fd is not None else (lambda: False))
    except BrokenPipeError:
        _silence(out)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        source.close()
    if fd is not None and reader_gone(fd)():
        _silence(out)


def _silence(out: TextIO) -> None:
    """Point the closed stream at /dev/null, so the interpreter's last flush of what is
    still buffered does not print a BrokenPipeError of its own."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
