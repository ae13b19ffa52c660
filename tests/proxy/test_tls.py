"""TLS on both legs, with real clients and a real MariaDB configured with TLS.

Certificates come from trustme: one CA signs the proxy's certificate and the TLS
MariaDB's; a second, unrelated CA plays the wrong one. The session's MariaDB (conftest)
has no TLS; a second private MariaDB here has ssl-ca/ssl-cert/ssl-key.

What each leg really does is checked from its own end: the client leg from the client
(its socket is an SSLSocket, or the mariadb CLI's status says "Cipher in use"), the
backend leg from the server (SHOW STATUS LIKE 'Ssl_cipher' is per connection, and the
connection the server sees is the proxy's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncmy
import mysql.connector
import pymysql
import pytest
import trustme

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.auth import NATIVE_PASSWORD
from mysqlproxy.protocol.constants import MASKED_CAPABILITIES, Capability, ErrorCode
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import ConnectionTracker
from mysqlproxy.proxy import tls
from mysqlproxy.proxy.app import ProxyApp, ProxyConfig
from mysqlproxy.proxy.backends import Address
from mysqlproxy.proxy.session import Session
from mysqlproxy.testing import packets as pk
from mysqlproxy.testing.mysql8 import Account, running_mysql8
from mysqlproxy.testing.privatedb import PrivateDBError, PrivateMariaDB
from mysqlproxy.testing.proxyprocess import ProxyProcess
from mysqlproxy.testing.proxythread import ProxyThread, running_proxy
from tests.conftest import MariaDB


@dataclass(frozen=True)
class Certs:
    ca: Path  # signs everything below
    wrong_ca: Path  # signs nothing here
    proxy: Path  # the proxy's certificate chain and key, one file
    server_cert: Path  # the TLS MariaDB's
    server_key: Path
    client_cert: Path  # presented by the proxy to a server that asks for one
    client_key: Path
    other_host: Path  # signed by `ca` for db.example, not 127.0.0.1: chain and key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    wrong = trustme.CA(key_type=trustme.KeyType.RSA)
    files = Certs(
        ca=directory / "ca.pem",
        wrong_ca=directory / "wrong-ca.pem",
        proxy=directory / "proxy.pem",
        server_cert=directory / "server-cert.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client-cert.pem",
        client_key=directory / "client-key.pem",
        other_host=directory / "other-host.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    wrong.cert_pem.write_to_path(str(files.wrong_ca))
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(files.proxy)
    )
    server = ca.issue_cert("localhost", "127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    client = ca.issue_cert("mysqlproxy")
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    ca.issue_cert("db.example").private_key_and_cert_chain_pem.write_to_path(
        str(files.other_host)
    )
    return files


@pytest.fixture(scope="module")
def tls_mariadb(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    """A private MariaDB with TLS (and the conftest one's settings that matter here)."""
    db = PrivateMariaDB(
        extra_settings=[
            f"--ssl-ca={certs.ca}",
            f"--ssl-cert={certs.server_cert}",
            f"--ssl-key={certs.server_key}",
        ],
        base_dir=tmp_path_factory.mktemp("tlsdb"),
    )
    try:
        db.start()
    except PrivateDBError as exc:
        pytest.skip(f"cannot start a private MariaDB: {exc}")
    db.execute("CREATE DATABASE IF NOT EXISTS mpt")
    # A user that must present a client certificate signed by the CA.
    db.execute("CREATE USER 'x509'@'%' REQUIRE X509; GRANT ALL ON *.* TO 'x509'@'%'")
    yield db
    db.stop()


def _as_root(db: PrivateMariaDB, sql: str) -> None:
    """Over the Unix socket, which the server counts as secure transport."""
    with pymysql.connect(unix_socket=db.socket_path, user="root", password="") as conn:
        conn.cursor().execute(sql)


@pytest.fixture
def tls_proxy(mariadb: MariaDB, certs: Certs) -> Iterator[ProxyThread]:
    """TLS toward clients, in front of the conftest MariaDB (which has no TLS)."""
    with running_proxy(mariadb.address, tls=tls.client_tls(str(certs.proxy), None)) as proxy:
        yield proxy


def _ssl_cipher(cur: Any) -> str:
    """The server's view of the connection it is talking to (the proxy's backend leg)."""
    cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    row = cur.fetchone()
    return str(row[1]) if row else ""


def _pymysql(port: int, **kwargs: Any) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    kwargs.setdefault("user", "root")
    kwargs.setdefault("password", "")
    return pymysql.connect(host="127.0.0.1", port=port, **kwargs)


# --- the client leg ---------------------------------------------------------------------


def test_pymysql_with_tls_through_the_proxy(tls_proxy: ProxyThread, certs: Certs) -> None:
    with _pymysql(tls_proxy.port, ssl_ca=str(certs.ca), ssl_verify_identity=True) as conn:
        assert isinstance(conn._sock, ssl.SSLSocket)
        assert conn._sock.version() in ("TLSv1.2", "TLSv1.3")
        with conn.cursor() as cur:
            cur.execute("SELECT 1, 'over tls'")
            assert cur.fetchall() == ((1, "over tls"),)
            # The backend has no TLS: as-client falls back to a plain backend leg.
            assert _ssl_cipher(cur) == ""
    assert tls_proxy.recorder.wait_for(
        lambda: any(e.query == "SELECT 1, 'over tls'" for e in tls_proxy.events)
    )
    event = next(e for e in tls_proxy.events if e.query == "SELECT 1, 'over tls'")
    assert event.user == "root" and event.rows_sent == 1


def test_plain_client_still_served_when_tls_is_offered(tls_proxy: ProxyThread) -> None:
    with _pymysql(tls_proxy.port, ssl_disabled=True) as conn, conn.cursor() as cur:
        assert not isinstance(conn._sock, ssl.SSLSocket)
        assert conn.server_capabilities & Capability.CLIENT_SSL  # offered, not taken
        cur.execute("SELECT 'plain'")
        assert cur.fetchall() == (("plain",),)


def test_without_a_certificate_ssl_is_not_offered(proxy: ProxyThread) -> None:
    with _pymysql(proxy.port) as conn:  # PyMySQL prefers TLS when it is offered
        assert not conn.server_capabilities & Capability.CLIENT_SSL
        assert not isinstance(conn._sock, ssl.SSLSocket)


def test_wrong_ca_on_the_client_side_is_refused_by_the_client(
    tls_proxy: ProxyThread, certs: Certs
) -> None:
    with pytest.raises(pymysql.err.OperationalError) as raised:
        _pymysql(tls_proxy.port, ssl_ca=str(certs.wrong_ca), ssl_verify_cert=True)
    assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
    # The proxy is unharmed.
    with _pymysql(tls_proxy.port, ssl_ca=str(certs.ca)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")


def test_require_tls_refuses_a_plain_client(mariadb: MariaDB, certs: Certs) -> None:
    settings = tls.client_tls(str(certs.proxy), None, required=True)
    with running_proxy(mariadb.address, tls=settings) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(proxy.port, ssl_disabled=True)
        code, message = raised.value.args
        assert code == ErrorCode.ER_SECURE_TRANSPORT_REQUIRED == 3159
        assert "insecure transport are prohibited" in message
        with _pymysql(proxy.port, ssl_ca=str(certs.ca)) as conn, conn.cursor() as cur:
            cur.execute("SELECT 'secure'")
            assert cur.fetchall() == (("secure",),)


def test_mariadb_cli_verifies_the_proxy_certificate(
    tls_proxy: ProxyThread, certs: Certs, mariadb_cli: str
) -> None:
    base = [mariadb_cli, "--no-defaults", "-h127.0.0.1", f"-P{tls_proxy.port}", "-uroot"]
    result = subprocess.run(
        [*base, "--ssl", "--ssl-verify-server-cert", f"--ssl-ca={certs.ca}",
         "-e", "status; SELECT 'cli' AS v"],
        capture_output=True, timeout=60, check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "Cipher in use is" in out
    assert "cli" in out
    # With the wrong CA the client refuses the proxy.
    result = subprocess.run(
        [*base, "--ssl", "--ssl-verify-server-cert", f"--ssl-ca={certs.wrong_ca}",
         "-e", "SELECT 1"],
        capture_output=True, timeout=60, check=False,
    )
    assert result.returncode != 0
    assert b"ERROR 2026" in result.stderr, result.stderr  # the client's own TLS error
    # Without TLS the CLI still gets in, and says so.
    result = subprocess.run([*base, "--skip-ssl", "-e", "status"], capture_output=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert "SSL:\t\t\tNot in use" in result.stdout.decode()


def test_asyncmy_with_and_without_tls(tls_proxy: ProxyThread, certs: Certs) -> None:
    async def session(ssl_context: ssl.SSLContext | None) -> tuple[Any, bool]:
        conn = await asyncmy.connect(
            host="127.0.0.1", port=tls_proxy.port, user="root", password="", ssl=ssl_context
        )
        try:
            transport = conn._transport
            secure = transport.get_extra_info("ssl_object") is not None
            async with conn.cursor() as cur:
                await cur.execute("SELECT 40 + 2")
                return (await cur.fetchall()), secure
        finally:
            conn.close()

    context = ssl.create_default_context(cafile=str(certs.ca))
    assert asyncio.run(session(context)) == (((42,),), True)
    assert asyncio.run(session(None)) == (((42,),), False)


@pytest.mark.parametrize("use_tls", [True, False], ids=["tls", "plain"])
def test_mysql_connector_pure(tls_proxy: ProxyThread, certs: Certs, use_tls: bool) -> None:
    kwargs: dict[str, Any] = (
        {"ssl_ca": str(certs.ca), "ssl_verify_cert": True}
        if use_tls
        else {"ssl_disabled": True}
    )
    conn = mysql.connector.connect(
        host="127.0.0.1", port=tls_proxy.port, user="root", password="", use_pure=True,
        **kwargs,
    )
    try:
        sock = conn._socket.sock
        assert isinstance(sock, ssl.SSLSocket) is use_tls
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT ? * 2", (21,))
        assert cur.fetchall() == [(42,)]
        cur.close()
    finally:
        conn.close()


def test_big_result_through_tls(tls_proxy: ProxyThread, certs: Certs) -> None:
    """Many TLS records each way; the tracker must still count every row."""
    sql = "SELECT seq, REPEAT('x', 200) FROM seq_1_to_200000"
    with _pymysql(tls_proxy.port, ssl_ca=str(certs.ca), database="mpt") as conn:
        assert isinstance(conn._sock, ssl.SSLSocket)
        with conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(sql)
            count = total = 0
            for seq, text in cur:
                count += 1
                total += seq
                assert len(text) == 200
    assert count == 200_000 and total == 200_000 * 200_001 // 2
    assert tls_proxy.recorder.wait_for(lambda: any(e.query == sql for e in tls_proxy.events))
    event = next(e for e in tls_proxy.events if e.query == sql)
    assert event.rows_sent == 200_000


def _read_packet(sock: socket.socket | ssl.SSLSocket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    header = exactly(4)
    return header[3], exactly(header[0] | header[1] << 8 | header[2] << 16)


@pytest.mark.parametrize("use_uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_tls_handshake_in_the_same_chunk_as_the_ssl_request(
    mariadb: MariaDB, certs: Certs, use_uvloop: bool
) -> None:
    """A client may send its SSLRequest and the TLS ClientHello back to back; the proxy
    can read both in one chunk. The ClientHello must reach TLS, not be lost."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_object = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with (
        running_proxy(
            mariadb.address, tls=tls.client_tls(str(certs.proxy), None), use_uvloop=use_uvloop
        ) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock,
    ):
        _, greeting = _read_packet(sock)
        assert messages.parse_greeting(greeting).capabilities & Capability.CLIENT_SSL
        with pytest.raises(ssl.SSLWantReadError):
            tls_object.do_handshake()
        client_hello = outgoing.read()
        sock.sendall(encode_packet(1, pk.ssl_request()) + client_hello)  # one write
        while True:
            try:
                tls_object.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "the proxy closed the connection during the TLS handshake"
                incoming.write(data)
        assert tls_object.version() in ("TLSv1.2", "TLSv1.3")
        # And the login goes on inside TLS: the handshake response is packet 2, sent
        # in one write with the end of the TLS handshake (asyncio's TLS protocol then
        # hands it over before start_tls has returned).
        response = pk.handshake_response(
            pk.CLIENT_CAPABILITIES | Capability.CLIENT_SSL, user="root"
        )
        tls_object.write(encode_packet(2, response))
        sock.sendall(outgoing.read())
        plain = b""
        while len(plain) < 5:
            try:
                plain += tls_object.read(65536)
            except ssl.SSLWantReadError:
                data = sock.recv(65536)
                assert data, "the proxy closed the connection after the TLS handshake"
                incoming.write(data)
        assert plain[3] == 3 and plain[4] == 0x00  # OK, numbered as the client expects


def test_client_that_fails_its_tls_handshake_is_closed_alone(
    tls_proxy: ProxyThread, certs: Certs
) -> None:
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as sock:
        _read_packet(sock)
        sock.sendall(encode_packet(1, pk.ssl_request()) + b"this is not a ClientHello")
        assert sock.recv(1024) == b""  # closed, with no reply a TLS client could read
    assert tls_proxy.recorder.wait_for(lambda: tls_proxy.recorder.closed)
    reason = tls_proxy.recorder.closed[0][1]
    assert reason is not None and reason.startswith("TLS handshake with the client failed")
    with _pymysql(tls_proxy.port, ssl_ca=str(certs.ca)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 'still serving'")


# --- the backend leg ----------------------------------------------------------------------


def test_tls_client_gets_a_tls_backend_leg(tls_mariadb: PrivateMariaDB, certs: Certs) -> None:
    """as-client (the default): TLS to the backend exactly when the client uses TLS."""
    with running_proxy(tls_mariadb.address, tls=tls.client_tls(str(certs.proxy), None)) as proxy:
        with _pymysql(proxy.port, ssl_ca=str(certs.ca)) as conn, conn.cursor() as cur:
            assert isinstance(conn._sock, ssl.SSLSocket)
            assert _ssl_cipher(cur) != ""
        with _pymysql(proxy.port, ssl_disabled=True) as conn, conn.cursor() as cur:
            assert _ssl_cipher(cur) == ""


def test_admin_connections_table_shows_tls_per_leg(
    tls_mariadb: PrivateMariaDB, certs: Certs
) -> None:
    from mysqlproxy.admin import commands
    from mysqlproxy.admin.control import ControlPlane
    from mysqlproxy.querylog.window import QueryLog

    with (
        running_proxy(tls_mariadb.address, tls=tls.client_tls(str(certs.proxy), None)) as proxy,
        _pymysql(proxy.port, ssl_ca=str(certs.ca), user="root") as secure,
        _pymysql(proxy.port, ssl_disabled=True) as plain,
    ):
        control = ControlPlane(proxy.server, QueryLog(proxy.server.addons))
        table = proxy.call(commands.execute, control, "SELECT * FROM connections")
        assert isinstance(table, commands.ResultSet)
        rows = [dict(zip(table.columns, row, strict=True)) for row in table.rows]
        local = {secure._sock.getsockname()[1]: "secure", plain._sock.getsockname()[1]: "plain"}
        seen = {local[int(str(r["client"]).rsplit(":", 1)[1])]: r for r in rows}
        assert (seen["secure"]["client_tls"], seen["secure"]["backend_tls"]) == ("yes", "yes")
        assert (seen["plain"]["client_tls"], seen["plain"]["backend_tls"]) == ("no", "no")
        info = proxy.call(control.proxy_info)
        assert isinstance(info, dict)
        assert (info["tls"], info["backend_tls"]) == (str(certs.proxy), "as-client")


def test_tls_settings_change_at_runtime(tls_mariadb: PrivateMariaDB, certs: Certs) -> None:
    """SET require_tls and SET backend_tls through the admin command language: new
    connections follow."""
    from mysqlproxy.admin import commands
    from mysqlproxy.admin.control import ControlPlane
    from mysqlproxy.querylog.window import QueryLog

    with running_proxy(tls_mariadb.address, tls=tls.client_tls(str(certs.proxy), None)) as proxy:
        control = ControlPlane(proxy.server, QueryLog(proxy.server.addons))

        def admin(statement: str) -> object:
            return proxy.call(commands.execute, control, statement)

        with _pymysql(proxy.port, ssl_disabled=True) as conn, conn.cursor() as cur:
            assert _ssl_cipher(cur) == ""  # as-client: a plain client, a plain backend leg
        admin("SET backend_tls = 'required'")
        admin("SET require_tls = on")
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(proxy.port, ssl_disabled=True)
        assert raised.value.args[0] == ErrorCode.ER_SECURE_TRANSPORT_REQUIRED
        admin("SET require_tls = off")
        with _pymysql(proxy.port, ssl_disabled=True) as conn, conn.cursor() as cur:
            assert _ssl_cipher(cur) != ""  # required: TLS to the backend for a plain client
        with pytest.raises(commands.AdminError, match="unknown backend TLS mode"):
            admin("SET backend_tls = 'sometimes'")
        settings = {name: s.get() for name, s in control.settings.items()}
        assert (settings["backend_tls"], settings["require_tls"]) == ("required", "off")


def test_backend_tls_required_for_a_plain_client(
    tls_mariadb: PrivateMariaDB, certs: Certs
) -> None:
    """A server that requires secure transport, a client without TLS: the proxy's own
    SSLRequest, and auth-phase packets renumbered by one between the legs."""
    _as_root(tls_mariadb, "SET GLOBAL require_secure_transport = ON")
    try:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(tls_mariadb.port, ssl_disabled=True)
        # MariaDB 10.11 answers 1045 here (MySQL 3159): either way, refused.
        assert raised.value.args[0] in (1045, ErrorCode.ER_SECURE_TRANSPORT_REQUIRED)
        settings = tls.backend_tls("required")
        with running_proxy(tls_mariadb.address, backend_tls=settings) as proxy:
            with _pymysql(proxy.port, ssl_disabled=True) as conn, conn.cursor() as cur:
                assert not isinstance(conn._sock, ssl.SSLSocket)
                assert _ssl_cipher(cur) != ""
                cur.execute("SELECT 'renumbered'")
                assert cur.fetchall() == (("renumbered",),)
            assert _connector_switched(proxy.port, ssl_disabled=True) == [("switched",)]
            # A wrong password is answered as the server answers it.
            with pytest.raises(pymysql.err.OperationalError) as raised:
                _pymysql(proxy.port, ssl_disabled=True, user="nobody")
            assert raised.value.args[0] == ErrorCode.ER_ACCESS_DENIED_ERROR
    finally:
        _as_root(tls_mariadb, "SET GLOBAL require_secure_transport = OFF")


def _connector_switched(port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
    """mysql-connector answers the greeting with caching_sha2_password, which MariaDB
    does not have: the server switches it to mysql_native_password (an auth switch
    request and one more client packet, both renumbered when one leg only is TLS)."""
    conn = mysql.connector.connect(
        host="127.0.0.1", port=port, user="root", password="", use_pure=True,
        auth_plugin="caching_sha2_password", **kwargs,
    )
    try:
        cur = conn.cursor()
        cur.execute("SELECT 'switched'")
        rows: list[tuple[Any, ...]] = cur.fetchall()
        cur.close()
        return rows
    finally:
        conn.close()


def test_tls_client_plain_backend_renumbers(mariadb: MariaDB, certs: Certs) -> None:
    """TLS client, --backend-tls disabled: the client's auth-phase packets are one
    ahead of the server's."""
    with running_proxy(
        mariadb.address,
        tls=tls.client_tls(str(certs.proxy), None),
        backend_tls=tls.backend_tls("disabled"),
    ) as proxy:
        with _pymysql(proxy.port, ssl_ca=str(certs.ca)) as conn, conn.cursor() as cur:
            assert isinstance(conn._sock, ssl.SSLSocket)
            cur.execute("SELECT 'ok'")
            assert cur.fetchall() == (("ok",),)
        assert _connector_switched(proxy.port, ssl_ca=str(certs.ca)) == [("switched",)]
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(proxy.port, ssl_ca=str(certs.ca), password="wrong")
        assert raised.value.args[0] == ErrorCode.ER_ACCESS_DENIED_ERROR


@pytest.mark.parametrize("mode", ["verify-ca", "verify-identity"])
def test_backend_certificate_verified(tls_mariadb: PrivateMariaDB, certs: Certs, mode: str) -> None:
    settings = tls.backend_tls(mode, str(certs.ca))
    with (
        running_proxy(tls_mariadb.address, backend_tls=settings) as proxy,
        _pymysql(proxy.port, ssl_disabled=True) as conn,
        conn.cursor() as cur,
    ):
        assert _ssl_cipher(cur) != ""


def test_backend_verify_identity_refuses_a_certificate_for_another_host(certs: Certs) -> None:
    """A backend whose certificate chains to the CA but names db.example, reached as
    127.0.0.1: verify-ca accepts it, verify-identity refuses it with a clear ERR."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(certs.other_host))
    accounts = {"root": Account(NATIVE_PASSWORD, "")}
    with running_mysql8(accounts, default_plugin=NATIVE_PASSWORD, tls=server_context) as fake:
        verify_ca = tls.backend_tls("verify-ca", str(certs.ca))
        with running_proxy(fake.address, backend_tls=verify_ca) as proxy:
            _pymysql(proxy.port, ssl_disabled=True, connect_timeout=10).close()
        assert [(x.success, x.secure) for x in fake.logins] == [(True, True)]
        verify_identity = tls.backend_tls("verify-identity", str(certs.ca))
        with (
            running_proxy(fake.address, backend_tls=verify_identity) as proxy,
            pytest.raises(pymysql.err.OperationalError) as raised,
        ):
            _pymysql(proxy.port, ssl_disabled=True, connect_timeout=10)
        code, message = raised.value.args
        assert code == ErrorCode.ER_HANDSHAKE_ERROR
        assert "certificate verify failed" in message and "mismatch" in message
        assert str(fake.address) in message
        assert len(fake.logins) == 1  # no login over the refused leg


def test_backend_tls_mode_is_read_once_per_connection(
    tls_mariadb: PrivateMariaDB, certs: Certs
) -> None:
    """A runtime change of mode (the admin's SET backend_tls replaces backend.tls)
    between a connection's greeting and its handshake response does not mix modes in
    that connection: it keeps verifying with the CA it started with (the wrong one
    here), and the new mode applies to the next connection."""
    settings = tls.backend_tls("verify-ca", str(certs.wrong_ca))
    with (
        running_proxy(tls_mariadb.address, backend_tls=settings, connect_timeout=5) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock,
    ):
        _read_packet(sock)  # the greeting: the decision for this connection is made
        proxy.server.backend.tls = tls.backend_tls("preferred")
        sock.sendall(encode_packet(1, pk.handshake_response(user="root")))
        seq, reply = _read_packet(sock)
        assert (seq, reply[0]) == (2, 0xFF)
        err = messages.parse_err(reply)
        assert err.code == ErrorCode.ER_HANDSHAKE_ERROR
        assert "certificate verify failed" in err.message
        with _pymysql(proxy.port, ssl_disabled=True) as conn, conn.cursor() as cur:
            assert _ssl_cipher(cur) != ""  # preferred: TLS, not verified


def _broken(*args: object) -> None:
    raise RuntimeError("broken on purpose")


def test_error_after_the_client_tls_handshake_closes_the_session(
    mariadb: MariaDB, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception once start_tls has succeeded (here: the tracker refusing the TLS
    it was told of) must not leave the client waiting: ERR, and the session closed."""
    monkeypatch.setattr(ConnectionTracker, "tls_established", _broken)
    with running_proxy(mariadb.address, tls=tls.client_tls(str(certs.proxy), None)) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(proxy.port, ssl_ca=str(certs.ca), connect_timeout=5, read_timeout=5)
        code, message = raised.value.args
        assert code == ErrorCode.ER_HANDSHAKE_ERROR
        assert "internal error after the TLS handshake with the client" in message
        assert proxy.recorder.wait_for(lambda: proxy.recorder.closed)
        reason = proxy.recorder.closed[0][1]
        assert reason is not None and "RuntimeError: broken on purpose" in reason
        assert proxy.recorder.wait_for(lambda: not proxy.server.sessions)


def test_error_after_the_backend_tls_handshake_closes_the_session(
    tls_mariadb: PrivateMariaDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on the backend leg: what follows its TLS handshake raises."""
    monkeypatch.setattr(Session, "_backend_tls_established", _broken, raising=False)
    with running_proxy(
        tls_mariadb.address, backend_tls=tls.backend_tls("required"), connect_timeout=5
    ) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(proxy.port, ssl_disabled=True, connect_timeout=5, read_timeout=5)
        code, message = raised.value.args
        assert code == ErrorCode.ER_HANDSHAKE_ERROR
        assert f"internal error after the TLS handshake with backend {tls_mariadb.address}" in (
            message
        )
        assert proxy.recorder.wait_for(lambda: proxy.recorder.closed)
        assert proxy.recorder.wait_for(lambda: not proxy.server.sessions)


@pytest.mark.parametrize(
    ("mode", "warned"),
    [("as-client", True), ("preferred", True), ("required", True), ("disabled", True),
     ("verify-ca", False), ("verify-identity", False)],
)
def test_client_tls_with_an_unverified_backend_warns_at_start_up(
    certs: Certs, caplog: pytest.LogCaptureFixture, mode: str, warned: bool
) -> None:
    config = ProxyConfig(
        listen=[Address("127.0.0.1", 0)],
        backend=Address("127.0.0.1", 3306),
        client_tls=tls.client_tls(str(certs.proxy), None),
        backend_tls=tls.backend_tls(mode, str(certs.ca) if "verify" in mode else None),
    )
    with caplog.at_level("WARNING", logger="mysqlproxy.proxy.app"):
        ProxyApp(config, stdout=io.StringIO())
    warnings = [r.getMessage() for r in caplog.records if "not authenticated" in r.getMessage()]
    assert bool(warnings) == warned
    if warned:
        assert f"--backend-tls {mode}" in warnings[0] and "verify-identity" in warnings[0]
    caplog.clear()
    # Without TLS toward clients there is nothing to warn about.
    with caplog.at_level("WARNING", logger="mysqlproxy.proxy.app"):
        ProxyApp(dataclasses.replace(config, client_tls=None), stdout=io.StringIO())
    assert not any("not authenticated" in r.getMessage() for r in caplog.records)


def test_backend_with_the_wrong_ca_is_refused_with_a_clear_error(
    tls_mariadb: PrivateMariaDB, certs: Certs, mariadb_cli: str
) -> None:
    """ERR 1043 (ER_HANDSHAKE_ERROR) with CR_SSL_CONNECTION_ERROR's words: libmariadb
    shows a code of the client range (2026) from a server as "malformed packet"."""
    settings = tls.backend_tls("verify-ca", str(certs.wrong_ca))
    with running_proxy(tls_mariadb.address, backend_tls=settings, connect_timeout=5) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(proxy.port, ssl_disabled=True, connect_timeout=10)
        code, message = raised.value.args
        assert code == ErrorCode.ER_HANDSHAKE_ERROR == 1043
        assert message.startswith("SSL connection error: ")
        assert str(tls_mariadb.address) in message
        assert "certificate verify failed" in message
        assert proxy.recorder.wait_for(lambda: proxy.recorder.auth_failures)
        assert proxy.recorder.auth_failures[0][1] == 1043
        result = subprocess.run(
            [mariadb_cli, "--no-defaults", "-h127.0.0.1", f"-P{proxy.port}", "-uroot",
             "--skip-ssl", "-e", "SELECT 1"],
            capture_output=True, timeout=60, check=False,
        )
        assert result.returncode != 0
        assert "certificate verify failed" in result.stderr.decode()


@pytest.mark.parametrize("use_uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_backend_that_never_finishes_its_tls_handshake(use_uvloop: bool) -> None:
    """A server that offers TLS, then never answers the ClientHello: the client gets an
    ERR within the connect timeout, not a hang."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        conn.sendall(encode_packet(0, pk.greeting_mariadb()))  # offers CLIENT_SSL

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    backend = Address("127.0.0.1", listener.getsockname()[1])
    try:
        with running_proxy(
            backend,
            backend_tls=tls.backend_tls("required"),
            connect_timeout=1.0,
            use_uvloop=use_uvloop,
        ) as proxy:
            started = time.monotonic()
            with pytest.raises(pymysql.err.OperationalError) as raised:
                _pymysql(proxy.port, ssl_disabled=True, connect_timeout=10)
            assert time.monotonic() - started < 5
            code, message = raised.value.args
            assert code == ErrorCode.ER_HANDSHAKE_ERROR
            assert str(backend) in message and "SSL handshake" in message
    finally:
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def test_change_user_after_a_renumbered_login(mariadb: MariaDB, certs: Certs) -> None:
    """COM_CHANGE_USER starts at sequence id 0 on both legs: no renumbering after the
    login, even though the login was renumbered."""
    with running_proxy(
        mariadb.address,
        tls=tls.client_tls(str(certs.proxy), None),
        backend_tls=tls.backend_tls("disabled"),
    ) as proxy:
        conn = mysql.connector.connect(
            host="127.0.0.1", port=proxy.port, user="root", password="", use_pure=True,
            ssl_ca=str(certs.ca), ssl_verify_cert=True,
        )
        try:
            assert isinstance(conn._socket.sock, ssl.SSLSocket)
            conn.cmd_change_user(username="root", password="", database="mpt")
            cur = conn.cursor()
            cur.execute("SELECT DATABASE()")
            assert cur.fetchall() == [("mpt",)]
            cur.close()
        finally:
            conn.close()


def test_backend_tls_required_but_not_offered(mariadb: MariaDB) -> None:
    with running_proxy(mariadb.address, backend_tls=tls.backend_tls("required")) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(proxy.port, ssl_disabled=True)
        code, message = raised.value.args
        assert code == ErrorCode.ER_HANDSHAKE_ERROR
        assert "does not offer TLS" in message and str(mariadb.address) in message


def test_backend_client_certificate(tls_mariadb: PrivateMariaDB, certs: Certs) -> None:
    """A user that REQUIRE X509: the proxy presents --backend-cert."""
    with_cert = tls.backend_tls(
        "verify-ca", str(certs.ca), str(certs.client_cert), str(certs.client_key)
    )
    with (
        running_proxy(tls_mariadb.address, backend_tls=with_cert) as proxy,
        _pymysql(proxy.port, ssl_disabled=True, user="x509") as conn,
        conn.cursor() as cur,
    ):
        assert _ssl_cipher(cur) != ""
    with running_proxy(tls_mariadb.address, backend_tls=tls.backend_tls("required")) as proxy:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(proxy.port, ssl_disabled=True, user="x509")
        assert raised.value.args[0] == ErrorCode.ER_ACCESS_DENIED_ERROR


def test_mariadb_cli_both_legs_tls(
    tls_mariadb: PrivateMariaDB, certs: Certs, mariadb_cli: str
) -> None:
    settings = tls.backend_tls("verify-identity", str(certs.ca))
    with running_proxy(
        tls_mariadb.address, tls=tls.client_tls(str(certs.proxy), None), backend_tls=settings
    ) as proxy:
        result = subprocess.run(
            [mariadb_cli, "--no-defaults", "-h127.0.0.1", f"-P{proxy.port}", "-uroot",
             "--ssl", "--ssl-verify-server-cert", f"--ssl-ca={certs.ca}", "--batch",
             "-e", "status; SHOW SESSION STATUS LIKE 'Ssl_version'"],
            capture_output=True, timeout=60, check=False,
        )
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        assert "Cipher in use is" in out  # the client leg
        assert "Ssl_version\tTLSv1." in out  # the backend leg, as the server sees it


# --- `mysqlproxy run` -------------------------------------------------------------------


def test_run_with_a_self_signed_certificate_logs_queries_over_tls(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    """The command as an operator runs it: --tls-self-signed --require-tls, with a
    logging window open from the start; the window sees the TLS client's queries."""
    log_file = tmp_path / "tls.log"
    args = ["--admin", "off", "--tls-self-signed", "--require-tls",
            "--log-for", "5m", "--to", str(log_file), "--format", "text"]
    with ProxyProcess(mariadb.address, extra_args=args) as proxy:
        # No CA can vouch for a throw-away certificate: encrypt without verifying.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with _pymysql(proxy.port, ssl=context) as conn, conn.cursor() as cur:
            assert isinstance(conn._sock, ssl.SSLSocket)
            peer = conn._sock.getpeercert(binary_form=True)
            cur.execute("SELECT 'logged over tls'")
            assert cur.fetchall() == (("logged over tls",),)
        with pytest.raises(pymysql.err.OperationalError) as raised:
            _pymysql(proxy.port, ssl_disabled=True)
        assert raised.value.args[0] == 3159
    assert peer  # the proxy presented a certificate
    assert "SELECT 'logged over tls'" in log_file.read_text()


def test_run_refuses_unusable_tls_options(mariadb: MariaDB, tmp_path: Path) -> None:
    import subprocess
    import sys

    missing = tmp_path / "missing.pem"
    for args, words in [
        (["--tls-cert", str(missing)], "cannot load the certificate"),
        (["--require-tls"], "--require-tls needs"),
        (["--backend-tls", "verify-ca", "--backend-ca", str(missing)], "cannot load the CA"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "mysqlproxy.cli", "run", "--admin", "off",
             "--backend", str(mariadb.address), "--listen", "127.0.0.1:0", *args],
            capture_output=True, timeout=60, check=False,
        )
        assert result.returncode != 0
        assert words in result.stderr.decode(), result.stderr.decode()


def test_mariadb_cli_tls_and_compression(
    tls_mariadb: PrivateMariaDB, certs: Certs, mariadb_cli: str
) -> None:
    """Compressed framing inside TLS, on both legs."""
    assert not MASKED_CAPABILITIES & Capability.CLIENT_COMPRESS  # the relay handles it
    with running_proxy(tls_mariadb.address, tls=tls.client_tls(str(certs.proxy), None)) as proxy:
        result = subprocess.run(
            [mariadb_cli, "--no-defaults", "-h127.0.0.1", f"-P{proxy.port}", "-uroot",
             "--ssl", "--ssl-verify-server-cert", f"--ssl-ca={certs.ca}", "--compress",
             "--batch", "-e",
             "status; SHOW SESSION STATUS WHERE Variable_name IN ('Compression', 'Ssl_cipher');"
             " SELECT COUNT(*) FROM information_schema.columns"],
            capture_output=True, timeout=60, check=False,
        )
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        assert "Cipher in use is" in out and "Compressed" in out  # the client leg
        assert "Compression\tON" in out and "Ssl_cipher\tTLS" in out  # the backend leg
