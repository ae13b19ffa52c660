"""caching_sha2_password full authentication over TLS, through the proxy.

No MySQL 8 server can be installed here, so the server is a fake MySQL 8
(mysqlproxy.testing.mysql8.FakeMySQL8, built on the project's protocol module) that
really checks passwords and, given an SSL context, really does TLS. Real clients
(PyMySQL, mysql-connector-python in pure mode, asyncmy) play the client.

Over TLS, full authentication sends the password in clear inside the TLS connection
(no RSA exchange). It works through the proxy only when both legs agree that the
connection is secure: the client's leg is TLS to the proxy, the proxy's leg is TLS to
the server (the default as-client mode), and the server accepts the password. A server
without TLS behind a TLS client refuses the cleartext password, as MySQL does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncmy
import asyncmy.errors
import mysql.connector
import pymysql
import pytest
import trustme

from mysqlproxy.protocol.auth import CACHING_SHA2_PASSWORD, SHA256_PASSWORD
from mysqlproxy.proxy import tls
from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.fakeserver import ReceivedCommand, Reply, ResultSet
from mysqlproxy.testing.mysql8 import ER_ACCESS_DENIED, Account, FakeMySQL8, running_mysql8
from mysqlproxy.testing.proxythread import ProxyThread

ACCOUNTS = {
    "sha2": Account(CACHING_SHA2_PASSWORD, "sha2-secret"),
    "sha256": Account(SHA256_PASSWORD, "sha256-secret"),
}
CLIENTS = ["pymysql", "connector", "asyncmy"]


def _script(command: ReceivedCommand) -> Reply | None:
    if command.query == "SELECT 'in'":
        return ResultSet(["v"], [[b"in"]])
    return None


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ssl.SSLContext]:
    """(CA file, the proxy's certificate+key file, the fake server's SSL context)."""
    directory = tmp_path_factory.mktemp("mysql8-certs")
    ca = trustme.CA()
    ca_file, proxy_file = directory / "ca.pem", directory / "proxy.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(proxy_file)
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    return ca_file, proxy_file, server_context


@pytest.fixture(scope="module")
def tls_fake(ca_files: tuple[Path, Path, ssl.SSLContext]) -> Iterator[FakeMySQL8]:
    with running_mysql8(ACCOUNTS, _script, tls=ca_files[2]) as fake:
        yield fake


@pytest.fixture(scope="module")
def plain_fake() -> Iterator[FakeMySQL8]:
    with running_mysql8(ACCOUNTS, _script) as fake:
        yield fake


def _proxy_in_front(fake: FakeMySQL8, proxy_file: Path) -> Iterator[ProxyThread]:
    proxy = ProxyThread(fake.address, tls=tls.client_tls(str(proxy_file), None))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def proxy(
    tls_fake: FakeMySQL8, ca_files: tuple[Path, Path, ssl.SSLContext]
) -> Iterator[ProxyThread]:
    yield from _proxy_in_front(tls_fake, ca_files[1])


def login_tls(
    client: str, address: Address, user: str, password: str, ca: Path
) -> tuple[Any, bool]:
    """Log in over TLS and run a query: (its value or the error code, client used TLS)."""
    if client == "pymysql":
        try:
            conn = pymysql.connect(host=address.host, port=address.port, user=user,
                                   password=password, ssl_ca=str(ca), connect_timeout=5)
        except pymysql.err.OperationalError as e:
            return int(e.args[0]), False
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 'in'")
            return cur.fetchone()[0], isinstance(conn._sock, ssl.SSLSocket)
    if client == "connector":
        try:
            cconn: Any = mysql.connector.connect(
                host=address.host, port=address.port, user=user, password=password,
                use_pure=True, ssl_ca=str(ca), ssl_verify_cert=True, connection_timeout=5,
            )
        except mysql.connector.Error as e:
            return int(e.errno), False
        try:
            secure = isinstance(cconn._socket.sock, ssl.SSLSocket)
            cursor = cconn.cursor()
            cursor.execute("SELECT 'in'")
            value = cursor.fetchone()[0]
            return (value.decode() if isinstance(value, bytes | bytearray) else value), secure
        finally:
            cconn.close()

    async def run() -> tuple[Any, bool]:
        try:
            aconn = await asyncmy.connect(
                host=address.host, port=address.port, user=user, password=password,
                ssl=ssl.create_default_context(cafile=str(ca)), connect_timeout=5,
            )
        except asyncmy.errors.OperationalError as e:
            return int(e.args[0]), False
        try:
            secure = aconn._transport.get_extra_info("ssl_object") is not None
            async with aconn.cursor() as cur:
                await cur.execute("SELECT 'in'")
                value = (await cur.fetchone())[0]
                return (value.decode() if isinstance(value, bytes) else value), secure
        finally:
            aconn.close()

    assert client == "asyncmy"
    return asyncio.run(run())


@pytest.mark.parametrize("client", CLIENTS)
def test_caching_sha2_full_auth_over_tls(
    client: str, proxy: ProxyThread, tls_fake: FakeMySQL8,
    ca_files: tuple[Path, Path, ssl.SSLContext],
) -> None:
    ca = ca_files[0]
    for address in (proxy.address, tls_fake.address):  # through the proxy, then directly
        tls_fake.sha2_cache.clear()  # cold: full authentication
        tls_fake.logins.clear()
        assert login_tls(client, address, "sha2", "sha2-secret", ca) == ("in", True)
        (login,) = tls_fake.logins
        assert (login.path, login.success, login.secure) == ("full-tls", True, True)
    # Warm now: the next login through the proxy takes the fast path, still over TLS.
    tls_fake.logins.clear()
    assert login_tls(client, proxy.address, "sha2", "sha2-secret", ca) == ("in", True)
    assert [(x.path, x.secure) for x in tls_fake.logins] == [("fast", True)]


@pytest.mark.parametrize("client", CLIENTS)
def test_caching_sha2_full_auth_wrong_password_over_tls(
    client: str, proxy: ProxyThread, tls_fake: FakeMySQL8,
    ca_files: tuple[Path, Path, ssl.SSLContext],
) -> None:
    tls_fake.sha2_cache.clear()
    tls_fake.logins.clear()
    result = login_tls(client, proxy.address, "sha2", "not-the-password", ca_files[0])
    assert result == (ER_ACCESS_DENIED, False)
    assert [(x.path, x.success) for x in tls_fake.logins] == [("full-tls", False)]


@pytest.mark.parametrize("client", CLIENTS)
def test_sha256_password_over_tls(
    client: str, proxy: ProxyThread, tls_fake: FakeMySQL8,
    ca_files: tuple[Path, Path, ssl.SSLContext],
) -> None:
    tls_fake.logins.clear()
    assert login_tls(client, proxy.address, "sha256", "sha256-secret", ca_files[0]) == (
        "in", True
    )
    assert [(x.path, x.success, x.secure) for x in tls_fake.logins][-1:] == [
        ("tls-cleartext", True, True)
    ]


def test_server_without_tls_refuses_the_cleartext_password(
    plain_fake: FakeMySQL8, ca_files: tuple[Path, Path, ssl.SSLContext]
) -> None:
    """The client's leg is TLS, so it sends its password in clear; the server's leg is
    not (it offers no TLS), so the server refuses it, as MySQL would."""
    for proxy in _proxy_in_front(plain_fake, ca_files[1]):
        plain_fake.sha2_cache.clear()
        plain_fake.logins.clear()
        result = login_tls("pymysql", proxy.address, "sha2", "sha2-secret", ca_files[0])
        assert result == (ER_ACCESS_DENIED, False)
        assert [(x.path, x.secure) for x in plain_fake.logins] == [("cleartext-refused", False)]
