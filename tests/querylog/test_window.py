"""Logging windows: expiry on a clock, replacement, independent targets, the ring."""

from __future__ import annotations

import io
import os
import pathlib
import random
import re
import threading
import time
from collections.abc import Iterator

import pytest

from mysqlproxy.hooks import AddonManager
from mysqlproxy.querylog.filters import LogFilter
from mysqlproxy.querylog.window import (
    MAX_WINDOW_SECONDS,
    RING_TARGET,
    STDOUT_TARGET,
    LogWindow,
    QueryLog,
    WindowSpec,
)
from mysqlproxy.testing.events import make_query_event


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stdout() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def addons() -> AddonManager:
    return AddonManager()


@pytest.fixture
def query_log(addons: AddonManager, clock: FakeClock, stdout: io.StringIO) -> Iterator[QueryLog]:
    log = QueryLog(addons, clock=clock, stdout=stdout)
    yield log
    log.close_all()
    for window in log.closed_windows:
        if window.writer is not None:
            window.writer.wait_closed(5)


def send(addons: AddonManager, *queries: str, **fields: object) -> None:
    """Events as the proxy delivers them: through the hook API."""
    for query in queries:
        addons.query_completed(make_query_event(query=query, **fields))


def wait_done(window: LogWindow) -> None:
    assert window.writer is not None
    assert window.writer.wait_closed(5), "the writer thread did not finish"


def logged_queries(text: str) -> list[str]:
    return re.findall(r" -- (.*?) -- [\d.]+ ms", text)


def test_no_window_no_observer(query_log: QueryLog, addons: AddonManager) -> None:
    assert not addons.wants_query_events
    query_log.open(WindowSpec(duration=60, target=STDOUT_TARGET, format="text"))
    assert addons.wants_query_events
    assert query_log.close(STDOUT_TARGET)
    assert not addons.wants_query_events
    assert not query_log.close(STDOUT_TARGET)  # nothing left to close


def test_window_expires_by_the_clock_and_unregisters(
    query_log: QueryLog, addons: AddonManager, clock: FakeClock, stdout: io.StringIO
) -> None:
    window = query_log.open(WindowSpec(duration=60, target=STDOUT_TARGET, format="text"))
    assert window.expires_at == 1060.0
    assert query_log.remaining(window) == 60.0
    send(addons, "SELECT 1")
    clock.now = 1059.5
    assert query_log.expire() == []
    assert query_log.remaining(window) == pytest.approx(0.5)
    send(addons, "SELECT 2")
    clock.now = 1060.0
    # Already over, even before anyone calls expire(): nothing more is logged.
    send(addons, "SELECT 3")
    assert query_log.expire() == [window]
    assert window.ended == "expired"
    assert query_log.remaining(window) == 0.0
    assert not addons.wants_query_events
    assert query_log.windows == {}
    assert list(query_log.closed_windows) == [window]
    wait_done(window)
    send(addons, "SELECT 4")
    assert logged_queries(stdout.getvalue()) == ["SELECT 1", "SELECT 2"]
    assert (window.written, window.matched, window.dropped) == (2, 2, 0)


def test_expired_file_window_is_flushed_and_closed_and_gets_nothing_more(
    query_log: QueryLog, addons: AddonManager, clock: FakeClock, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "slow.log"
    window = query_log.open(WindowSpec(duration=300, target=str(path)))
    send(addons, "SELECT 1", "SELECT 2")
    clock.now += 300
    query_log.expire()
    wait_done(window)
    text = path.read_text()
    assert text.count("# Time: ") == 2
    send(addons, "SELECT 3")
    clock.now += 1
    query_log.expire()
    assert path.read_text() == text


def test_replacing_a_window_on_the_same_target_keeps_the_file(
    query_log: QueryLog, addons: AddonManager, clock: FakeClock, tmp_path: pathlib.Path
) -> None:
    path = str(tmp_path / "q.log")
    first = query_log.open(WindowSpec(duration=60, target=path, format="text"))
    send(addons, "SELECT 1")
    clock.now += 50
    second = query_log.open(
        WindowSpec(
            duration=60,
            target=path,
            format="text",
            filter=LogFilter(slower_than_us=1_000_000),
        )
    )
    assert second.replaced_previous and not first.replaced_previous
    assert second.writer is first.writer  # same output: no reopen, nothing lost
    assert query_log.windows == {path: second}
    assert second.expires_at == clock.now + 60  # the new window's own time
    send(addons, "SELECT 'fast'", duration_us=10)
    send(addons, "SELECT 'slow'", duration_us=2_000_000)
    clock.now += 30  # the first window's time has passed; the second goes on
    assert query_log.expire() == []
    assert addons.wants_query_events
    send(addons, "SELECT 'slow again'", duration_us=2_000_000)
    clock.now += 30
    assert query_log.expire() == [second]
    wait_done(second)
    assert logged_queries(pathlib.Path(path).read_text()) == [
        "SELECT 1",
        "SELECT 'slow'",
        "SELECT 'slow again'",
    ]
    assert second.matched == 3  # counts carry over from the window it replaced


def test_replacing_with_another_format_closes_the_old_writer(
    query_log: QueryLog, addons: AddonManager, tmp_path: pathlib.Path
) -> None:
    path = str(tmp_path / "q.log")
    first = query_log.open(WindowSpec(duration=60, target=path, format="text"))
    send(addons, "SELECT 1")
    second = query_log.open(WindowSpec(duration=60, target=path, format="jsonl"))
    assert first.writer is not None and first.writer.closed.is_set()
    assert second.writer is not first.writer
    send(addons, "SELECT 2")
    query_log.close(path)
    wait_done(second)
    lines = pathlib.Path(path).read_text().splitlines()
    assert len(lines) == 2
    assert " -- SELECT 1 -- " in lines[0]
    assert '"query": "SELECT 2"' in lines[1]


def test_reopening_a_failed_sink_starts_a_fresh_writer(
    query_log: QueryLog, addons: AddonManager, tmp_path: pathlib.Path
) -> None:
    # The operator sees the error in status, fixes the directory, and runs LOG ON again.
    path = str(tmp_path / "later" / "q.log")
    failed = query_log.open(WindowSpec(duration=60, target=path, format="text"))
    assert failed.error is not None and "No such file or directory" in failed.error
    send(addons, "SELECT 1")
    assert failed.dropped == 1
    os.mkdir(tmp_path / "later")
    retried = query_log.open(WindowSpec(duration=60, target=path, format="text"))
    assert retried.error is None
    send(addons, "SELECT 2")
    query_log.close(path)
    wait_done(retried)
    assert logged_queries(pathlib.Path(path).read_text()) == ["SELECT 2"]


def test_windows_on_two_targets_expire_independently(
    query_log: QueryLog,
    addons: AddonManager,
    clock: FakeClock,
    stdout: io.StringIO,
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "q.log"
    short = query_log.open(WindowSpec(duration=30, target=STDOUT_TARGET, format="text"))
    long = query_log.open(WindowSpec(duration=90, target=str(path), format="text"))
    assert not long.replaced_previous
    send(addons, "SELECT 'both'")
    clock.now += 30
    assert query_log.expire() == [short]
    assert addons.wants_query_events  # the file window still wants events
    send(addons, "SELECT 'file only'")
    clock.now += 59
    assert query_log.expire() == []
    clock.now += 1
    assert query_log.expire() == [long]
    assert not addons.wants_query_events
    send(addons, "SELECT 'none'")
    wait_done(short)
    wait_done(long)
    assert logged_queries(stdout.getvalue()) == ["SELECT 'both'"]
    assert logged_queries(path.read_text()) == ["SELECT 'both'", "SELECT 'file only'"]
    assert [w.ended for w in query_log.closed_windows] == ["expired", "expired"]


def test_each_window_applies_its_own_filter(
    query_log: QueryLog, addons: AddonManager, stdout: io.StringIO, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "q.log"
    slow = query_log.open(
        WindowSpec(
            duration=60,
            target=STDOUT_TARGET,
            format="text",
            filter=LogFilter(slower_than_us=100_000),
        )
    )
    everything = query_log.open(WindowSpec(duration=60, target=str(path), format="text"))
    send(addons, "SELECT 'fast'", duration_us=50)
    send(addons, "SELECT 'slow'", duration_us=150_000)
    query_log.close_all()
    wait_done(slow)
    wait_done(everything)
    assert logged_queries(stdout.getvalue()) == ["SELECT 'slow'"]
    assert logged_queries(path.read_text()) == ["SELECT 'fast'", "SELECT 'slow'"]
    assert (slow.matched, everything.matched) == (1, 2)
    # one id per event, however many windows kept it
    assert [e.query for _, e in query_log.recent()] == ["SELECT 'fast'", "SELECT 'slow'"]


def test_sampling_window_keeps_about_its_share(query_log: QueryLog, addons: AddonManager) -> None:
    window = query_log.open(
        WindowSpec(
            duration=60,
            target=RING_TARGET,
            filter=LogFilter(sample=0.2, _random=random.Random(3)),
        )
    )
    send(addons, *["SELECT 1"] * 5000)
    assert 900 < window.matched < 1100
    assert window.written == window.matched  # the ring's "written" is what it kept


def test_ring_buffer_recent_after_id_and_limit(addons: AddonManager, clock: FakeClock) -> None:
    query_log = QueryLog(addons, clock=clock, ring_size=5)
    window = query_log.open(WindowSpec(duration=60, target=RING_TARGET))
    assert window.writer is None
    assert query_log.recent() == []
    send(addons, *[f"SELECT {n}" for n in range(1, 4)])
    assert [(i, e.query) for i, e in query_log.recent()] == [
        (1, "SELECT 1"),
        (2, "SELECT 2"),
        (3, "SELECT 3"),
    ]
    assert [i for i, _ in query_log.recent(after_id=1)] == [2, 3]
    assert [i for i, _ in query_log.recent(after_id=0, limit=2)] == [1, 2]
    assert query_log.recent(after_id=3) == []
    assert query_log.recent(after_id=99) == []
    send(addons, *[f"SELECT {n}" for n in range(4, 9)])  # 8 events, room for 5
    assert [(i, e.query) for i, e in query_log.recent()] == [
        (n, f"SELECT {n}") for n in range(4, 9)
    ]
    assert [i for i, _ in query_log.recent(after_id=2, limit=3)] == [4, 5, 6]
    assert [i for i, _ in query_log.recent(after_id=6)] == [7, 8]
    clock.now += 60
    query_log.expire()
    send(addons, "SELECT 'after'")
    assert query_log.last_event_id == 8  # the ring keeps what it had, adds nothing
    assert [i for i, _ in query_log.recent(after_id=7)] == [8]
    # ids continue across windows: a reader's after_id stays valid
    query_log.open(WindowSpec(duration=60, target=RING_TARGET))
    send(addons, "SELECT 'next window'")
    assert [(i, e.query) for i, e in query_log.recent(after_id=8)] == [(9, "SELECT 'next window'")]


def test_reopen_files_follows_logrotate(
    query_log: QueryLog, addons: AddonManager, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "q.log"
    window = query_log.open(WindowSpec(duration=60, target=str(path), format="text"))
    query_log.open(WindowSpec(duration=60, target=RING_TARGET))  # no file: nothing to do
    send(addons, "SELECT 1")
    assert window.writer is not None
    writer = window.writer
    deadline = 500
    while writer.written < 1 and deadline:
        writer.closed.wait(0.01)
        deadline -= 1
    assert writer.written == 1
    os.rename(path, tmp_path / "q.log.1")
    query_log.reopen_files()
    send(addons, "SELECT 2")
    query_log.close_all()
    wait_done(window)
    assert logged_queries((tmp_path / "q.log.1").read_text()) == ["SELECT 1"]
    assert logged_queries(path.read_text()) == ["SELECT 2"]


def test_close_all_closes_every_window(query_log: QueryLog, tmp_path: pathlib.Path) -> None:
    query_log.open(WindowSpec(duration=60, target=RING_TARGET))
    query_log.open(WindowSpec(duration=60, target=str(tmp_path / "a.log")))
    assert query_log.close_all() == 2
    assert query_log.windows == {}
    assert [w.ended for w in query_log.closed_windows] == ["closed", "closed"]
    assert query_log.close_all() == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"duration": 0}, "duration"),
        ({"duration": -5}, "duration"),
        ({"duration": MAX_WINDOW_SECONDS + 1}, "duration"),
        ({"format": "csv"}, "unknown format"),
        ({"keep": -1}, "keep"),
    ],
)
def test_window_spec_validation(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"duration": 60}
    fields.update(changes)
    with pytest.raises(ValueError, match=message):
        WindowSpec(**fields)  # type: ignore[arg-type]


def test_a_week_is_the_longest_window() -> None:
    assert WindowSpec(duration=MAX_WINDOW_SECONDS).duration == 7 * 86400


def test_replacing_a_window_whose_writer_is_stuck_does_not_wait_for_it(
    query_log: QueryLog, addons: AddonManager, tmp_path: pathlib.Path
) -> None:
    # A disk that hangs (an NFS server gone) blocks the old writer's thread; replacing
    # its window must not block the caller, which is the proxy's event loop.
    path = str(tmp_path / "q.log")
    first = query_log.open(WindowSpec(duration=60, target=path, format="text"))
    assert first.writer is not None
    release = threading.Event()
    real_write = first.writer.sink.write

    def hung_write(text: str) -> None:
        release.wait(10)
        real_write(text)

    first.writer.sink.write = hung_write  # type: ignore[method-assign]
    send(addons, "SELECT 'stuck'")
    time.sleep(0.2)  # the writer thread is now inside the hung write
    started = time.monotonic()
    second = query_log.open(WindowSpec(duration=60, target=path, format="jsonl"))
    assert time.monotonic() - started < 0.5
    send(addons, "SELECT 'queued'")  # queued while the old writer still holds the file
    assert not first.writer.closed.is_set()
    release.set()
    query_log.close(path)
    wait_done(second)
    lines = pathlib.Path(path).read_text().splitlines()
    assert " -- SELECT 'stuck' -- " in lines[0]  # the old writer finished first
    assert '"query": "SELECT \'queued\'"' in lines[1]
    assert len(lines) == 2
