"""`mysqlproxy run` as a child process with its admin interface, and the `mysqlproxy`
CLI run the way an operator runs it, for the admin and logging-window tests.

The proxy runs in its own interpreter on free ports; its stdout and stderr go to files
so a test can read what it printed and logged (and a full pipe never blocks it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymysql

from mysqlproxy.proxy.backends import Address

PYTHON = sys.executable
ADMIN_USER = "admin"
ADMIN_PASSWORD = "s3cret-admin"
START_TIMEOUT = 20.0
CLI_TIMEOUT = 60.0
_READY = re.compile(
    r"^mysqlproxy: listening on (?P<listen>\S+), forwarding to (?P<backend>\S+?)"
    r"(?:, admin on (?P<admin>\S+))?$",
    re.M,
)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class ProxyStartError(RuntimeError):
    """The proxy exited or said nothing usable."""


class RunningProxy:
    """A `mysqlproxy run` child process."""

    def __init__(self, process: subprocess.Popen[bytes], workdir: Path, stdout: Path,
                 stderr: Path, backend: Address, password: str) -> None:
        self.process = process
        self.workdir = workdir
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.backend = backend
        self.password = password
        self.port = 0
        self.admin_port = 0
        self.ready_line = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    # --- clients ------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection:
        """A PyMySQL client through the proxy (root, empty password, like the server)."""
        params: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "user": "root",
                                  "password": "", "connect_timeout": 10}
        params.update(kwargs)
        return pymysql.connect(**params)

    def admin(self, **kwargs: Any) -> pymysql.connections.Connection:
        """A PyMySQL client on the admin interface."""
        params: dict[str, Any] = {"host": "127.0.0.1", "port": self.admin_port,
                                  "user": ADMIN_USER, "password": self.password,
                                  "connect_timeout": 10}
        params.update(kwargs)
        return pymysql.connect(**params)

    def admin_query(self, statement: str) -> list[dict[str, Any]]:
        """Rows of one admin statement as dicts."""
        with self.admin(cursorclass=pymysql.cursors.DictCursor) as conn, conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall())

    def status(self) -> list[dict[str, Any]]:
        return self.admin_query("SELECT * FROM status")

    def window(self, target: str) -> dict[str, Any]:
        """The newest status row for a target (open windows come first)."""
        for row in self.status():
            if row["target"] == target:
                return row
        raise AssertionError(f"no window on {target} in {self.status()}")

    def cli(self, *args: str, password: str | None = None,
            admin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`mysqlproxy log ...` against this proxy's admin interface."""
        return run_cli(*args, "--admin", admin or self.admin_address,
                       password=self.password if password is None else password,
                       cwd=self.workdir)

    # --- lifecycle ----------------------------------------------------------------

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def run_cli(*args: str, password: str | None = ADMIN_PASSWORD, cwd: Path | None = None,
            env: dict[str, str] | None = None,
            timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """`python -m mysqlproxy.cli ARGS` with the admin password in the environment."""
    environment = dict(os.environ, COLUMNS="400", NO_COLOR="1")
    environment.pop("MYSQLPROXY_ADMIN_PASSWORD", None)
    if password is not None:
        environment["MYSQLPROXY_ADMIN_PASSWORD"] = password
    environment.update(env or {})
    return subprocess.run(
        [PYTHON, "-m", "mysqlproxy.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd, env=environment,
    )


def start_proxy(backend: Address, workdir: Path, *extra: str,
                password: str | None = ADMIN_PASSWORD, admin: str = "127.0.0.1:0",
                name: str = "proxy") -> RunningProxy:
    """Start `mysqlproxy run` on free ports and wait for its ready line."""
    workdir.mkdir(parents=True, exist_ok=True)
    stdout = workdir / f"{name}.stdout"
    stderr = workdir / f"{name}.stderr"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MYSQLPROXY_ADMIN_PASSWORD", None)
    if password is not None:
        env["MYSQLPROXY_ADMIN_PASSWORD"] = password
    argv = [PYTHON, "-m", "mysqlproxy.cli", "run", "--listen", "127.0.0.1:0",
            "--admin", admin, "--backend", str(backend), *extra]
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, cwd=workdir, env=env)
    running = RunningProxy(process, workdir, stdout, stderr, backend, password or "")
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        match = _READY.search(running.stdout())
        if match:
            break
        if process.poll() is not None:
            raise ProxyStartError(
                f"the proxy exited with {process.returncode}: {running.stderr().strip()}"
            )
        if time.monotonic() > deadline:
            running.stop()
            raise ProxyStartError(f"the proxy said nothing in {START_TIMEOUT:g}s")
        time.sleep(0.02)
    running.ready_line = match.group(0)
    running.port = Address.parse(match.group("listen")).port
    if match.group("admin"):
        running.admin_port = Address.parse(match.group("admin")).port
    return running


@contextmanager
def running_proxy(backend: Address, workdir: Path, *extra: str,
                  **kwargs: Any) -> Iterator[RunningProxy]:
    proxy = start_proxy(backend, workdir, *extra, **kwargs)
    try:
        yield proxy
    finally:
        proxy.stop()


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed CLI run (asserting there is exactly one)."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def read_lines(path: Path) -> list[str]:
    return path.read_text(errors="surrogateescape").splitlines() if path.exists() else []


__all__: Sequence[str] = (
    "ADMIN_PASSWORD", "ADMIN_USER", "ProxyStartError", "RunningProxy", "one_line_error",
    "read_lines", "run_cli", "running_proxy", "start_proxy", "wait_until",
)
