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
from mysqlproxy.protocol.auth_sequence import (
    AuthSequenceShift,
    CleartextWatch,
    change_user_auth,
    sends_cleartext,
)
from mysqlproxy.protocol.compression import CompressedLink, encode_frames
from mysqlproxy.protocol.constants import Capability, Command, ErrorCode
from mysqlproxy.protocol.errors import PacketTooLarge, ProtocolError, UnsupportedFeature
from mysqlproxy.protocol.messages import encode_err, parse_handshake_response, ssl_request_for
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import (
    C_AUTH,
    C_COMMAND,
    C_TLS,
    MAX_CONTROL_PACKET,
    S_AUTH,
    S_CONNECT,
    ConnectionTracker,
)
from mysqlproxy.proxy.backends import Backend
from mysqlproxy.proxy.limits import Limits
from mysqlproxy.proxy.tasks import spawn
from mysqlproxy.proxy.tls import (
    BackendTls,
    BackendTlsMode,
    ClientTls,
    describe_tls_error,
    feed_after_start_tls,
)

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
# What the proxy sends a backend it hangs up on between commands (a clean goodbye).
COM_QUIT_PACKET = encode_packet(0, bytes((Command.COM_QUIT,)))
# MySQL's own words for ER_SECURE_TRANSPORT_REQUIRED (--require-tls refusing a plain client).
SECURE_TRANSPORT_MESSAGE = (
    "Connections using insecure transport are prohibited while --require_secure_transport=ON."
)
# How long a client has to finish the TLS handshake its SSLRequest announced.
CLIENT_TLS_HANDSHAKE_TIMEOUT = 10.0
# ER_ACCESS_DENIED_ERROR's SQLSTATE: refusing to relay a cleartext password is a refused
# login. (Not a 2xxx code: libmariadb shows one from a server as "malformed packet".)
CLEARTEXT_REFUSED_SQLSTATE = "28000"


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
        if type(self).data_received is _Leg.data_received:
            # The session's method itself, one Python call less per chunk: the event
            # loop looks data_received up once, when the transport is made (uvloop
            # keeps the bound method), so the instance attribute must be set by then.
            self.data_received = (  # type: ignore[method-assign]
                session.client_data if is_client else session.backend_data
            )

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
        tls: ClientTls | None = None,
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
        # Under compression the ERR also waits for the oversized packet's last frame.
        self._refused_packet_open = False
        self._linger = False  # end the client leg with a lingering close (see _refuse)
        # CLIENT_COMPRESS framing on both legs, from the OK that ends authentication.
        self._compression: CompressedLink | None = None
        # TLS (see _handshake_to_server). The relay checks _handshaking once per chunk.
        self.tls = tls  # toward the client; None: CLIENT_SSL is not offered
        self.client_tls = False  # the client leg is TLS now
        self.backend_tls = False  # the backend leg is TLS now
        self._handshaking = True  # until authentication ends
        self._tls_decided = False  # the backend's greeting has been seen
        self._backend_offers_tls = False
        self._response_seen = False  # the client's handshake response has passed
        self._seq_shift: AuthSequenceShift | None = None  # when only one leg uses TLS
        self._raw_server: asyncio.Transport | None = None  # during the backend's upgrade
        self._tls_task: asyncio.Task[None] | None = None
        # The backend TLS settings, read once: a runtime change (SET backend_tls) applies
        # to later connections, never halfway through this one's handshake.
        self._backend_tls_settings: BackendTls = backend.tls
        # Client leg TLS, backend leg plain: a client that thinks its connection secure
        # may send its password in clear, which must not reach the backend. While an
        # authentication is under way, _cleartext_watch reads the server's packets.
        self._guard_cleartext = False
        self._cleartext_watch: CleartextWatch | None = None
        self._held_change_user = b""  # see _whole_change_user

    # --- set-up ------------------------------------------------------------------

    def client_protocol(self) -> asyncio.Protocol:
        return _ClientLeg(self)

    def client_connected(self, transport: asyncio.Transport) -> None:
        self.client = transport
        self.client_address = _peer_name(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        set_nodelay(transport)
        self.tracker = ConnectionTracker(
            self.connection_id,
            self.client_address,
            str(self.backend.address),
            emit_query_events=self.addons.wants_query_events,
            offered_capabilities=Capability.CLIENT_SSL if self.tls else Capability(0),
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
        set_nodelay(transport)
        pending, self._pending_client_data = self._pending_client_data, []
        for chunk in pending:
            self.client_data(chunk)
        if self.client is not None and not self.closed:
            self.client.resume_reading()

    def _backend_unreachable(self, reason: str) -> None:
        message = f"mysqlproxy: cannot connect to backend {self.backend.address}: {reason}"
        log.warning("connection %d from %s: %s", self.connection_id, self.client_address, message)
        # ER_HANDSHAKE_ERROR with SQLSTATE 08S01 (communication link failure: drivers and
        # pools treat the 08 class as a connection error), not 2003: codes 2000-2999
        # belong to client libraries, and libmariadb (the mariadb CLI) replaces one sent
        # by a server with "Received malformed packet", losing the reason.
        self._refuse(0, ErrorCode.ER_HANDSHAKE_ERROR, message, "08S01")
        self.addons.trigger(
            AuthenticationFailed(self.info(), int(ErrorCode.ER_HANDSHAKE_ERROR), message)
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
            if self._refused_packet_open:
                self._skip_refused_frames(tracker, data)
            return  # the rest of a refused packet: dropped
        self.client_reads += 1
        tracker.emit_query_events = self.addons.wants_query_events
        tracker.max_packet_size = self.limits.max_packet_size
        if self._compression is not None:
            self._compressed_client_data(self._compression, tracker, server, data)
            return
        if self._guard_cleartext and not self._handshaking:
            data = self._whole_change_user(tracker, data)
            if not data:
                return
        idle_before = self._guard_cleartext and tracker.idle
        try:
            out = tracker.client_data(data)
        except PacketTooLarge as exc:
            self._packet_too_large(tracker, server, exc)
            return
        except ProtocolError as exc:
            self._bad_client_data(exc)
            return
        if self._handshaking:
            out = self._handshake_to_server(tracker, server, out)
        elif self._guard_cleartext and not self._change_user_allowed(tracker, data, idle_before):
            return
        if out:
            server.write(out)
        if tracker.events:
            self._dispatch(tracker)

    def _compressed_client_data(
        self,
        link: CompressedLink,
        tracker: ConnectionTracker,
        server: asyncio.Transport,
        data: bytes,
    ) -> None:
        """Client bytes under CLIENT_COMPRESS: each complete frame's plain bytes go through
        the tracker, then the frame goes to the server as it came (see
        protocol/compression.py for why it is not re-compressed)."""
        sequence_id = 0
        try:
            for frame in link.client_frames(data):
                sequence_id = frame.sequence_id
                idle_before = self._guard_cleartext and tracker.idle
                out = tracker.client_data(frame.payload)
                if self._guard_cleartext and not self._change_user_allowed(
                    tracker, frame.payload, idle_before
                ):
                    return
                server.write(
                    frame.wire if out is frame.payload else encode_frames(sequence_id, out)
                )
        except PacketTooLarge as exc:
            if exc.forward:  # the complete packets before the oversized one, in its frame
                exc.forward = encode_frames(sequence_id, exc.forward)
            self._packet_too_large(tracker, server, exc)
            if self._refused_packet_open:  # its next frames may be in this chunk already
                self._skip_refused_frames(tracker, b"")
            return
        except ProtocolError as exc:
            self._bad_client_data(exc)
            return
        if tracker.events:
            self._dispatch(tracker)

    def _bad_client_data(self, exc: ProtocolError) -> None:
        """What the tracker refused from the client: a feature the proxy does not follow
        gets an ERR the client can show; malformed data closes the connection."""
        if isinstance(exc, UnsupportedFeature):
            self._refuse(2, ErrorCode.ER_NOT_SUPPORTED_YET, f"mysqlproxy: {exc}", "08004")
        else:
            self.close(f"malformed data from client: {exc}")

    def backend_data(self, data: bytes) -> None:
        tracker, client = self.tracker, self.client
        if self.closed or tracker is None or client is None:
            return
        if self._seq_shift is not None:  # only in the auth phase, one leg TLS
            data = self._seq_shift.to_client(data)
        link = self._compression
        guard = self._guard_cleartext
        if guard and link is None and not self._server_auth_allowed(data):
            return
        try:
            if link is not None:
                for frame in link.server_frames(data):
                    if guard and not self._server_auth_allowed(frame.payload):
                        return
                    out = tracker.server_data(frame.payload)
                    client.write(
                        frame.wire if out is frame.payload
                        else encode_frames(frame.sequence_id, out)
                    )
                out = b""
            else:
                out = tracker.server_data(data)
        except ProtocolError as exc:
            if tracker.server_phase == S_CONNECT:  # nothing relayed yet: say why in an ERR
                self._backend_unreachable(f"malformed greeting: {exc}")
            else:
                self.close(f"malformed data from server: {exc}")
            return
        if self._handshaking:
            self._handshake_from_server(tracker)
        elif guard and self._cleartext_watch is None and tracker.server_phase == S_AUTH:
            # A COM_CHANGE_USER that _change_user_allowed did not see start (pipelined
            # behind other commands): its authentication cannot be watched.
            self.close(
                "COM_CHANGE_USER pipelined behind other commands, on a TLS client leg "
                "with a plain backend leg: not relayed (it might ask for a cleartext password)"
            )
            return
        if out:
            client.write(out)
            if tracker.compressed and link is None:
                # That was the OK ending authentication: frames from now on, both ways.
                self._compression = CompressedLink()
        if tracker.events:
            self._dispatch(tracker)
        if self.close_when_idle:
            self._close_if_done(tracker)

    # --- TLS and the authentication phase --------------------------------------------

    def _handshake_from_server(self, tracker: ConnectionTracker) -> None:
        """After a server chunk of the connection phase: once the greeting is known,
        decide whether the backend leg will use TLS (the as-client mode waits for the
        client's first packet); once authentication has ended, stop looking."""
        greeting = tracker.greeting
        if greeting is not None and not self._tls_decided:
            self._tls_decided = True
            offers = bool(greeting.capabilities & Capability.CLIENT_SSL)
            self._backend_offers_tls = offers
            mode = self._backend_tls_settings.mode
            tracker.backend_tls = mode.always or (mode is BackendTlsMode.PREFERRED and offers)
        if tracker.client_phase >= C_COMMAND:  # authenticated, or refused
            self._handshaking = False
            self._seq_shift = None

    def _handshake_to_server(
        self, tracker: ConnectionTracker, server: asyncio.Transport, out: bytes
    ) -> bytes:
        """Client bytes of the connection phase, after the tracker. After an SSLRequest,
        TLS starts on the client leg. After the handshake response: a plain client is
        refused if TLS is required; TLS starts on the backend leg if it is to use it,
        and the response waits for it; if only one leg uses TLS, the auth phase is
        renumbered. Returns what to send to the server now."""
        if tracker.client_phase == C_TLS:
            if self._backend_tls_settings.mode is BackendTlsMode.AS_CLIENT:
                tracker.backend_tls = self._backend_offers_tls
            early, tracker.tls_early_data = tracker.tls_early_data, b""
            client = self.client
            assert client is not None
            client.pause_reading()  # what follows is TLS, for start_tls alone
            self._tls_task = spawn(
                self._client_tls(client, early), f"client-tls-{self.connection_id}"
            )
            return b""
        if not self._response_seen and tracker.client_phase == C_AUTH:
            self._response_seen = True
            reply_seq = 3 if tracker.client_tls else 2
            if self.tls is not None and self.tls.required and not tracker.client_tls:
                self._refuse(
                    reply_seq,
                    ErrorCode.ER_SECURE_TRANSPORT_REQUIRED,
                    SECURE_TRANSPORT_MESSAGE,
                    "HY000",
                )
                return b""
            if tracker.backend_tls and not self._backend_offers_tls:
                self._backend_tls_failed(
                    reply_seq,
                    "the server does not offer TLS, which "
                    f"--backend-tls {self._backend_tls_settings.mode} requires",
                )
                return b""
            if (
                tracker.client_tls
                and not tracker.backend_tls
                and not self._check_login_cleartext(tracker, out, reply_seq)
            ):
                return b""
            offset = int(tracker.backend_tls) - int(tracker.client_tls)
            if offset:
                self._seq_shift = AuthSequenceShift(offset)
            if tracker.backend_tls:
                held = self._seq_shift.to_server(out) if self._seq_shift is not None else out
                # Until the backend leg is TLS, client bytes wait in _pending_client_data.
                self.server = None
                self._raw_server = server
                self._tls_task = spawn(
                    self._backend_tls_upgrade(server, held, reply_seq),
                    f"backend-tls-{self.connection_id}",
                )
                return b""
        if self._seq_shift is not None:
            return self._seq_shift.to_server(out)
        return out

    def _check_login_cleartext(
        self, tracker: ConnectionTracker, out: bytes, reply_seq: int
    ) -> bool:
        """The handshake response (`out`, whole) of a TLS client whose backend leg is
        plain: refuse it if it holds a password in clear, else watch the server's
        answers for a request of one. Returns False when the login was refused."""
        greeting = tracker.greeting
        assert greeting is not None
        length = out[0] | out[1] << 8 | out[2] << 16
        response = parse_handshake_response(out[4 : 4 + length], greeting.capabilities)
        plugin = response.auth_plugin or greeting.auth_plugin
        self._guard_cleartext = True
        if sends_cleartext(plugin, response.auth_response):
            self._refuse_cleartext(reply_seq, f"the client sent its password in clear ({plugin})")
            return False
        self._cleartext_watch = CleartextWatch(plugin)
        return True

    def _whole_change_user(self, tracker: ConnectionTracker, data: bytes) -> bytes:
        """Guarded session (TLS client, plain backend): the bytes of a COM_CHANGE_USER
        that has not fully arrived are held back, so that its auth data is checked
        (_change_user_allowed) before any of it reaches the backend. Returns what may
        go on now: the chunk up to such a packet, with what was held before it."""
        if self._held_change_user:
            data = self._held_change_user + data
            self._held_change_user = b""
        start = tracker.unfinished_change_user(data)
        if start < 0:
            return data
        if len(data) - start > MAX_CONTROL_PACKET:
            self.close("COM_CHANGE_USER over 1 MiB from a TLS client with a plain backend leg")
            return b""
        self._held_change_user = data[start:]
        return data[:start]

    def _change_user_allowed(
        self, tracker: ConnectionTracker, data: bytes, idle_before: bool
    ) -> bool:
        """Guarded session (TLS client, plain backend), after a client chunk in the
        command phase: a COM_CHANGE_USER that started in it is checked like a login (its
        own auth data, then the server's answers). Returns False when it was refused."""
        if self._cleartext_watch is not None or tracker.current_command != Command.COM_CHANGE_USER:
            return True
        payload = _change_user_packet(data) if idle_before else None
        if payload is None:
            # Split across chunks or queued behind other commands: it cannot be checked.
            self._refuse_cleartext(1, "a COM_CHANGE_USER that could not be checked")
            return False
        secure = bool(tracker.capabilities & Capability.CLIENT_SECURE_CONNECTION)
        try:
            auth_response, plugin = change_user_auth(payload, secure)
        except ProtocolError:
            auth_response, plugin = b"", None  # the tracker accepted it: the server judges
        if sends_cleartext(plugin, auth_response):
            self._refuse_cleartext(1, f"the client sent its password in clear ({plugin})")
            return False
        self._cleartext_watch = CleartextWatch(plugin)
        return True

    def _server_auth_allowed(self, data: bytes) -> bool:
        """Server bytes (the client's numbering) while an authentication is watched:
        False, and the client refused, if they would make it send a cleartext password."""
        watch = self._cleartext_watch
        if watch is None:
            return True
        found = watch.feed(data)
        if found is None:
            if watch.done:
                self._cleartext_watch = None
            return True
        sequence_id, what = found
        self._refuse_cleartext(sequence_id, what)
        return False

    def _refuse_cleartext(self, sequence_id: int, what: str) -> None:
        """Refuse an authentication whose password would go in clear to a backend leg
        without TLS: ERR 1045 (SQLSTATE 28000) to the client, then close both legs."""
        message = (
            f"mysqlproxy: refusing to send a cleartext password to backend "
            f"{self.backend.address} over a connection without TLS ({what}); give the "
            "server TLS and run the proxy with --backend-tls required (or verify-ca, "
            "verify-identity), or use an authentication method that sends no password"
        )
        log.warning("connection %d from %s: %s", self.connection_id, self.client_address, message)
        self._refuse(
            sequence_id, ErrorCode.ER_ACCESS_DENIED_ERROR, message, CLEARTEXT_REFUSED_SQLSTATE
        )
        self.addons.trigger(
            AuthenticationFailed(self.info(), int(ErrorCode.ER_ACCESS_DENIED_ERROR), message)
        )

    async def _client_tls(self, raw: asyncio.Transport, early: bytes) -> None:
        """Terminate TLS on the client leg (the client sent an SSLRequest)."""
        tls, tracker = self.tls, self.tracker
        assert tls is not None and tracker is not None
        loop = asyncio.get_running_loop()
        if early:  # the start of the TLS handshake came in the SSLRequest's chunk
            loop.call_soon(feed_after_start_tls, raw, early, raw.get_protocol())
        leg = _TlsClientLeg(self)
        try:
            transport = await loop.start_tls(
                raw,
                leg,
                tls.context,
                server_side=True,
                ssl_handshake_timeout=CLIENT_TLS_HANDSHAKE_TIMEOUT,
            )
        except Exception as exc:  # whatever went wrong, it ends this connection only
            self.close(f"TLS handshake with the client failed: {describe_tls_error(exc)}")
            return
        if transport is None or self.closed:
            if transport is not None:
                transport.abort()
            return
        self.client = transport
        self.client_tls = True
        try:
            transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
            tracker.tls_established()
            leg.release()
        except Exception as exc:  # a bug, most likely: this connection only, and said why
            # The client's next read is the answer to its handshake response (id 3).
            self._internal_error_after_tls("the client", 3, exc)

    async def _backend_tls_upgrade(
        self, raw: asyncio.Transport, held: bytes, reply_seq: int
    ) -> None:
        """Send our SSLRequest to the backend, upgrade the leg, then send the handshake
        response (`held`, numbered for the backend leg)."""
        loop = asyncio.get_running_loop()
        backend = self.backend
        address = backend.address
        raw.write(encode_packet(1, ssl_request_for(held[4:])))
        try:
            transport = await loop.start_tls(
                raw,
                _Leg(self, is_client=False),
                self._backend_tls_settings.ssl_context,
                server_hostname=address.host if address.unix_path is None else None,
                ssl_handshake_timeout=backend.connect_timeout,
            )
        except Exception as exc:  # a refused certificate most often: the client is told
            if not self.closed:
                self._backend_tls_failed(reply_seq, describe_tls_error(exc))
            self._raw_server = None
            return
        self._raw_server = None
        if transport is None or self.closed:
            if transport is not None:
                transport.abort()
            return
        self.server = transport
        self.backend_tls = True
        try:
            self._backend_tls_established(transport, held)
        except Exception as exc:  # a bug, most likely: this connection only, and said why
            self._internal_error_after_tls(f"backend {self.backend.address}", reply_seq, exc)

    def _backend_tls_established(self, server: asyncio.Transport, held: bytes) -> None:
        """The backend leg is TLS now: send the held handshake response, then the
        client bytes that waited for it."""
        server.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        server.write(held)
        pending, self._pending_client_data = self._pending_client_data, []
        for chunk in pending:
            self.client_data(chunk)

    def _internal_error_after_tls(self, peer: str, sequence_id: int, exc: Exception) -> None:
        """An exception in a TLS upgrade task once the handshake succeeded: it would
        only reach the task's logger, leaving the client waiting. Close the session
        (with an ERR, which the client reads if it is still in the login it expects)."""
        log.error(
            "connection %d from %s: internal error after the TLS handshake with %s",
            self.connection_id, self.client_address, peer, exc_info=exc,
        )
        if self.closed:
            return
        self._refuse(
            sequence_id,
            ErrorCode.ER_HANDSHAKE_ERROR,
            f"mysqlproxy: internal error after the TLS handshake with {peer}: "
            f"{type(exc).__name__}: {exc}",
            "08S01",
        )

    def _backend_tls_failed(self, sequence_id: int, reason: str) -> None:
        """Tell the client the backend leg's TLS failed. The words are those of the
        client libraries' CR_SSL_CONNECTION_ERROR (2026), the code is the server's
        ER_HANDSHAKE_ERROR: libmariadb (the mariadb CLI) turns any code of the client
        range (2000-2999) sent by a server into "Received malformed packet", hiding
        the message."""
        message = (
            f"SSL connection error: mysqlproxy: TLS to backend {self.backend.address} "
            f"failed: {reason}"
        )
        log.warning("connection %d from %s: %s", self.connection_id, self.client_address, message)
        self._refuse(sequence_id, ErrorCode.ER_HANDSHAKE_ERROR, message, "08S01")
        self.addons.trigger(
            AuthenticationFailed(self.info(), int(ErrorCode.ER_HANDSHAKE_ERROR), message)
        )

    def _close_if_done(self, tracker: ConnectionTracker) -> None:
        """Once the commands in flight are answered: send the deferred refusal, or
        close (a shutdown asked for it)."""
        refusal = self._deferred_refusal
        if refusal is None:
            if tracker.idle:
                self.close(None)
        elif tracker.current_command is None and not self._refused_packet_open:
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
        # Under compression the client numbers the ERR after its last frame of the
        # packet: the frames still to come are read first (protocol/compression.py).
        frames_to_come = self._compression is not None and not exc.ended
        if not exc.behind_commands and not frames_to_come:
            self._refuse(*refusal, linger=True)
            return
        # Pipelined commands came first: like the server, answer them, then refuse.
        # The complete packets before the oversized one still go to the server; what
        # the client sends from now on is dropped.
        self._deferred_refusal = refusal
        self.close_when_idle = True
        if frames_to_come:
            self._refused_packet_open = True
            asyncio.get_running_loop().call_later(
                LINGER_SECONDS, self._refused_packet_timed_out
            )
        if exc.forward:
            server.write(exc.forward)
        if tracker.events:
            self._dispatch(tracker)

    def _skip_refused_frames(self, tracker: ConnectionTracker, data: bytes) -> None:
        """Compressed: take the client's frames until the refused packet ends, so that
        the ERR gets the compressed sequence id after the last of them."""
        link = self._compression
        assert link is not None
        try:
            for frame in link.client_frames(data):
                if tracker.skip_refused(frame.payload):
                    self._refused_packet_open = False
                    break
        except ProtocolError as exc:
            self.close(f"malformed data from client: {exc}")
            return
        if not self._refused_packet_open:
            self._close_if_done(tracker)

    def _refused_packet_timed_out(self) -> None:
        if self._refused_packet_open and not self.closed and self._deferred_refusal:
            # Numbered after the last frame seen: what a client still sending expects
            # cannot be known.
            self._refused_packet_open = False
            self._refuse(*self._deferred_refusal, linger=True)

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
                quit_packet = COM_QUIT_PACKET
                if self._compression is not None:
                    quit_packet = self._compression.command_to_server(quit_packet)
                server.write(quit_packet)  # a clean goodbye: not an aborted connection
            reason = f"idle for {now - self._idle_since:.1f}s, idle_timeout is {timeout:g}s"
            if tracker.idle and tracker.client_phase == C_COMMAND:
                # As MySQL 8.0.24+ tells a client it disconnects for inactivity: an ERR
                # with sequence id 0, where the next command's answer would start.
                self._refuse(
                    0,
                    ErrorCode.ER_CLIENT_INTERACTION_TIMEOUT,
                    "The client was disconnected by the server because of inactivity.",
                    "HY000",
                    reason=reason,
                )
            else:
                self.close(reason)

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
        self,
        sequence_id: int,
        code: int,
        message: str,
        sql_state: str,
        *,
        linger: bool = False,
        reason: str | None = None,
    ) -> None:
        """Answer the client with an ERR packet, then close (the reason logged is the
        message unless given). With linger, the client's socket is half-closed after the
        ERR and read (and dropped) until the client closes or LINGER_SECONDS pass: for a
        client still sending what was refused."""
        if self.client is not None and not self.client.is_closing():
            err = encode_packet(sequence_id, encode_err(code, message, sql_state))
            if self._compression is not None:
                err = self._compression.reply_to_client(err)
            self.client.write(err)
            self._linger = linger
        self.close(reason or message)

    def leg_lost(self, is_client: bool, exc: Exception | None) -> None:
        if self.closed:
            return
        if not is_client and self._raw_server is not None:
            return  # during its TLS handshake: _backend_tls_upgrade tells the client
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
        if self._raw_server is not None:  # its TLS handshake was under way
            self._raw_server.close()
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


class _TlsClientLeg(_Leg):
    """The client leg once TLS is up. asyncio's TLS protocol hands over the bytes that
    came with the end of the handshake (a client's handshake response, often) before
    start_tls has returned to the session: those wait for release()."""

    def __init__(self, session: Session) -> None:
        super().__init__(session, is_client=True)
        self.early: list[bytes] | None = []

    def data_received(self, data: bytes) -> None:
        if self.early is not None:
            self.early.append(data)
        else:
            self.session.client_data(data)

    def release(self) -> None:
        early, self.early = self.early, None
        for chunk in early or ():
            self.session.client_data(chunk)


class _ClientLeg(_Leg):
    def __init__(self, session: Session) -> None:
        super().__init__(session, is_client=True)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.session.client_connected(cast(asyncio.Transport, transport))


def _change_user_packet(data: bytes) -> bytes | None:
    """The payload of the COM_CHANGE_USER packet among the whole packets of `data`."""
    pos, n = 0, len(data)
    while pos + 4 < n:
        end = pos + 4 + (data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16)
        if end > n:
            return None
        if data[pos + 4] == Command.COM_CHANGE_USER:
            return data[pos + 4 : end]
        pos = end
    return None


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


def set_nodelay(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
