"""sysbench oltp_read_write through the proxy, with its default server-side prepared
statements (--db-ps-mode=auto): sysbench's own prepare step, then a short run with
four threads. It must report zero errors and zero reconnects, and the proxy must have
seen every statement sysbench says it ran."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from mysqlproxy.protocol.constants import Command
from mysqlproxy.testing.proxythread import ProxyThread
from tests.conftest import MariaDB

SYSBENCH = shutil.which("sysbench")
pytestmark = pytest.mark.skipif(
    SYSBENCH is None, reason="sysbench is not installed (Debian: apt-get install sysbench)"
)

TABLES, TABLE_SIZE, THREADS, SECONDS = 2, 10_000, 4, 10


def sysbench(mariadb: MariaDB, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    assert SYSBENCH is not None
    return subprocess.run(
        [
            SYSBENCH, "oltp_read_write", "--db-driver=mysql", "--mysql-host=127.0.0.1",
            f"--mysql-port={port}", f"--mysql-user={mariadb.user}",
            f"--mysql-password={mariadb.password}", "--mysql-db=mpt",
            f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def statistic(output: str, name: str) -> int:
    """A count from sysbench's summary, e.g. `transactions:  1234  (123.40 per sec.)`."""
    match = re.search(rf"^\s*{re.escape(name)}:\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {name!r} in sysbench output:\n{output}"
    return int(match.group(1))


def test_oltp_read_write_with_prepared_statements(mariadb: MariaDB, proxy: ProxyThread) -> None:
    sysbench(mariadb, mariadb.port, "cleanup")  # a table left by an interrupted run
    prepared = sysbench(mariadb, proxy.port, "prepare")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    for table in range(1, TABLES + 1):
        assert f"Inserting {TABLE_SIZE} records into 'sbtest{table}'" in prepared.stdout
    with mariadb.connect(database="mpt") as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM sbtest1")
        assert cur.fetchall() == ((TABLE_SIZE,),)

    proxy.recorder.clear()
    run = sysbench(
        mariadb, proxy.port, "run", f"--threads={THREADS}", f"--time={SECONDS}",
        "--report-interval=0", "--db-ps-mode=auto",
        # The default "special" distribution sends most transactions to a few hot rows,
        # where InnoDB deadlocks now and then (sysbench ignores and counts them); a
        # uniform one makes a deadlock in a 10 s run very unlikely, so any error counts.
        "--rand-type=uniform",
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "FATAL" not in output and "error" not in run.stderr.lower(), output
    transactions = statistic(output, "transactions")
    total = statistic(output, "total")
    assert transactions > 0
    errors = [(e.error_code, e.error_message) for e in proxy.events if e.error_code]
    assert statistic(output, "ignored errors") == 0, errors
    assert statistic(output, "reconnects") == 0

    # The statements really were server-side prepared statements, and the proxy saw
    # each one complete without an error.
    closed = proxy.recorder.wait_for(lambda: len(proxy.recorder.closed) >= THREADS)
    assert closed and [reason for _, reason in proxy.recorder.closed] == [None] * THREADS
    events = list(proxy.events)
    executes = [e for e in events if e.command == Command.COM_STMT_EXECUTE]
    prepares = [e for e in events if e.command == Command.COM_STMT_PREPARE]
    assert len(prepares) >= THREADS and len(executes) >= transactions * 10
    assert not [e for e in events if e.error_code]
    # Every statement sysbench counted went through one COM_STMT_EXECUTE or COM_QUERY.
    statements = [e for e in events if e.command in (Command.COM_STMT_EXECUTE, Command.COM_QUERY)]
    assert len(statements) >= total
    assert len([e for e in executes if e.query == "COMMIT"]) == transactions
    point_selects = [
        e for e in executes if re.fullmatch(r"SELECT c FROM sbtest\d+ WHERE id=\?", e.query)
    ]
    assert len(point_selects) == 10 * transactions  # oltp_read_write's default
    assert all(e.rows_sent == 1 and e.params for e in point_selects)

    cleaned = sysbench(mariadb, proxy.port, "cleanup")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
