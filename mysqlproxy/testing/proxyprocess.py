"""`mysqlproxy run` as a child process, for the demo and the benchmark.

The proxy runs exactly as an operator starts it (its own interpreter, uvloop, the
console entry point), so what the benchmark measures is what production gets. Its
first stdout line says where it listens; later lines (--print-queries) go to a
callback.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import IO

from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.privatedb import spawn_owned

START_TIMEOUT = 20.0
_LISTENING = re.compile(r"^mysqlproxy: listening on (\S+?)(?:,| forwarding)")


class ProxyProcessError(RuntimeError):
    """The proxy did not start."""


class ProxyProcess:
    """A running `mysqlproxy run`; a context manager.

    `listen` defaults to port 0 on loopback: the proxy binds a free port and says which.
    `on_line` receives every stdout line after the first (None: they are dropped).
    """

    def __init__(
        self,
        backend: Address,
        *,
        listen: Address | None = None,
        extra_args: Sequence[str] = (),
        on_line: Callable[[str], None] | None = None,
        stderr: int | IO[bytes] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.backend = backend
        self.listen = listen or Address("127.0.0.1", 0)
        self.extra_args = list(extra_args)
        self.on_line = on_line
        self.stderr = stderr
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self.address: Address | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    @property
    def argv(self) -> list[str]:
        return [
            self.python,
            "-m",
            "mysqlproxy.cli",
            "run",
            "--listen",
            str(self.listen),
            "--backend",
            str(self.backend),
            *self.extra_args,
        ]

    @property
    def port(self) -> int:
        if self.address is None:
            raise ProxyProcessError("the proxy is not running")
        return self.address.port

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ProxyProcessError("the proxy is not running")
        return self.process.pid

    def __enter__(self) -> ProxyProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = spawn_owned(
            self.argv, stdout=subprocess.PIPE, stderr=self.stderr, env=env
        )
        self._reader = threading.Thread(
            target=self._read_stdout, name="proxy-stdout", daemon=True
        )
        self._reader.start()
        try:
            first = self._lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            self.stop()
            raise ProxyProcessError(
                f"the proxy said nothing within {START_TIMEOUT:g}s: {' '.join(self.argv)}"
            ) from None
        match = _LISTENING.match(first or "")
        if match is None:
            status = self.process.wait(5) if first is None else None
            self.stop()
            raise ProxyProcessError(
                f"the proxy did not start (exit status {status}): {first or 'no output'}"
            )
        self.address = Address.parse(match.group(1))

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        first = True
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if first:
                self._lines.put(line)
                first = False
            elif self.on_line is not None:
                self.on_line(line)
        if first:
            self._lines.put(None)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the proxy process has used so far (Linux)."""
        with open(f"/proc/{self.pid}/stat", "rb") as stat:
            # The command name (field 2) may hold spaces: count fields after its ')'.
            fields = stat.read().rsplit(b")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a graceful shutdown), SIGKILL if it does not end in time. Returns
        the exit status. Safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode
