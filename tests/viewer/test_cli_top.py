"""`mysqlproxy top` as an operator runs it: in a terminal (a pty) against a real proxy
it opens its window, shows a slow query, and on q quits with status 0 and closes the
window; without a terminal, or with a bad --db-dsn, it says so in one line. EXPLAIN
through the side connection runs against the real server."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest

from mysqlproxy.viewer.explain import DatabaseDSN, Explainer, ExplainError
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
    with running_proxy(mariadb.address, tmp_path_factory.mktemp("top")) as running:
        yield running


def viewer_windows(proxy: RunningProxy) -> list[str]:
    return [r["target"] for r in proxy.status()
            if r["state"] == "open" and str(r["target"]).startswith("ring:viewer-")]


class Terminal:
    """A program on a pseudo-terminal of a given size; collects what it draws."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        # 160x45: set before the program asks for its size.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 160, 0, 0))
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                        close_fds=True, env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.output = b""

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the program ended and closed the terminal
                    return

    def wait_for(self, text: str, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output and time.monotonic() < deadline:
            self.read_for(0.1)
        return text.encode() in self.output

    def press(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> int:
        try:
            self.read_for(0.2)
            return self.process.wait(15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            os.close(self.master)


def test_top_in_a_terminal(proxy: RunningProxy) -> None:
    env = dict(os.environ, MYSQLPROXY_ADMIN_PASSWORD=ADMIN_PASSWORD, TERM="xterm-256color",
               COLUMNS="160", LINES="45")
    terminal = Terminal([PYTHON, "-m", "mysqlproxy.cli", "top", "--admin", proxy.admin_address,
                         "--slower-than", "100ms"], env)
    try:
        assert wait_until(lambda: (terminal.read_for(0.05), viewer_windows(proxy))[1],
                          timeout=20), terminal.output[-2000:]
        with proxy.connect(database="mpt") as conn, conn.cursor() as cur:
            cur.execute("SELECT SLEEP(0.15)")
        assert terminal.wait_for("SLEEP(0.15)"), terminal.output[-3000:]
        terminal.press("q")
        status = terminal.close()
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
    assert status == 0, terminal.output[-3000:]
    assert b"Traceback" not in terminal.output
    assert not viewer_windows(proxy)


def test_top_needs_a_terminal(proxy: RunningProxy) -> None:
    result = run_cli("top", "--admin", proxy.admin_address)
    assert one_line_error(result) == (
        "mysqlproxy: top needs a terminal; in a pipe use `mysqlproxy tail`")


def test_a_bad_dsn_is_one_line() -> None:
    result = run_cli("top", "--db-dsn", "postgres://x@y")
    assert "--db-dsn" in one_line_error(result)
    assert result.returncode == 2


def test_explain_on_the_real_server(mariadb: MariaDB) -> None:
    with mariadb.connect(database="mpt") as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS viewer_explain (id INT PRIMARY KEY, note TEXT)")
    explainer = Explainer(DatabaseDSN(host=mariadb.host, port=mariadb.port, user=mariadb.user,
                                      password=mariadb.password))
    try:
        plan = explainer.explain("/* prepared */ SELECT * FROM viewer_explain WHERE id = 3",
                                 "mpt")
        assert "table" in plan.columns and "key" in plan.columns
        row = dict(zip(plan.columns, plan.rows[0], strict=True))
        assert row["key"] == "PRIMARY" or "const" in " ".join(plan.rows[0])
        with pytest.raises(ExplainError, match="doesn't exist"):
            explainer.explain("SELECT * FROM no_such_table", "mpt")
        with pytest.raises(ExplainError, match="only SELECT"):
            explainer.explain("DELETE FROM viewer_explain", "mpt")
        # The side connection is read-only.
        with pytest.raises(ExplainError):
            explainer.explain("SELECT 1; DROP TABLE viewer_explain", "mpt")
    finally:
        explainer.close()
    with mariadb.connect(database="mpt") as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'viewer_explain'")
        assert cur.fetchall()
