"""The admin interface: a small MySQL server on 127.0.0.1:4041 (mysql-proxy's admin
port), so any MySQL client can talk to it.

It authenticates with mysql_native_password against a password it knows only as
SHA1(SHA1(password)); clients that open with another plugin (MySQL 8's
caching_sha2_password, MariaDB's ed25519) are asked to switch. Statements go to the
command language in commands.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import cast

from mysqlproxy.admin import commands
from mysqlproxy.admin.control import ControlPlane, proxy_version
from mysqlproxy.protocol import auth, messages, wire
from mysqlproxy.protocol.constants import Capability, Command, FieldType, ServerStatus
from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.packets import PacketBuffer, encode_packet
from mysqlproxy.proxy.backends import Address

log = logging.getLogger(__name__)

ADMIN_CAPABILITIES = (
    Capability.CLIENT_LONG_PASSWORD
    | Capability.CLIENT_FOUND_ROWS
    | Capability.CLIENT_LONG_FLAG
    | Capability.CLIENT_CONNECT_WITH_DB
    | Capability.CLIENT_PROTOCOL_41
    | Capability.CLIENT_TRANSACTIONS
    | Capability.CLIENT_SECURE_CONNECTION
    | Capability.CLIENT_MULTI_RESULTS
    | Capability.CLIENT_PLUGIN_AUTH
    | Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.CLIENT_CONNECT_ATTRS
)
# Statements are small; a client sending more is not an admin client.
MAX_ADMIN_PACKET = 1 << 20
_STATUS = ServerStatus.SERVER_STATUS_AUTOCOMMIT


class AdminConfigError(Exception):
    """The admin interface cannot start as configured."""


@dataclass(frozen=True)
class AdminCredentials:
    user: str
    password_hash: bytes  # SHA1(SHA1(password)); the password itself is not kept

    @classmethod
    def from_password(cls, user: str, password: str) -> AdminCredentials:
        return cls(user, auth.native_password_hash(password.encode()))

    @property
    def has_password(self) -> bool:
        return self.password_hash != auth.native_password_hash(b"")


class AdminServer:
    """Listens for admin clients."""

    def __init__(self, address: Address, credentials: AdminCredentials, control: ControlPlane):
        if not address.is_loopback and not credentials.has_password:
            raise AdminConfigError(
                f"refusing to open the admin interface on {address} without a password: "
                "set MYSQLPROXY_ADMIN_PASSWORD or --admin-password-file, or bind to loopback"
            )
        self.address = address
        self.credentials = credentials
        self.control = control
        self._server: asyncio.AbstractServer | None = None
        self._next_id = 1
        self.bound: Address | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.address.unix_path is not None:
            self._server = await loop.create_unix_server(self._protocol, self.address.unix_path)
            self.bound = self.address
        else:
            self._server = await loop.create_server(
                self._protocol, self.address.host, self.address.port, reuse_address=True
            )
            port = self._server.sockets[0].getsockname()[1]
            self.bound = Address(self.address.host, port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _protocol(self) -> asyncio.Protocol:
        connection_id = self._next_id
        self._next_id += 1
        return AdminConnection(self, connection_id)


class AdminConnection(asyncio.Protocol):
    """One admin client: handshake, authentication, then statements."""

    def __init__(self, server: AdminServer, connection_id: int) -> None:
        self.server = server
        self.connection_id = connection_id
        self.transport: asyncio.Transport | None = None
        self.buffer = PacketBuffer(MAX_ADMIN_PACKET)
        self.nonce = _nonce()
        self.state = "handshake"  # -> "switch" -> "command"
        self.user = ""
        self.capabilities = Capability(0)
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "localhost"
        greeting = messages.Greeting(
            server_version=f"5.7.99-mysqlproxy-admin-{proxy_version()}",
            thread_id=self.connection_id,
            auth_data=self.nonce,
            capabilities=ADMIN_CAPABILITIES,
            charset=45,  # utf8mb4_general_ci
            status=_STATUS,
            auth_plugin=auth.NATIVE_PASSWORD,
        )
        self._send(0, messages.encode_greeting(greeting))

    def data_received(self, data: bytes) -> None:
        try:
            self.buffer.feed(data)
            for packet in self.buffer:
                self._packet(packet.sequence_id, packet.payload)
                if self.transport is None or self.transport.is_closing():
                    return
        except ProtocolError as exc:
            log.info("admin connection %d from %s closed: %s", self.connection_id, self.peer, exc)
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _packet(self, seq: int, payload: bytes) -> None:
        if self.state == "handshake":
            response = messages.parse_handshake_response(payload, ADMIN_CAPABILITIES)
            if response.is_ssl_request:
                self._error(seq + 1, 1045, "the admin interface does not offer TLS", "08004")
                self._close()
                return
            self.user = response.username
            self.capabilities = response.capabilities & ADMIN_CAPABILITIES
            if response.auth_plugin not in (None, auth.NATIVE_PASSWORD):
                # Ask the client to answer our nonce the mysql_native_password way.
                self.state = "switch"
                self._send(
                    seq + 1,
                    b"\xfe" + auth.NATIVE_PASSWORD.encode() + b"\x00" + self.nonce + b"\x00",
                )
                return
            self._authenticate(seq + 1, response.auth_response)
        elif self.state == "switch":
            self._authenticate(seq + 1, payload)
        else:
            self._command(payload)

    def _authenticate(self, seq: int, scramble: bytes) -> None:
        credentials = self.server.credentials
        if self.user == credentials.user and auth.verify_native_password(
            credentials.password_hash, self.nonce, scramble
        ):
            self.state = "command"
            self._send(seq, messages.encode_ok(status=_STATUS))
            return
        log.warning("admin login refused for user %r from %s", self.user, self.peer)
        self._error(
            seq,
            1045,
            f"Access denied for user '{self.user}'@'{self.peer}' "
            f"(using password: {'YES' if scramble else 'NO'})",
            "28000",
        )
        self._close()

    def _command(self, payload: bytes) -> None:
        if not payload:
            raise ProtocolError("empty command packet")
        code = payload[0]
        if code == Command.COM_QUIT:
            self._close()
        elif code in (Command.COM_PING, Command.COM_INIT_DB, Command.COM_RESET_CONNECTION):
            self._send(1, messages.encode_ok(status=_STATUS))
        elif code == Command.COM_QUERY:
            statement = payload[1:].decode("utf-8", "replace")
            try:
                result = commands.execute(self.server.control, statement)
            except commands.AdminError as exc:
                self._error(1, exc.code, str(exc), exc.sql_state)
                return
            except Exception as exc:  # a bug must not take the admin interface down
                log.exception("admin statement failed: %s", statement)
                self._error(1, 1105, f"internal error: {exc}", "HY000")
                return
            if isinstance(result, commands.ResultSet):
                self._result_set(result)
            else:
                self._send(
                    1,
                    messages.encode_ok(
                        affected_rows=result.affected_rows,
                        status=_STATUS,
                        info=result.message.encode(),
                    ),
                )
        elif code == Command.COM_FIELD_LIST:
            self._send(1, messages.encode_eof(_STATUS))
        else:
            self._error(
                1,
                1047,
                f"{Command.name_of(code)} is not supported by the admin interface; "
                "try SELECT * FROM help",
                "08S01",
            )

    def _result_set(self, result: commands.ResultSet) -> None:
        packets = [wire.lenenc_int(len(result.columns))]
        for index, name in enumerate(result.columns):
            field_type = _column_type([row[index] for row in result.rows])
            is_text = field_type == FieldType.MYSQL_TYPE_VAR_STRING
            packets.append(
                messages.encode_column_definition(
                    name,
                    field_type,
                    table="admin",
                    length=65535 if is_text else 20,
                    charset=45 if is_text else 63,
                    decimals=31 if field_type == FieldType.MYSQL_TYPE_DOUBLE else 0,
                )
            )
        packets.append(messages.encode_eof(_STATUS))
        for row in result.rows:
            packets.append(
                messages.encode_text_row([None if v is None else _text(v) for v in row])
            )
        packets.append(messages.encode_eof(_STATUS))
        out = bytearray()
        for seq, payload in enumerate(packets, start=1):
            out += encode_packet(seq & 0xFF, payload)
        if self.transport is not None:
            self.transport.write(bytes(out))

    def _send(self, seq: int, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(encode_packet(seq & 0xFF, payload))

    def _error(self, seq: int, code: int, message: str, sql_state: str) -> None:
        self._send(seq, messages.encode_err(code, message, sql_state))

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def _column_type(values: list[object]) -> FieldType:
    """Integers and floats are typed as such so clients convert them; the rest is text."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return FieldType.MYSQL_TYPE_LONGLONG
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return FieldType.MYSQL_TYPE_DOUBLE
    return FieldType.MYSQL_TYPE_VAR_STRING


def _text(value: object) -> bytes:
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode("utf-8", "surrogateescape")


def _nonce() -> bytes:
    """20 random bytes without NUL (the greeting carries them NUL-terminated)."""
    return bytes(b % 255 + 1 for b in os.urandom(auth.SCRAMBLE_LENGTH))
