"""mysql-proxy 0.8's admin plugin (reference section 9): a small MySQL server whose every
command is answered by the ``read_query`` hook of ``--admin-lua-script``.

* Greeting ``5.0.99-agent-admin``, thread id 1, capabilities PROTOCOL_41 |
  SECURE_CONNECTION | LONG_PASSWORD, charset 8, AUTOCOMMIT, a random printable
  20-byte challenge (Appendix B).
* Authentication: the user name must equal ``--admin-username``; the client's
  mysql_native_password scramble must match ``--admin-password`` (ERR 1045/28000
  ``unknown user`` / ``password doesn't match``, then close). Pre-4.1 clients get the
  2007 ERR.
* Every command runs ``read_query(packet)`` in the connection's script scope, with the
  same environment rules as the proxy plugin and the same ``proxy`` table, so
  ``proxy.global`` is shared with the proxy plugin when both use one runtime. Only
  ``PROXY_SEND_RESULT`` is an answer: nil gives ERR ``need a resultset +
  proxy.PROXY_SEND_RESULT``, anything else (or a Lua error, or a ``LOAD ...`` query)
  ERR ``... got something else``; both close the connection.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import struct
from typing import Any, cast

from lua_compat import wire
from lua_compat.objects import ObjectFactory, QueryQueue, SocketAddress
from lua_compat.runtime import LuaRuntime
from lua_compat.scope import (
    PROXY_SEND_RESULT,
    LuaScripts,
    Scope,
    ScriptExecuteError,
    ScriptLoadError,
)
from mysqlproxy.protocol import auth, messages
from mysqlproxy.protocol.constants import Capability, Command
from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.packets import PacketBuffer
from mysqlproxy.proxy.backends import Address

log = logging.getLogger("lua_compat.admin")

ADMIN_VERSION = b"5.0.99-agent-admin"
ADMIN_CAPABILITIES = (
    Capability.CLIENT_PROTOCOL_41
    | Capability.CLIENT_SECURE_CONNECTION
    | Capability.CLIENT_LONG_PASSWORD
)
ADMIN_CHARSET = 8  # latin1_swedish_ci
# Admin statements are small; a client sending more is not an admin client.
MAX_ADMIN_PACKET = 16 << 20

ERR_NO_RESULT = "need a resultset + proxy.PROXY_SEND_RESULT"
ERR_SOMETHING_ELSE = "need a resultset + proxy.PROXY_SEND_RESULT ... got something else"
ERR_LOAD = "MySQL Proxy Lua script failed to load. Check the error log."
ERR_EXECUTE = "MySQL Proxy Lua script failed to execute. Check the error log."
ERR_RESPONSE = wire.RESPONSE_FAILED
ERR_INTERNAL = "(admin) internal error, check error-log"


def admin_greeting(challenge: bytes) -> bytes:
    """The admin plugin's HandshakeV10 (no PLUGIN_AUTH: the 12 last challenge bytes
    end the packet, NUL-terminated)."""
    caps = int(ADMIN_CAPABILITIES)
    return b"".join(
        [
            b"\x0a",
            ADMIN_VERSION + b"\x00",
            struct.pack("<I", 1),
            challenge[:8],
            b"\x00",
            struct.pack("<HBHH", caps & 0xFFFF, ADMIN_CHARSET, wire.STATUS_AUTOCOMMIT, caps >> 16),
            b"\x00" * 11,
            challenge[8:20] + b"\x00",
        ]
    )


def random_challenge() -> bytes:
    """20 printable bytes (never NUL: the greeting carries them NUL-terminated)."""
    return bytes(0x21 + secrets.randbelow(0x7E - 0x21 + 1) for _ in range(auth.SCRAMBLE_LENGTH))


class AdminPlugin:
    """The admin listener. `scripts` shares the proxy plugin's Lua state."""

    def __init__(
        self,
        address: Address,
        username: str,
        password: str,
        script: str,
        scripts: LuaScripts,
    ) -> None:
        self.address = address
        self.username = username.encode()
        self.password = password.encode()
        self.script = script
        self.scripts = scripts
        self.objects = ObjectFactory(scripts)
        self._ensure_backends()
        self.bound: Address | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[AdminConnection] = set()

    def _ensure_backends(self) -> None:
        """proxy.global.backends exists even without the proxy plugin (0.8.5 sets it up
        for every connection's script): an empty list then."""
        global_table = self.scripts.lua.globals()[b"proxy"][b"global"]
        if global_table[b"backends"] is None:
            global_table[b"backends"] = self.objects.make(
                lambda _key: None, None, lambda: 0, "proxy.global.backends"
            )

    @classmethod
    def for_runtime(
        cls,
        address: Address,
        username: str,
        password: str,
        script: str,
        runtime: LuaRuntime,
        hook_time_limit: float,
    ) -> AdminPlugin:
        return cls(address, username, password, script, LuaScripts(runtime, hook_time_limit))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.address.unix_path is not None:
            self._server = await loop.create_unix_server(self._protocol, self.address.unix_path)
            self.bound = self.address
        else:
            self._server = await loop.create_server(
                self._protocol, self.address.host or None, self.address.port, reuse_address=True
            )
            sockname = self._server.sockets[0].getsockname()
            self.bound = Address(self.address.host, int(sockname[1]))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()

    def _protocol(self) -> AdminConnection:
        return AdminConnection(self)


class AdminConnection(asyncio.Protocol):
    """One admin client: greeting, authentication, then read_query for every command."""

    def __init__(self, plugin: AdminPlugin) -> None:
        self.plugin = plugin
        self.transport: asyncio.Transport | None = None
        self.buffer = PacketBuffer(MAX_ADMIN_PACKET)
        self.challenge = random_challenge()
        self.authenticated = False
        self.username = b""
        self.scope: Scope | None = None
        self.queries: QueryQueue | None = None
        self.peer: Any = None
        self.sockname: Any = None

    # -- asyncio -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.plugin._connections.add(self)
        self.peer = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self._send(0, admin_greeting(self.challenge))

    def data_received(self, data: bytes) -> None:
        reply_seq = 0
        try:
            self.buffer.feed(data)
            for packet in self.buffer:
                if self.transport is None:
                    return
                reply_seq = packet.sequence_id + 1
                self._packet(packet.sequence_id, packet.payload)
        except ProtocolError as exc:
            log.info("admin connection closed: %s", exc)
            self.close()
        except Exception:
            # Nothing may escape into asyncio (it would drop the client without an
            # answer): the client gets the ERR of a failed hook (reference 9), the
            # connection closes, the listener goes on.
            log.exception("admin connection: handling a packet failed")
            message = ERR_SOMETHING_ELSE if self.authenticated else ERR_INTERNAL
            self._send(reply_seq, wire.err_payload(wire.ER_UNKNOWN_ERROR, message))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.plugin._connections.discard(self)
        if self.scope is not None:
            self.scope.close()
            self.scope = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    # -- protocol ----------------------------------------------------------------------

    def _send(self, seq: int, *payloads: bytes) -> None:
        if self.transport is not None:
            data, _ = wire.frame(list(payloads), seq)
            self.transport.write(data)

    def _packet(self, seq: int, payload: bytes) -> None:
        if not self.authenticated:
            self._authenticate(seq + 1, payload)
        else:
            self._command(seq + 1, payload)

    def _authenticate(self, seq: int, payload: bytes) -> None:
        caps = int.from_bytes(payload[:2], "little") if len(payload) >= 2 else 0
        if not caps & Capability.CLIENT_PROTOCOL_41:
            self._send(seq, wire.PROTOCOL_40_ERR)
            self.close()
            return
        try:
            response = messages.parse_handshake_response(payload, ADMIN_CAPABILITIES)
        except ProtocolError as exc:
            log.info("admin connection: bad handshake response: %s", exc)
            self.close()
            return
        self.username = response.username.encode()
        plugin = self.plugin
        if not hmac.compare_digest(self.username, plugin.username):
            self._send(seq, wire.err_payload(1045, "unknown user", "28000"))
            self.close()
            return
        expected = auth.native_password_scramble(plugin.password, self.challenge)
        if not hmac.compare_digest(expected, response.auth_response):
            self._send(seq, wire.err_payload(1045, "password doesn't match", "28000"))
            self.close()
            return
        self.authenticated = True
        self._send(seq, wire.ok_payload())

    def _command(self, seq: int, payload: bytes) -> None:
        decision, failure = self._read_query(payload)
        if failure is not None:
            self._send(seq, wire.err_payload(wire.ER_UNKNOWN_ERROR, failure))
            self.close()
        elif decision is None:
            self._send(seq, wire.err_payload(wire.ER_UNKNOWN_ERROR, ERR_NO_RESULT))
            self.close()
        elif decision != PROXY_SEND_RESULT:
            self._send(seq, wire.err_payload(wire.ER_UNKNOWN_ERROR, ERR_SOMETHING_ELSE))
            self.close()
        else:
            self._send_response(seq)
        if payload[:1] == bytes([Command.COM_QUIT]):
            self.close()

    def _read_query(self, payload: bytes) -> tuple[int | None, str | None]:
        """The script's decision, or a failure message that ends the connection."""
        # 0.8.5 refuses empty queries and LOAD DATA before the script sees them
        if payload[:1] == bytes([Command.COM_QUERY]) and (
            len(payload) < 2 or payload[1:6].upper() == b"LOAD "
        ):
            return 0, None
        scope = self._scope()
        try:
            scope.ensure_loaded()
        except ScriptLoadError:
            return None, ERR_LOAD
        except ScriptExecuteError:
            return None, ERR_EXECUTE
        scope.reset_for_query()
        if self.queries is not None:
            self.queries.items.clear()
        decision = scope.call_hook("read_query", payload)
        if scope.last_error is not None:
            return 0, None  # 0.8.5 treats an error in the hook as "something else"
        return decision, None

    def _send_response(self, seq: int) -> None:
        self._send(seq, *self._scope().response_payloads())

    def _scope(self) -> Scope:
        if self.scope is None:
            factory = self.plugin.objects
            self.queries = QueryQueue(factory)
            self.scope = self.plugin.scripts.new_scope(
                self.plugin.script,
                queries=self.queries.userdata,
                connection=_connection_object(factory, self),
            )
        return self.scope


# --- the Lua objects of an admin connection ---------------------------------------------
# The admin plugin only has a client side: proxy.connection.client with its addresses
# and login, no server (backend_ndx 0), and a proxy.queries that accepts injections
# which nothing sends (returning PROXY_SEND_QUERY is "something else" here).


def _connection_object(factory: ObjectFactory, conn: AdminConnection) -> Any:
    src = factory.address(SocketAddress.from_sockname(conn.peer))
    dst = factory.address(SocketAddress.from_sockname(conn.sockname))

    def client_field(key: Any) -> Any:
        fields = {
            b"src": src,
            b"dst": dst,
            b"username": conn.username,
            b"default_db": b"",
            b"scramble_buffer": conn.challenge,
            b"mysqld_version": 50099,
            b"thread_id": 1,
        }
        return fields.get(key)

    client = factory.make(client_field, name="proxy.connection.client")

    def connection_field(key: Any) -> Any:
        if key == b"client":
            return client
        if key == b"backend_ndx":
            return 0
        return None

    return factory.make(connection_field, name="proxy.connection")
