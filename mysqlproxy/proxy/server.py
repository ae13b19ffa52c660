"""Listeners, accept, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Sequence
from typing import cast

from mysqlproxy.hooks import AddonManager
from mysqlproxy.protocol.constants import ErrorCode
from mysqlproxy.protocol.messages import encode_err
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.proxy.backends import Address, Backend
from mysqlproxy.proxy.limits import Limits, sweep_idle
from mysqlproxy.proxy.session import Session
from mysqlproxy.proxy.tasks import spawn
from mysqlproxy.proxy.tls import ClientTls

log = logging.getLogger(__name__)

# What the server says to a client over max_connections, in place of its greeting.
_TOO_MANY_CONNECTIONS = encode_packet(
    0, encode_err(ErrorCode.ER_CON_COUNT_ERROR, "Too many connections", "08004")
)


class ListenError(Exception):
    """A listening address could not be bound."""


class ProxyServer:
    """Accepts clients on one or more addresses and relays each to the backend."""

    # The relay can use TLS toward the backend (the Lua engine, which stands in for
    # this class under --lua-script, cannot: the control plane asks).
    backend_tls_supported = True

    def __init__(
        self,
        listen: Sequence[Address],
        backend: Backend,
        addons: AddonManager | None = None,
        limits: Limits | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        self.listen = list(listen)
        self.backend = backend
        self.addons = addons or AddonManager()
        self.limits = limits if limits is not None else Limits()
        self.tls = tls  # TLS toward clients (None: CLIENT_SSL not offered)
        self.connections_refused = 0  # over max_connections, since start
        self._refusing = False  # at max_connections (logged once per episode)
        self._idle_sweep: asyncio.Task[None] | None = None
        self.sessions: set[Session] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._next_connection_id = 1
        self._commands_of_closed = 0
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self.bound: list[Address] = []  # actual addresses (port 0 resolved)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for address in self.listen:
                if address.unix_path is not None:
                    remove_stale_socket(address.unix_path)
                    server = await loop.create_unix_server(self._new_client, address.unix_path)
                else:
                    server = await loop.create_server(
                        self._new_client, address.host, address.port, reuse_address=True
                    )
                self._servers.append(server)
                self.bound.append(_bound_address(server, address))
        except OSError as exc:
            await self._close_listeners()
            raise ListenError(f"cannot listen on {address}: {_describe(exc)}") from exc
        self._idle_sweep = spawn(sweep_idle(self.limits, lambda: self.sessions), "idle-sweep")

    def _new_client(self) -> asyncio.Protocol:
        limit = self.limits.max_connections
        if limit and len(self.sessions) >= limit:
            self.connections_refused += 1
            if not self._refusing:
                self._refusing = True
                log.warning("max_connections (%d) reached: refusing new clients", limit)
            return TooManyConnections()
        connection_id = self._next_connection_id
        self._next_connection_id += 1
        session = Session(
            connection_id, self.backend, self.addons, self._session_closed, self.limits, self.tls
        )
        self.sessions.add(session)
        self._all_closed.clear()
        return session.client_protocol()

    @property
    def connections_total(self) -> int:
        """Client connections accepted since start."""
        return self._next_connection_id - 1

    @property
    def commands_total(self) -> int:
        """Commands completed since start, by all connections."""
        live = sum(s.tracker.commands_completed for s in self.sessions if s.tracker is not None)
        return self._commands_of_closed + live

    def _session_closed(self, session: Session) -> None:
        if session.tracker is not None and session in self.sessions:
            self._commands_of_closed += session.tracker.commands_completed
        self.sessions.discard(session)
        if not self.sessions:
            self._all_closed.set()
        if self._refusing and len(self.sessions) < (self.limits.max_connections or 1 << 62):
            self._refusing = False
            log.info("below max_connections again: accepting new clients")

    async def _close_listeners(self) -> None:
        if self._idle_sweep is not None:
            self._idle_sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._idle_sweep
            self._idle_sweep = None
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        # Only the socket files this server created: a path it failed to bind belongs to
        # someone else (a live proxy, a regular file).
        for address in self.bound:
            if address.unix_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(address.unix_path)
        self._servers.clear()

    async def shutdown(self, grace_period: float) -> None:
        """Stop accepting; let commands in flight finish within the grace period; close
        the rest."""
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            session.request_close()
        if self.sessions:
            log.info(
                "waiting up to %gs for %d connection(s) with commands in flight",
                grace_period,
                len(self.sessions),
            )
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace_period)
            except TimeoutError:
                log.warning("grace period over: closing %d connection(s)", len(self.sessions))
                for session in list(self.sessions):
                    session.abort()
        await self._close_listeners()


class TooManyConnections(asyncio.Protocol):
    """A client over max_connections: ERR 1040 in place of the greeting, as the server
    sends it, and the connection closed. No session, no backend connection."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(_TOO_MANY_CONNECTIONS)
        transport.close()


def remove_stale_socket(path: str) -> None:
    """A socket file left by a proxy that died would block the bind; a live one is kept."""
    import socket
    import stat

    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
    else:
        # Someone is listening there. asyncio and uvloop would silently unlink the file
        # and take the path over: refuse as bind() would on a TCP port.
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), path)
    finally:
        probe.close()


def _bound_address(server: asyncio.AbstractServer, requested: Address) -> Address:
    if requested.unix_path is not None:
        return requested
    for sock in getattr(server, "sockets", None) or ():
        name = sock.getsockname()
        return Address(host=requested.host, port=name[1])
    return requested


def _describe(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno == errno.EACCES:
        return "permission denied"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)
