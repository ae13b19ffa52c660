"""The mysql-proxy 0.8 proxy plugin: an asyncio connection engine that runs Lua hooks.

``LuaProxy(options)`` listens on ``options.listen``, and for every client runs the
connection life cycle of reference section 2 (connect_server, read_handshake,
read_auth, read_auth_result, read_query, read_query_result, disconnect_client) against
the backends of ``options.backends`` / ``options.read_only_backends``, with the script
``options.script`` loaded per connection as section 1 describes.

Public API (used by the drop-in ``mysql-proxy`` command and ``mysqlproxy run
--lua-script``)::

    proxy = LuaProxy(LuaProxyOptions(listen=[...], backends=[...], script="x.lua"))
    await proxy.start()          # binds; proxy.bound lists the bound addresses
    proxy.runtime                # the shared LuaRuntime (proxy.global lives there)
    await proxy.shutdown(grace=5.0)

How a connection runs. Each client gets a LuaConnection: a task for the life cycle
(connect, handshake, login) and for everything that needs to wait (injections and their
results, LOCAL INFILE without a server). Ordinary commands take a fast path in the
transport callbacks instead: read_query is called as the command arrives and, when it
decides nothing (log.lua), the client's bytes go to the server unchanged and the
response chunks are written to the client from the server's data_received, one Lua
call per command and no task switch.

Each server connection has its own mysqlproxy ConnectionTracker, fed exactly the bytes
exchanged with that server: it finds where responses end (result sets, multi-results,
LOCAL INFILE, cursors...), checks sequence ids, masks capabilities in the greeting, and
emits the QueryEvents the addons (logging window, digests, metrics) receive. So the
observers see what the server actually ran, injections included. Responses are
buffered only for injections with resultset_is_needed; a forwarded response is
renumbered only where the client's and the server's packet ids differ (2.11).

Limits: a client packet larger than ``options.max_packet_size`` (64 MiB, as ``mysqlproxy
run``) is refused with ERR 1153 as its header arrives; a client has
``options.login_timeout`` (10 s, mysqld's connect_timeout) from its greeting to finish
logging in; reading from a leg pauses while more than READ_HIGH_WATER bytes wait that
nobody asked for yet. Hooks run under the wall-clock time limit of scope.py.

Of the relay's Limits, max_connections applies (ERR 1040 past it) and idle_timeout (the
relay's sweep; an idle client is told with ERR 4031, its backend with COM_QUIT).
mysql-proxy's own read and write timeouts (``options.read_timeout``/``write_timeout``,
8 h by default) close a connection that waited that long, as 0.8 does. Not done here:
TLS and compression (masked in the greeting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from lua_compat import wire
from lua_compat.objects import (
    BACKEND_STATE_DOWN,
    BACKEND_STATE_UNKNOWN,
    BACKEND_STATE_UP,
    BACKEND_TYPE_RO,
    BACKEND_TYPE_RW,
    Injection,
    LuaApiError,
    ObjectFactory,
    QueryQueue,
    ResultData,
    ResultObjects,
    SocketAddress,
)
from lua_compat.runtime import LuaRuntime
from lua_compat.scope import (
    DEFAULT_HOOK_TIME_LIMIT,
    PROXY_IGNORE_RESULT,
    PROXY_SEND_QUERY,
    PROXY_SEND_RESULT,
    LuaScripts,
    Scope,
    ScriptExecuteError,
    ScriptLoadError,
)
from mysqlproxy.hooks import (
    AddonManager,
    AuthenticationFailed,
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
)
from mysqlproxy.protocol import events as tracker_events
from mysqlproxy.protocol import messages
from mysqlproxy.protocol.constants import (
    MASKED_CAPABILITIES,
    MAX_PACKET_PAYLOAD,
    Capability,
    ErrorCode,
)
from mysqlproxy.protocol.errors import PacketTooLarge, ProtocolError
from mysqlproxy.protocol.tracker import C_AUTH, C_INFILE, ConnectionTracker
from mysqlproxy.proxy.backends import Address, Backend
from mysqlproxy.proxy.limits import (
    DEFAULT_MAX_PACKET_SIZE,
    Limits,
    sweep_idle,
    sweep_interval,
)
from mysqlproxy.proxy.server import TooManyConnections, remove_stale_socket
from mysqlproxy.proxy.session import COM_QUIT_PACKET, PACKET_TOO_LARGE_MESSAGE, set_nodelay
from mysqlproxy.proxy.tasks import spawn
from mysqlproxy.proxy.tls import BackendTls, BackendTlsMode

log = logging.getLogger("lua_compat")

# What the engine does not handle, on top of what the relay masks: no TLS and no
# compression here, and result sets are always framed with EOF packets (the Lua API and
# proxy.response result sets are built that way), so CLIENT_DEPRECATE_EOF is masked too.
# Scripts see command packets as mysql-proxy 0.8 did: no query attributes before the
# SQL (packet:sub(2) is the query). Result sets built from proxy.response have 0.8's
# column definitions, without MariaDB's extended metadata, so that is masked as well.
ENGINE_MASKED_CAPABILITIES = (
    MASKED_CAPABILITIES
    | Capability.CLIENT_SSL
    | Capability.CLIENT_COMPRESS
    | Capability.CLIENT_DEPRECATE_EOF
    | Capability.CLIENT_QUERY_ATTRIBUTES
    | Capability.MARIADB_CLIENT_EXTENDED_METADATA
)
WRITE_HIGH_WATER = 256 * 1024
# Bytes a leg keeps that nobody has asked for yet (pipelined commands, a client talking
# before its turn) before it stops reading: memory per connection stays bounded.
READ_HIGH_WATER = 256 * 1024
# mysqld's own connect_timeout default: the time a client has, from its first read
# (the greeting sent), to finish logging in. A client that connects and says nothing
# would otherwise hold a connection and a backend forever.
DEFAULT_LOGIN_TIMEOUT = 10.0
DOWN_RETRY_SECONDS = 4.0  # a DOWN backend is tried again (UNKNOWN) after this long
_CLIENT_PROTOCOL_41 = int(Capability.CLIENT_PROTOCOL_41)
_CLIENT_PLUGIN_AUTH = int(Capability.CLIENT_PLUGIN_AUTH)
_CLIENT_CONNECT_ATTRS = int(Capability.CLIENT_CONNECT_ATTRS)
_VERSION = re.compile(rb"(\d+)\.(\d+)\.(\d+)")
_LOAD_FAILED = "MySQL Proxy Lua script failed to load. Check the error log."
_EXECUTE_FAILED = "MySQL Proxy Lua script failed to execute. Check the error log."


@dataclass(slots=True)
class LuaProxyOptions:
    """What mysql-proxy's proxy plugin options (reference 10.2) configure."""

    listen: list[Address]
    backends: list[Address] = field(default_factory=list)
    read_only_backends: list[Address] = field(default_factory=list)
    script: str | None = None
    connect_timeout: float = 2.0
    read_timeout: float = 28800.0
    write_timeout: float = 28800.0
    pool_change_user: bool = True
    lua_path: str | None = None
    lua_cpath: str | None = None
    addons: AddonManager | None = None
    hook_time_limit: float = DEFAULT_HOOK_TIME_LIMIT
    # The largest client packet (all 0xFFFFFF pieces together), as `mysqlproxy run
    # --max-packet-size`; larger get ERR 1153 and the connection closes. 0: no limit.
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    login_timeout: float = DEFAULT_LOGIN_TIMEOUT


class _Closed(Exception):
    """The connection ends (the reason is logged where it is raised)."""


def version_number(version: bytes | str) -> int:
    """'5.1.14-log' -> 50114 (mysql-proxy's numeric server version)."""
    if isinstance(version, str):
        version = version.encode()
    m = _VERSION.match(version)
    if m is None:
        return 0
    return int(m.group(1)) * 10000 + int(m.group(2)) * 100 + int(m.group(3))


# --- transport legs ----------------------------------------------------------------------


_monotonic = time.monotonic  # (a global look-up less per chunk)


class _Leg(asyncio.Protocol):
    """One socket. Data goes to `sink` when one is set (streaming), else to a buffer
    that `read_packet` reads.

    The buffer is bounded: reading pauses while it holds more than READ_HIGH_WATER
    bytes that nobody has asked for yet (`stash`), and resumes when a reader needs more
    (`take_packet` found no complete packet). A packet announcing more than
    `max_payload` bytes (0: no limit) raises PacketTooLarge as its header arrives."""

    def __init__(self, max_payload: int = 0) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.max_payload = max_payload
        self.sink: Callable[[bytes], None] | None = None
        self.closed = False
        self.close_error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.on_lost: Callable[[_Leg], None] | None = None
        self.on_pause: Callable[[bool], None] | None = None  # our writes: True pause
        self._full = False  # reading paused: the buffer is over READ_HIGH_WATER
        self._held = False  # reading paused: the peer's write buffer is full
        self._reading_paused = False
        self.last_read = time.monotonic()  # when the last chunk came (idle, read timeout)
        self.write_stuck_since: float | None = None  # (the write timeout's sweep)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        self.last_read = _monotonic()
        sink = self.sink
        if sink is not None:
            sink(data)
            return
        if self._waiter is not None:  # a reader is waiting: it takes the data now
            self.buffer += data
        else:
            self.stash(data)
        self._wake()

    def stash(self, data: bytes) -> None:
        """Keep bytes nobody has asked for yet; pause reading past READ_HIGH_WATER."""
        self.buffer += data
        self.check_full()

    def check_full(self) -> None:
        """Pause reading if the buffer holds more than READ_HIGH_WATER bytes."""
        if len(self.buffer) > READ_HIGH_WATER and not self._full:
            self._full = True
            self._update_reading()

    def take_all(self) -> bytes:
        """Everything buffered (to stream it on); reading goes on."""
        data = bytes(self.buffer)
        self.buffer.clear()
        self.want_more()
        return data

    def want_more(self) -> None:
        """A reader needs more bytes than the buffer holds: read again."""
        if self._full:
            self._full = False
            self._update_reading()

    def hold(self, paused: bool) -> None:
        """Backpressure: stop (or go on) reading while the peer cannot take our data."""
        self._held = paused
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        pause = self._full or self._held
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.close_error = exc
        self._wake()
        if self.on_lost is not None:
            self.on_lost(self)

    def pause_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(True)

    def resume_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(False)

    def _wake(self) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        """A future done when data arrives or the leg closes. It is registered here,
        not when awaited: asyncio.wait_for runs what it is given in a task, a loop turn
        later, and data arriving in that turn would otherwise wake nobody (the caller
        then waited for its timeout with the packet already in the buffer)."""
        if self.closed:
            raise _Closed("connection closed")
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
        return waiter

    def take_packet(self) -> tuple[int, bytes, bytes] | None:
        """(sequence id of the last piece, logical payload, raw bytes) if complete."""
        buf = self.buffer
        pos = 0
        n = len(buf)
        parts: list[bytes] = []
        total = 0
        limit = self.max_payload
        while True:
            if n - pos < 4:
                self.want_more()
                return None
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            total += length
            if limit and total > limit:
                # Refused on the header (as the server's max_allowed_packet check):
                # the payload is never waited for nor kept.
                raise PacketTooLarge(total, limit, (seq + 1) & 0xFF)
            end = pos + 4 + length
            if end > n:
                self.want_more()
                return None
            parts.append(bytes(buf[pos + 4 : end]))
            pos = end
            if length < MAX_PACKET_PAYLOAD:
                break
        raw = bytes(buf[:pos])
        del buf[:pos]
        payload = parts[0] if len(parts) == 1 else b"".join(parts)
        return seq, payload, raw

    async def read_packet(self, deadline: float | None = None) -> tuple[int, bytes, bytes]:
        """The next packet; with `deadline` (loop time) raises TimeoutError past it."""
        while True:
            packet = self.take_packet()
            if packet is not None:
                return packet
            if self.closed:
                raise _Closed("connection closed")
            if deadline is None:
                await self.wait()
            else:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self.wait(), remaining)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close now, dropping what is still to be written (close() would wait for a
        peer that does not read)."""
        if self.transport is not None:
            self.transport.abort()


class _ClientLeg(_Leg):
    """The client's socket: its arrival starts the connection's task."""

    def __init__(self, on_made: Callable[[asyncio.BaseTransport], None], max_payload: int) -> None:
        super().__init__(max_payload)
        self._on_made = on_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._on_made(transport)


# --- backends and pools ------------------------------------------------------------------


@dataclass(slots=True)
class ServerConnection:
    """A connection to a backend, attached to a client or idle in a pool."""

    leg: _Leg
    backend: BackendState
    tracker: ConnectionTracker
    src: SocketAddress
    dst: SocketAddress
    greeting_packet: bytes = b""  # as sent to the client (masked), for pooled reuse
    greeting: messages.Greeting | None = None
    mysqld_version: int = 0
    thread_id: int = 0
    scramble_buffer: bytes = b""
    auth_plugin_name: bytes = b""
    username: bytes | None = None
    scrambled_password: bytes | None = None
    default_db: bytes = b""
    authenticated: bool = False
    in_pool: bool = False
    capabilities: int = 0

    def close(self) -> None:
        self.leg.on_lost = None
        self.leg.close()


class Pool:
    """backend.pool: one FIFO of idle authenticated connections per user (6.3)."""

    def __init__(self) -> None:
        self.users: dict[bytes, deque[ServerConnection]] = {}
        self.min_idle_connections = 0
        self.max_idle_connections = 0

    def add(self, conn: ServerConnection) -> None:
        user = conn.username or b""
        self.users.setdefault(user, deque()).append(conn)
        conn.in_pool = True

    def queue_for(self, username: bytes) -> deque[ServerConnection] | None:
        """The queue a look-up for `username` uses: the user's own if it exists, else
        the first holding more than min_idle_connections."""
        if username:
            queue = self.users.get(username)
            if queue is not None:
                return queue
        for queue in self.users.values():
            if len(queue) > self.min_idle_connections:
                return queue
        return None

    def take(self, username: bytes) -> ServerConnection | None:
        queue = self.queue_for(username)
        if not queue:
            return None
        conn = queue.popleft()
        conn.in_pool = False
        # Quirk kept: the emptied queue is removed under the looked-up name, so one
        # found through the "" look-up stays registered.
        if not queue:
            self.users.pop(username, None)
        return conn

    def remove(self, conn: ServerConnection) -> None:
        for user, queue in list(self.users.items()):
            if conn in queue:
                queue.remove(conn)
                if not queue:
                    del self.users[user]
        conn.in_pool = False


@dataclass(slots=True)
class BackendState:
    """One configured backend (6.2)."""

    address: Address
    type: int
    state: int = BACKEND_STATE_UNKNOWN
    state_since: float = 0.0
    connected_clients: int = 0
    uuid: bytes | None = None
    pool: Pool = field(default_factory=Pool)

    def set_state(self, state: int) -> None:
        if state != self.state:
            self.state = state
            self.state_since = time.monotonic()


# --- the proxy ---------------------------------------------------------------------------


class LuaProxy:
    """Listeners plus one LuaConnection per client (see the module docstring)."""

    backend_tls_supported = False  # (the ProxyServer interface) the backend legs are plain

    def __init__(self, options: LuaProxyOptions, runtime: LuaRuntime | None = None) -> None:
        self.options = options
        self.runtime = runtime if runtime is not None else LuaRuntime()
        if options.lua_path is not None or options.lua_cpath is not None:
            package = self.runtime.lua.globals()[b"package"]
            if options.lua_path is not None:
                package[b"path"] = options.lua_path.encode()
            if options.lua_cpath is not None:
                package[b"cpath"] = options.lua_cpath.encode()
        self.scripts = LuaScripts(self.runtime, options.hook_time_limit)
        self.objects = ObjectFactory(self.scripts)
        self.results = ResultObjects(self.objects)
        self.addons = options.addons if options.addons is not None else AddonManager()
        self.backends = [BackendState(a, BACKEND_TYPE_RW) for a in options.backends] + [
            BackendState(a, BACKEND_TYPE_RO) for a in options.read_only_backends
        ]
        # What mysqlproxy's control plane and app read (the ProxyServer interface).
        first = options.backends[0] if options.backends else Address("127.0.0.1", 3306)
        # The backend legs are plain: the control plane shows "disabled" (and refuses to
        # set another mode, see backend_tls_supported).
        self.backend = Backend(first, options.connect_timeout, BackendTls(BackendTlsMode.DISABLED))
        self.limits = Limits()
        self.tls: Any = None  # the engine offers clients no TLS (control plane reads it)
        self.listen = list(options.listen)
        self.bound: list[Address] = []
        self.sessions: set[LuaConnection] = set()
        self.connections_refused = 0
        self._commands_of_closed = 0
        self._next_id = 1
        self._servers: list[asyncio.AbstractServer] = []
        self._idle_sweep: asyncio.Task[None] | None = None
        self._timeout_sweep: asyncio.Task[None] | None = None
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._last_down_check = 0.0
        self._install_backends()

    # the ProxyServer interface

    @property
    def connections_total(self) -> int:
        return self._next_id - 1

    @property
    def commands_total(self) -> int:
        live = sum(c.commands_completed for c in self.sessions)
        return self._commands_of_closed + live

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for address in self.listen:
            if address.unix_path is not None:
                remove_stale_socket(address.unix_path)
                server = await loop.create_unix_server(self._new_client, address.unix_path)
                self.bound.append(address)
            else:
                server = await loop.create_server(
                    self._new_client, address.host or None, address.port, reuse_address=True
                )
                sockname = server.sockets[0].getsockname()
                self.bound.append(Address(address.host, sockname[1]))
            self._servers.append(server)
        # The relay's idle sweep over this engine's connections (LuaConnection.idle_check).
        self._idle_sweep = spawn(sweep_idle(self.limits, lambda: self.sessions), "lua-idle-sweep")
        self._timeout_sweep = spawn(self._sweep_network_timeouts(), "lua-timeout-sweep")

    def _new_client(self) -> asyncio.Protocol:
        limit = self.limits.max_connections  # `run`'s, changeable at runtime (SET)
        if limit and len(self.sessions) >= limit:
            self.connections_refused += 1
            return TooManyConnections()
        conn = LuaConnection(self, self._next_id)
        self._next_id += 1
        self.sessions.add(conn)
        self._all_closed.clear()
        return conn.client

    def connection_ended(self, conn: LuaConnection) -> None:
        if conn in self.sessions:
            self.sessions.discard(conn)
            self._commands_of_closed += conn.commands_completed
        if not self.sessions:
            self._all_closed.set()

    async def close(self) -> None:
        await self.shutdown(1.0)

    async def _sweep_network_timeouts(self) -> None:
        """Read and write timeouts (LuaConnection.network_timeout_check): one pass over
        the connections every quarter of the shorter one, at most every second."""
        read, write = self.options.read_timeout, self.options.write_timeout
        timeouts = [t for t in (read, write) if t > 0]
        if not timeouts:
            return
        interval = sweep_interval(min(timeouts))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.sessions):
                conn.network_timeout_check(now, read, write)

    async def shutdown(self, grace: float) -> None:
        for task in (self._idle_sweep, self._timeout_sweep):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._idle_sweep = self._timeout_sweep = None
        for server in self._servers:
            server.close()
        for conn in list(self.sessions):
            conn.request_close()
        if self.sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace)
            for conn in list(self.sessions):
                conn.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for backend in self.backends:
            for queue in backend.pool.users.values():
                for pooled in queue:
                    pooled.close()
            backend.pool.users.clear()
        self._servers.clear()

    # backends

    def refresh_down_backends(self) -> None:
        """DOWN for more than 4 s -> UNKNOWN (looked at most once a second)."""
        now = time.monotonic()
        if now - self._last_down_check < 1.0:
            return
        self._last_down_check = now
        for backend in self.backends:
            if (
                backend.state == BACKEND_STATE_DOWN
                and now - backend.state_since > DOWN_RETRY_SECONDS
            ):
                backend.set_state(BACKEND_STATE_UNKNOWN)

    def default_backend(self) -> int:
        """1-based index of the RW backend with the fewest clients that is not DOWN."""
        best = 0
        for i, backend in enumerate(self.backends, 1):
            if backend.type != BACKEND_TYPE_RW or backend.state == BACKEND_STATE_DOWN:
                continue
            if best == 0 or backend.connected_clients < self.backends[best - 1].connected_clients:
                best = i
        return best

    def _install_backends(self) -> None:
        f = self.objects
        backends = self.backends
        cache: dict[int, Any] = {}

        def backend_object(backend: BackendState) -> Any:
            pool_obj = self._pool_object(backend.pool)
            dst = f.address(SocketAddress.from_address(backend.address))

            def index(key: Any) -> Any:
                key = key.decode() if isinstance(key, bytes) else key
                if key == "connected_clients":
                    return backend.connected_clients
                if key == "dst":
                    return dst
                if key == "state":
                    return backend.state
                if key == "type":
                    return backend.type
                if key == "uuid":
                    return backend.uuid
                if key == "pool":
                    return pool_obj
                return None

            def newindex(key: Any, value: Any) -> Any:
                key = key.decode() if isinstance(key, bytes) else key
                if key == "state":
                    if not isinstance(value, (int, float)) or isinstance(value, bool):
                        return b"backend.state has to be a number"
                    backend.set_state(int(value))
                    return None
                if key == "uuid":
                    if value is not None and not isinstance(value, bytes):
                        return b"backend.uuid has to be a string"
                    backend.uuid = value
                    return None
                return f"proxy.global.backends[...].{key} is not writable".encode()

            return f.make(index, newindex, None, "backend")

        def index(key: Any) -> Any:
            if not isinstance(key, (int, float)) or isinstance(key, bool):
                raise LuaApiError("proxy.global.backends[...] expects a number")
            i = int(key)
            if not 1 <= i <= len(backends):
                return None
            obj = cache.get(i)
            if obj is None:
                obj = cache[i] = backend_object(backends[i - 1])
            return obj

        userdata = f.make(index, None, lambda: len(backends), "proxy.global.backends")
        proxy = self.runtime.lua.globals()[b"proxy"]
        proxy[b"global"][b"backends"] = userdata

    def _pool_object(self, pool: Pool) -> Any:
        f = self.objects

        def users_index(key: Any) -> Any:
            name = key if isinstance(key, bytes) else str(key).encode()
            queue = pool.queue_for(name)

            def queue_index(k: Any) -> Any:
                if k == b"cur_idle_connections":
                    return len(queue) if queue is not None else 0
                return None

            return f.make(queue_index, None, None, "pool.users[...]")

        users = f.make(users_index, None, None, "pool.users")

        def index(key: Any) -> Any:
            key = key.decode() if isinstance(key, bytes) else key
            if key == "max_idle_connections":
                return pool.max_idle_connections
            if key == "min_idle_connections":
                return pool.min_idle_connections
            if key == "users":
                return users
            return None

        def newindex(key: Any, value: Any) -> Any:
            key = key.decode() if isinstance(key, bytes) else key
            if key in ("max_idle_connections", "min_idle_connections") and isinstance(
                value, (int, float)
            ):
                setattr(pool, key, int(value))
                return None
            return f"pool.{key} is not writable".encode()

        return f.make(index, newindex, None, "pool")


# --- one client connection ----------------------------------------------------------------


@dataclass(slots=True)
class _Challenge:
    """The greeting the client got (its challenge), as proxy.connection.client shows."""

    mysqld_version: int = 0
    thread_id: int = 0
    scramble_buffer: bytes = b""
    auth_plugin_name: bytes = b""
    capabilities: int = 0


class LuaConnection:
    """Runs the hooks of reference section 2 for one client."""

    def __init__(self, proxy: LuaProxy, connection_id: int) -> None:
        self.proxy = proxy
        self.id = connection_id
        self.client = _ClientLeg(self._client_connected, proxy.options.max_packet_size)
        self.client.on_lost = self._client_lost
        self.client.on_pause = self._client_write_paused
        self._server: ServerConnection | None = None
        self.backend_ndx = 0
        self.challenge: _Challenge | None = None
        self.username: bytes | None = None
        self.scrambled_password: bytes | None = None
        self.client_default_db = b""
        self.client_auth_plugin: bytes | None = None
        self.client_capabilities = 0
        self.client_charset = 8
        self.connection_close = False
        self.commands_completed_closed = 0
        self.client_src = SocketAddress(2, "", 0)
        self.client_dst = SocketAddress(2, "", 0)
        self.client_address = ""
        self.connected_at = time.time()
        f = proxy.objects
        self.queries = QueryQueue(f)
        self._client_socket_obj: Any = None
        self._server_socket_objs: dict[int, Any] = {}
        self._connection_cache = proxy.runtime.lua.table()  # holds "server" when attached
        self.connection_obj = f.make(
            self._connection_index,
            self._connection_newindex,
            None,
            "proxy.connection",
            self._connection_cache,
        )
        self.scope: Scope = proxy.scripts.new_scope(
            proxy.options.script, self.queries.userdata, self.connection_obj
        )
        self.closed = False
        self._opened = False
        self._task: asyncio.Task[None] | None = None
        self._close_requested = False
        self._in_command = False
        self._job: asyncio.Future[Callable[[], Any]] | None = None
        self._busy = True
        self._in_client_data = False
        self._fast_server: ServerConnection | None = None
        self._fast_target = 0
        self._login_deadline: float | None = None
        self._abort_reason: str | None = None  # why network_timeout_check closed it
        # When the wait for the client's next command began (see _client_silence).
        self._waiting_since = 0.0

    @property
    def server(self) -> ServerConnection | None:
        """The attached server connection (None in fake-server mode or when pooled)."""
        return self._server

    @server.setter
    def server(self, conn: ServerConnection | None) -> None:
        self._server = conn
        self._connection_cache[b"server"] = self._server_socket(conn) if conn is not None else None

    def _server_socket(self, conn: ServerConnection) -> Any:
        obj = self._server_socket_objs.get(id(conn))
        if obj is None:
            obj = self._server_socket_objs[id(conn)] = self._socket_object(conn)
        return obj

    # -- ProxyServer-like interface --

    @property
    def commands_completed(self) -> int:
        server = self.server
        live = server.tracker.commands_completed if server is not None else 0
        return self.commands_completed_closed + live

    @property
    def tracker(self) -> ConnectionTracker | None:
        return self.server.tracker if self.server is not None else None

    def request_close(self) -> None:
        """Close once the command in flight (if any) is answered."""
        self._close_requested = True
        if not (self._in_command or self._fast_server is not None):
            self.abort()

    def abort(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.close()

    def idle_check(self, now: float, timeout: float) -> None:
        """Called by the idle sweep (mysqlproxy.proxy.limits.sweep_idle): close the
        connection once the client, between commands, has sent nothing for `timeout`
        seconds, as the relay's Session.idle_check does. The login has its own limit
        (options.login_timeout)."""
        silence = self._client_silence(now)
        if silence is None or silence < timeout:
            return
        reason = f"idle for {silence:.1f}s, idle_timeout is {timeout:g}s"
        log.info("connection %d from %s: %s", self.id, self.client_address, reason)
        server = self.server
        if server is not None:
            server.leg.write(COM_QUIT_PACKET)  # a clean goodbye: not an aborted connection
        # As MySQL 8.0.24+ tells a client it disconnects for inactivity: an ERR with
        # sequence id 0, where the next command's answer would start.
        self._send_err(
            0,
            "The client was disconnected by the server because of inactivity.",
            int(ErrorCode.ER_CLIENT_INTERACTION_TIMEOUT),
            "HY000",
        )
        self._fail_job(_Closed(reason))

    def _client_silence(self, now: float) -> float | None:
        """Between commands, how long the client has sent nothing since the wait for its
        next command began (a response that streamed for long does not count); None
        while a command is read or answered. Between commands: the command loop's job
        is pending (a resolved one runs on the slow path) and nothing is busy on the
        fast path (_busy stays set until the response has been relayed)."""
        job = self._job
        if (
            self.closed
            or self._close_requested
            or job is None
            or job.done()
            or self._busy
            or self.client.buffer
        ):
            return None
        return now - max(self.client.last_read, self._waiting_since)

    def network_timeout_check(self, now: float, read_timeout: float, write_timeout: float) -> None:
        """mysql-proxy's --proxy-read-timeout and --proxy-write-timeout (reference 10.2),
        called by LuaProxy's sweep: the connection is closed when the proxy has waited
        that long to read (for the client's next command, or for anything from either
        side while a command is in flight: a query running longer is cut, as 0.8 cuts
        it) or to get its writes read (a peer that stopped reading). 0 turns one off."""
        if self.closed:
            return
        reason = None
        server = self.server
        for leg, who in ((self.client, "client"), (server.leg if server else None, "server")):
            transport = leg.transport if leg is not None else None
            if leg is None or transport is None or transport.is_closing():
                continue
            if not transport.get_write_buffer_size():
                leg.write_stuck_since = None
            elif leg.write_stuck_since is None:
                leg.write_stuck_since = now
            elif write_timeout > 0 and now - leg.write_stuck_since >= write_timeout:
                reason = f"write timeout: the {who} read nothing for {write_timeout:g}s"
        if reason is None and read_timeout > 0:
            silence = self._client_silence(now)
            if silence is not None:
                if silence >= read_timeout:
                    reason = f"read timeout: no command from the client for {read_timeout:g}s"
            elif (
                server is not None
                and (self._busy or self._in_command)
                and self.client.write_stuck_since is None  # else the server is held back
                and now - max(self.client.last_read, server.leg.last_read) >= read_timeout
            ):
                reason = f"read timeout: nothing from the server for {read_timeout:g}s"
        if reason is not None:
            log.info("connection %d from %s: %s", self.id, self.client_address, reason)
            self._abort_reason = reason
            # Aborted, not closed: a close waits for the writes a stuck peer never reads.
            # The teardown that follows closes the server leg cleanly unless it is stuck.
            self.client.abort()
            if server is not None and server.leg.write_stuck_since is not None:
                server.leg.abort()

    def info(self) -> ConnectionInfo:
        server = self.server
        tracker = server.tracker if server is not None else None
        return ConnectionInfo(
            connection_id=self.id,
            client_address=self.client_address,
            backend_address=str(server.backend.address) if server is not None else "",
            user=(self.username or b"").decode("utf-8", "replace"),
            schema=tracker.schema if tracker is not None else None,
            thread_id=server.thread_id if server is not None else 0,
            server_version=server.greeting.server_version
            if server is not None and server.greeting
            else "",
            connected_at=self.connected_at,
        )

    # -- transport callbacks --

    def _client_connected(self, transport: asyncio.BaseTransport) -> None:
        self.client_src = SocketAddress.from_sockname(transport.get_extra_info("peername"))
        self.client_dst = SocketAddress.from_sockname(transport.get_extra_info("sockname"))
        if self.client_src.family == 1:
            self.client_address = f"unix:{self.client_dst.address}"
        else:
            self.client_address = self.client_src.name
        self._task = spawn(self._run(), f"lua-connection-{self.id}")

    def _client_lost(self, _leg: _Leg) -> None:
        self._fail_job(_Closed(None))
        server = self.server
        if server is not None and server.leg.sink is not None:
            server.leg._wake()

    def _server_lost(self, leg: _Leg) -> None:
        server = self.server
        if server is not None and server.leg is leg:
            self._fail_job(_Closed("server closed the connection"))

    def _client_write_paused(self, paused: bool) -> None:
        server = self.server
        if server is not None:
            server.leg.hold(paused)

    def _server_write_paused(self, paused: bool) -> None:
        self.client.hold(paused)

    # -- the life cycle --

    async def _run(self) -> None:
        reason: str | None = None
        try:
            fake = await self._connect_server()
            if fake is None:
                return
            if fake:
                await self._fake_auth()
            else:
                await self._handshake_and_auth()
            await self._command_loop()
        except _Closed as exc:
            reason = exc.args[0] if exc.args and exc.args[0] else None
        except PacketTooLarge as exc:
            reason = f"client packet of {exc.size} bytes refused, max_packet_size is {exc.limit}"
            log.warning("connection %d: %s", self.id, reason)
            self._send_err(
                exc.sequence_id,
                f"{PACKET_TOO_LARGE_MESSAGE} (mysqlproxy: max_packet_size is {exc.limit})",
                int(ErrorCode.ER_NET_PACKET_TOO_LARGE),
                "08S01",
            )
        except ProtocolError as exc:
            reason = f"protocol error: {exc}"
            log.warning("connection %d: %s", self.id, reason)
        except Exception:
            reason = "internal error"
            log.exception("connection %d: internal error", self.id)
        finally:
            self._teardown(reason)

    def _teardown(self, reason: str | None) -> None:
        """Run disconnect_client, then release everything the connection holds. Nothing
        the script does may stop the release: the backend socket, the backend's
        connected_clients and the proxy's session entry are freed whatever happens."""
        if self.closed:
            return
        self.closed = True
        reason = self._abort_reason or reason
        try:
            if self.scope.loaded and self.proxy.options.script is not None:
                try:
                    self.scope.call_hook("disconnect_client")
                except (ScriptLoadError, ScriptExecuteError):
                    pass  # logged where raised
                except Exception:
                    log.exception("connection %d: disconnect_client failed", self.id)
        finally:
            self._release(reason)

    def _release(self, reason: str | None) -> None:
        server = self.server
        try:
            if server is not None:
                self.commands_completed_closed += server.tracker.commands_completed
                server.backend.connected_clients -= 1
                server.close()
                self.server = None
        finally:
            try:
                self.scope.close()
                self.client.close()
                if self._opened:
                    self.proxy.addons.trigger(ConnectionClosed(self.info(), reason))
            finally:
                self.proxy.connection_ended(self)

    def _hook(self, name: str, *args: Any, reset_response: bool = False) -> int | None:
        """call_hook; a hook stopped by the time limit raises _TimedOut."""
        decision = self.scope.call_hook(name, *args, reset_response=reset_response)
        if self.scope.timed_out:
            # The client gets the first line (the traceback is in the log).
            raise _TimedOut((self.scope.last_error or "").split("\n", 1)[0])
        return decision

    def _send(self, payloads: list[bytes], first_seq: int) -> int:
        data, next_seq = wire.frame(payloads, first_seq)
        self.client.write(data)
        return next_seq

    def _send_err(
        self,
        seq: int,
        message: str,
        code: int = wire.ER_UNKNOWN_ERROR,
        sqlstate: str | None = None,
    ) -> None:
        self._send([wire.err_payload(code, message, sqlstate)], seq)

    async def _read_login_packet(self) -> tuple[int, bytes, bytes]:
        """A client packet of the login exchange, within the login timeout (counted
        from the first such read: the client has its greeting then)."""
        loop = asyncio.get_running_loop()
        timeout = self.proxy.options.login_timeout
        if timeout <= 0:
            return await self.client.read_packet()
        if self._login_deadline is None:
            self._login_deadline = loop.time() + timeout
        try:
            return await self.client.read_packet(self._login_deadline)
        except TimeoutError:
            reason = f"no login within {timeout:g}s"
            log.warning("connection %d from %s: %s", self.id, self.client_address, reason)
            raise _Closed(reason) from None

    def _response_payloads(self) -> list[bytes]:
        return self.scope.response_payloads()

    # connect_server (2.2)

    async def _connect_server(self) -> bool | None:
        """True: fake-server mode; False: a backend greeting is to be relayed (or a
        pooled connection's was replayed); None: the connection is over."""
        proxy = self.proxy
        while True:
            proxy.refresh_down_backends()
            try:
                decision = self._hook("connect_server")
            except ScriptLoadError:
                self._send_err(0, _LOAD_FAILED)
                raise _Closed("script failed to load") from None
            except ScriptExecuteError:
                self._send_err(0, _EXECUTE_FAILED)
                raise _Closed("script failed to execute") from None
            except _TimedOut as exc:
                self._send_err(0, f"(lua) connect_server: {exc}")
                raise _Closed("connect_server timed out") from None
            if decision == PROXY_SEND_RESULT:
                payloads = self._response_payloads()
                if payloads and payloads[0][:1] == b"\x0a":
                    self._take_fake_challenge(payloads[0])
                    self._send(payloads, 0)
                    return True
                self._send(payloads, 0)
                if payloads and payloads[0][:1] == b"\xff":
                    raise _Closed("connect_server answered with an error")
                return True
            if self.server is not None:
                if decision == PROXY_IGNORE_RESULT:
                    self._replay_pooled_greeting()
                    return False
                self._to_pool()
            ndx = self.backend_ndx
            if (
                not 1 <= ndx <= len(proxy.backends)
                or proxy.backends[ndx - 1].state == BACKEND_STATE_DOWN
            ):
                ndx = proxy.default_backend()
            if ndx == 0:
                self._send(
                    [
                        wire.pre41_err_payload(
                            wire.ER_UNKNOWN_ERROR, "(proxy) all backends are down"
                        )
                    ],
                    0,
                )
                raise _Closed("all backends are down")
            backend = proxy.backends[ndx - 1]
            try:
                conn = await self._open(backend)
            except (OSError, TimeoutError) as exc:
                log.warning(
                    "connection %d: backend %s unreachable: %s", self.id, backend.address, exc
                )
                backend.set_state(BACKEND_STATE_DOWN)
                self.backend_ndx = 0
                proxy.addons.trigger(
                    AuthenticationFailed(
                        self.info(),
                        int(ErrorCode.ER_HANDSHAKE_ERROR),  # as the relay reports it
                        f"mysqlproxy: cannot connect to backend {backend.address}: {exc}",
                    )
                )
                continue
            backend.set_state(BACKEND_STATE_UP)
            backend.connected_clients += 1
            conn.leg.on_lost = self._server_lost
            self.server = conn
            self.backend_ndx = ndx
            return False

    async def _open(self, backend: BackendState) -> ServerConnection:
        loop = asyncio.get_running_loop()
        address = backend.address
        leg = _Leg()
        timeout = self.proxy.options.connect_timeout
        if address.unix_path is not None:
            coro = loop.create_unix_connection(lambda: leg, address.unix_path)
        else:
            coro = loop.create_connection(lambda: leg, address.host, address.port)
        started = loop.time()
        transport, _ = await asyncio.wait_for(coro, timeout)
        # A backend that accepts and closes before its greeting (a server going down:
        # the listening socket outlives it for a moment) is as unreachable as one that
        # refuses: the caller marks it DOWN and chooses again (2.2), and the client is
        # not dropped. The connect timeout covers the greeting too.
        try:
            while not leg.buffer and not leg.closed:
                await asyncio.wait_for(leg.wait(), max(0.0, started + timeout - loop.time()))
        except TimeoutError:
            transport.abort()
            raise TimeoutError(f"no greeting within {timeout:g}s") from None
        if not leg.buffer:
            transport.abort()
            raise ConnectionResetError("closed the connection before sending a greeting")
        tracker = ConnectionTracker(
            self.id,
            self.client_address,
            str(address),
            masked_capabilities=ENGINE_MASKED_CAPABILITIES,
            emit_query_events=self.proxy.addons.wants_query_events,
        )
        conn = ServerConnection(
            leg,
            backend,
            tracker,
            SocketAddress.from_sockname(transport.get_extra_info("sockname")),
            SocketAddress.from_address(address),
        )
        leg.on_pause = self._server_write_paused
        return conn

    def _take_fake_challenge(self, payload: bytes) -> None:
        try:
            greeting = messages.parse_greeting(payload)
        except (ProtocolError, ValueError, IndexError):
            self.challenge = _Challenge()
            return
        self.challenge = _Challenge(
            version_number(greeting.server_version),
            greeting.thread_id,
            greeting.auth_data[:20],
            greeting.auth_plugin.encode(),
            int(greeting.capabilities),
        )

    def _replay_pooled_greeting(self) -> None:
        server = self.server
        assert server is not None
        self.client.write(server.greeting_packet)
        self.challenge = _Challenge(
            server.mysqld_version,
            server.thread_id,
            server.scramble_buffer,
            server.auth_plugin_name,
            server.capabilities,
        )

    # pools (5.1: assigning backend_ndx)

    def _to_pool(self) -> None:
        server = self.server
        if server is None:
            return
        self.commands_completed_closed += server.tracker.commands_completed
        server.tracker.commands_completed = 0
        self.server = None
        server.backend.connected_clients -= 1
        server.authenticated = True
        server.leg.sink = None
        server.leg.on_pause = None
        pool = server.backend.pool

        def lost(_leg: _Leg) -> None:
            pool.remove(server)

        server.leg.on_lost = lost
        pool.add(server)

    def _from_pool(self, ndx: int) -> bool:
        backend = self.proxy.backends[ndx - 1]
        pooled = backend.pool.take(self.username or b"")
        if pooled is None:
            return False
        if self.server is not None:
            self._to_pool()
        pooled.leg.on_lost = self._server_lost
        pooled.leg.on_pause = self._server_write_paused
        pooled.tracker.connection_id = self.id
        pooled.tracker.client_address = self.client_address
        backend.connected_clients += 1
        self.server = pooled
        return True

    # handshake and auth (2.3 - 2.5)

    async def _fake_auth(self) -> None:
        seq, payload, _raw = await self._read_login_packet()
        if not self._parse_client_auth(payload):
            self._send([wire.PROTOCOL_40_ERR], seq + 1)
            raise _Closed("4.0 protocol client")
        decision = self._auth_hook()
        if decision == PROXY_SEND_RESULT:
            self._send(self._response_payloads(), seq + 1)
        else:
            self._send([wire.ok_payload()], seq + 1)
        self._announce_opened()

    async def _handshake_and_auth(self) -> None:
        server = self.server
        assert server is not None
        if server.authenticated:
            await self._pooled_auth()
            return
        _seq, payload, raw = await server.leg.read_packet()
        if payload[:1] == b"\xff":
            self.client.write(raw)
            raise _Closed("backend refused the connection")
        masked = server.tracker.server_data(raw)
        greeting = server.tracker.greeting
        assert greeting is not None
        server.greeting = greeting
        server.greeting_packet = masked
        server.mysqld_version = version_number(greeting.server_version)
        server.thread_id = greeting.thread_id
        server.scramble_buffer = (
            greeting.auth_data.rstrip(b"\x00")[:20]
            if len(greeting.auth_data) > 20
            else greeting.auth_data
        )
        server.auth_plugin_name = greeting.auth_plugin.encode()
        server.capabilities = int(server.tracker.server_capabilities)
        self._drain(server.tracker)
        try:
            decision = self._hook("read_handshake")
        except (ScriptLoadError, ScriptExecuteError):
            decision = None
        except _TimedOut as exc:
            self._send_err(0, f"(lua) read_handshake: {exc}")
            raise _Closed("read_handshake timed out") from None
        if decision in (PROXY_SEND_RESULT, PROXY_SEND_QUERY):
            self._send(self._response_payloads(), 0)
            raise _Closed("read_handshake answered itself")
        self.client.write(masked)
        self.challenge = _Challenge(
            server.mysqld_version,
            server.thread_id,
            server.scramble_buffer,
            server.auth_plugin_name,
            server.capabilities,
        )
        seq, payload, raw = await self._read_login_packet()
        if not self._parse_client_auth(payload):
            self._send([wire.PROTOCOL_40_ERR], seq + 1)
            raise _Closed("4.0 protocol client")
        decision = self._auth_hook()
        if decision == PROXY_SEND_RESULT:
            self._send(self._response_payloads(), seq + 1)
            # The backend never saw a login: it is of no further use.
            self._announce_opened()
            return
        if decision == PROXY_SEND_QUERY and len(self.queries):
            replacement = self.queries.items.popleft().query
            raw = wire.frame([replacement], seq)[0]
        self.queries.items.clear()
        server.leg.write(server.tracker.client_data(raw))
        await self._auth_result(seq + 1, 0)

    async def _pooled_auth(self) -> None:
        server = self.server
        assert server is not None
        seq, payload, _raw = await self._read_login_packet()
        if not self._parse_client_auth(payload):
            self._send([wire.PROTOCOL_40_ERR], seq + 1)
            raise _Closed("4.0 protocol client")
        decision = self._auth_hook()
        if decision == PROXY_SEND_RESULT:
            self._send(self._response_payloads(), seq + 1)
            self._announce_opened()
            return
        if not self.proxy.options.pool_change_user:
            if (
                self.username == server.username
                and self.scrambled_password == server.scrambled_password
            ):
                self._send([wire.ok_payload()], seq + 1)
                self._announce_opened()
                return
            self._send([wire.err_payload(1045, "(proxy-pool) login failed", "28000")], seq + 1)
            raise _Closed("pooled login failed")
        change = bytearray(b"\x11")
        change += (self.username or b"") + b"\x00"
        scramble = self.scrambled_password or b""
        change += bytes((len(scramble),)) + scramble
        change += self.client_default_db + b"\x00"
        change += self.client_charset.to_bytes(2, "little")
        if self.challenge is not None and self.challenge.capabilities & _CLIENT_PLUGIN_AUTH:
            change += (self.client_auth_plugin or b"mysql_native_password") + b"\x00"
        if int(server.tracker.capabilities) & _CLIENT_CONNECT_ATTRS:
            # The server reads connection attributes when the connection's first login
            # announced them (MariaDB refuses the command without): none.
            change += b"\x00"
        out, _ = wire.frame([bytes(change)], 0)
        server.leg.write(server.tracker.client_data(out))
        await self._auth_result(seq + 1, seq)

    def _parse_client_auth(self, payload: bytes) -> bool:
        """Fills client.* from the handshake response; False for a pre-4.1 client."""
        if len(payload) < 2 or not (payload[0] | payload[1] << 8) & _CLIENT_PROTOCOL_41:
            return False
        caps = Capability(self.challenge.capabilities if self.challenge else 0xFFFFFFFF)
        try:
            response = messages.parse_handshake_response(payload, caps)
        except (ProtocolError, ValueError, IndexError) as exc:
            raise _Closed(f"malformed handshake response: {exc}") from None
        self.username = response.username.encode()
        self.scrambled_password = response.auth_response
        self.client_default_db = (response.database or "").encode()
        self.client_auth_plugin = (response.auth_plugin or "").encode()
        self.client_capabilities = int(response.capabilities)
        self.client_charset = response.charset
        return True

    def _auth_hook(self) -> int | None:
        try:
            return self._hook("read_auth")
        except (ScriptLoadError, ScriptExecuteError):
            return None
        except _TimedOut as exc:
            self._send_err(2, f"(lua) read_auth: {exc}")
            raise _Closed("read_auth timed out") from None

    async def _auth_result(self, client_seq: int, offset: int) -> None:
        """Relay the server's auth answer(s) through read_auth_result (2.5)."""
        server = self.server
        assert server is not None
        while True:
            _seq, payload, raw = await server.leg.read_packet()
            server.tracker.server_data(raw)
            server.username = self.username
            server.scrambled_password = self.scrambled_password
            server.default_db = self.client_default_db
            auth = self.proxy.objects.table(packet=payload)
            try:
                decision = self._hook("read_auth_result", auth)
            except (ScriptLoadError, ScriptExecuteError):
                decision = None
            except _TimedOut as exc:
                self._send_err(client_seq, f"(lua) read_auth_result: {exc}")
                raise _Closed("read_auth_result timed out") from None
            if decision == PROXY_SEND_RESULT:
                self._send(self._response_payloads(), client_seq)
            else:
                if offset:
                    raw = wire.renumber(raw, offset, [0])
                self.client.write(raw)
            self._drain_server_events()
            first = payload[:1]
            if first == b"\x00":
                if self.server is not None:
                    self.server.authenticated = True
                self._announce_opened()
                return
            if first == b"\xff":
                raise _Closed("login refused")
            # auth switch / more data: the client answers, the server replies again
            cseq, _cpayload, craw = await self._read_login_packet()
            if self.server is None:
                raise _Closed("no server for the auth exchange")
            if offset:
                craw = wire.renumber(craw, -offset, [0])
            self.server.leg.write(self.server.tracker.client_data(craw))
            client_seq = cseq + 1

    def _announce_opened(self) -> None:
        if not self._opened:
            self._opened = True
            self.proxy.addons.trigger(ConnectionOpened(self.info()))

    def _drain(self, tracker: ConnectionTracker) -> None:
        if not tracker.events:
            return
        events, tracker.events = tracker.events, []
        addons = self.proxy.addons
        for event in events:
            if isinstance(event, tracker_events.QueryEvent):
                addons.query_completed(event)
            elif isinstance(event, tracker_events.AuthenticationFailed):
                addons.trigger(
                    AuthenticationFailed(self.info(), event.error_code, event.error_message)
                )

    def _drain_server_events(self) -> None:
        if self.server is not None:
            self._drain(self.server.tracker)

    # commands (2.6, 2.9)

    # Commands run on a fast path inside the transport callbacks: read_query is called
    # as the command arrives and, when it decides nothing (log.lua), the client's bytes
    # go to the server and the response chunks stream back from the server's
    # data_received, with no task switch. Everything else (injections, LOAD DATA
    # without a server, COM_QUIT, errors) is handed to the connection's task as a job.

    async def _command_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._close_requested:
                raise _Closed("proxy shutting down")
            self._job = loop.create_future()
            self._busy = False
            self._waiting_since = _monotonic()
            self.client.sink = self._client_data
            if self.client.closed:
                raise _Closed(None)
            self._client_data(b"")  # commands that arrived meanwhile
            try:
                job = await self._job
            finally:
                self.client.sink = None
            self._in_command = True
            try:
                await job()
            finally:
                self._in_command = False
            if self.connection_close:
                raise _Closed("proxy.connection.connection_close")

    def _fail_job(self, exc: BaseException) -> None:
        self._busy = True
        job = self._job
        if job is not None and not job.done():
            job.set_exception(exc)

    def _slow(self, job: Callable[[], Any]) -> None:
        self._busy = True
        future = self._job
        if future is not None and not future.done():
            future.set_result(job)

    def _client_data(self, data: bytes) -> None:
        """The client leg's sink while commands are read on the fast path."""
        client = self.client
        n = len(data)
        if (
            n > 4
            and not self._busy
            and not self._in_client_data
            and not client.buffer
            and (data[0] | data[1] << 8 | data[2] << 16) + 4 == n
            and n - 4 < MAX_PACKET_PAYLOAD
            and (not client.max_payload or n - 4 <= client.max_payload)
        ):
            # The common case: the chunk is exactly one command packet.
            self._busy = True
            self._in_client_data = True
            try:
                self._fast_command(data[3], data[4:], data)
            except (_Closed, ProtocolError) as exc:
                self._fail_job(exc)
            except Exception as exc:  # a bug here must end this connection only
                log.exception("connection %d: internal error", self.id)
                self._fail_job(_Closed(f"internal error: {exc}"))
            finally:
                self._in_client_data = False
            if self._busy or not client.buffer:
                return
            data = b""
        if data:
            if self._busy:
                client.stash(data)  # waits its turn; reading pauses if it piles up
            else:
                client.buffer += data
        if self._busy:
            self._client_data_while_busy()
            return
        if self._in_client_data:
            return
        self._in_client_data = True
        try:
            while not self._busy:
                packet = client.take_packet()
                if packet is None:
                    return
                self._busy = True
                try:
                    self._fast_command(*packet)
                except (_Closed, ProtocolError) as exc:
                    self._fail_job(exc)
                except Exception as exc:  # a bug here must end this connection only
                    log.exception("connection %d: internal error", self.id)
                    self._fail_job(_Closed(f"internal error: {exc}"))
            client.check_full()  # busy now: the rest waits its turn
        finally:
            self._in_client_data = False

    def _client_data_while_busy(self) -> None:
        """During a streamed response, the client only speaks to send a LOCAL INFILE
        file or to answer an auth switch: relayed. Anything else waits its turn."""
        server = self._fast_server
        client = self.client
        if server is None or server.leg.sink is None or not client.buffer:
            return
        tracker = server.tracker
        if tracker.client_phase in (C_INFILE, C_AUTH):
            data = client.take_all()
            try:
                server.leg.write(tracker.client_data(data))
            except ProtocolError as exc:
                self._fail_job(exc)

    def _fast_command(self, seq: int, payload: bytes, raw: bytes) -> None:
        next_seq = (seq + 1) & 0xFF
        decision = self._read_query(next_seq, payload)
        if decision is _HANDLED:
            self._command_done()
            return
        if decision == PROXY_SEND_QUERY and len(self.queries):
            self._slow(lambda: self._injections(next_seq))
            return
        if decision == PROXY_SEND_RESULT:
            payloads = self._response_payloads()
            if self.server is None:
                self.queries.items.clear()
            self._send(payloads, next_seq)
            self.queries.items.clear()
            if payloads and payloads[0][:1] == b"\xfb" and self.server is None:
                self._slow(self._swallow_infile)
                return
            self._command_done()
            return
        if decision is not None and decision != PROXY_SEND_QUERY:
            log.critical("(read_query) returned %d: treated as no decision", decision)
        elif decision == PROXY_SEND_QUERY:
            log.critical("(read_query) PROXY_SEND_QUERY with an empty proxy.queries")
        if len(self.queries):
            log.critical(
                "(read_query) proxy.queries was filled but PROXY_SEND_QUERY not returned: dropped"
            )
            self.queries.items.clear()
        server = self.server
        if server is None:
            raise _Closed("I have no server backend")
        tracker = server.tracker
        tracker.emit_query_events = self.proxy.addons.wants_query_events
        self._fast_target = tracker.commands_completed + 1
        server.leg.write(tracker.client_data(raw))
        if tracker.commands_completed >= self._fast_target:
            self._drain(tracker)
            if payload[:1] == b"\x01":
                # COM_QUIT: the server closes; so do we, whatever it may still say
                # (a fake server answers OK) - clients wait for the close.
                raise _Closed(None)
            self._command_done()
            return
        self._fast_server = server
        server.leg.sink = self._server_data
        if server.leg.buffer:
            pending = server.leg.take_all()
            self._server_data(pending)

    def _server_data(self, data: bytes) -> None:
        """The server leg's sink while a response streams on the fast path."""
        server = self._fast_server
        if server is None:
            return
        tracker = server.tracker
        try:
            out = tracker.server_data(data)
        except Exception as exc:  # ProtocolError; anything else is a bug, same outcome
            server.leg.sink = None
            self._fail_job(exc if isinstance(exc, ProtocolError) else _Closed(str(exc)))
            return
        self.client.write(out)
        if tracker.events:
            self._drain(tracker)
        if tracker.commands_completed >= self._fast_target:
            server.leg.sink = None
            self._fast_server = None
            self._command_done()
        elif self.client.buffer and tracker.client_phase == C_INFILE:
            self._client_data_while_busy()

    def _command_done(self) -> None:
        if self.connection_close:
            self._fail_job(_Closed("proxy.connection.connection_close"))
            return
        if self._close_requested:
            self._fail_job(_Closed("proxy shutting down"))
            return
        self._busy = False
        self._waiting_since = _monotonic()
        if not self._in_client_data and self.client.buffer:
            self._client_data(b"")

    def _read_query(self, next_seq: int, payload: bytes) -> Any:
        """Call read_query; returns the decision, or _HANDLED when an answer was sent
        already. Raises _Closed where the connection ends."""
        server = self.server
        if server is not None and payload[:1] == b"\x11" and 50114 < server.mysqld_version < 50118:
            self._send_err(
                next_seq,
                "COM_CHANGE_USER is broken on 5.1.14-.17, please upgrade the MySQL Server",
            )
            return _HANDLED
        self.queries.items.clear()
        scope = self.scope
        try:
            decision = self._hook("read_query", payload, reset_response=True)
        except ScriptLoadError:
            self._send_err(next_seq, _LOAD_FAILED)
            raise _Closed("script failed to load") from None
        except ScriptExecuteError:
            self._send_err(next_seq, _EXECUTE_FAILED)
            raise _Closed("script failed to execute") from None
        except _TimedOut as exc:
            self._send_err(next_seq, f"(lua) read_query: {exc}")
            return _HANDLED
        if scope.last_error is not None:
            self.queries.items.clear()  # recommended: a failed hook's injections go
        return decision

    async def _swallow_infile(self) -> None:
        """No server: take the client's LOCAL INFILE data and acknowledge it (2.8)."""
        while True:
            cseq, payload, _raw = await self.client.read_packet()
            if not payload:
                self._send([wire.ok_payload()], cseq + 1)
                return

    async def _relay(
        self,
        server: ServerConnection,
        target: int,
        *,
        to_client: bool,
        offset: int,
        result: ResultData | None,
        inj: Injection | None = None,
        stop_on_infile: bool = False,
    ) -> bool:
        """Feed server data to the tracker until `target` commands are complete (or the
        server asks for a LOCAL INFILE file and stop_on_infile is set: returns False).
        Data is written to the client (renumbered by `offset`) when `to_client`."""
        tracker = server.tracker
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        client = self.client
        server_leg = server.leg
        state = [0]
        client_state = [0]  # renumbering state of the client's (LOCAL INFILE) packets
        splitter = wire.PacketSplitter() if result is not None else None
        pieces: list[bytes] = []

        def sink(data: bytes) -> None:
            if done.done():
                server_leg.buffer += data
                return
            try:
                out = tracker.server_data(data)
            except ProtocolError as exc:
                done.set_exception(exc)
                return
            if inj is not None:
                now = time.perf_counter_ns()
                if not inj.first_ns:
                    inj.first_ns = now
                inj.last_ns = now
            if splitter is not None and result is not None:
                for _seq, payload in splitter.feed(data):
                    pieces.append(payload)
                    if len(payload) < MAX_PACKET_PAYLOAD:
                        result.feed(pieces[0] if len(pieces) == 1 else b"".join(pieces))
                        pieces.clear()
            if to_client:
                client.write(wire.renumber(out, offset, state) if offset else out)
            if tracker.events:
                self._drain(tracker)
            if tracker.commands_completed >= target:
                done.set_result(True)
            elif stop_on_infile and tracker.client_phase == C_INFILE:
                done.set_result(False)

        def client_sink(data: bytes) -> None:
            phase = tracker.client_phase
            if phase in (C_INFILE, C_AUTH):
                try:
                    out = tracker.client_data(
                        wire.renumber(data, -offset, client_state) if offset else data
                    )
                except ProtocolError as exc:
                    if not done.done():
                        done.set_exception(exc)
                    return
                server_leg.write(out)
            else:
                client.stash(data)

        def lost(_leg: _Leg) -> None:
            if not done.done():
                done.set_exception(_Closed("server closed the connection during a command"))

        server_leg.sink = sink
        client.sink = client_sink
        previous_lost = server_leg.on_lost
        server_leg.on_lost = lost
        try:
            if server_leg.buffer:
                pending = server_leg.take_all()
                sink(pending)
            if server_leg.closed and not done.done():
                raise _Closed("server closed the connection")
            return await done
        finally:
            server_leg.sink = None
            client.sink = None
            server_leg.on_lost = previous_lost

    async def _injections(self, client_seq: int) -> None:
        """Send the queued injections one by one (2.9)."""
        sent = False
        results = self.proxy.results
        while len(self.queries):
            server = self.server
            if server is None:
                raise _Closed("I have no server backend")
            inj = self.queries.items[0]
            if not inj.resultset_is_needed and sent:
                raise _Closed("a streamed injection after a result was already sent")
            tracker = server.tracker
            tracker.emit_query_events = self.proxy.addons.wants_query_events
            target = tracker.commands_completed + 1
            data, server_next = wire.frame([inj.query], 0)
            inj.queued_ns = inj.queued_ns or time.perf_counter_ns()
            server.leg.write(tracker.client_data(data))
            command = inj.query[0] if inj.query else 0
            inj.result = ResultData(command, inj.resultset_is_needed)
            offset = (client_seq - server_next) & 0xFF
            if tracker.commands_completed >= target:
                self._drain(tracker)
                self.queries.items.popleft()
                continue
            if not inj.resultset_is_needed:
                await self._relay(
                    server, target, to_client=True, offset=offset, result=inj.result, inj=inj
                )
                sent = True
                self.queries.items.popleft()
                self._call_read_query_result(inj, results, client_seq, streamed=True)
            else:
                complete = await self._relay(
                    server,
                    target,
                    to_client=False,
                    offset=0,
                    result=inj.result,
                    inj=inj,
                    stop_on_infile=True,
                )
                self.queries.items.popleft()
                decision = self._call_read_query_result(inj, results, client_seq, streamed=False)
                if decision == PROXY_SEND_RESULT:
                    self._send(self._response_payloads(), client_seq)
                    sent = True
                elif decision is None:
                    if not sent:
                        payloads = inj.result.packets
                        self.client.write(wire.frame(payloads, client_seq)[0])
                        sent = True
                    else:
                        log.critical("(read_query_result) already sent a resultset: result dropped")
                # PROXY_IGNORE_RESULT and other numbers: dropped
                if not complete:
                    # LOCAL INFILE: the file and the final OK pass without hooks.
                    await self._relay(server, target, to_client=True, offset=offset, result=None)
                    sent = True
            if self.connection_close:
                return
        if not sent:
            log.critical("no result was sent for a command: answering with an error")
            self._send_err(client_seq, "(proxy) no result for this command (check the script)")

    def _call_read_query_result(
        self, inj: Injection, results: ResultObjects, client_seq: int, *, streamed: bool
    ) -> int | None:
        try:
            decision = self._hook("read_query_result", results.injection(inj))
        except ScriptLoadError:
            self._send_err(client_seq, _LOAD_FAILED)
            raise _Closed("script failed to load") from None
        except ScriptExecuteError:
            self._send_err(client_seq, _EXECUTE_FAILED)
            raise _Closed("script failed to execute") from None
        except _TimedOut as exc:
            if streamed:
                return None
            self._send_err(client_seq, f"(lua) read_query_result: {exc}")
            return PROXY_IGNORE_RESULT
        if streamed:
            if decision is not None:
                log.critical(
                    "(read_query_result) the result was already streamed: return value ignored"
                )
            return None
        if decision is not None and decision not in (PROXY_SEND_RESULT, PROXY_IGNORE_RESULT):
            log.critical("(read_query_result) neither SEND_RESULT nor IGNORE_RESULT: %d", decision)
            return PROXY_IGNORE_RESULT
        return decision

    # proxy.connection (5.1)

    def _connection_index(self, key: Any) -> Any:
        if key == b"server":  # (answered from the cache while attached)
            server = self.server
            return self._server_socket(server) if server is not None else None
        key = key.decode() if isinstance(key, bytes) else key
        if key == "client":
            if self._client_socket_obj is None:
                self._client_socket_obj = self._socket_object(None)
            return self._client_socket_obj
        if key == "server":
            server = self.server
            return self._server_socket(server) if server is not None else None
        if key == "backend_ndx":
            return self.backend_ndx if self.server is not None or self.backend_ndx else 0
        if key in ("default_db", "thread_id", "mysqld_version"):
            raise LuaApiError(
                f"proxy.connection.{key} is deprecated, use proxy.connection.client.{key} "
                f"or proxy.connection.server.{key}"
            )
        return None

    def _connection_newindex(self, key: Any, value: Any) -> Any:
        key = key.decode() if isinstance(key, bytes) else key
        if key == "backend_ndx":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return b"proxy.connection.backend_ndx has to be a number"
            ndx = int(value)
            if ndx == 0:
                self._to_pool()
                self.backend_ndx = 0
            elif 1 <= ndx <= len(self.proxy.backends):
                self._from_pool(ndx)
                self.backend_ndx = ndx
            else:
                self.backend_ndx = ndx
            return None
        if key == "connection_close":
            if not isinstance(value, bool):
                return b"proxy.connection.connection_close has to be a boolean"
            self.connection_close = value
            return None
        return f"proxy.connection.{key} is not writable".encode()

    def _socket_object(self, server: ServerConnection | None) -> Any:
        f = self.proxy.objects
        if server is None:
            src = f.address(self.client_src)
            dst = f.address(self.client_dst)
        else:
            src = f.address(server.src)
            dst = f.address(server.dst)

        # src and dst never change; the server's greeting fields neither, once known.
        cache = f.table(src=src, dst=dst)

        def index(key: Any) -> Any:
            if server is not None and server.greeting is not None and key in _GREETING_KEYS:
                value = getattr(server, key.decode())
                cache[key] = value
                return value
            key = key.decode() if isinstance(key, bytes) else key
            if key == "src":
                return src
            if key == "dst":
                return dst
            if key == "address":
                raise LuaApiError(".address is deprecated. Use .src.name or .dst.name instead")
            if server is None:
                challenge = self.challenge
                if key == "default_db":
                    return self.client_default_db
                if key == "username":
                    return self.username
                if key == "scrambled_password":
                    return self.scrambled_password
                if key == "auth_plugin_name":
                    if self.client_auth_plugin is not None:
                        return self.client_auth_plugin
                    return challenge.auth_plugin_name if challenge else None
                if challenge is None:
                    return None
                if key == "mysqld_version":
                    return challenge.mysqld_version
                if key == "thread_id":
                    return challenge.thread_id
                if key == "scramble_buffer":
                    return challenge.scramble_buffer
                return None
            if key == "default_db":
                schema = server.tracker.schema
                return schema.encode() if schema is not None else server.default_db
            if key == "username":
                return server.username
            if key == "scrambled_password":
                return server.scrambled_password
            if key == "auth_plugin_name":
                return server.auth_plugin_name
            if key == "mysqld_version":
                return server.mysqld_version
            if key == "thread_id":
                return server.thread_id
            if key == "scramble_buffer":
                return server.scramble_buffer
            return None

        return f.make(index, None, None, "socket", cache)


class _TimedOut(Exception):
    """A hook ran past its time limit."""


_HANDLED = object()  # _read_query answered the command itself
_GREETING_KEYS = frozenset((b"thread_id", b"mysqld_version", b"scramble_buffer"))
