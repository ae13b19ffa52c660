"""MySQL 8.0.23+ query attributes (CLIENT_QUERY_ATTRIBUTES) through the proxy.

MariaDB has no query attributes and no MySQL 8 server can be installed here, so the
server is the fake MySQL 8 (mysqlproxy.testing.mysql8.FakeMySQL8, built on the project's
own protocol module): it offers the capability, reads the attributes and the text of
each COM_QUERY and answers prepared statements. The client is real:
mysql-connector-python in its pure-Python mode (`cursor.add_attribute`); PyMySQL and
asyncmy do not ask for the capability, and keep working with a server that offers it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import asyncmy
import mysql.connector
import pymysql
import pytest

from mysqlproxy.protocol.auth import NATIVE_PASSWORD
from mysqlproxy.protocol.constants import Capability, Command, FieldType
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing import packets as pk
from mysqlproxy.testing.fakeserver import ReceivedCommand, Reply, ResultSet
from mysqlproxy.testing.mysql8 import Account, FakeMySQL8, running_mysql8
from mysqlproxy.testing.proxythread import ProxyThread

QA = Capability.CLIENT_QUERY_ATTRIBUTES
PASSWORD = "qa-secret"
STATEMENT_ID = 11
LONG_COLUMN = [pk.Column("v", FieldType.MYSQL_TYPE_LONGLONG)]
_markers = itertools.count()


def _script(command: ReceivedCommand) -> Reply | None:
    """Echo a marker query's text; prepare `SELECT ?` and answer its executes with one
    row; COM_STMT_RESET gets OK, COM_STMT_CLOSE no answer."""
    deprecate_eof = command.deprecate_eof
    query = command.query
    if query is not None and query.startswith("SELECT 'marker"):
        return ResultSet(["v"], [[query[8:-1].encode()]])
    if command.command == Command.COM_STMT_PREPARE:
        return pk.prepare_response(STATEMENT_ID, ["?"], LONG_COLUMN, deprecate_eof=deprecate_eof)
    if command.command == Command.COM_STMT_EXECUTE:
        return pk.binary_result_set(LONG_COLUMN, [[42]], deprecate_eof=deprecate_eof)
    if command.command == Command.COM_STMT_RESET:
        return pk.ok()
    if command.command == Command.COM_STMT_CLOSE:
        return []
    return None


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeMySQL8, ProxyThread]]:
    with running_mysql8(
        {"app": Account(NATIVE_PASSWORD, PASSWORD)}, _script, default_plugin=NATIVE_PASSWORD
    ) as fake:
        proxy = ProxyThread(fake.address)
        proxy.start()
        try:
            yield fake, proxy
        finally:
            proxy.stop()


@pytest.fixture
def fake(servers: tuple[FakeMySQL8, ProxyThread]) -> FakeMySQL8:
    servers[1].recorder.clear()
    return servers[0]


@pytest.fixture
def proxy(servers: tuple[FakeMySQL8, ProxyThread]) -> ProxyThread:
    return servers[1]


def connector(address: Address) -> Any:
    return mysql.connector.connect(
        host=address.host,
        port=address.port,
        user="app",
        password=PASSWORD,
        use_pure=True,
        ssl_disabled=True,
        connection_timeout=5,
    )


def event_for(proxy: ProxyThread, query: str, command: int = Command.COM_QUERY) -> QueryEvent:
    recorder = proxy.recorder

    def found() -> list[QueryEvent]:
        return [e for e in recorder.queries if e.query == query and e.command == command]

    assert recorder.wait_for(found, 5), [e.query for e in recorder.queries]
    (event,) = found()
    return event


def last_command(fake: FakeMySQL8, code: int) -> ReceivedCommand:
    return [c for conn in fake.connections for c in conn.commands if c.command == code][-1]


def test_connector_text_query_attributes(fake: FakeMySQL8, proxy: ProxyThread) -> None:
    attributes = (("trace", "t-1"), ("n", 7), ("ratio", 0.5))
    sent = []
    for address in (proxy.address, fake.address):
        conn = connector(address)
        try:
            cursor = conn.cursor()
            marker = f"marker-{next(_markers)}"
            for name, value in attributes:
                cursor.add_attribute(name, value)
            cursor.execute(f"SELECT '{marker}'")
            assert cursor.fetchall() == [(marker,)]
            received = last_command(fake, Command.COM_QUERY)
            assert received.capabilities & QA  # negotiated through the proxy too
            assert received.query == f"SELECT '{marker}'"
            assert received.query_attributes == attributes
            sent.append(received.payload.replace(marker.encode(), b"M"))
            if address == proxy.address:
                event = event_for(proxy, f"SELECT '{marker}'")
                assert event.query_attributes == attributes
                assert (event.rows_sent, event.error_code) == (1, 0)
            # Without attributes: the two counts still come first; no attributes logged.
            cursor.clear_attributes()
            marker = f"marker-{next(_markers)}"
            cursor.execute(f"SELECT '{marker}'")
            assert cursor.fetchall() == [(marker,)]
            assert last_command(fake, Command.COM_QUERY).payload[:3] == b"\x03\x00\x01"
            if address == proxy.address:
                event = event_for(proxy, f"SELECT '{marker}'")
                assert event.query_attributes is None
        finally:
            conn.close()
    # The proxy relays the command as the client wrote it.
    assert sent[0] == sent[1]


def test_connector_prepared_statement_attributes(fake: FakeMySQL8, proxy: ProxyThread) -> None:
    conn = connector(proxy.address)
    try:
        cursor = conn.cursor(prepared=True)
        cursor.add_attribute("trace", "t-2")
        cursor.add_attribute("n", 3)
        cursor.execute("SELECT ?", (5,))
        assert cursor.fetchall() == [(42,)]
        execute = last_command(fake, Command.COM_STMT_EXECUTE)
        assert execute.payload[5] & 8  # PARAMETER_COUNT_AVAILABLE
        event = event_for(proxy, "SELECT ?", Command.COM_STMT_EXECUTE)
        assert event.params == (5,)
        assert event.query_attributes == (("trace", "t-2"), ("n", 3))
        assert event.statement_id == STATEMENT_ID
    finally:
        conn.close()


def _pymysql_query(address: Address, sql: str) -> Any:
    conn = pymysql.connect(
        host=address.host, port=address.port, user="app", password=PASSWORD, connect_timeout=5
    )
    with conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def _asyncmy_query(address: Address, sql: str) -> Any:
    async def run() -> Any:
        conn = await asyncmy.connect(
            host=address.host, port=address.port, user="app", password=PASSWORD, connect_timeout=5
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql)
                return (await cur.fetchone())[0]
        finally:
            conn.close()

    return asyncio.run(run())


@pytest.mark.parametrize("client", ["pymysql", "asyncmy"])
def test_clients_without_query_attributes(
    client: str, fake: FakeMySQL8, proxy: ProxyThread
) -> None:
    """PyMySQL 1.x and asyncmy 0.2 do not ask for the capability the server offers:
    plain COM_QUERY, same text."""
    marker = f"marker-{next(_markers)}"
    run = _pymysql_query if client == "pymysql" else _asyncmy_query
    value = run(proxy.address, f"SELECT '{marker}'")
    assert (value.decode() if isinstance(value, bytes) else value) == marker
    received = last_command(fake, Command.COM_QUERY)
    assert fake.greeting.capabilities & QA
    assert not received.capabilities & QA
    assert received.payload == b"\x03" + f"SELECT '{marker}'".encode()
    assert event_for(proxy, f"SELECT '{marker}'").query_attributes is None
