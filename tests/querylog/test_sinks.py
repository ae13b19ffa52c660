"""The writer thread and the sinks: rotation, reopen, write errors, overflow, close."""

from __future__ import annotations

import io
import logging
import os
import pathlib
import shutil
import threading
import time
from collections.abc import Callable

import pytest

from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.querylog.sinks import FileSink, Formatter, Sink, SinkWriter, StreamSink
from mysqlproxy.testing.events import make_query_event

HEADER = "mysqlproxy, Version: 0. started with:\nTcp port: 0  Unix socket: \n"


def event(n: int) -> QueryEvent:
    return make_query_event(query=f"SELECT {n}", thread_id=n)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the writer thread")
        time.sleep(0.002)


def finish(writer: SinkWriter) -> None:
    writer.close()
    assert writer.wait_closed(5), "the writer thread did not finish"


def query_numbers(path: pathlib.Path) -> list[int]:
    """The n of each `SELECT n` in a text-format file."""
    return [int(line.split(" -- ")[1].split()[1]) for line in path.read_text().splitlines()]


def test_stream_sink_gets_every_event_in_order() -> None:
    out = io.StringIO()
    writer = SinkWriter(StreamSink(out, name="test"), Formatter("text"))
    writer.start()
    for n in range(1000):
        assert writer.put(event(n))
    finish(writer)
    lines = out.getvalue().splitlines()
    assert [int(ln.split(" -- ")[1].split()[1]) for ln in lines] == list(range(1000))
    assert (writer.written, writer.dropped, writer.error) == (1000, 0, None)
    assert writer.healthy


def test_close_drains_the_queue_and_flushes_and_closes_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "q.log"
    sink = FileSink(str(path))
    writer = SinkWriter(sink, Formatter("text"))
    writer.start()
    for n in range(2000):
        writer.put(event(n))
    finish(writer)  # returns when the thread is done, not before
    assert query_numbers(path) == list(range(2000))
    assert writer.written == 2000
    assert sink._file is None  # closed


def test_close_of_a_writer_never_started_is_closed_at_once() -> None:
    writer = SinkWriter(StreamSink(io.StringIO()), Formatter("text"))
    writer.close()
    assert writer.wait_closed(0)


def test_slowlog_header_only_at_the_top_of_an_empty_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "slow.log"
    for _ in range(2):  # the second writer appends to the same file: no second header
        writer = SinkWriter(FileSink(str(path)), Formatter("slowlog", HEADER))
        writer.start()
        writer.put(event(1))
        finish(writer)
    text = path.read_text()
    assert text.startswith(HEADER)
    assert text.count("Tcp port:") == 1
    assert text.count("# Time: ") == 2


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        Formatter("csv")


# --- rotation ---------------------------------------------------------------------


def test_rotation_by_size_keeps_n_files_and_removes_the_oldest(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "q.log"
    line_length = len(Formatter("text")(event(100)))
    writer = SinkWriter(FileSink(str(path), max_size=10 * line_length, keep=3), Formatter("text"))
    writer.start()
    for n in range(100, 200):  # 100 lines of equal length: 10 files' worth
        writer.put(event(n))
    finish(writer)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["q.log", "q.log.1", "q.log.2", "q.log.3"]
    # Each rotated file holds max_size bytes (whole events); newest in q.log.1.
    assert query_numbers(tmp_path / "q.log.3") == list(range(170, 180))
    assert query_numbers(tmp_path / "q.log.2") == list(range(180, 190))
    assert query_numbers(tmp_path / "q.log.1") == list(range(190, 200))
    assert query_numbers(path) == []
    for rotated in ("q.log.1", "q.log.2", "q.log.3"):
        assert (tmp_path / rotated).stat().st_size == 10 * line_length
    assert writer.written == 100 and writer.healthy


def test_rotation_starts_each_slow_log_with_a_header_and_a_use(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "slow.log"
    entry_length = len(Formatter("slowlog")(event(1)))
    writer = SinkWriter(
        FileSink(str(path), max_size=3 * entry_length, keep=5), Formatter("slowlog", HEADER)
    )
    writer.start()
    for n in range(10):
        writer.put(event(n))
    finish(writer)
    files = [path, *(tmp_path / f"slow.log.{i}" for i in range(1, 5))]
    texts = [p.read_text() for p in files if p.exists()]
    assert len(texts) == 4  # 10 entries, 3 per file (the header pushes each over)
    for text in texts:
        assert text.startswith(HEADER)
        # a new file knows no current schema: its first entry says `use`
        assert text.count("use shop;") == 1
    assert sum(t.count("# Time: ") for t in texts) == 10


def test_keep_zero_removes_the_full_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "q.log"
    line_length = len(Formatter("text")(event(100)))
    writer = SinkWriter(FileSink(str(path), max_size=4 * line_length, keep=0), Formatter("text"))
    writer.start()
    for n in range(100, 110):
        writer.put(event(n))
    finish(writer)
    assert [p.name for p in tmp_path.iterdir()] == ["q.log"]
    assert query_numbers(path) == [108, 109]


def test_no_rotation_without_a_size(tmp_path: pathlib.Path) -> None:
    sink = FileSink(str(tmp_path / "q.log"))
    sink.open()
    sink.write("x" * 10_000)
    assert not sink.should_rotate()
    sink.close()


# --- reopen (logrotate) -----------------------------------------------------------


def test_reopen_after_rename_writes_a_new_file_at_the_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "slow.log"
    writer = SinkWriter(FileSink(str(path)), Formatter("slowlog", HEADER))
    writer.start()
    for n in range(5):
        writer.put(event(n))
    wait_for(lambda: writer.written == 5)
    os.rename(path, tmp_path / "slow.log.1")  # what logrotate does, then SIGHUP
    writer.reopen()
    for n in range(5, 8):
        writer.put(event(n))
    finish(writer)
    old = (tmp_path / "slow.log.1").read_text()
    new = path.read_text()
    assert old.count("# Time: ") == 5
    assert new.startswith(HEADER)
    assert new.count("# Time: ") == 3
    assert "\nuse shop;\n" in new  # a new file starts without a current schema
    assert "SELECT 5;" in new and "SELECT 5;" not in old
    assert writer.written == 8 and writer.healthy


def test_reopen_of_a_stream_is_harmless() -> None:
    out = io.StringIO()
    writer = SinkWriter(StreamSink(out), Formatter("text"))
    writer.start()
    writer.reopen()
    writer.put(event(1))
    finish(writer)
    assert out.getvalue().count("\n") == 1 and writer.healthy


# --- write errors -----------------------------------------------------------------


def test_unwritable_path_disables_the_sink_without_raising(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A path under a regular file fails even for root (chmod would not).
    (tmp_path / "plain-file").write_text("")
    path = tmp_path / "plain-file" / "q.log"
    errors: list[SinkWriter] = []
    writer = SinkWriter(FileSink(str(path)), Formatter("text"), on_error=errors.append)
    with caplog.at_level(logging.ERROR, logger="mysqlproxy.querylog.sinks"):
        writer.start()
    assert writer.error == f"Not a directory ({path})"
    assert not writer.healthy
    assert errors == [writer]
    assert f"query log sink {path} disabled" in caplog.text
    for n in range(10):
        assert writer.put(event(n)) is False
    finish(writer)
    assert (writer.written, writer.dropped) == (0, 10)


def test_disk_full_disables_the_sink_and_counts_what_was_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # /dev/full accepts open and buffered writes, and fails the flush with ENOSPC.
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    writer = SinkWriter(FileSink("/dev/full"), Formatter("text"))
    with caplog.at_level(logging.ERROR, logger="mysqlproxy.querylog.sinks"):
        writer.start()
        for n in range(5):
            writer.put(event(n))
        wait_for(lambda: writer.error is not None)
        for n in range(5, 8):
            writer.put(event(n))
        finish(writer)
    assert writer.error == "No space left on device (/dev/full)"
    assert "No space left on device" in caplog.text
    # Nothing reached the disk: nothing counts as written.
    assert (writer.written, writer.dropped) == (0, 8)


def test_directory_removed_then_reopen_disables_the_sink(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    writer = SinkWriter(FileSink(str(directory / "q.log")), Formatter("text"))
    writer.start()
    writer.put(event(1))
    wait_for(lambda: writer.written == 1)
    shutil.rmtree(directory)
    writer.reopen()
    writer.put(event(2))
    wait_for(lambda: writer.error is not None)
    assert "No such file or directory" in (writer.error or "")
    assert writer.put(event(3)) is False
    finish(writer)
    assert (writer.written, writer.dropped) == (1, 2)


def test_directory_removed_then_rotation_disables_the_sink(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    line_length = len(Formatter("text")(event(100)))
    writer = SinkWriter(
        FileSink(str(directory / "q.log"), max_size=3 * line_length), Formatter("text")
    )
    writer.start()
    writer.put(event(100))
    wait_for(lambda: writer.written == 1)
    shutil.rmtree(directory)
    for n in range(101, 106):
        writer.put(event(n))
    finish(writer)
    assert "No such file or directory" in (writer.error or "")
    assert writer.written + writer.dropped == 6
    assert writer.dropped >= 3


def test_a_failing_error_callback_does_not_kill_the_writer(tmp_path: pathlib.Path) -> None:
    (tmp_path / "f").write_text("")

    def broken(_: SinkWriter) -> None:
        raise RuntimeError("callback bug")

    writer = SinkWriter(FileSink(str(tmp_path / "f" / "x")), Formatter("text"), on_error=broken)
    writer.start()
    assert writer.error is not None
    writer.put(event(1))
    finish(writer)
    assert writer.dropped == 1


# --- a stalled writer: the queue fills, events are dropped, nothing blocks ---------


class StalledSink(Sink):
    """A sink whose write blocks until released: a stuck disk, deterministically."""

    name = "stalled"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lines: list[str] = []
        self.flushes = 0
        self.closed = False

    def write(self, text: str) -> None:
        self.entered.set()
        assert self.release.wait(10), "test forgot to release the sink"
        self.lines.append(text)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    sink = StalledSink()
    writer = SinkWriter(sink, Formatter("text"), queue_size=3)
    writer.start()
    try:
        assert writer.put(event(0))
        assert sink.entered.wait(5)  # the thread holds event 0, stuck in write
        started = time.monotonic()
        accepted = [writer.put(event(n)) for n in range(1, 9)]
        assert time.monotonic() - started < 0.5  # put never waits for the disk
        assert accepted == [True, True, True, False, False, False, False, False]
        assert writer.dropped == 5
        assert writer.written == 0
    finally:
        sink.release.set()
    wait_for(lambda: writer.written == 4)  # drained before close (see the next test)
    finish(writer)
    assert [ln.split(" -- ")[1] for ln in sink.lines] == [f"SELECT {n}" for n in range(4)]
    assert (writer.written, writer.dropped) == (4, 5)
    assert sink.flushes >= 1 and sink.closed


def test_close_with_a_full_queue_returns_at_once_and_loses_nothing_queued() -> None:
    sink = StalledSink()
    writer = SinkWriter(sink, Formatter("text"), queue_size=2)
    writer.start()
    try:
        writer.put(event(0))
        assert sink.entered.wait(5)
        writer.put(event(1))
        writer.put(event(2))
        started = time.monotonic()
        writer.close()  # a flag, not a queue entry: the full queue is written out
        assert time.monotonic() - started < 0.5
        assert not writer.closed.is_set()
    finally:
        sink.release.set()
    assert writer.wait_closed(5)
    assert [ln.split(" -- ")[1] for ln in sink.lines] == ["SELECT 0", "SELECT 1", "SELECT 2"]
    assert (writer.written, writer.dropped) == (3, 0)
