"""Timed logging end to end: `mysqlproxy run` in front of the private MariaDB, windows
opened with `mysqlproxy log on`, queries from real clients (PyMySQL text queries,
mysql-connector server-side prepared statements), and the files the sinks write.

Windows are short (2-4 s) to keep the run quick; each test logs to its own files and
matches its own marker, so tests that share the module's proxy do not see each
other's queries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.conftest import MariaDB
from tests.proxyproc import (
    RunningProxy,
    read_lines,
    running_proxy,
    start_proxy,
    wait_until,
)

OTHER_USER = "e2e_other"
OTHER_PASSWORD = "hunter2-e2e-secret"


@pytest.fixture(scope="module")
def proxyproc(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with running_proxy(mariadb.address, tmp_path_factory.mktemp("e2e")) as proxy:
        yield proxy


@pytest.fixture
def proxy(proxyproc: RunningProxy) -> Iterator[RunningProxy]:
    """The module's proxy, with every window closed after the test."""
    yield proxyproc
    proxyproc.admin_query("LOG OFF ALL")
    assert proxyproc.process.poll() is None, proxyproc.stderr()


@pytest.fixture(scope="module")
def items_table(mariadb: MariaDB) -> str:
    with mariadb.connect(database="mpt", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS e2e_items")
        cur.execute("CREATE TABLE e2e_items (id INT AUTO_INCREMENT PRIMARY KEY, "
                    "name VARCHAR(20))")
    return "e2e_items"


def connector(proxy: RunningProxy, **kwargs: Any) -> Any:
    params: dict[str, Any] = {"host": "127.0.0.1", "port": proxy.port, "user": "root",
                              "password": "", "database": "mpt", "use_pure": True,
                              "ssl_disabled": True, "autocommit": True}
    params.update(kwargs)
    return mysql.connector.connect(**params)


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


def log_on(proxy: RunningProxy, *args: str) -> str:
    """`mysqlproxy log on ARGS`; its one output line."""
    result = proxy.cli("log", "on", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.strip()


def wait_written(proxy: RunningProxy, target: Path | str, count: int,
                 timeout: float = 10) -> dict[str, Any]:
    """Wait until the window on `target` has written `count` events; its status row."""
    assert wait_until(lambda: proxy.window(str(target))["events_written"] >= count, timeout), (
        proxy.window(str(target)))
    return proxy.window(str(target))


def thread_id_and_address(conn: pymysql.connections.Connection) -> tuple[int, str]:
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        (thread_id,) = cur.fetchone()
    host, port = conn._sock.getsockname()[:2]
    return int(thread_id), f"{host}:{port}"


# --- a window, its numbers, its end --------------------------------------------------


def test_a_window_logs_each_query_once_with_its_numbers_then_expires(
        proxy: RunningProxy, items_table: str, tmp_path: Path) -> None:
    target = tmp_path / "window.jsonl"
    text_client = proxy.connect(database="mpt", autocommit=True)
    prepared_client = connector(proxy)
    thread_id, local = thread_id_and_address(text_client)
    multi_line = "SELECT id,\n       name\n  FROM e2e_items\n WHERE id = 3 -- third"

    opened = time.monotonic()
    assert log_on(proxy, "--for", "4s", "--to", str(target), "--format", "jsonl") == (
        f"logging to {target} for 4s (jsonl)")
    expires = time.monotonic() + proxy.window(str(target))["remaining_seconds"]
    expected: dict[str, dict[str, Any]] = {}
    with text_client.cursor() as cur:
        cur.execute("INSERT INTO e2e_items (name) VALUES ('a'), ('b'), ('c')")
        expected["INSERT INTO e2e_items (name) VALUES ('a'), ('b'), ('c')"] = {
            "rows_affected": 3, "rows_sent": 0, "insert_id": cur.lastrowid, "error_code": 0}
        cur.execute("SELECT id, name FROM e2e_items ORDER BY id")
        expected["SELECT id, name FROM e2e_items ORDER BY id"] = {
            "rows_sent": 3, "rows_affected": 0, "error_code": 0}
        cur.execute("UPDATE e2e_items SET name = 'z' WHERE id <= 2")
        expected["UPDATE e2e_items SET name = 'z' WHERE id <= 2"] = {
            "rows_affected": 2, "rows_sent": 0, "error_code": 0}
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM e2e_missing")
        expected["SELECT * FROM e2e_missing"] = {"error_code": 1146, "rows_sent": 0,
                                                 "sql_state": "42S02"}
        cur.execute(multi_line)
        expected[multi_line] = {"rows_sent": 1, "error_code": 0}
        cur.execute(b"SELECT LENGTH('caf\xe9') AS latin1_bytes")  # not UTF-8
    cur2 = prepared_client.cursor(prepared=True)
    cur2.execute("SELECT ?, ? AS label", (42, "it's"))
    assert cur2.fetchall() == [(42, "it's")]
    cur2.execute("INSERT INTO e2e_items (name) VALUES (?)", ("d",))
    prepared_insert_id = cur2.lastrowid
    cur2.close()
    queries_done = time.monotonic()
    assert queries_done - opened < 3.5, "the queries must run inside the window"

    # `log status` while open: remaining time and what was written.
    total = len(expected) + 3
    row = wait_written(proxy, target, total)
    status = proxy.cli("log", "status")
    assert status.returncode == 0, status.stderr
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith(f"│ {target} "))
    cells = [c.strip() for c in line.split("│")[2:-1]]
    assert cells[0:2] == ["jsonl", "open"]
    assert re.fullmatch(r"[1-4]s|\d{1,3}ms", cells[2]), cells
    assert int(cells[4]) == row["events_written"]
    assert (cells[5], cells[6]) == ("0", "ok")

    events = jsonl(target)
    assert len(events) == row["events_written"] == row["events_matched"]
    by_query: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_query.setdefault(event["query"], []).append(event)
    for query, numbers in expected.items():
        assert len(by_query.get(query, [])) == 1, (query, [e["query"] for e in events])
        event = by_query[query][0]
        for name, value in numbers.items():
            assert event[name] == value, (query, name, event)
        assert (event["user"], event["schema"], event["command"]) == ("root", "mpt", "COM_QUERY")
        assert (event["thread_id"], event["client"], event["prepared"]) == (thread_id, local,
                                                                            False)
        assert event["duration_us"] >= event["first_byte_us"] > 0
        assert event["bytes_received"] == len(query.encode()) + 5
        assert event["bytes_sent"] > 0
        assert event["backend"] == str(proxy.backend)
    assert by_query[multi_line][0]["logged_query"] == multi_line  # newlines kept, valid JSON
    assert "e2e_missing" in by_query["SELECT * FROM e2e_missing"][0]["error_message"]
    [latin1] = [e for e in events if "latin1_bytes" in e["query"]]
    assert latin1["query"].startswith("SELECT LENGTH('caf") and "é" not in latin1["query"]

    prepared = [e for e in events if e["prepared"]]
    assert [e["logged_query"] for e in prepared] == [
        "/* prepared */ SELECT 42, 'it\\'s' AS label",
        "/* prepared */ INSERT INTO e2e_items (name) VALUES ('d')",
    ]
    assert [e["query"] for e in prepared] == ["SELECT ?, ? AS label",
                                              "INSERT INTO e2e_items (name) VALUES (?)"]
    assert [e["params"] for e in prepared] == [[42, "it's"], ["d"]]
    assert [e["command"] for e in prepared] == ["COM_STMT_EXECUTE"] * 2
    assert [(e["rows_sent"], e["rows_affected"]) for e in prepared] == [(1, 0), (0, 1)]
    assert prepared[1]["insert_id"] == prepared_insert_id
    # Nothing but statements by default: no prepares, pings or quits.
    assert {e["command"] for e in events} == {"COM_QUERY", "COM_STMT_EXECUTE"}

    # The window ends by itself, within a second of its time.
    assert wait_until(lambda: proxy.window(str(target))["state"] == "expired", 6, 0.05)
    ended = time.monotonic()
    assert expires - 0.3 <= ended <= expires + 1.5  # "stops within a second"
    size = target.stat().st_size
    with text_client.cursor() as cur:
        cur.execute("SELECT 'after the window'")
    cur2 = prepared_client.cursor(prepared=True)
    cur2.execute("SELECT ? AS after_window", (1,))
    cur2.fetchall()
    cur2.close()
    time.sleep(0.3)
    assert target.stat().st_size == size
    row = proxy.window(str(target))
    assert (row["state"], row["remaining_seconds"], row["events_written"]) == (
        "expired", 0, len(events))
    assert "logging: off (no window open)" in proxy.cli("log", "status").stdout
    assert f"logging window on {target} expired: {len(events)} events written" in proxy.stderr()
    text_client.close()
    prepared_client.close()


def test_log_on_again_replaces_the_window_and_log_off_stops_at_once(
        proxy: RunningProxy, tmp_path: Path) -> None:
    target = tmp_path / "replace.jsonl"
    log_on(proxy, "--for", "30s", "--to", str(target), "--format", "jsonl", "--match", "rpl")
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 'rpl before'")
        assert log_on(proxy, "--for", "1m", "--to", str(target), "--format", "jsonl",
                      "--match", "rpl after") == (
            f"replaced the window to {target} for 1m00s (jsonl)")
        status = proxy.cli("log", "status").stdout
        line = next(ln for ln in status.splitlines() if ln.startswith(f"│ {target} "))
        cells = [c.strip() for c in line.split("│")[2:-1]]
        assert (cells[1], cells[3], cells[-1]) == ("open", "MATCH 'rpl after'", "yes")
        assert cells[2] in ("59s", "1m00s")
        cur.execute("SELECT 'rpl after'")
        cur.execute("SELECT 'rpl not matched'")
        off = proxy.cli("log", "off", "--to", str(target))
        assert off.stdout == f"closed the window on {target}\n"
        cur.execute("SELECT 'rpl after off'")
    assert wait_until(lambda: len(read_lines(target)) >= 2)
    time.sleep(0.2)
    assert [e["query"] for e in jsonl(target)] == ["SELECT 'rpl before'", "SELECT 'rpl after'"]
    row = proxy.window(str(target))
    assert (row["state"], row["events_written"]) == ("closed", 2)


# --- filters and sampling ------------------------------------------------------------------


def test_filters(proxy: RunningProxy, mariadb: MariaDB, tmp_path: Path) -> None:
    with mariadb.connect(autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{OTHER_USER}'@'%'")
    windows = {
        "all": [],
        "slow": ["--slower-than", "150ms"],
        "user": ["--user", OTHER_USER],
        "db": ["--db", "mpt"],
        "match": ["--match", r"flt_keep\b", "--exclude", "flt_skip"],
        "loopback": ["--client", "127.0.0.0/8"],
        "ten": ["--client", "10.0.0.0/8"],
    }
    with ThreadPoolExecutor(len(windows)) as pool:
        messages = list(pool.map(
            lambda item: log_on(proxy, "--for", "30s", "--to", str(tmp_path / item[0]),
                                "--format", "jsonl", *item[1]),
            windows.items()))
    assert all(m.startswith("logging to ") for m in messages)
    create_user = (f"CREATE USER '{OTHER_USER}'@'%' IDENTIFIED BY '{OTHER_PASSWORD}'")
    with proxy.connect(autocommit=True) as root, root.cursor() as cur:
        cur.execute(create_user)
        cur.execute("SELECT 1 /* flt_a */")
        cur.execute("SELECT SLEEP(0.3) /* flt_d */")
    with proxy.connect(database="mpt") as root_mpt, root_mpt.cursor() as cur:
        cur.execute("SELECT 2 /* flt_b flt_keep */")
        cur.execute("SELECT 3 /* flt_c flt_keep flt_skip */")
        cur.execute("SELECT 3 /* flt_f flt_keeper */")
    with proxy.connect(user=OTHER_USER, password=OTHER_PASSWORD) as other, other.cursor() as cur:
        cur.execute("SELECT 4 /* flt_e */")
    for name in windows:
        proxy.admin_query(f"LOG OFF TO '{tmp_path / name}'")

    def markers(name: str) -> list[str]:
        events = jsonl(tmp_path / name)
        assert all(OTHER_PASSWORD not in json.dumps(e) for e in events)
        return [m for e in events for m in re.findall(r"flt_[a-f]\b", e["query"])]

    assert markers("all") == ["flt_a", "flt_d", "flt_b", "flt_c", "flt_f", "flt_e"]
    assert markers("slow") == ["flt_d"]
    assert markers("user") == ["flt_e"]
    assert markers("db") == ["flt_b", "flt_c", "flt_f"]
    assert markers("match") == ["flt_b"]
    assert markers("loopback") == markers("all")
    assert markers("ten") == []
    assert read_lines(tmp_path / "ten") == []
    # The password never reaches a file; the statement does, redacted.
    logged = [e["logged_query"] for e in jsonl(tmp_path / "all") if "CREATE USER" in e["query"]]
    assert logged == [f"CREATE USER '{OTHER_USER}'@'%' IDENTIFIED BY <redacted>"]
    for path in tmp_path.iterdir():
        assert OTHER_PASSWORD not in path.read_text()
    assert OTHER_PASSWORD not in proxy.stderr() + proxy.stdout()
    statuses = {Path(r["target"]).name: r for r in proxy.status() if
                Path(r["target"]).parent == tmp_path}
    assert statuses["slow"]["filter"] == "SLOWER THAN 150000us"
    assert statuses["ten"]["filter"] == "CLIENT 10.0.0.0/8"
    assert statuses["ten"]["events_matched"] == 0


def test_sampling_keeps_about_the_fraction(proxy: RunningProxy, tmp_path: Path) -> None:
    target = tmp_path / "sample.jsonl"
    log_on(proxy, "--for", "30s", "--to", str(target), "--format", "jsonl", "--sample", "0.5",
           "--match", "smp_")
    with proxy.connect() as conn, conn.cursor() as cur:
        for i in range(400):
            cur.execute(f"SELECT {i} AS smp_{i}")
    assert proxy.cli("log", "off", "--to", str(target)).returncode == 0
    row = proxy.window(str(target))
    assert wait_until(lambda: len(read_lines(target)) == row["events_written"])
    kept = [int(e["query"].split()[1]) for e in jsonl(target)]
    # Binomial(400, 0.5): mean 200, standard deviation 10; six of them either side.
    assert 140 <= len(kept) <= 260, len(kept)
    assert kept == sorted(set(kept))
    assert row["events_matched"] == len(kept)
    assert row["filter"] == "MATCH 'smp_' SAMPLE 0.5"


# --- files: rotation, SIGHUP, errors, a full queue --------------------------------------


def test_size_rotation_keeps_n_files(proxy: RunningProxy, tmp_path: Path) -> None:
    target = tmp_path / "rotate.jsonl"
    log_on(proxy, "--for", "30s", "--to", str(target), "--format", "jsonl", "--match", "rot_",
           "--max-size", "2k", "--keep", "2")
    with proxy.connect() as conn, conn.cursor() as cur:
        for i in range(60):
            cur.execute(f"SELECT {i} AS rot_{i}")
    wait_written(proxy, target, 60)
    proxy.cli("log", "off", "--to", str(target))
    time.sleep(0.2)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rotate.jsonl", "rotate.jsonl.1", "rotate.jsonl.2"]
    longest = 0
    numbers: list[int] = []
    for name in ("rotate.jsonl.2", "rotate.jsonl.1", "rotate.jsonl"):
        lines = read_lines(tmp_path / name)
        longest = max([longest, *(len(line) + 1 for line in lines)])
        numbers += [int(json.loads(line)["query"].split()[1]) for line in lines]
    for name in ("rotate.jsonl.2", "rotate.jsonl.1"):
        # Rotated once past the limit: at least 2 KiB, at most one entry more.
        assert 2048 <= (tmp_path / name).stat().st_size < 2048 + longest
    assert (tmp_path / "rotate.jsonl").stat().st_size < 2048
    # The newest events, in order, none twice, none missing in between.
    assert numbers == list(range(60 - len(numbers), 60))
    assert len(numbers) >= 2048 * 2 // longest


def test_sighup_reopens_the_file_after_logrotate(proxy: RunningProxy, tmp_path: Path) -> None:
    target = tmp_path / "hup.log"
    rotated = tmp_path / "hup.log.1"
    log_on(proxy, "--for", "30s", "--to", str(target), "--format", "text", "--match", "hup_")
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 'hup_before'")
        wait_written(proxy, target, 1)
        target.rename(rotated)  # what logrotate does
        cur.execute("SELECT 'hup_renamed'")  # still goes to the renamed file
        wait_written(proxy, target, 2)
        hups = proxy.stderr().count("SIGHUP: reopening log files")
        proxy.signal(signal.SIGHUP)
        assert wait_until(lambda: proxy.stderr().count("SIGHUP: reopening log files") > hups)
        cur.execute("SELECT 'hup_after'")
        wait_written(proxy, target, 3)
    proxy.cli("log", "off", "--to", str(target))
    assert wait_until(target.exists)
    old = [line.split(" -- ")[1] for line in read_lines(rotated)]
    new = [line.split(" -- ")[1] for line in read_lines(target)]
    assert old == ["SELECT 'hup_before'", "SELECT 'hup_renamed'"]
    assert new == ["SELECT 'hup_after'"]
    assert proxy.window(str(target))["sink_health"] == "ok"


def test_sighup_writes_a_new_slowlog_header(proxy: RunningProxy, tmp_path: Path) -> None:
    target = tmp_path / "hup-slow.log"
    log_on(proxy, "--for", "30s", "--to", str(target), "--match", "hupslow_")
    with proxy.connect(database="mpt") as conn, conn.cursor() as cur:
        cur.execute("SELECT 'hupslow_0'")
    wait_written(proxy, target, 1)
    first = target.read_text()
    assert first.startswith("mysqlproxy, Version: ")
    header = first[:first.index("# Time: ")]
    assert first.count("use mpt;\n") == 1
    target.rename(tmp_path / "hup-slow.log.1")
    hups = proxy.stderr().count("SIGHUP: reopening log files")
    proxy.signal(signal.SIGHUP)
    assert wait_until(lambda: proxy.stderr().count("SIGHUP: reopening log files") > hups)
    with proxy.connect(database="mpt") as conn, conn.cursor() as cur:
        cur.execute("SELECT 'hupslow_1'")
    wait_written(proxy, target, 2)
    proxy.cli("log", "off", "--to", str(target))
    text = target.read_text()
    assert text.startswith(header)
    assert "use mpt;\n" in text  # a new file starts with the schema named again
    assert text.rstrip().endswith("SELECT 'hupslow_1';")


UNWRITABLE = ["under-a-regular-file", "read-only-directory", "dev-full"]


@pytest.mark.parametrize("case", UNWRITABLE)
def test_an_unwritable_target_disables_the_sink_and_traffic_goes_on(
        proxy: RunningProxy, tmp_path: Path, case: str) -> None:
    if case == "under-a-regular-file":
        (tmp_path / "plain-file").write_text("")
        target, reason = str(tmp_path / "plain-file" / "q.log"), "Not a directory"
    elif case == "read-only-directory":
        if os.geteuid() == 0:
            pytest.skip("root writes to read-only directories")
        readonly = tmp_path / "ro"
        readonly.mkdir()
        readonly.chmod(stat.S_IRUSR | stat.S_IXUSR)
        target, reason = str(readonly / "q.log"), "Permission denied"
    else:
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        target, reason = "/dev/full", "No space left on device"
    message = log_on(proxy, "--for", "30s", "--to", target, "--format", "text", "--match",
                     "unw_")
    assert message.startswith(f"logging to {target} for 30s (text)")
    with proxy.connect() as conn, conn.cursor() as cur:
        for i in range(5):
            cur.execute(f"SELECT {i} AS unw_{i}")
            assert cur.fetchone() == (i,)
    if case != "dev-full":  # opening failed: LOG ON said so at once
        assert message.endswith(f"; sink disabled: {reason} ({target})")

    def disabled() -> bool:
        row = proxy.window(target)
        return bool(str(row["sink_health"]).startswith("disabled: ") and row[
            "events_written"] + row["events_dropped"] >= 5)

    assert wait_until(disabled)
    row = proxy.window(target)
    assert row["sink_health"] == f"disabled: {reason} ({target})"
    assert row["state"] == "open"
    assert row["events_matched"] == 5
    if case != "dev-full":
        assert (row["events_written"], row["events_dropped"]) == (0, 5)
    status = proxy.cli("log", "status").stdout
    assert f"disabled: {reason} ({target})" in status
    assert re.search(rf"query log sink {re.escape(target)} disabled: .*{reason}.*traffic goes "
                     "on", proxy.stderr())
    with proxy.connect() as conn:
        conn.ping()


def test_a_full_queue_drops_and_counts_without_slowing_queries(
        proxy: RunningProxy, tmp_path: Path) -> None:
    """A reader that stops reading (a stuck disk, a stalled log shipper on a pipe): the
    writer blocks, its small queue fills, events are dropped and counted, and queries do
    not wait."""
    fifo = tmp_path / "stuck.fifo"
    os.mkfifo(fifo)
    reader_fd: list[int] = []
    opener = threading.Thread(target=lambda: reader_fd.append(os.open(fifo, os.O_RDONLY)))
    opener.start()
    proxy.admin_query("SET log_queue_size = 4")
    try:
        message = log_on(proxy, "--for", "30s", "--to", str(fifo), "--format", "jsonl",
                         "--match", "full_")
        assert message == f"logging to {fifo} for 30s (jsonl)"
        opener.join(5)
        assert reader_fd, "the proxy never opened the pipe"
        started = time.monotonic()
        with proxy.connect() as conn, conn.cursor() as cur:
            for i in range(300):  # about 300 KiB of JSON lines; a pipe holds 64 KiB
                cur.execute(f"SELECT {i} AS full_{i}")
        assert time.monotonic() - started < 10
        row = proxy.window(str(fifo))
        assert row["events_matched"] == 300
        assert row["events_dropped"] > 0
        assert row["events_written"] + row["events_dropped"] <= 300
        assert row["sink_health"] == "ok"
        status = proxy.cli("log", "status").stdout
        line = next(ln for ln in status.splitlines() if ln.startswith(f"│ {fifo} "))
        assert [c.strip() for c in line.split("│")[2:-1]][5] == str(row["events_dropped"])
    finally:
        proxy.admin_query("SET log_queue_size = 10000")
        proxy.admin_query(f"LOG OFF TO '{fifo}'")
        received = b""
        while reader_fd:
            chunk = os.read(reader_fd[0], 1 << 16)
            if not chunk:
                os.close(reader_fd.pop())
            received += chunk
    row = proxy.window(str(fifo))
    lines = received.decode().splitlines()
    # What was counted as written is what the reader got; the rest was counted dropped.
    assert len(lines) == row["events_written"]
    assert row["events_written"] + row["events_dropped"] == 300
    numbers = [int(json.loads(line)["query"].split()[1]) for line in lines]
    assert numbers == sorted(numbers)


def test_a_pipe_without_a_reader_does_not_stop_the_proxy(proxy: RunningProxy,
                                                         tmp_path: Path) -> None:
    fifo = tmp_path / "nobody-reads.fifo"
    os.mkfifo(fifo)
    result = proxy.cli("log", "on", "--for", "30s", "--to", str(fifo))
    assert result.returncode == 0, result.stderr
    assert "sink disabled: " in result.stdout
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    assert proxy.window(str(fifo))["sink_health"].startswith("disabled: ")


# --- formats ---------------------------------------------------------------------------


def test_text_lines(proxy: RunningProxy, tmp_path: Path) -> None:
    target = tmp_path / "text.log"
    log_on(proxy, "--for", "30s", "--to", str(target), "--format", "text", "--match", "txt")
    before = time.time()
    with proxy.connect(database="mpt") as conn:
        thread_id, _ = thread_id_and_address(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS txt")
            cur.execute("SELECT 2\n  AS txt,\n  'a\\\\b' AS txt_backslash")
            with pytest.raises(pymysql.err.ProgrammingError):
                cur.execute("SELECT * FROM nosuch_txt")
    prepared_client = connector(proxy)
    cur2 = prepared_client.cursor(prepared=True)
    cur2.execute("SELECT ? AS txt_prepared", ("x'y",))
    cur2.fetchall()
    cur2.close()
    prepared_client.close()
    after = time.time()
    wait_written(proxy, target, 4)
    proxy.cli("log", "off", "--to", str(target))
    lines = read_lines(target)
    assert len(lines) == 4, lines
    shape = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\d+) -- (.*) -- (\d+\.\d{3}) ms"
                       r"(?: -- error (\d+))?")
    matches = [shape.fullmatch(line) for line in lines]
    parsed = [m for m in matches if m is not None]
    assert len(parsed) == len(lines), lines
    stamps = [time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) for m in parsed]
    assert all(int(before) <= s <= after for s in stamps)
    assert [int(m.group(2)) for m in parsed[:3]] == [thread_id] * 3
    assert [m.group(3) for m in parsed] == [
        "SELECT 1 AS txt",
        "SELECT 2\\n  AS txt,\\n  'a\\\\\\\\b' AS txt_backslash",
        "SELECT * FROM nosuch_txt",
        "/* prepared */ SELECT 'x\\\\'y' AS txt_prepared",
    ]
    assert [m.group(5) for m in parsed] == [None, None, "1146", None]
    assert all(float(m.group(4)) > 0 for m in parsed)


def test_slowlog_read_by_pt_query_digest(proxy: RunningProxy, tmp_path: Path) -> None:
    digest = shutil.which("pt-query-digest")
    if digest is None:
        pytest.skip("pt-query-digest (percona-toolkit) is not installed")
    target = tmp_path / "slow.log"
    log_on(proxy, "--for", "30s", "--to", str(target), "--match", "ptd_")
    with proxy.connect(database="mpt") as conn, conn.cursor() as cur:
        for i in range(4):
            cur.execute(f"SELECT {i} AS ptd_a")
        for _ in range(2):
            cur.execute("SELECT SLEEP(0.15) AS ptd_b")
        cur.execute("SELECT 'multi\nline' AS ptd_c,\n# not a header\n 1")
    prepared_client = connector(proxy)
    cur2 = prepared_client.cursor(prepared=True)
    for i in range(3):
        cur2.execute("SELECT ? AS ptd_d", (i,))
        cur2.fetchall()
    cur2.close()
    prepared_client.close()
    wait_written(proxy, target, 10)
    proxy.cli("log", "off", "--to", str(target))
    text = target.read_text()
    assert text.count("use mpt;") == 1
    assert text.count("SET timestamp=") == 10
    result = subprocess.run([digest, "--output", "json", "--limit", "100%:100", str(target)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["global"]["query_count"] == 10
    classes = {c["fingerprint"]: c for c in report["classes"]}
    counts = {fingerprint: c["query_count"] for fingerprint, c in classes.items()}
    assert counts == {
        "select ? as ptd_a": 4,
        "select sleep(?) as ptd_b": 2,
        "select ? as ptd_c, ?": 1,
        "select ? as ptd_d": 3,
    }, counts
    sleep = classes["select sleep(?) as ptd_b"]["metrics"]
    assert 0.3 <= float(sleep["Query_time"]["sum"]) < 0.6
    assert float(sleep["Query_time"]["min"]) >= 0.15
    fast = classes["select ? as ptd_a"]["metrics"]
    assert float(fast["Query_time"]["max"]) < 0.15
    assert fast["Rows_sent"]["sum"] == "4"
    assert fast["user"]["value"] == "root"
    assert classes["select ? as ptd_d"]["example"]["query"].startswith("/* prepared */ SELECT")


# --- the proxy's own life: --log-for, restarts ------------------------------------------


def test_run_with_log_for_then_a_restart_starts_with_logging_off(
        mariadb: MariaDB, tmp_path: Path) -> None:
    target = tmp_path / "startup.log"
    first = start_proxy(mariadb.address, tmp_path, "--log-for", "3s", "--to", str(target),
                        "--format", "text", "--match", "boot_", name="first")
    try:
        row = first.window(str(target))
        expires = time.monotonic() + row["remaining_seconds"]
        assert (row["state"], row["filter"], row["format"]) == ("open", "MATCH 'boot_'", "text")
        assert 0 < row["remaining_seconds"] <= 3
        with first.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 'boot_in_window'")
            assert wait_until(lambda: first.window(str(target))["state"] == "expired", 5, 0.05)
            assert time.monotonic() < expires + 1.5  # "stops within a second"
            cur.execute("SELECT 'boot_after_window'")
        # A window opened at runtime, then a restart: it does not come back.
        log_on(first, "--for", "1h", "--to", str(target), "--format", "text", "--match",
               "boot_")
        with first.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 'boot_before_stop'")
    finally:
        assert first.stop() == 0
    # Stopping drained and closed the open window.
    assert [line.split(" -- ")[1] for line in read_lines(target)] == [
        "SELECT 'boot_in_window'", "SELECT 'boot_before_stop'"]
    with running_proxy(mariadb.address, tmp_path, name="second") as second:
        status = second.cli("log", "status")
        assert "logging: off (no window open)" in status.stdout
        assert second.status() == []
        with second.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 'boot_after_restart'")
        time.sleep(0.2)
    assert "boot_after_restart" not in target.read_text()
    assert not (tmp_path / "mysqlproxy-slow.log").exists()


def test_run_with_log_for_and_a_bad_option_is_one_line(mariadb: MariaDB, tmp_path: Path) -> None:
    from tests.proxyproc import one_line_error, run_cli

    result = run_cli("run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--backend",
                     str(mariadb.address), "--log-for", "3s", "--client", "nowhere",
                     cwd=tmp_path)
    line = one_line_error(result)
    assert "'nowhere'" in line and "--log-for" in line
