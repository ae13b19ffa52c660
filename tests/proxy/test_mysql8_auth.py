"""MySQL 8 authentication passes through the proxy untouched.

No MySQL 8 server can be installed here, so the server is a fake MySQL 8
(mysqlproxy.testing.mysql8.FakeMySQL8) that really checks passwords: caching_sha2_password
fast auth and full auth with the RSA public-key exchange in plain text, sha256_password,
mysql_native_password, auth switches and COM_CHANGE_USER. Real clients (PyMySQL,
mysql-connector-python in pure mode, asyncmy) play the client, through the proxy and,
for comparison, directly: the outcome must be the same both ways.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncmy
import asyncmy.errors
import mysql.connector
import pymysql
import pytest

from mysqlproxy.protocol.auth import CACHING_SHA2_PASSWORD, NATIVE_PASSWORD, SHA256_PASSWORD
from mysqlproxy.protocol.constants import Command
from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.fakeserver import ReceivedCommand, Reply, ResultSet
from mysqlproxy.testing.mysql8 import ER_ACCESS_DENIED, Account, FakeMySQL8, running_mysql8
from mysqlproxy.testing.proxythread import ProxyThread

ACCOUNTS = {
    "sha2": Account(CACHING_SHA2_PASSWORD, "sha2-secret"),
    "sha256": Account(SHA256_PASSWORD, "sha256-secret"),
    "native": Account(NATIVE_PASSWORD, "native-secret"),
}
CLIENTS = ["pymysql", "connector", "asyncmy"]
_markers = itertools.count()


def _script(command: ReceivedCommand) -> Reply | None:
    query = command.query
    if query is not None and query.startswith("SELECT 'marker"):
        return ResultSet(["v"], [[query[8:-1].encode()]])
    return None


@dataclass
class Backend:
    fake: FakeMySQL8
    proxy: ProxyThread


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Backend]]:
    """Two fake MySQL 8 servers, one greeting with caching_sha2_password (MySQL 8's
    default), one with mysql_native_password, each with a proxy in front."""
    with (
        running_mysql8(ACCOUNTS, _script) as sha2,
        running_mysql8(ACCOUNTS, _script, default_plugin=NATIVE_PASSWORD) as native,
    ):
        proxies = [ProxyThread(sha2.address), ProxyThread(native.address)]
        for proxy in proxies:
            proxy.start()
        try:
            yield {"sha2": Backend(sha2, proxies[0]), "native": Backend(native, proxies[1])}
        finally:
            for proxy in proxies:
                proxy.stop()


@pytest.fixture
def sha2(servers: dict[str, Backend]) -> Backend:
    return _fresh(servers["sha2"])


@pytest.fixture
def native(servers: dict[str, Backend]) -> Backend:
    return _fresh(servers["native"])


def _fresh(backend: Backend) -> Backend:
    backend.fake.sha2_cache.clear()
    backend.fake.logins.clear()
    backend.proxy.recorder.clear()
    return backend


# --- the clients -------------------------------------------------------------------


def login(client: str, address: Address, user: str, password: str) -> str | int:
    """Log in, run a marker query; returns the value the query gave back, or the
    MySQL error code of a refused login."""
    marker = f"marker-{next(_markers)}"
    sql = f"SELECT '{marker}'"
    if client == "pymysql":
        try:
            conn = pymysql.connect(
                host=address.host,
                port=address.port,
                user=user,
                password=password,
                connect_timeout=5,
            )
        except pymysql.err.OperationalError as e:
            return int(e.args[0])
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return str(cur.fetchone()[0])
    if client == "connector":
        try:
            cconn: Any = mysql.connector.connect(
                host=address.host,
                port=address.port,
                user=user,
                password=password,
                use_pure=True,
                ssl_disabled=True,
                connection_timeout=5,
            )
        except mysql.connector.Error as e:
            return int(e.errno)
        try:
            cursor = cconn.cursor()
            cursor.execute(sql)
            return str(_text(cursor.fetchone()[0]))
        finally:
            cconn.close()

    async def run() -> str | int:
        try:
            aconn = await asyncmy.connect(
                host=address.host,
                port=address.port,
                user=user,
                password=password,
                connect_timeout=5,
            )
        except asyncmy.errors.OperationalError as e:
            return int(e.args[0])
        try:
            async with aconn.cursor() as cur:
                await cur.execute(sql)
                return str(_text((await cur.fetchone())[0]))
        finally:
            aconn.close()

    assert client == "asyncmy"
    return asyncio.run(run())


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def check_proxy_saw(
    backend: Backend, user: str, marker: str, logged_in_as: str | None = None
) -> None:
    """The proxy's Authenticated user (the login's; COM_CHANGE_USER opens no new
    connection), and the marker query's event carries the current user."""
    recorder = backend.proxy.recorder
    first = logged_in_as or user
    assert recorder.wait_for(lambda: any(c.user == first for c in recorder.opened), 5)
    sql = f"SELECT '{marker}'"
    assert recorder.wait_for(lambda: any(e.query == sql for e in recorder.queries), 5)
    (event,) = [e for e in recorder.queries if e.query == sql]
    assert event.user == user
    assert event.error_code == 0


def both_ways(
    client: str, backend: Backend, user: str, password: str, warm: bool = False
) -> tuple[str | int, str | int]:
    """Log in through the proxy and directly, with the cache cold (or warm) each time."""
    results = []
    for address in (backend.proxy.address, backend.fake.address):
        backend.fake.sha2_cache.clear()
        if warm:
            backend.fake.warm_cache(user)
        results.append(login(client, address, user, password))
    return results[0], results[1]


# --- caching_sha2_password ---------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_caching_sha2_fast_auth(client: str, sha2: Backend) -> None:
    via_proxy, direct = both_ways(client, sha2, "sha2", "sha2-secret", warm=True)
    assert isinstance(via_proxy, str) and via_proxy.startswith("marker-")
    assert isinstance(direct, str)
    logins = [(x.path, x.success, x.switched) for x in sha2.fake.logins]
    assert logins == [("fast", True, False)] * 2
    check_proxy_saw(sha2, "sha2", via_proxy)


@pytest.mark.parametrize("client", CLIENTS)
def test_caching_sha2_full_auth_rsa_then_fast(client: str, sha2: Backend) -> None:
    """Cold cache: full auth. Clients without TLS must ask for the server's RSA public
    key; a second login then takes the fast path."""
    via_proxy = login(client, sha2.proxy.address, "sha2", "sha2-secret")
    if client == "connector":
        # mysql-connector-python (pure) has no RSA key exchange: on "perform full
        # authentication" it sends the password in cleartext even without TLS, which
        # a MySQL 8 server refuses. Same outcome directly.
        assert via_proxy == ER_ACCESS_DENIED
        assert sha2.fake.connections[-1].auth_packets[-1] == b"sha2-secret\x00"
        assert login(client, sha2.fake.address, "sha2", "sha2-secret") == ER_ACCESS_DENIED
        assert [x.path for x in sha2.fake.logins] == ["cleartext-refused"] * 2
        return
    assert isinstance(via_proxy, str)
    assert [(x.path, x.success) for x in sha2.fake.logins] == [("full-rsa", True)]
    assert sha2.fake.connections[-1].auth_packets[0] == b"\x02"  # the key request
    check_proxy_saw(sha2, "sha2", via_proxy)
    assert isinstance(login(client, sha2.proxy.address, "sha2", "sha2-secret"), str)
    assert sha2.fake.logins[-1].path == "fast"
    sha2.fake.sha2_cache.clear()
    assert isinstance(login(client, sha2.fake.address, "sha2", "sha2-secret"), str)
    assert sha2.fake.logins[-1].path == "full-rsa"


# --- sha256_password, native, switches ---------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_sha256_password(client: str, sha2: Backend) -> None:
    """The greeting offers caching_sha2_password; the user's plugin is sha256_password,
    so the server switches, and the client asks for the RSA public key."""
    if client == "connector":
        pytest.skip(
            "mysql-connector-python refuses sha256_password without TLS "
            "('sha256_password requires SSL'); over TLS: test_mysql8_tls.py"
        )
    via_proxy, direct = both_ways(client, sha2, "sha256", "sha256-secret")
    assert isinstance(via_proxy, str) and isinstance(direct, str)
    assert [(x.plugin, x.path, x.success, x.switched) for x in sha2.fake.logins] == [
        (SHA256_PASSWORD, "rsa", True, True)
    ] * 2
    check_proxy_saw(sha2, "sha256", via_proxy)


@pytest.mark.parametrize("client", CLIENTS)
def test_native_password(client: str, native: Backend) -> None:
    via_proxy, direct = both_ways(client, native, "native", "native-secret")
    assert isinstance(via_proxy, str) and isinstance(direct, str)
    assert [(x.path, x.success, x.switched) for x in native.fake.logins] == [
        ("native", True, False)
    ] * 2
    check_proxy_saw(native, "native", via_proxy)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("server", "user", "plugin", "path"),
    [
        ("sha2", "native", NATIVE_PASSWORD, "native"),
        ("native", "sha2", CACHING_SHA2_PASSWORD, "fast"),
    ],
    ids=["caching_sha2-to-native", "native-to-caching_sha2"],
)
def test_auth_switch(
    client: str, servers: dict[str, Backend], server: str, user: str, plugin: str, path: str
) -> None:
    backend = _fresh(servers[server])
    password = ACCOUNTS[user].password
    via_proxy, direct = both_ways(client, backend, user, password, warm=user == "sha2")
    if client == "asyncmy" and plugin == CACHING_SHA2_PASSWORD:
        # asyncmy 0.2.18 keeps the NUL that ends the AuthSwitchRequest's scramble and
        # hashes 21 bytes (PyMySQL strips it), so its fast-auth answer is wrong: a real
        # MySQL 8 refuses it too. Same outcome through the proxy as directly.
        assert via_proxy == direct == ER_ACCESS_DENIED
        assert [(x.path, x.success) for x in backend.fake.logins] == [("fast", False)] * 2
        return
    assert isinstance(via_proxy, str) and isinstance(direct, str)
    assert [(x.plugin, x.path, x.success, x.switched) for x in backend.fake.logins] == [
        (plugin, path, True, True)
    ] * 2
    check_proxy_saw(backend, user, via_proxy)


@pytest.mark.parametrize("client", ["pymysql", "asyncmy"])
def test_auth_switch_to_caching_sha2_full_auth(client: str, native: Backend) -> None:
    """A switch to caching_sha2_password with a cold cache: switch, then full auth with
    the RSA exchange, all in one login (mysql-connector would send the password in
    cleartext here, see test_caching_sha2_full_auth_rsa_then_fast)."""
    via_proxy, direct = both_ways(client, native, "sha2", "sha2-secret")
    assert isinstance(via_proxy, str) and isinstance(direct, str)
    assert [(x.path, x.success, x.switched) for x in native.fake.logins] == [
        ("full-rsa", True, True)
    ] * 2
    check_proxy_saw(native, "sha2", via_proxy)


# --- refusals -----------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("user", "warm"),
    [("sha2", False), ("sha2", True), ("sha256", False), ("native", False)],
    ids=["sha2-full", "sha2-fast", "sha256", "native"],
)
def test_wrong_password(client: str, user: str, warm: bool, sha2: Backend) -> None:
    if client == "connector" and user == "sha256":
        pytest.skip("mysql-connector-python refuses sha256_password without TLS")
    via_proxy, direct = both_ways(client, sha2, user, "wrong", warm=warm)
    assert via_proxy == direct == ER_ACCESS_DENIED
    assert [x.success for x in sha2.fake.logins] == [False, False]
    recorder = sha2.proxy.recorder
    assert recorder.wait_for(lambda: len(recorder.auth_failures) == 1)
    info, code, message = recorder.auth_failures[0]
    assert (info.user, code) == (user, ER_ACCESS_DENIED)
    assert "Access denied" in message
    assert not recorder.opened


# --- COM_CHANGE_USER -----------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("to_user", ["sha2", "native"])
def test_change_user(client: str, to_user: str, sha2: Backend) -> None:
    """COM_CHANGE_USER to a caching_sha2_password user (fast auth: only
    mysql-connector can change user, and it has no RSA exchange), and to a native user
    (the server switches plugin), then a query runs as the new user."""
    if client != "connector":
        pytest.skip(f"{client} has no API for COM_CHANGE_USER")
    sha2.fake.warm_cache("sha2")
    outcomes = []
    for address in (sha2.proxy.address, sha2.fake.address):
        conn: Any = mysql.connector.connect(
            host=address.host,
            port=address.port,
            user="native",
            password="native-secret",
            use_pure=True,
            ssl_disabled=True,
            connection_timeout=5,
        )
        try:
            conn.cmd_change_user(username=to_user, password=ACCOUNTS[to_user].password)
            marker = f"marker-{next(_markers)}"
            cursor = conn.cursor()
            cursor.execute(f"SELECT '{marker}'")
            outcomes.append(_text(cursor.fetchone()[0]))
            if address == sha2.proxy.address:
                check_proxy_saw(sha2, to_user, outcomes[-1], logged_in_as="native")
            with pytest.raises(mysql.connector.Error) as refused:
                conn.cmd_change_user(username=to_user, password="wrong")
            assert refused.value.errno == ER_ACCESS_DENIED
        finally:
            conn.close()
    changes = [(x.user, x.path, x.success, x.switched) for x in sha2.fake.logins if x.change_user]
    path = "fast" if to_user == "sha2" else "native"
    switched = to_user == "native"
    assert changes == [(to_user, path, True, switched), (to_user, path, False, switched)] * 2
    proxy_events = [e for e in sha2.proxy.recorder.queries if e.command == Command.COM_CHANGE_USER]
    assert [(e.query, e.error_code) for e in proxy_events] == [
        (to_user, 0),
        (to_user, ER_ACCESS_DENIED),
    ]


# --- the scramble functions the fake server verifies with ------------------------------


def test_scrambles_match_a_client() -> None:
    """The pure functions in mysqlproxy.protocol.auth agree with PyMySQL's client side."""
    from pymysql import _auth as client

    from mysqlproxy.protocol import auth

    nonce = b"0123456789abcdefghij"
    scramble = auth.caching_sha2_scramble(b"pw", nonce)
    assert scramble == client.scramble_caching_sha2(b"pw", nonce)
    assert auth.verify_caching_sha2(auth.caching_sha2_hash(b"pw"), nonce, scramble)
    assert not auth.verify_caching_sha2(auth.caching_sha2_hash(b"other"), nonce, scramble)
    assert auth.caching_sha2_scramble(b"", nonce) == b""
    assert auth.xor_password(b"pw\x00", nonce) == client._xor_password(b"pw\x00", nonce)
    assert auth.xor_password(auth.xor_password(b"pw\x00", nonce), nonce) == b"pw\x00"
