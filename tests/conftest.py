"""Shared fixtures: a private MariaDB for the whole run, and proxies in front of it.

The server is started by pytest-mysql in a temporary directory on a free port. Set
MYSQLPROXY_TEST_DSN=mysql://user:password@host:port to use an existing server instead.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql
import pytest
from pytest_mysql import factories

from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.proxythread import ProxyThread

DSN = os.environ.get("MYSQLPROXY_TEST_DSN")
SERVER_PARAMS = " ".join(
    [
        "--local-infile=1",
        "--max-allowed-packet=256M",
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=128M",
        "--innodb-log-file-size=64M",
        "--max-connections=1000",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_general_ci",
    ]
)

if DSN:
    _url = urllib.parse.urlparse(DSN)
    mysql_server = factories.mysql_noproc(
        host=_url.hostname or "127.0.0.1", port=_url.port or 3306, user=_url.username or "root"
    )
else:
    _BIN = pathlib.Path(__file__).parent / "bin"
    mysql_server = factories.mysql_proc(
        port=None,
        params=SERVER_PARAMS,
        install_db=str(_BIN / "mariadb-install-db"),
        mysqld_safe=_BIN / "mariadbd-safe",
    )


@dataclass(frozen=True)
class MariaDB:
    """Where the test server listens and how to log in as its superuser."""

    host: str
    port: int
    user: str
    password: str
    unix_socket: str | None

    @property
    def address(self) -> Address:
        return Address(self.host, self.port)

    def connect(self, **kwargs: object) -> pymysql.connections.Connection:  # type: ignore[type-arg]
        params: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        params.update(kwargs)
        return pymysql.connect(**params)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def mariadb(mysql_server: object) -> Iterator[MariaDB]:
    if DSN:
        url = urllib.parse.urlparse(DSN)
        server = MariaDB(url.hostname or "127.0.0.1", url.port or 3306, url.username or "root",
                         url.password or "", None)
    else:
        server = MariaDB(
            "127.0.0.1",
            int(mysql_server.port),  # type: ignore[attr-defined]
            "root",
            "",
            str(mysql_server.unixsocket),  # type: ignore[attr-defined]
        )
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS mpt")
        cur.execute("SET GLOBAL local_infile = 1")
    yield server


@pytest.fixture
def proxy(mariadb: MariaDB) -> Iterator[ProxyThread]:
    """A proxy in this process (its own loop thread) in front of the test server, with
    an EventRecorder: `proxy.events` are the QueryEvents it emitted."""
    running = ProxyThread(mariadb.address)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def mariadb_cli() -> str:
    path = shutil.which("mariadb") or shutil.which("mysql")
    if path is None:
        pytest.skip("the mariadb command-line client is not installed")
    return path


def run_cli(mariadb_cli: str, port: int, sql: str, *extra: str, database: str = "mpt",
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
    """Run the mariadb client against 127.0.0.1:port with `sql` on stdin."""
    return subprocess.run(
        [mariadb_cli, "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot", "--batch",
         "--skip-ssl", *extra, database],
        input=sql.encode(),
        capture_output=True,
        timeout=120,
        check=check,
    )


PYTHON = sys.executable
