"""A private MariaDB server in a temporary directory, for the demo and the benchmark.

    with PrivateMariaDB() as db:
        subprocess.run([*db.client_command(), "-e", "SELECT 1"])

The server gets its own data directory, Unix socket and free TCP port on 127.0.0.1,
and reads no option file (--no-defaults), so the machine's /etc/mysql settings (a fixed
port, user=mysql) never leak in. root logs in with an empty password over TCP and the
socket. On exit the server is shut down (SIGTERM, which mariadbd treats as a clean
shutdown; SIGKILL only if that hangs) and the directory is removed.

The tests do not use this: they start their server through pytest-mysql (see
tests/conftest.py), which this mirrors closely enough that what works there works here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from mysqlproxy.proxy.backends import Address

# Debian installs the server under /usr/sbin, which is not on every user's PATH.
_SEARCH_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin"

# Small enough for a laptop or a CI runner, large enough that the benchmark's tables
# are served from memory (a benchmark that reads the disk measures the disk).
DEFAULT_SETTINGS: tuple[str, ...] = (
    "--innodb-buffer-pool-size=256M",
    "--innodb-log-file-size=64M",
    # Durability is not what a private throw-away server is for.
    "--innodb-flush-log-at-trx-commit=2",
    "--local-infile=1",
    "--max-allowed-packet=256M",
    "--max-connections=500",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
)

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class PrivateDBError(RuntimeError):
    """The private server could not be created or started."""


def find_program(*names: str, package: str = "mariadb-server mariadb-client") -> str:
    """The first of `names` found on PATH (or in /usr/sbin); PrivateDBError, naming the
    Debian package to install, if none is."""
    for name in names:
        path = shutil.which(name, path=_SEARCH_PATH)
        if path is not None:
            return path
    raise PrivateDBError(f"{names[0]} is not installed (Debian: apt-get install {package})")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (it may be taken before it is used:
    callers that bind it retry on failure)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _parent_death_signal() -> Callable[[], None] | None:
    """A function to run in a child before exec that has the kernel send it SIGTERM
    when we die, so a killed demo or benchmark (SIGKILL, a CI timeout) leaves no server
    or proxy behind. Linux only; prepared here because a forked child should do little."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_signal() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return set_signal


def spawn_owned(
    argv: Sequence[str],
    *,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a helper process that stops with us: in its own session, so a Ctrl-C in
    the terminal reaches only us (and we stop it in order), and with a parent-death
    signal. Call from the main thread: the death signal follows the thread that forks."""
    return subprocess.Popen(
        list(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=env,
        start_new_session=True,
        preexec_fn=_parent_death_signal(),
    )


class PrivateMariaDB:
    """A MariaDB server of our own; a context manager. See the module docstring."""

    user = "root"
    password = ""
    host = "127.0.0.1"

    def __init__(
        self,
        *,
        port: int | None = None,
        settings: Sequence[str] = DEFAULT_SETTINGS,
        extra_settings: Sequence[str] = (),
        base_dir: str | os.PathLike[str] | None = None,
        keep_dir: bool = False,
    ) -> None:
        self.requested_port = port
        self.port = port or 0
        self.settings = list(settings) + list(extra_settings)
        self._base_dir = base_dir
        self.keep_dir = keep_dir
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # --- where it is ------------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        return self._dir / "data"

    @property
    def socket_path(self) -> str:
        return str(self._dir / "mariadb.sock")

    @property
    def error_log(self) -> Path:
        return self._dir / "error.log"

    @property
    def address(self) -> Address:
        """The TCP address (what the proxy's --backend takes)."""
        return Address(self.host, self.port)

    @property
    def unix_address(self) -> Address:
        return Address(unix_path=self.socket_path)

    @property
    def _dir(self) -> Path:
        if self.directory is None:
            raise PrivateDBError("the server has not been started")
        return self.directory

    def connect_kwargs(self) -> dict[str, object]:
        """Keyword arguments for pymysql.connect / mysql.connector.connect over TCP."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": ""}

    def client_command(self, port: int | None = None, *extra: str) -> list[str]:
        """The mariadb command-line client, logged in as root over TCP to this server
        (or to `port`, e.g. a proxy in front of it)."""
        return [
            find_program("mariadb", "mysql"),
            "--no-defaults",
            f"--host={self.host}",
            f"--port={port or self.port}",
            f"--user={self.user}",
            "--skip-ssl",
            *extra,
        ]

    def execute(self, sql: str, database: str | None = None, timeout: float = 600) -> str:
        """Run SQL with the command-line client (batch mode); returns its output."""
        argv = self.client_command(None, "--batch", "--skip-column-names")
        if database:
            argv.append(database)
        result = subprocess.run(
            argv, input=sql.encode(), capture_output=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise PrivateDBError(
                f"SQL failed: {result.stderr.decode(errors='replace').strip()}\n  {sql[:200]}"
            )
        return result.stdout.decode(errors="replace")

    # --- life cycle -------------------------------------------------------------------

    def __enter__(self) -> PrivateMariaDB:
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
        if self.process is not None:
            raise PrivateDBError("the server is already running")
        self.directory = Path(tempfile.mkdtemp(prefix="mysqlproxy-db-", dir=self._base_dir))
        try:
            self._install()
            # A port chosen by free_port() can be taken before mariadbd binds it: retry.
            for _ in range(3):
                self.port = self.requested_port or free_port()
                if self._launch():
                    return
            raise PrivateDBError(f"mariadbd found no free port:\n{self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _root_args(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def _install(self) -> None:
        (self._dir / "tmp").mkdir()
        argv = [
            find_program("mariadb-install-db", "mysql_install_db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            *self._root_args(),
        ]
        result = subprocess.run(argv, capture_output=True, timeout=300, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise PrivateDBError(f"mariadb-install-db failed:\n{output[-3000:]}")

    def _launch(self) -> bool:
        """Start mariadbd and wait until it greets; False if it exited because the port
        it was given (by free_port) was taken meanwhile."""
        argv = [
            find_program("mariadbd", "mysqld"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--pid-file={self._dir / 'mariadb.pid'}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self._dir / 'tmp'}",
            "--skip-log-bin",
            *self._root_args(),
            *self.settings,
        ]
        with self.error_log.open("wb") as log:
            self.process = spawn_owned(argv, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "Address already in use" in self._log_tail() and not self.requested_port:
                    self.process = None
                    return False
                raise PrivateDBError(
                    f"mariadbd exited with status {self.process.returncode}:\n{self._log_tail()}"
                )
            if self._greets():
                return True
            time.sleep(0.05)
        raise PrivateDBError(f"mariadbd did not accept within {START_TIMEOUT:g}s")

    def _greets(self) -> bool:
        """True once the server answers a TCP connection with its greeting (protocol
        version 10): it is then ready for clients, not just bound."""
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as conn:
                header = conn.recv(5)
        except OSError:
            return False
        return len(header) == 5 and header[4] == 0x0A

    def _log_tail(self, size: int = 3000) -> str:
        try:
            return self.error_log.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return "(no error log)"

    def stop(self) -> None:
        """Shut the server down and remove its directory. Safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        directory, self.directory = self.directory, None
        if directory is not None and not self.keep_dir:
            shutil.rmtree(directory, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mysqlproxy.testing.privatedb`: run a private server until Ctrl-C."""
    del argv
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with PrivateMariaDB() as db:
        print(f"MariaDB on {db.address} (socket {db.socket_path}), user root, no password")
        print("  " + " ".join(db.client_command()))
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
