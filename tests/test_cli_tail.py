"""`mysqlproxy tail` as an operator runs it, against a real proxy in front of the test
MariaDB: slow queries come out one line each, in text and JSON lines; a closed pipe
and Ctrl-C end it with status 0, no traceback, and its window closed; an unreachable
proxy is one line on stderr."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MariaDB
from tests.proxyproc import (
    ADMIN_PASSWORD,
    PYTHON,
    RunningProxy,
    one_line_error,
    run_cli,
    running_proxy,
    wait_until,
)


@pytest.fixture(scope="module")
def proxy(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with running_proxy(mariadb.address, tmp_path_factory.mktemp("tail")) as running:
        yield running


def tail_argv(proxy: RunningProxy, *extra: str) -> list[str]:
    return [PYTHON, "-m", "mysqlproxy.cli", "tail", "--admin", proxy.admin_address, *extra]


def tail_env() -> dict[str, str]:
    return dict(os.environ, MYSQLPROXY_ADMIN_PASSWORD=ADMIN_PASSWORD, PYTHONUNBUFFERED="1")


def tail_windows(proxy: RunningProxy) -> list[str]:
    return [r["target"] for r in proxy.status()
            if r["state"] == "open" and str(r["target"]).startswith("ring:tail-")]


def slow_queries(proxy: RunningProxy, count: int, seconds: float = 0.15) -> None:
    with proxy.connect(database="mpt") as conn, conn.cursor() as cur:
        for _ in range(count):
            cur.execute(f"SELECT SLEEP({seconds})")
            cur.fetchall()
            cur.execute("SELECT 1")  # fast: never streamed
            cur.fetchall()


def start_tail(proxy: RunningProxy, *extra: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(tail_argv(proxy, *extra), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=tail_env())
    assert wait_until(lambda: tail_windows(proxy), timeout=15), "tail opened no window"
    return process


def read_lines(process: subprocess.Popen[bytes], count: int, timeout: float = 15.0) -> list[str]:
    lines: queue.Queue[str] = queue.Queue()

    def reader() -> None:
        assert process.stdout is not None
        for _ in range(count):
            raw = process.stdout.readline()
            if not raw:
                return
            lines.put(raw.decode())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    return [lines.get() for _ in range(lines.qsize())]


def test_text_lines_until_the_pipe_closes(proxy: RunningProxy) -> None:
    process = start_tail(proxy, "--slower-than", "100ms")
    slow_queries(proxy, 3)
    lines = read_lines(process, 3)
    assert len(lines) == 3, lines
    for line in lines:
        # The classic log.lua line: date, time, thread id, query, duration.
        date, clock, thread_id, dashes, rest = line.split(" ", 4)
        assert len(date) == 10 and len(clock) == 8 and thread_id.isdigit() and dashes == "--"
        assert rest.startswith("SELECT SLEEP(0.15) -- ") and rest.endswith(" ms\n")
    assert process.stdout is not None
    process.stdout.close()  # the reader goes away, like `| head -3` does
    assert process.wait(15) == 0
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert not tail_windows(proxy)


def test_jsonl_and_ctrl_c(proxy: RunningProxy) -> None:
    process = start_tail(proxy, "--slower-than", "100ms", "--format", "jsonl")
    slow_queries(proxy, 2)
    lines = read_lines(process, 2)
    records = [json.loads(line) for line in lines]
    assert [r["query"] for r in records] == ["SELECT SLEEP(0.15)"] * 2
    assert all(r["duration_us"] >= 150_000 and r["schema"] == "mpt" for r in records)
    assert all(r["user"] == "root" and r["time"].endswith("+00:00") for r in records)
    assert records[1]["id"] > records[0]["id"]
    process.send_signal(signal.SIGINT)
    assert process.wait(15) == 0
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert not tail_windows(proxy)


def test_head_closes_the_pipe(proxy: RunningProxy, tmp_path: Path) -> None:
    command = " ".join(tail_argv(proxy, "--slower-than", "100ms")) + " | head -3"
    out = tmp_path / "out"
    with open(out, "wb") as sink:
        shell = subprocess.Popen(["bash", "-c", f"set -o pipefail; {command}"],
                                 stdout=sink, stderr=subprocess.PIPE, env=tail_env())
        assert wait_until(lambda: tail_windows(proxy), timeout=15)
        slow_queries(proxy, 4)
        assert shell.wait(15) == 0  # pipefail: tail's own status
    stderr = shell.stderr.read().decode() if shell.stderr else ""
    assert "Traceback" not in stderr and "Broken" not in stderr, stderr
    assert len(out.read_text().splitlines()) == 3
    assert wait_until(lambda: not tail_windows(proxy), timeout=5)


def test_an_unreachable_proxy_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = run_cli("tail", "--admin", f"127.0.0.1:{port}", cwd=tmp_path)
    assert time.monotonic() - started < 15
    line = one_line_error(result)
    assert line.startswith(f"mysqlproxy: cannot reach the admin interface at 127.0.0.1:{port}")
    assert result.returncode == 1
