"""One client connection and its backend connection: the relay.

Both legs are asyncio Protocols (not Streams): bytes are handed to the tracker and
written on in the chunks they arrived in. Backpressure runs both ways: when one leg's
write buffer passes its high-water mark, reading from the other leg pauses, so memory
per connection stays bounded whatever the size of a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, cast

from mysqlproxy.hooks import (
    AddonManager,
    AuthenticationFailed,
    ConnectionClosed,
    ConnectionInfo,
    ConnectionOpened,
)
from mysqlproxy.protocol import events as tracker_events
from mysqlproxy.protocol.constants import Command, ErrorCode
from mysqlproxy.protocol.errors import PacketTooLarge, ProtocolError, UnsupportedFeature
from mysqlproxy.protocol.messages import encode_err
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import C_COMMAND, S_CONNECT, ConnectionTracker
from mysqlproxy.proxy.backends import Backend
from mysqlproxy.proxy.limits import Limits
from mysqlproxy.proxy.tasks import spawn

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

# Write buffer high-water mark per leg. Small enough that a slow client holds little
# memory, large enough that a fast one never waits on it.
WRITE_HIGH_WATER = 256 * 1024
# After an ERR that refuses a packet the client may still be sending, how long the rest
# is read and dropped before the socket is closed. Closing with unread data sends a
# reset, and a reset can destroy the ERR before the client reads it.
LINGER_SECONDS = 2.0
# MySQL's own words for ER_NET_PACKET_TOO_LARGE (clients and pools match on them).
PACKET_TOO_LARGE_MESSAGE = "Got a packet bigger than 'max_allowed_packet' bytes"
_COM_QUIT_PACKET = encode_packet(0, bytes((Command.COM_QUIT,)))


def _peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    sock = transport.get_extra_info("sockname")
    return f"unix:{sock}" if sock else "unix"


class _Leg(asyncio.Protocol):
    """Adapts asyncio's Protocol callbacks to one side of a Session."""

    def __init__(self, session: Session, is_client: bool) -> None:
        self.session = session
        self.is_client = is_client

    def data_received(self, data: bytes) -> None:
        if self.is_client:
            self.session.client_data(data)
        else:
            self.session.backend_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.leg_lost(self.is_client, exc)

    def pause_writing(self) -> None:
        self.session.pause_reading(from_client=not self.is_client)

    def resume_writing(self) -> None:
        self.session.resume_reading(from_client=not self.is_client)

    def eof_received(self) -> bool | None:
        return False  # a half-closed leg closes the pair


class Session:
    """Relays one client connection to the backend through a ConnectionTracker."""

    def __init__(
        self,
        connection_id: int,
        backend: Backend,
        addons: AddonManager,
        on_closed: Callable[[Session], None],
        limits: Limits | None = None,
    ) -> None:
        self.connection_id = connection_id
        self.backend = backend
        self.addons = addons
        self.limits = limits if limits is not None else Limits()
        self._on_closed = on_closed
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.client_address = ""
        self.connected_at = time.time()
        self.tracker: ConnectionTracker | None = None
        self.closed = False
        self.close_reason: str | None = None
        self.close_when_idle = False
        self._opened_announced = False
        self._pending_client_data: list[bytes] = []
        self._connect_task: asyncio.Task[None] | None = None
        self._greeting_timer: asyncio.TimerHandle | None = None
        self.client_reads = 0  # chunks received from the client (idle detection)
        self._idle_mark = -1  # client_reads when the idle sweep last saw the client idle
        self._idle_since = 0.0
        # An ERR to send once the commands before an oversized packet are answered.
        self._deferred_refusal: tuple[int, int, str, str] | None = None
        self._linger = False  # end the client leg with a lingering close (see _refuse)

    # --- set-up ------------------------------------------------------------------

    def client_protocol(self) -> asyncio.Protocol:
        return _ClientLeg(self)

    def client_connected(self, transport: asyncio.Transport) -> None:
        self.client = transport
        self.client_address = _peer_name(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        _set_nodelay(transport)
        self.tracker = ConnectionTracker(
            self.connection_id,
            self.client_address,
            str(self.backend.address),
            emit_query_events=self.addons.wants_query_events,
        )
        # Nothing is expected from the client before the greeting; hold it meanwhile.
        transport.pause_reading()
        self._connect_task = spawn(self._connect_backend(), f"connect-{self.connection_id}")

    async def _connect_backend(self) -> None:
        loop = asyncio.get_running_loop()
        address = self.backend.address
        try:
            if address.unix_path is not None:
                connect = loop.create_unix_connection(
                    lambda: _Leg(self, is_client=False), address.unix_path
                )
            else:
                connect = loop.create_connection(
                    lambda: _Leg(self, is_client=False), address.host, address.port
                )
            started = loop.time()
            transport, _ = await asyncio.wait_for(connect, self.backend.connect_timeout)
        except (OSError, TimeoutError) as exc:
            reason = (
                f"timed out after {self.backend.connect_timeout:g}s"
                if isinstance(exc, TimeoutError)
                else (exc.strerror or str(exc))
            )
            self._backend_unreachable(reason)
            return
        if self.closed:
            transport.abort()
            return
        # A backend that accepts but never greets (a hung server, a full accept queue
        # behind a load balancer) would leave the client waiting forever: the one
        # connect timeout covers the TCP connect and the greeting, as libmysqlclient's
        # connect_timeout does.
        self._greeting_timer = loop.call_at(
            started + self.backend.connect_timeout, self._greeting_timed_out
        )
        self.server = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        _set_nodelay(transport)
        pending, self._pending_client_data = self._pending_client_data, []
        for chunk in pending:
            self.client_data(chunk)
        if self.client is not None and not self.closed:
            self.client.resume_reading()

    def _backend_unreachable(self, reason: str) -> None:
        message = f"mysqlproxy: cannot connect to backend {self.backend.address}: {reason}"
        log.warning("connection %d from %s: %s", self.connection_id, self.client_address, message)
        self._refuse(0, ErrorCode.CR_CONN_HOST_ERROR, message, "HY000")
        self.addons.trigger(
            AuthenticationFailed(self.info(), int(ErrorCode.CR_CONN_HOST_ERROR), message)
        )

    def _greeting_timed_out(self) -> None:
        self._greeting_timer = None
        if not self.closed and self.tracker is not None and self.tracker.server_phase == S_CONNECT:
            self._backend_unreachable(
                f"no greeting within {self.backend.connect_timeout:g}s of connecting"
            )

    # --- relay --------------------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        tracker, server = self.tracker, self.server
        if self.closed or tracker is None:
            return
        if server is None:
            self._pending_client_data.append(data)
            return
        if self._deferred_refusal is not None:
            return  # the rest of a refused packet: dropped
        self.client_reads += 1
        tracker.emit_query_events = self.addons.wants_query_events
        tracker.max_packet_size = self.limits.max_packet_size
        try:
            out = tracker.client_data(data)
        except PacketTooLarge as exc:
            self._packet_too_large(tracker, server, exc)
            return
        except UnsupportedFeature as exc:
            self._refuse(2, ErrorCode.ER_NOT_SUPPORTED_YET, f"mysqlproxy: {exc}", "08004")
            return
        except ProtocolError as exc:
            self.close(f"malformed data from client: {exc}")
            return
        if out:
            server.write(out)
        if tracker.events:
            self._dispatch(tracker)

    def backend_data(self, data: bytes) -> None:
        tracker, client = self.tracker, self.client
        if self.closed or tracker is None or client is None:
            return
        try:
            out = tracker.server_data(data)
        except ProtocolError as exc:
            if tracker.server_phase == S_CONNECT:  # nothing relayed yet: say why in an ERR
                self._backend_unreachable(f"malformed greeting: {exc}")
            else:
                self.close(f"malformed data from server: {exc}")
            return
        if out:
            client.write(out)
        if tracker.events:
            self._dispatch(tracker)
        if self.close_when_idle:
            self._close_if_done(tracker)

    def _close_if_done(self, tracker: ConnectionTracker) -> None:
        """Once the commands in flight are answered: send the deferred refusal, or
        close (a shutdown asked for it)."""
        refusal = self._deferred_refusal
        if refusal is None:
            if tracker.idle:
                self.close(None)
        elif tracker.current_command is None:
            self._refuse(*refusal, linger=True)

    def _packet_too_large(
        self, tracker: ConnectionTracker, server: asyncio.Transport, exc: PacketTooLarge
    ) -> None:
        refusal = (
            exc.sequence_id,
            int(ErrorCode.ER_NET_PACKET_TOO_LARGE),
            f"{PACKET_TOO_LARGE_MESSAGE} (mysqlproxy: max_packet_size is {exc.limit})",
            "08S01",
        )
        log.info(
            "connection %d from %s: client packet of %d bytes refused, max_packet_size is %d",
            self.connection_id, self.client_address, exc.size, exc.limit,
        )
        if not exc.behind_commands:
            self._refuse(*refusal, linger=True)
            return
        # Pipelined commands came first: like the server, answer them, then refuse.
        # The complete packets before the oversized one still go to the server; what
        # the client sends from now on is dropped.
        self._deferred_refusal = refusal
        self.close_when_idle = True
        if exc.forward:
            server.write(exc.forward)
        if tracker.events:
            self._dispatch(tracker)

    def idle_check(self, now: float, timeout: float) -> None:
        """Called by the server's idle sweep: close the connection once the client, with
        nothing asked of the server, has sent nothing for `timeout` seconds. Idle time
        counts from the first sweep that saw it, so a client is never closed early."""
        tracker = self.tracker
        if (
            self.closed
            or tracker is None
            or self.server is None
            or self.close_when_idle
            or not tracker.waiting_for_client
        ):
            self._idle_mark = -1
            return
        if self._idle_mark != self.client_reads:
            self._idle_mark = self.client_reads
            self._idle_since = now
        elif now - self._idle_since >= timeout:
            server = self.server
            if tracker.idle and tracker.client_phase == C_COMMAND and not server.is_closing():
                server.write(_COM_QUIT_PACKET)  # a clean goodbye: not an aborted connection
            self.close(f"idle for {now - self._idle_since:.1f}s, idle_timeout is {timeout:g}s")

    def _dispatch(self, tracker: ConnectionTracker) -> None:
        events, tracker.events = tracker.events, []
        addons = self.addons
        for event in events:
            if isinstance(event, tracker_events.QueryEvent):
                addons.query_completed(event)
            elif isinstance(event, tracker_events.Authenticated):
                if not self._opened_announced:
                    self._opened_announced = True
                    addons.trigger(ConnectionOpened(self.info()))
            elif isinstance(event, tracker_events.AuthenticationFailed):
                addons.trigger(
                    AuthenticationFailed(self.info(), event.error_code, event.error_message)
                )

    def pause_reading(self, from_client: bool) -> None:
        transport = self.client if from_client else self.server
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self, from_client: bool) -> None:
        transport = self.client if from_client else self.server
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    # --- teardown -----------------------------------------------------------------

    def _refuse(
        self, sequence_id: int, code: int, message: str, sql_state: str, *, linger: bool = False
    ) -> None:
        """Answer the client with an ERR packet, then close. With linger, the client's
        socket is half-closed after the ERR and read (and dropped) until the client
        closes or LINGER_SECONDS pass: for a client still sending what was refused."""
        if self.client is not None and not self.client.is_closing():
            self.client.write(encode_packet(sequence_id, encode_err(code, message, sql_state)))
            self._linger = linger
        self.close(message)

    def leg_lost(self, is_client: bool, exc: Exception | None) -> None:
        if self.closed:
            return
        side = "client" if is_client else "server"
        tracker = self.tracker
        if not is_client and tracker is not None and tracker.server_phase == S_CONNECT:
            # Nothing reached the client yet: it can still be told why, in its protocol.
            self._backend_unreachable(
                f"connection lost before the greeting: {exc}"
                if exc is not None
                else "it closed the connection before sending a greeting"
            )
            return
        if tracker is not None and tracker.idle:
            reason = None
        elif exc is not None:
            reason = f"{side} connection lost: {exc}"
        else:
            reason = f"{side} closed the connection"
            if tracker is not None and tracker.current_command is not None:
                reason += " during a command"
            elif tracker is not None and not tracker.authenticated:
                reason += " during login"
            elif tracker is not None:
                reason += " in the middle of a packet"  # not idle, yet no command
        self.close(reason)

    def close(self, reason: str | None) -> None:
        """Close both legs. A reason means the connection ended abnormally."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if reason is not None:
            log.info(
                "connection %d from %s closed: %s", self.connection_id, self.client_address, reason
            )
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        if self._greeting_timer is not None:
            self._greeting_timer.cancel()
            self._greeting_timer = None
        for transport in (self.client, self.server):
            if transport is not None and not transport.is_closing():
                if self._linger and transport is self.client:
                    _close_lingering(transport)
                else:
                    # Data already queued (an ERR for the client) is still flushed.
                    transport.close()
        self.addons.trigger(ConnectionClosed(self.info(), reason))
        self._on_closed(self)

    def abort(self) -> None:
        """Drop both legs at once (shutdown after the grace period)."""
        for transport in (self.client, self.server):
            if transport is not None:
                transport.abort()
        self.close("proxy shutting down")

    def request_close(self) -> None:
        """Close now if no command is in flight, else once it completes."""
        tracker = self.tracker
        if tracker is None or tracker.idle or tracker.server_phase == 0:
            self.close(None)
        else:
            self.close_when_idle = True

    def info(self) -> ConnectionInfo:
        tracker = self.tracker
        return ConnectionInfo(
            connection_id=self.connection_id,
            client_address=self.client_address,
            backend_address=str(self.backend.address),
            user=tracker.user if tracker else "",
            schema=tracker.schema if tracker else None,
            thread_id=tracker.thread_id if tracker else 0,
            server_version=tracker.greeting.server_version if tracker and tracker.greeting else "",
            connected_at=self.connected_at,
        )


class _ClientLeg(_Leg):
    def __init__(self, session: Session) -> None:
        super().__init__(session, is_client=True)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.session.client_connected(cast(asyncio.Transport, transport))


def _close_lingering(transport: asyncio.Transport) -> None:
    """Send FIN after what is queued, read until the peer closes (the session is closed:
    what arrives is dropped, and EOF closes the transport), abort after LINGER_SECONDS."""
    if not transport.can_write_eof():
        transport.close()
        return
    transport.write_eof()
    transport.resume_reading()
    asyncio.get_running_loop().call_later(LINGER_SECONDS, _abort_unless_closed, transport)


def _abort_unless_closed(transport: asyncio.Transport) -> None:
    if not transport.is_closing():
        transport.abort()


def _set_nodelay(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
