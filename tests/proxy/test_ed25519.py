"""MariaDB's ed25519 authentication through the proxy, against the private MariaDB.

The users are created with `IDENTIFIED VIA ed25519` (the auth_ed25519 plugin that
MariaDB ships). The server greets with mysql_native_password, so every client ends up
in an auth switch to client_ed25519, which sends a 32-byte nonce for the client to
sign. The proxy passes all of it through unread; these tests show it does, with the
mariadb command-line client, PyMySQL (with PyNaCl) and asyncmy, compare each outcome
with a direct connection, and follow the user and schema the tracker records across
COM_CHANGE_USER (no client library here can change user to an ed25519 account, so a
small blocking client built on mysqlproxy.protocol does it; it signs with PyMySQL's
ed25519 function).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import asyncmy
import asyncmy.errors
import mysql.connector
import pymysql
import pytest
from pymysql import _auth as pymysql_auth

from mysqlproxy.protocol import auth, messages, wire
from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.protocol.packets import Packet, PacketBuffer, encode_packet
from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing import packets as pk
from mysqlproxy.testing.proxythread import ProxyThread
from tests.conftest import MariaDB, run_cli

ED_USER = "ed_user"
ED_PASSWORD = "ed-Secret-1"
NATIVE_USER = "ed_native"
NATIVE_PASSWORD = "native-Secret-2"
SCHEMAS = ("mpt", "mpt_ed")
ER_ACCESS_DENIED = 1045


@pytest.fixture(scope="module")
def accounts(mariadb: MariaDB) -> Iterator[MariaDB]:
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.plugins "
            "WHERE plugin_name = 'ed25519' AND plugin_status = 'ACTIVE'"
        )
        if not cur.fetchone()[0]:
            cur.execute("INSTALL SONAME 'auth_ed25519'")
        cur.execute("CREATE DATABASE IF NOT EXISTS mpt_ed")
        for user in (ED_USER, NATIVE_USER):
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        cur.execute(
            f"CREATE USER '{ED_USER}'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('{ED_PASSWORD}')"
        )
        cur.execute(f"CREATE USER '{NATIVE_USER}'@'%' IDENTIFIED BY '{NATIVE_PASSWORD}'")
        for user in (ED_USER, NATIVE_USER):
            for schema in SCHEMAS:
                cur.execute(f"GRANT ALL ON {schema}.* TO '{user}'@'%'")
    yield mariadb
    with mariadb.connect() as conn, conn.cursor() as cur:
        for user in (ED_USER, NATIVE_USER):
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def _both(proxy: ProxyThread, mariadb: MariaDB) -> tuple[Address, Address]:
    return proxy.address, mariadb.address


def _query_event(proxy: ProxyThread, sql: str) -> QueryEvent:
    recorder = proxy.recorder

    def found() -> list[QueryEvent]:
        return [e for e in recorder.queries if e.query == sql]

    assert recorder.wait_for(found, 5), [e.query for e in recorder.queries]
    return found()[-1]


# --- the mariadb command-line client -------------------------------------------------


@pytest.mark.parametrize("default_auth", [None, "client_ed25519"], ids=["switch", "ed25519"])
def test_mariadb_cli_login(
    accounts: MariaDB, proxy: ProxyThread, mariadb_cli: str, default_auth: str | None
) -> None:
    """With the default plugin the client answers the greeting with a native scramble
    and the server switches it to client_ed25519; with --default-auth=client_ed25519 it
    answers with that plugin's name, and the server still sends its 32-byte nonce in
    an AuthSwitchRequest (the greeting's 20 bytes are not enough)."""
    extra = [f"-u{ED_USER}", f"-p{ED_PASSWORD}"]
    if default_auth:
        extra.append(f"--default-auth={default_auth}")
    sql = "SELECT CURRENT_USER(), DATABASE(), 'cli-marker';\n"
    outputs = []
    for address in _both(proxy, accounts):
        done = run_cli(mariadb_cli, address.port, sql, *extra, database="mpt_ed")
        assert done.returncode == 0, done.stderr.decode()
        outputs.append(done.stdout.decode())
    assert outputs[0] == outputs[1]
    assert outputs[0].splitlines()[-1] == f"{ED_USER}@%\tmpt_ed\tcli-marker"
    event = _query_event(proxy, sql.strip().rstrip(";"))
    assert (event.user, event.schema, event.error_code) == (ED_USER, "mpt_ed", 0)
    assert [c.user for c in proxy.recorder.opened] == [ED_USER]


def test_mariadb_cli_wrong_password(
    accounts: MariaDB, proxy: ProxyThread, mariadb_cli: str
) -> None:
    outcomes = []
    for address in _both(proxy, accounts):
        done = run_cli(mariadb_cli, address.port, "SELECT 1", f"-u{ED_USER}", "-pwrong")
        outcomes.append((done.returncode, done.stderr.decode()))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] != 0 and "ERROR 1045 (28000)" in outcomes[0][1]


# --- client libraries ------------------------------------------------------------------


def _login(client: str, address: Address, user: str, password: str) -> tuple[Any, ...]:
    """Log in and ask who we are; returns (user, schema) or ("error", code, message)."""
    sql = "SELECT CURRENT_USER(), DATABASE()"
    if client == "pymysql":
        try:
            conn = pymysql.connect(
                host=address.host, port=address.port, user=user, password=password,
                database="mpt", connect_timeout=5,
            )
        except pymysql.err.OperationalError as e:
            return ("error", e.args[0], e.args[1])
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return tuple(cur.fetchone())

    async def run() -> tuple[Any, ...]:
        try:
            aconn = await asyncmy.connect(
                host=address.host, port=address.port, user=user, password=password,
                database="mpt", connect_timeout=5,
            )
        except asyncmy.errors.OperationalError as e:
            return ("error", e.args[0], e.args[1])
        try:
            async with aconn.cursor() as cur:
                await cur.execute(sql)
                return tuple(await cur.fetchone())
        finally:
            aconn.close()

    assert client == "asyncmy"
    return asyncio.run(run())


@pytest.mark.parametrize("client", ["pymysql", "asyncmy"])
def test_library_login(client: str, accounts: MariaDB, proxy: ProxyThread) -> None:
    via_proxy, direct = (_login(client, a, ED_USER, ED_PASSWORD) for a in _both(proxy, accounts))
    assert via_proxy == direct == (f"{ED_USER}@%", "mpt")
    event = _query_event(proxy, "SELECT CURRENT_USER(), DATABASE()")
    assert (event.user, event.schema) == (ED_USER, "mpt")


@pytest.mark.parametrize("client", ["pymysql", "asyncmy"])
def test_library_wrong_password(client: str, accounts: MariaDB, proxy: ProxyThread) -> None:
    via_proxy, direct = (_login(client, a, ED_USER, "wrong") for a in _both(proxy, accounts))
    assert via_proxy == direct
    assert via_proxy[:2] == ("error", ER_ACCESS_DENIED)
    recorder = proxy.recorder
    assert recorder.wait_for(lambda: recorder.auth_failures, 5)
    ((info, code, message),) = recorder.auth_failures
    assert (info.user, code, message) == (ED_USER, ER_ACCESS_DENIED, via_proxy[2])
    assert not recorder.opened


def test_mysql_connector_has_no_client_ed25519(accounts: MariaDB, proxy: ProxyThread) -> None:
    """mysql-connector-python has no client_ed25519 plugin: it gives up at the auth
    switch, the same way through the proxy as directly."""
    errors = []
    for address in _both(proxy, accounts):
        with pytest.raises(mysql.connector.Error) as refused:
            mysql.connector.connect(
                host=address.host, port=address.port, user=ED_USER, password=ED_PASSWORD,
                use_pure=True, ssl_disabled=True, connection_timeout=5,
            )
        errors.append(str(refused.value))
    assert errors[0] == errors[1]
    assert "client_ed25519" in errors[0]


# --- COM_CHANGE_USER with a raw client -----------------------------------------------


class RawClient:
    """A blocking client on mysqlproxy.protocol: native password at login, the plugin
    the server switches to (native or client_ed25519) afterwards."""

    def __init__(self, address: Address) -> None:
        self.sock = socket.create_connection((address.host, address.port), timeout=10)
        self.packets = PacketBuffer()

    def close(self) -> None:
        self.sock.close()

    def _read(self) -> Packet:
        while True:
            for packet in self.packets:
                return packet
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.packets.feed(data)

    def _send(self, seq: int, payload: bytes) -> None:
        self.sock.sendall(encode_packet(seq, payload))

    def _authenticate(self, password: str) -> tuple[str, Any]:
        """Answer auth switches until OK or ERR: ("ok", None) or ("error", (code, msg))."""
        while True:
            packet = self._read()
            first = packet.payload[0]
            if first == 0x00:
                return "ok", None
            if first == 0xFF:
                err = messages.parse_err(packet.payload)
                return "error", (err.code, err.message)
            assert first == 0xFE, packet.payload
            plugin, pos = wire.read_nul_bytes(packet.payload, 1)
            data = packet.payload[pos:]
            if plugin == b"client_ed25519":
                answer = pymysql_auth.ed25519_password(password.encode(), data)
            else:
                assert plugin == b"mysql_native_password", plugin
                answer = auth.native_password_scramble(password.encode(), data.rstrip(b"\0"))
            self._send(packet.sequence_id + 1, answer)

    def login(self, user: str, password: str, database: str | None) -> tuple[str, Any]:
        greeting = messages.parse_greeting(self._read().payload)
        scramble = auth.native_password_scramble(password.encode(), greeting.auth_data[:20])
        response = pk.handshake_response(pk.CLIENT_CAPABILITIES, user, scramble, database)
        self._send(1, response)
        return self._authenticate(password)

    def change_user(self, user: str, password: str, database: str = "") -> tuple[str, Any]:
        # The native scramble is for the greeting's nonce: the server switches anyway
        # to the user's plugin (a fresh nonce), as the C client's change_user does.
        self._send(0, pk.com_change_user(user, b"\x01" * 20, database))
        return self._authenticate(password)

    def query(self, sql: str) -> list[tuple[bytes | None, ...]] | tuple[int, str]:
        """Rows of a text result (no DEPRECATE_EOF; none for an OK), or (code, message)
        of an ERR."""
        self._send(0, pk.com_query(sql))
        first = self._read().payload
        if first[0] == 0xFF:
            err = messages.parse_err(first)
            return err.code, err.message
        if first[0] == 0x00:  # OK: no result set
            return []
        count, _ = wire.read_lenenc_int(first, 0)
        for _ in range(count + 1):  # column definitions and EOF
            self._read()
        rows: list[tuple[bytes | None, ...]] = []
        while True:
            payload = self._read().payload
            if payload[0] == 0xFE and len(payload) < 9:
                return rows
            values: list[bytes | None] = []
            pos = 0
            while pos < len(payload):
                if payload[pos] == 0xFB:
                    values.append(None)
                    pos += 1
                else:
                    value, pos = wire.read_lenenc_bytes(payload, pos)
                    values.append(value)
            rows.append(tuple(values))


WHO = "SELECT CURRENT_USER(), DATABASE()"


def _mixed_run(address: Address) -> list[Any]:
    """Log in natively, change user to ed25519 (and back), USE, a wrong password."""
    client = RawClient(address)
    try:
        outcomes: list[Any] = [client.login(NATIVE_USER, NATIVE_PASSWORD, "mpt"), client.query(WHO)]
        outcomes += [client.change_user(ED_USER, ED_PASSWORD, "mpt_ed"), client.query(WHO)]
        outcomes += [client.query("USE mpt"), client.query(WHO)]
        outcomes += [client.change_user(NATIVE_USER, NATIVE_PASSWORD), client.query(WHO)]
        outcomes += [client.change_user(ED_USER, ED_PASSWORD), client.query(WHO)]
        outcomes.append(client.change_user(ED_USER, "wrong", "mpt"))
        try:
            outcomes.append(client.query(WHO))
        except ConnectionError as e:
            outcomes.append(str(e))
        return outcomes
    finally:
        client.close()


def test_change_user_to_ed25519_and_back(accounts: MariaDB, proxy: ProxyThread) -> None:
    via_proxy, direct = (_mixed_run(a) for a in _both(proxy, accounts))
    assert via_proxy == direct
    ed, native = f"{ED_USER}@%".encode(), f"{NATIVE_USER}@%".encode()
    assert via_proxy[:10] == [
        ("ok", None), [(native, b"mpt")],
        ("ok", None), [(ed, b"mpt_ed")],
        [], [(ed, b"mpt")],
        ("ok", None), [(native, None)],
        ("ok", None), [(ed, None)],
    ]
    # A refused change: MariaDB keeps the session as it was (user, no schema).
    assert via_proxy[10] == (
        "error",
        (ER_ACCESS_DENIED, f"Access denied for user '{ED_USER}'@'127.0.0.1' (using password: YES)"),
    )
    assert via_proxy[11] == [(ed, None)]
    # What the tracker recorded, command by command: the user and schema each ran with.
    recorder = proxy.recorder
    assert recorder.wait_for(lambda: len(recorder.queries) >= 11, 5)
    seen = [(Command.name_of(e.command), e.query, e.user, e.schema, e.error_code)
            for e in recorder.queries]
    assert seen == [
        ("COM_QUERY", WHO, NATIVE_USER, "mpt", 0),
        ("COM_CHANGE_USER", ED_USER, NATIVE_USER, "mpt", 0),
        ("COM_QUERY", WHO, ED_USER, "mpt_ed", 0),
        ("COM_QUERY", "USE mpt", ED_USER, "mpt_ed", 0),
        ("COM_QUERY", WHO, ED_USER, "mpt", 0),
        ("COM_CHANGE_USER", NATIVE_USER, ED_USER, "mpt", 0),
        ("COM_QUERY", WHO, NATIVE_USER, None, 0),
        ("COM_CHANGE_USER", ED_USER, NATIVE_USER, None, 0),
        ("COM_QUERY", WHO, ED_USER, None, 0),
        ("COM_CHANGE_USER", ED_USER, ED_USER, None, ER_ACCESS_DENIED),
        ("COM_QUERY", WHO, ED_USER, None, 0),
    ]
    assert [c.user for c in recorder.opened] == [NATIVE_USER]
    assert [code for _, code, _ in recorder.auth_failures] == [ER_ACCESS_DENIED]


def test_the_accounts_really_use_ed25519(accounts: MariaDB) -> None:
    """Not a test of the proxy: the set-up made what the other tests assume."""
    with accounts.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT user, plugin FROM mysql.user WHERE user IN (%s, %s) ORDER BY user",
            (ED_USER, NATIVE_USER),
        )
        assert cur.fetchall() == ((NATIVE_USER, "mysql_native_password"), (ED_USER, "ed25519"))
