"""The admin interface as a MySQL server: who gets in (PyMySQL, the mariadb client,
mysql-connector-python switched from caching_sha2_password), who is refused with
ERR 1045, where it listens, and how the CLI reports a refusal or an unreachable
proxy."""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import mysql.connector
import pymysql
import pytest

from mysqlproxy import cli
from mysqlproxy.proxy.backends import Address
from tests.conftest import MariaDB
from tests.proxyproc import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    RunningProxy,
    one_line_error,
    run_cli,
    running_proxy,
    start_proxy,
)


@pytest.fixture(scope="module")
def proxyproc(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with running_proxy(mariadb.address, tmp_path_factory.mktemp("admin-auth")) as proxy:
        yield proxy


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- who gets in ----------------------------------------------------------------------


def test_the_ready_line_names_the_admin_address(proxyproc: RunningProxy) -> None:
    assert proxyproc.ready_line.startswith("mysqlproxy: listening on 127.0.0.1:")
    assert proxyproc.ready_line.endswith(f", admin on 127.0.0.1:{proxyproc.admin_port}")
    assert proxyproc.admin_port not in (0, proxyproc.port)


def test_pymysql_with_the_right_password(proxyproc: RunningProxy) -> None:
    with proxyproc.admin() as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM proxy")
        info = dict(cur.fetchall())
        conn.ping()
    assert info["pid"] == str(proxyproc.pid)
    assert info["backend"] == str(proxyproc.backend)


def test_mysql_connector_is_switched_from_caching_sha2(proxyproc: RunningProxy) -> None:
    conn = mysql.connector.connect(
        host="127.0.0.1", port=proxyproc.admin_port, user=ADMIN_USER,
        password=ADMIN_PASSWORD, auth_plugin="caching_sha2_password", ssl_disabled=True,
        use_pure=True, connection_timeout=10,
    )
    try:
        cur = conn.cursor()
        cur.execute("SELECT * FROM help")
        commands = [row[0] for row in cur.fetchall()]  # type: ignore[index]
        cur.close()
    finally:
        conn.close()
    assert "SELECT * FROM help" in commands


def test_mysql_connector_with_a_wrong_password(proxyproc: RunningProxy) -> None:
    with pytest.raises(mysql.connector.Error) as info:
        mysql.connector.connect(
            host="127.0.0.1", port=proxyproc.admin_port, user=ADMIN_USER, password="nope",
            auth_plugin="caching_sha2_password", ssl_disabled=True, use_pure=True,
        )
    assert info.value.errno == 1045


def _interactive(argv: list[str], lines: list[str], expect: str, timeout: float = 15) -> str:
    """Run a program on a terminal (so the mariadb client is interactive: it asks
    @@version_comment for its banner), type `lines`, read until `expect` shows."""
    master, slave = pty.openpty()
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    try:
        for line in lines:
            os.write(master, line.encode() + b"\n")
        deadline = time.monotonic() + timeout
        while expect.encode() not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    output += os.read(master, 65536)
                except OSError:  # the program ended and closed the terminal
                    break
    finally:
        process.kill()
        process.wait(10)
        os.close(master)
    return output.decode("utf-8", "replace")


def test_the_mariadb_client_interactively(proxyproc: RunningProxy, mariadb_cli: str) -> None:
    output = _interactive(
        [mariadb_cli, "--no-defaults", "-h127.0.0.1", f"-P{proxyproc.admin_port}",
         f"-u{ADMIN_USER}", f"-p{ADMIN_PASSWORD}", "--skip-ssl"],
        ["SELECT * FROM settings;", "quit"],
        expect="log_queue_size",
    )
    # The banner shows @@version_comment, which the client asked for on connect.
    assert "mysqlproxy admin interface" in output, output
    assert "log_queue_size" in output, output
    assert "ERROR" not in output, output


def test_the_mariadb_client_in_batch_mode(proxyproc: RunningProxy, mariadb_cli: str) -> None:
    result = subprocess.run(
        [mariadb_cli, "--no-defaults", "-h127.0.0.1", f"-P{proxyproc.admin_port}",
         f"-u{ADMIN_USER}", f"-p{ADMIN_PASSWORD}", "--skip-ssl", "--batch",
         "-e", "SELECT * FROM backends"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert header.split("\t")[0] == "address"
    assert row.split("\t")[0] == str(proxyproc.backend)


# --- who is refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password", "using"),
    [(ADMIN_USER, "wrong", "YES"), (ADMIN_USER, "", "NO"), ("root", ADMIN_PASSWORD, "YES")],
    ids=["wrong-password", "empty-password", "wrong-user"],
)
def test_refused_with_1045(proxyproc: RunningProxy, user: str, password: str,
                           using: str) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxyproc.admin(user=user, password=password)
    code, message = info.value.args
    assert code == 1045
    assert f"Access denied for user '{user}'" in message
    assert f"(using password: {using})" in message
    # The refusal is in the proxy's log, the password is not.
    assert f"admin login refused for user {user!r}" in proxyproc.stderr()
    assert ADMIN_PASSWORD not in proxyproc.stderr()


def test_the_mariadb_client_with_a_wrong_password(proxyproc: RunningProxy,
                                                  mariadb_cli: str) -> None:
    result = subprocess.run(
        [mariadb_cli, "--no-defaults", "-h127.0.0.1", f"-P{proxyproc.admin_port}",
         f"-u{ADMIN_USER}", "-pwrong", "--skip-ssl", "-e", "SELECT * FROM help"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "ERROR 1045" in result.stderr


def test_a_refused_client_is_disconnected(proxyproc: RunningProxy) -> None:
    with pytest.raises(pymysql.err.OperationalError):
        proxyproc.admin(password="wrong")
    # The proxy itself goes on serving admins and clients.
    assert proxyproc.admin_query("SELECT * FROM proxy")
    with proxyproc.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 7")
        assert cur.fetchone() == (7,)


# --- the CLI's view of a refusal ------------------------------------------------------


def test_cli_with_a_wrong_password(proxyproc: RunningProxy) -> None:
    result = proxyproc.cli("log", "status", password="wrong")
    line = one_line_error(result)
    assert line.startswith("mysqlproxy: ")
    assert f"the admin interface at 127.0.0.1:{proxyproc.admin_port} refused the login" in line
    assert "MYSQLPROXY_ADMIN_PASSWORD" in line


def test_cli_without_a_password(proxyproc: RunningProxy) -> None:
    result = run_cli("log", "on", "--for", "1m", "--admin", proxyproc.admin_address,
                     password=None)
    assert "refused the login" in one_line_error(result)
    assert not proxyproc.status()


@pytest.mark.parametrize("command", [["log", "status"], ["log", "on", "--for", "5m"],
                                     ["log", "off"]])
def test_cli_with_an_unreachable_admin_address(command: list[str]) -> None:
    port = closed_port()
    result = run_cli(*command, "--admin", f"127.0.0.1:{port}")
    line = one_line_error(result)
    assert line.startswith(f"mysqlproxy: cannot reach the admin interface at 127.0.0.1:{port}")


def test_cli_with_a_bad_admin_address() -> None:
    result = run_cli("log", "status", "--admin", "nowhere")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--admin" in result.stderr


def test_cli_against_a_server_that_is_not_a_proxy(mariadb: MariaDB) -> None:
    """A real MySQL server on the admin address refuses the admin user: one line."""
    result = run_cli("log", "status", "--admin", f"127.0.0.1:{mariadb.port}")
    assert "refused the login" in one_line_error(result)


# --- where it listens, and when it refuses to start ------------------------------------


def test_loopback_is_the_default() -> None:
    assert Address.parse(cli.DEFAULT_ADMIN).is_loopback
    assert Address.parse(cli.DEFAULT_ADMIN).port == 4041


def test_admin_binds_only_the_address_given(proxyproc: RunningProxy) -> None:
    """On loopback, another interface of this host does not answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            own_ip = probe.getsockname()[0]
        except OSError:
            own_ip = "127.0.0.1"
    if Address(own_ip, 0).is_loopback:
        pytest.skip("this host has no non-loopback address")
    with pytest.raises(OSError), socket.create_connection((own_ip, proxyproc.admin_port), 2):
        pass
    with socket.create_connection(("127.0.0.1", proxyproc.admin_port), 2):
        pass


def test_refuses_a_public_admin_address_without_a_password(mariadb: MariaDB,
                                                           tmp_path: Path) -> None:
    result = run_cli("run", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0",
                     "--backend", str(mariadb.address), password=None, cwd=tmp_path)
    line = one_line_error(result)
    assert "refusing to open the admin interface on 0.0.0.0:0 without a password" in line
    assert "MYSQLPROXY_ADMIN_PASSWORD" in line


def test_a_public_admin_address_with_a_password_file(mariadb: MariaDB, tmp_path: Path) -> None:
    secret = tmp_path / "admin-password"
    secret.write_text("from-a-file\n")
    with running_proxy(mariadb.address, tmp_path, "--admin-password-file", str(secret),
                       admin="0.0.0.0:0", password=None) as proxy:
        assert proxy.ready_line.endswith(f"admin on 0.0.0.0:{proxy.admin_port}")
        proxy.password = "from-a-file"
        info = {row["name"]: row["value"] for row in proxy.admin_query("SELECT * FROM proxy")}
        assert info["pid"] == str(proxy.pid)
        with pytest.raises(pymysql.err.OperationalError) as refused:
            proxy.admin(password="")
        assert refused.value.args[0] == 1045
    assert proxy.process.returncode == 0


def test_loopback_without_a_password_starts_with_a_warning(mariadb: MariaDB,
                                                          tmp_path: Path) -> None:
    with running_proxy(mariadb.address, tmp_path, password=None) as proxy:
        assert "has no password" in proxy.stderr()
        rows = proxy.admin_query("SELECT * FROM backends")
        assert rows[0]["address"] == str(mariadb.address)


def test_a_custom_admin_user(mariadb: MariaDB, tmp_path: Path) -> None:
    with running_proxy(mariadb.address, tmp_path, "--admin-user", "ops") as proxy:
        with pytest.raises(pymysql.err.OperationalError):
            proxy.admin()
        assert proxy.admin(user="ops").open
        assert proxy.cli("log", "status", "--admin-user", "ops").returncode == 0


def test_admin_off(mariadb: MariaDB, tmp_path: Path) -> None:
    proxy = start_proxy(mariadb.address, tmp_path, admin="off")
    try:
        assert "admin on" not in proxy.ready_line
        with proxy.connect() as conn:
            conn.ping()
    finally:
        proxy.stop()


def test_the_admin_port_taken_is_one_line(mariadb: MariaDB, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "--listen", "127.0.0.1:0", "--admin", f"127.0.0.1:{port}",
                         "--backend", str(mariadb.address), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    # The proxy's log lines start with a timestamp; the error is the one line that does not.
    errors = [ln for ln in result.stderr.splitlines() if not ln[:4].isdigit()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"mysqlproxy: cannot listen on 127.0.0.1:{port} (admin): ")
    assert errors[0].endswith("address already in use")
