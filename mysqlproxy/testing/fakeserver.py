"""A scriptable fake MySQL server, built on the project's own protocol module.

Tests use it wherever a real MariaDB cannot show the behaviour wanted: a server that
sends malformed or truncated packets, dies in the middle of a result, never sends its
greeting, asks for an auth switch, or speaks like MySQL 8.

    script = {
        "SELECT 1": ResultSet(["1"], [[b"1"]]),
        "SELECT broken": [Raw(b"\\x01\\x00\\x00\\x07\\x01"), Close()],
        "SELECT forever": Stall(),
    }
    with running_fake_server(script) as fake:
        pymysql.connect(host="127.0.0.1", port=fake.address.port, user="any")

How a conversation goes:

1. On accept the server sends its greeting (`greeting`, or `greeting_payload` bytes as
   they are), unless `on_accept` says what to do instead: `Stall()` never greets,
   `Close()` hangs up, `[Raw(b"\\x4a\\x00"), Close()]` sends half a header first.
2. Every client packet of the connection phase is answered by the next entry of
   `login` (default: one OK, so any user and password is accepted). An auth switch is
   `login=[auth_switch_request("mysql_native_password", scramble), ok()]`.
3. Each command is answered from `script`: a mapping from COM_QUERY text to a reply,
   or a callable taking the ReceivedCommand and returning a reply (None: the default
   answer). Unscripted commands get `default_reply`: COM_QUIT closes, COM_PING,
   COM_INIT_DB, COM_RESET_CONNECTION and `SET ...` queries get OK, anything else ERR.

A reply is one action or a sequence of them:

- `bytes`: one packet payload, framed with the next sequence id of the exchange;
- `Raw(data)`: bytes sent exactly as given, without framing (malformed input);
- `ResultSet(columns, rows)`: a text result set, with or without EOF packets as the
  client negotiated (CLIENT_DEPRECATE_EOF);
- `Close()`: close the connection now (`Close(abort=True)`: reset it);
- `Stall(seconds)`: send nothing for that long (None: until the client goes).

Everything the server saw is kept on `connections` for the test to inspect. The fake
server creates its tasks through asyncio's own server machinery, not through
mysqlproxy.proxy.tasks.spawn, so it never shows up in the proxy's task-leak counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mysqlproxy.protocol import messages, wire
from mysqlproxy.protocol.constants import (
    MASKED_CAPABILITIES,
    Capability,
    Command,
    FieldType,
    ServerStatus,
)
from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.messages import (
    Greeting,
    HandshakeResponse,
    encode_column_definition,
    encode_eof,
    encode_err,
    encode_ok,
    encode_text_row,
)
from mysqlproxy.protocol.packets import PacketBuffer, encode_packet
from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.loopthread import running_on_loop_thread
from mysqlproxy.testing.packets import MYSQL_SERVER_CAPABILITIES

# What a MySQL 8.0 server offers, less what the proxy masks anyway (TLS, compression...):
# leaving those out keeps the fake server honest about what it can do. Query attributes
# are offered (ReceivedCommand reads them). (REMEMBER_OPTIONS is a client-side flag.)
DEFAULT_CAPABILITIES = Capability(
    int(MYSQL_SERVER_CAPABILITIES)
    # The fake server does not speak the compressed protocol either.
    & ~int(MASKED_CAPABILITIES | Capability.CLIENT_COMPRESS | Capability.CLIENT_REMEMBER_OPTIONS)
)
DEFAULT_SERVER_VERSION = "8.0.36-fake"
_UTF8MB4_GENERAL_CI = 45
_READ_SIZE = 64 * 1024
# Result sets are written in batches of about this size, each followed by drain(), so
# a fake server streaming a big result respects the proxy's backpressure.
_WRITE_BATCH = 64 * 1024


# --- replies ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes written exactly as given: no framing, no sequence id bookkeeping."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection now. With abort=True the peer sees a reset (RST)."""

    abort: bool = False


@dataclass(frozen=True, slots=True)
class Stall:
    """Send nothing for `seconds`, or (None) until the client closes the connection."""

    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ResultSet:
    """A text-protocol result set. Columns are names (VAR_STRING columns) or column
    definition payloads (bytes, see messages.encode_column_definition). Rows are lists
    of values (bytes, or None for NULL); an iterator is consumed by the first reply, so
    a generator can stream a result far larger than memory."""

    columns: Sequence[str | bytes]
    rows: Iterable[Sequence[bytes | None]] = ()
    status: ServerStatus = ServerStatus.SERVER_STATUS_AUTOCOMMIT


Action = bytes | Raw | Close | Stall | ResultSet
Reply = Action | Sequence[Action]


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    """A command packet the fake server received (the first packet of a command)."""

    connection_id: int
    sequence_id: int
    payload: bytes
    capabilities: Capability  # negotiated: what both sides offered

    @property
    def command(self) -> int:
        return self.payload[0] if self.payload else -1

    @property
    def query(self) -> str | None:
        """The statement text of a COM_QUERY, else None."""
        if self.command != Command.COM_QUERY:
            return None
        return self._query_request().sql.decode("utf-8", "replace")

    @property
    def query_attributes(self) -> messages.QueryAttributes:
        """The query attributes a COM_QUERY carried (CLIENT_QUERY_ATTRIBUTES)."""
        if self.command != Command.COM_QUERY:
            return ()
        return self._query_request().attributes

    def _query_request(self) -> messages.QueryRequest:
        attributes = bool(self.capabilities & Capability.CLIENT_QUERY_ATTRIBUTES)
        return messages.parse_query(self.payload, attributes)

    @property
    def deprecate_eof(self) -> bool:
        return bool(self.capabilities & Capability.CLIENT_DEPRECATE_EOF)


Script = Mapping[str, Reply] | Callable[[ReceivedCommand], Reply | None]


@dataclass(slots=True)
class FakeConnection:
    """What one client connection did, for the test to inspect."""

    connection_id: int
    peer: str
    handshake: HandshakeResponse | None = None
    auth_packets: list[bytes] = field(default_factory=list)  # after the handshake response
    commands: list[ReceivedCommand] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)  # every byte read, as read
    closed: bool = False
    closed_by_client: bool = False  # the client went away (EOF or reset) first


# --- packet builders ----------------------------------------------------------------


def ok(
    affected_rows: int = 0,
    last_insert_id: int = 0,
    status: ServerStatus = ServerStatus.SERVER_STATUS_AUTOCOMMIT,
    warnings: int = 0,
) -> bytes:
    """An OK packet payload."""
    return encode_ok(affected_rows, last_insert_id, status, warnings)


def err(code: int = 1064, message: str = "fake error", sql_state: str = "42000") -> bytes:
    """An ERR packet payload."""
    return encode_err(code, message, sql_state)


def auth_switch_request(plugin: str, data: bytes) -> bytes:
    """An AuthSwitchRequest payload (0xFE, plugin name, plugin data)."""
    return b"\xfe" + plugin.encode("ascii") + b"\x00" + data + b"\x00"


def auth_more_data(data: bytes) -> bytes:
    """An AuthMoreData payload (0x01 and plugin specific data)."""
    return b"\x01" + data


def make_greeting(
    capabilities: Capability = DEFAULT_CAPABILITIES,
    auth_plugin: str = "mysql_native_password",
    server_version: str = DEFAULT_SERVER_VERSION,
    thread_id: int = 1,
    status: ServerStatus = ServerStatus.SERVER_STATUS_AUTOCOMMIT,
    auth_data: bytes | None = None,
) -> Greeting:
    """A HandshakeV10 greeting. The scramble is random unless given (20 bytes, no NULs)."""
    if auth_data is None:
        auth_data = bytes(b % 94 + 33 for b in os.urandom(20))
    return Greeting(
        server_version=server_version,
        thread_id=thread_id,
        auth_data=auth_data,
        capabilities=capabilities,
        charset=_UTF8MB4_GENERAL_CI,
        status=status,
        auth_plugin=auth_plugin,
    )


def result_set_payloads(result: ResultSet, deprecate_eof: bool) -> Iterator[bytes]:
    """The payloads of a text result set, in order."""
    yield wire.lenenc_int(len(result.columns))
    for column in result.columns:
        if isinstance(column, bytes):
            yield column
        else:
            yield encode_column_definition(column, FieldType.MYSQL_TYPE_VAR_STRING)
    if not deprecate_eof:
        yield encode_eof(result.status)
    for row in result.rows:
        yield encode_text_row(list(row))
    if deprecate_eof:
        yield encode_ok(status=result.status, header=0xFE)
    else:
        yield encode_eof(result.status)


# --- the server ---------------------------------------------------------------------


class _ConnectionClosed(Exception):
    """The script closed the connection, or the client went away."""


class FakeServer:
    """The fake server. Use `running_fake_server` from blocking tests; from async code,
    `await start()` and `await close()`."""

    def __init__(
        self,
        script: Script | None = None,
        *,
        greeting: Greeting | None = None,
        greeting_payload: bytes | None = None,
        on_accept: Reply | None = None,
        login: Sequence[Reply] | None = None,
        listen: Address | None = None,
    ) -> None:
        self.script: Script = script if script is not None else {}
        self.greeting = greeting or make_greeting()
        self.greeting_payload = greeting_payload
        self.on_accept = on_accept
        self.login: Sequence[Reply] = login if login is not None else [ok()]
        self.listen = listen or Address("127.0.0.1", 0)
        self.address = self.listen  # the bound address once started
        self.connections: list[FakeConnection] = []
        self._ids = itertools.count(1)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # --- lifecycle --------------------------------------------------------------

    async def start(self) -> Address:
        if self.listen.unix_path is not None:
            self._server = await asyncio.start_unix_server(self._serve, self.listen.unix_path)
        else:
            self._server = await asyncio.start_server(
                self._serve, self.listen.host, self.listen.port
            )
            port = self._server.sockets[0].getsockname()[1]
            self.address = Address(self.listen.host, port)
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        if self.listen.unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.listen.unix_path)

    @property
    def open_connections(self) -> int:
        """Connections not yet closed (by either side)."""
        return sum(1 for c in self.connections if not c.closed)

    # --- one connection ---------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = FakeConnection(next(self._ids), str(peer))
        self.connections.append(conn)
        self._writers.add(writer)
        session = _Conversation(self, conn, reader, writer)
        try:
            await session.run()
        except _ConnectionClosed:
            pass
        except (ConnectionError, ProtocolError):
            conn.closed_by_client = True
        finally:
            conn.closed = True
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    def reply_for(self, command: ReceivedCommand) -> Reply:
        """The script's answer to a command, or the default one."""
        reply: Reply | None
        if callable(self.script):
            reply = self.script(command)
        else:
            reply = self.script.get(command.query) if command.query is not None else None
        return default_reply(command) if reply is None else reply


def default_reply(command: ReceivedCommand) -> Reply:
    """What the fake server answers to commands its script does not mention."""
    code = command.command
    if code == Command.COM_QUIT:
        return Close()
    if code in (Command.COM_PING, Command.COM_INIT_DB, Command.COM_RESET_CONNECTION):
        return ok()
    query = command.query
    if query is not None and query.lstrip()[:4].upper() == "SET ":
        return ok()
    what = query if query is not None else Command.name_of(code)
    return err(1064, f"fake server: nothing scripted for {what!r}")


class _Conversation:
    """Reads packets and answers them for one connection."""

    def __init__(
        self,
        server: FakeServer,
        conn: FakeConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.packets = PacketBuffer()
        self.capabilities = Capability(0)
        self.next_seq = 0

    async def run(self) -> None:
        server = self.server
        if server.on_accept is not None:
            await self._send(server.on_accept)
            await self._stall(None)  # a script that neither closed nor greeted: wait
        greeting = server.greeting
        payload = server.greeting_payload
        if payload is None:
            payload = messages.encode_greeting(
                Greeting(
                    greeting.server_version,
                    self.conn.connection_id,
                    greeting.auth_data,
                    greeting.capabilities,
                    greeting.charset,
                    greeting.status,
                    greeting.auth_plugin,
                )
            )
        self.writer.write(encode_packet(0, payload))
        await self.writer.drain()

        seq, response = await self._read_packet()
        with contextlib.suppress(ProtocolError):
            self.conn.handshake = messages.parse_handshake_response(response, greeting.capabilities)
        if self.conn.handshake is not None:
            self.capabilities = self.conn.handshake.capabilities & greeting.capabilities
        self.next_seq = seq + 1
        for step, reply in enumerate(server.login):
            if step:
                seq, auth = await self._read_packet()
                self.conn.auth_packets.append(auth)
                self.next_seq = seq + 1
            await self._send(reply)

        while True:
            seq, payload = await self._read_packet()
            command = ReceivedCommand(self.conn.connection_id, seq, payload, self.capabilities)
            self.conn.commands.append(command)
            self.next_seq = seq + 1
            await self._send(server.reply_for(command))

    async def _read_packet(self) -> tuple[int, bytes]:
        while True:
            for packet in self.packets:
                return packet.sequence_id, packet.payload
            data = await self.reader.read(_READ_SIZE)
            if not data:
                self.conn.closed_by_client = True
                raise _ConnectionClosed
            self.conn.received += data
            self.packets.feed(data)

    async def _send(self, reply: Reply) -> None:
        if isinstance(reply, bytes | Raw | Close | Stall | ResultSet):
            reply = [reply]
        for action in reply:
            await self._act(action)

    async def _act(self, action: Action) -> None:
        writer = self.writer
        if isinstance(action, bytes):
            writer.write(encode_packet(self.next_seq & 0xFF, action))
            self.next_seq += len(action) // 0xFFFFFF + 1
        elif isinstance(action, Raw):
            writer.write(action.data)
        elif isinstance(action, ResultSet):
            await self._write_result(action)
        elif isinstance(action, Stall):
            await writer.drain()
            await self._stall(action.seconds)
            return
        elif isinstance(action, Close):
            if action.abort:
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                writer.transport.abort()
            else:
                await writer.drain()
                writer.close()
            raise _ConnectionClosed
        await writer.drain()

    async def _write_result(self, result: ResultSet) -> None:
        deprecate_eof = bool(self.capabilities & Capability.CLIENT_DEPRECATE_EOF)
        batch = bytearray()
        for payload in result_set_payloads(result, deprecate_eof):
            batch += encode_packet(self.next_seq & 0xFF, payload)
            self.next_seq += len(payload) // 0xFFFFFF + 1
            if len(batch) >= _WRITE_BATCH:
                self.writer.write(bytes(batch))
                batch.clear()
                await self.writer.drain()
        self.writer.write(bytes(batch))

    async def _stall(self, seconds: float | None) -> None:
        """Wait, reading (and discarding) whatever the client sends; a client that
        goes away ends the conversation."""
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while True:
            timeout = None if deadline is None else deadline - loop.time()
            if timeout is not None and timeout <= 0:
                return
            try:
                data = await asyncio.wait_for(self.reader.read(_READ_SIZE), timeout)
            except TimeoutError:
                return
            if not data:
                self.conn.closed_by_client = True
                raise _ConnectionClosed
            self.conn.received += data


# --- running it from blocking tests ---------------------------------------------------


@contextlib.contextmanager
def running_fake_server(script: Script | None = None, **kwargs: Any) -> Iterator[FakeServer]:
    """A FakeServer on its own event loop thread (keyword arguments as FakeServer's);
    `.address` is where it listens."""
    server = FakeServer(script, **kwargs)
    with running_on_loop_thread(server, "fake-mysql") as running:
        yield running
