"""Listeners, accept, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Sequence

from mysqlproxy.hooks import AddonManager
from mysqlproxy.proxy.backends import Address, Backend
from mysqlproxy.proxy.session import Session

log = logging.getLogger(__name__)


class ListenError(Exception):
    """A listening address could not be bound."""


class ProxyServer:
    """Accepts clients on one or more addresses and relays each to the backend."""

    def __init__(
        self,
        listen: Sequence[Address],
        backend: Backend,
        addons: AddonManager | None = None,
    ) -> None:
        self.listen = list(listen)
        self.backend = backend
        self.addons = addons or AddonManager()
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
                    _remove_stale_socket(address.unix_path)
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

    def _new_client(self) -> asyncio.Protocol:
        connection_id = self._next_connection_id
        self._next_connection_id += 1
        session = Session(connection_id, self.backend, self.addons, self._session_closed)
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

    async def _close_listeners(self) -> None:
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


def _remove_stale_socket(path: str) -> None:
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
