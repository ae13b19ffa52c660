"""caching_sha2_password full authentication over TLS, through the proxy.

No MySQL 8 server can be installed here, so the server is a fake MySQL 8
(mysqlproxy.testing.mysql8.FakeMySQL8, built on the project's protocol module) that
really checks passwords and, given an SSL context, really does TLS. Real clients
(PyMySQL, mysql-connector-python in pure mode, asyncmy) play the client.

Over TLS, full authentication sends the password in clear inside the TLS connection
(no RSA exchange). It works through the proxy only when both legs agree that the
connection is secure: the client's leg is TLS to the proxy, the proxy's leg is TLS to
the server (the default as-client mode), and the server accepts the password. With a
server without TLS behind a TLS client, the proxy refuses to relay a cleartext password
(ERR 1045) before the client sends it: the password never crosses the plain leg.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncmy
import asyncmy.errors
import mysql.connector
import pymysql
import pytest
import trustme

from mysqlproxy.protocol.auth import CACHING_SHA2_PASSWORD, NATIVE_PASSWORD, SHA256_PASSWORD
from mysqlproxy.proxy import tls
from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.fakeserver import ReceivedCommand, Reply, ResultSet
from mysqlproxy.testing.mysql8 import ER_ACCESS_DENIED, Account, FakeMySQL8, running_mysql8
from mysqlproxy.testing.proxythread import ProxyThread

ACCOUNTS = {
    "sha2": Account(CACHING_SHA2_PASSWORD, "sha2-secret"),
    "sha256": Account(SHA256_PASSWORD, "sha256-secret"),
    "native": Account(NATIVE_PASSWORD, "native-secret"),
    # The fake cannot check it, but it switches a client to it (and records the answer).
    "clear": Account("mysql_clear_password", "clear-secret"),
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
    client: str, address: Address, user: str, password: str, ca: Path,
    errors: list[str] | None = None, **kwargs: Any,
) -> tuple[Any, bool]:
    """Log in over TLS and run a query: (its value or the error code, client used TLS).
    An error's message is appended to `errors`; kwargs go to the client's connect."""
    if client == "pymysql":
        try:
            conn = pymysql.connect(host=address.host, port=address.port, user=user,
                                   password=password, ssl_ca=str(ca), connect_timeout=5,
                                   read_timeout=10, **kwargs)
        except pymysql.err.OperationalError as e:
            if errors is not None:
                errors.append(str(e.args[1]))
            return int(e.args[0]), False
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 'in'")
            return cur.fetchone()[0], isinstance(conn._sock, ssl.SSLSocket)
    if client == "connector":
        try:
            cconn: Any = mysql.connector.connect(
                host=address.host, port=address.port, user=user, password=password,
                use_pure=True, ssl_ca=str(ca), ssl_verify_cert=True, connection_timeout=5,
                **kwargs,
            )
        except mysql.connector.Error as e:
            if errors is not None:
                errors.append(str(e.msg))
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
                ssl=ssl.create_default_context(cafile=str(ca)), connect_timeout=5, **kwargs,
            )
        except asyncmy.errors.OperationalError as e:
            if errors is not None:
                errors.append(str(e.args[1]))
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


# --- a TLS client, a server without TLS: no cleartext password on the plain leg ----------


@pytest.fixture(scope="module")
def proxy_to_plain(
    plain_fake: FakeMySQL8, ca_files: tuple[Path, Path, ssl.SSLContext]
) -> Iterator[ProxyThread]:
    """TLS toward clients; the server offers no TLS, so the default as-client mode
    leaves the backend leg plain."""
    yield from _proxy_in_front(plain_fake, ca_files[1])


def received_by(fake: FakeMySQL8) -> bytes:
    """Every authentication byte the fake server received, all connections."""
    data = b""
    for conn in fake.connections:
        if conn.handshake is not None:
            data += conn.handshake.auth_response
        data += b"".join(conn.auth_packets)
        data += b"".join(command.payload for command in conn.commands)
    return data


def assert_refused(result: tuple[Any, bool], errors: list[str]) -> None:
    """The client got the proxy's ERR 1045, naming the remedy."""
    assert result == (ER_ACCESS_DENIED, False)
    (message,) = errors
    assert "refusing to send a cleartext password" in message
    assert "--backend-tls required" in message


@pytest.mark.parametrize("client", CLIENTS)
def test_caching_sha2_full_auth_is_refused_on_a_plain_backend_leg(
    client: str, proxy_to_plain: ProxyThread, plain_fake: FakeMySQL8,
    ca_files: tuple[Path, Path, ssl.SSLContext],
) -> None:
    """AuthMoreData 0x04 (perform full authentication) would make the TLS client send
    its password in clear: the proxy answers ERR 1045 in its place. The fast path
    (0x03) and mysql_native_password send scrambles only: they go through."""
    ca = ca_files[0]
    plain_fake.sha2_cache.clear()
    plain_fake.connections.clear()
    plain_fake.logins.clear()
    errors: list[str] = []
    result = login_tls(client, proxy_to_plain.address, "sha2", "sha2-secret", ca, errors)
    assert_refused(result, errors)
    assert b"sha2-secret" not in received_by(plain_fake)
    assert plain_fake.logins == []  # the server never got an answer to its 0x04
    assert proxy_to_plain.recorder.wait_for(
        lambda: any(f[1] == 1045 for f in proxy_to_plain.recorder.auth_failures)
    )
    # Warm cache: the fast path, no password in clear; and mysql_native_password.
    plain_fake.warm_cache("sha2")
    plain_fake.logins.clear()
    assert login_tls(client, proxy_to_plain.address, "sha2", "sha2-secret", ca) == ("in", True)
    assert login_tls(client, proxy_to_plain.address, "native", "native-secret", ca) == (
        "in", True
    )
    assert [(x.path, x.success, x.secure) for x in plain_fake.logins] == [
        ("fast", True, False), ("native", True, False)
    ]


@pytest.mark.parametrize("user", ["sha256", "clear"])
@pytest.mark.parametrize("client", CLIENTS)
def test_switch_to_a_cleartext_plugin_is_refused_on_a_plain_backend_leg(
    client: str, user: str, proxy_to_plain: ProxyThread, plain_fake: FakeMySQL8,
    ca_files: tuple[Path, Path, ssl.SSLContext],
) -> None:
    """An auth switch to sha256_password or mysql_clear_password: a TLS client would
    answer with its password in clear. The switch is not relayed; the client gets ERR."""
    plain_fake.connections.clear()
    plain_fake.logins.clear()
    password = ACCOUNTS[user].password
    errors: list[str] = []
    result = login_tls(client, proxy_to_plain.address, user, password, ca_files[0], errors)
    assert_refused(result, errors)
    assert f"switched authentication to {ACCOUNTS[user].plugin}" in errors[0]
    assert password.encode() not in received_by(plain_fake)
    assert plain_fake.logins == []


@pytest.mark.parametrize("plugin", ["sha256_password", "mysql_clear_password"])
def test_cleartext_handshake_response_is_not_relayed_to_a_plain_backend_leg(
    plugin: str, proxy_to_plain: ProxyThread, plain_fake: FakeMySQL8,
    ca_files: tuple[Path, Path, ssl.SSLContext],
) -> None:
    """mysql-connector told to use a cleartext plugin puts the password in clear in its
    handshake response (over TLS): the proxy keeps it."""
    plain_fake.connections.clear()
    user = "sha256" if plugin == "sha256_password" else "clear"
    password = ACCOUNTS[user].password
    errors: list[str] = []
    result = login_tls(
        "connector", proxy_to_plain.address, user, password, ca_files[0], errors,
        auth_plugin=plugin,
    )
    assert_refused(result, errors)
    assert "the client sent its password in clear" in errors[0]
    assert password.encode() not in received_by(plain_fake)


def test_change_user_full_auth_is_refused_on_a_plain_backend_leg(
    proxy_to_plain: ProxyThread, plain_fake: FakeMySQL8,
    ca_files: tuple[Path, Path, ssl.SSLContext],
) -> None:
    """COM_CHANGE_USER authenticates again: its full authentication is refused too."""
    plain_fake.sha2_cache.clear()
    plain_fake.connections.clear()
    conn = mysql.connector.connect(
        host="127.0.0.1", port=proxy_to_plain.address.port, user="native",
        password="native-secret", use_pure=True, ssl_ca=str(ca_files[0]),
        ssl_verify_cert=True, connection_timeout=5,
    )
    try:
        assert isinstance(conn._socket.sock, ssl.SSLSocket)
        with pytest.raises(mysql.connector.Error) as raised:
            conn.cmd_change_user(username="sha2", password="sha2-secret")
    finally:
        conn.close()
    assert raised.value.errno == ER_ACCESS_DENIED
    assert "refusing to send a cleartext password" in str(raised.value.msg)
    assert b"sha2-secret" not in received_by(plain_fake)


class _SplittingSocket:
    """A client's TLS socket that sends each COM_CHANGE_USER in two writes, a pause
    between: the proxy receives it in two chunks (TLS records) with the auth data in
    the first."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self.splits = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def sendall(self, data: bytes) -> None:
        if len(data) > 40 and data[4] == 0x11:  # COM_CHANGE_USER
            self.splits += 1
            cut = data.index(b"\x00", 5) + 1 + 1 + data[data.index(b"\x00", 5) + 1]
            self._sock.sendall(data[:cut])  # up to the end of the auth data
            time.sleep(0.2)
            self._sock.sendall(data[cut:])
        else:
            self._sock.sendall(data)


def _connect_native_tls(proxy: ProxyThread, ca: Path) -> Any:
    conn = mysql.connector.connect(
        host="127.0.0.1", port=proxy.address.port, user="native",
        password="native-secret", use_pure=True, ssl_ca=str(ca),
        ssl_verify_cert=True, connection_timeout=5,
    )
    assert isinstance(conn._socket.sock, ssl.SSLSocket)
    splitting = _SplittingSocket(conn._socket.sock)
    conn._socket.sock = splitting
    return conn, splitting


def test_split_change_user_with_a_cleartext_password_never_reaches_a_plain_leg(
    proxy_to_plain: ProxyThread, plain_fake: FakeMySQL8,
    ca_files: tuple[Path, Path, ssl.SSLContext],
) -> None:
    """A COM_CHANGE_USER whose password is in clear (mysql_clear_password), arriving in
    two chunks: no byte of it reaches the plain backend leg, not even the first
    chunk's, which holds the password but not yet the plugin's name."""
    plain_fake.connections.clear()
    conn, splitting = _connect_native_tls(proxy_to_plain, ca_files[0])
    try:
        conn._auth_plugin = "mysql_clear_password"
        with pytest.raises(mysql.connector.Error) as raised:
            conn.cmd_change_user(username="clear", password="clear-secret")
    finally:
        conn.close()
    assert splitting.splits == 1
    assert raised.value.errno == ER_ACCESS_DENIED
    assert "refusing to send a cleartext password" in str(raised.value.msg)
    received = b"".join(bytes(c.received) for c in plain_fake.connections)
    assert b"native" in received  # the login did reach it: the raw record is complete
    assert b"clear-secret" not in received
    assert b"\x11clear\x00" not in received  # nothing of the COM_CHANGE_USER at all


def test_split_change_user_with_a_scramble_goes_through(
    proxy_to_plain: ProxyThread, plain_fake: FakeMySQL8,
    ca_files: tuple[Path, Path, ssl.SSLContext],
) -> None:
    """The same split COM_CHANGE_USER with mysql_native_password (a scramble): held until
    whole, checked, relayed whole."""
    conn, splitting = _connect_native_tls(proxy_to_plain, ca_files[0])
    try:
        conn.cmd_change_user(username="native", password="native-secret")
        cur = conn.cursor()
        cur.execute("SELECT 'in'")
        assert cur.fetchall() == [("in",)]
    finally:
        conn.close()
    assert splitting.splits == 1
