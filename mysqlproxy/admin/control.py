"""The control plane: the proxy's live state and every setting an operator may change
at runtime, as the admin interface sees them."""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from mysqlproxy import units
from mysqlproxy.hooks import ConnectionInfo
from mysqlproxy.protocol.constants import ErrorCode
from mysqlproxy.proxy import tls
from mysqlproxy.proxy.backends import Address, AddressError
from mysqlproxy.proxy.limits import check_max_packet_size
from mysqlproxy.proxy.server import ProxyServer
from mysqlproxy.querylog.window import QueryLog


def proxy_version() -> str:
    try:
        return version("mysqlproxy")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass
class Setting:
    """A runtime setting: its value as text, and how to change it."""

    name: str
    description: str
    get: Callable[[], str]
    set: Callable[[str], None]


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise ValueError("must be positive")
    return value


class ControlPlane:
    """What the admin commands read and change."""

    def __init__(
        self,
        server: ProxyServer,
        query_log: QueryLog,
        *,
        default_log_target: str = "mysqlproxy-slow.log",
        grace_period: list[float] | None = None,
        printer: object | None = None,
    ) -> None:
        self.server = server
        self.query_log = query_log
        self.started_at = time.time()
        self.last_backend_error = ""
        self._default_log_target = os.path.abspath(default_log_target)
        self._grace_period = grace_period if grace_period is not None else [10.0]
        self._printer = printer
        self.settings: dict[str, Setting] = {}
        for setting in self._make_settings():
            self.settings[setting.name] = setting
        server.addons.add(self)  # to see backend failures

    # --- hooks --------------------------------------------------------------------

    def authentication_failed(self, connection: ConnectionInfo, code: int, message: str) -> None:
        # The proxy's own refusals name it; a 1043 from the server itself is a client's.
        if code == ErrorCode.ER_HANDSHAKE_ERROR and "mysqlproxy:" in message:
            self.last_backend_error = f"{time.strftime('%H:%M:%S')} {message}"

    # --- settings -----------------------------------------------------------------

    def default_log_target(self) -> str:
        return self._default_log_target

    def _make_settings(self) -> list[Setting]:
        backend = self.server.backend
        limits = self.server.limits
        query_log = self.query_log

        def set_backend(text: str) -> None:
            try:
                backend.address = Address.parse(text)
            except AddressError as exc:
                raise ValueError(str(exc)) from None

        def set_connect_timeout(text: str) -> None:
            seconds = units.parse_duration(text)
            if seconds <= 0:
                raise ValueError("must be positive")
            backend.connect_timeout = seconds

        def set_max_connections(text: str) -> None:
            try:
                value = int(text)
            except ValueError:
                raise ValueError(f"expected a whole number, got {text!r}") from None
            if value < 0:
                raise ValueError("must be 0 (unlimited) or more")
            limits.max_connections = value

        def set_idle_timeout(text: str) -> None:
            if text.strip().lower() in ("off", "none", "no"):
                limits.idle_timeout = 0.0
            else:
                limits.idle_timeout = units.parse_duration(text)

        def set_max_packet_size(text: str) -> None:
            limits.max_packet_size = check_max_packet_size(units.parse_size(text))

        def set_grace(text: str) -> None:
            self._grace_period[0] = units.parse_duration(text)

        def set_target(text: str) -> None:
            self._default_log_target = os.path.abspath(text)

        def set_queue(text: str) -> None:
            query_log.queue_size = _positive_int(text)

        def set_ring(text: str) -> None:
            size = _positive_int(text)
            query_log.ring = deque(query_log.ring, maxlen=size)

        def set_require_tls(text: str) -> None:
            wanted = _bool(text)
            current = self.server.tls
            if current is None:
                if wanted:
                    raise ValueError("the proxy has no certificate (--tls-cert, --tls-self-signed)")
                return
            self.server.tls = dataclasses.replace(current, required=wanted)

        def set_backend_tls(text: str) -> None:
            old = backend.tls
            if not self.server.backend_tls_supported and text.strip().lower() != "disabled":
                raise ValueError("the Lua engine (--lua-script) has no TLS to the backend")
            backend.tls = tls.backend_tls(
                text.strip().lower(), old.ca_file, old.cert_file, old.key_file
            )

        def set_print(text: str) -> None:
            wanted = _bool(text)
            if self._printer is None:
                from mysqlproxy.addons.printer import QueryPrinter

                self._printer = QueryPrinter()
            present = self._printer in self.server.addons.addons
            if wanted and not present:
                self.server.addons.add(self._printer)
            elif not wanted and present:
                self.server.addons.remove(self._printer)

        return [
            Setting("backend", "server new connections go to (host:port or unix:/path)",
                    lambda: str(backend.address), set_backend),
            Setting("connect_timeout", "seconds to wait for the backend to accept",
                    lambda: f"{backend.connect_timeout:g}", set_connect_timeout),
            Setting("max_connections", "clients served at once; more get ERR 1040 (0: no limit)",
                    lambda: str(limits.max_connections), set_max_connections),
            Setting("idle_timeout", "seconds a client may sit idle before it is closed (off)",
                    lambda: f"{limits.idle_timeout:g}" if limits.idle_timeout else "off",
                    set_idle_timeout),
            Setting("max_packet_size", "largest client packet in bytes; larger get ERR 1153 "
                    "(0: no limit)", lambda: str(limits.max_packet_size), set_max_packet_size),
            Setting("grace_period", "seconds commands in flight get at shutdown",
                    lambda: f"{self._grace_period[0]:g}", set_grace),
            Setting("log_target", "file LOG ON writes to when no TO is given",
                    lambda: self._default_log_target, set_target),
            Setting("log_queue_size", "events queued per sink before drops (new windows)",
                    lambda: str(query_log.queue_size), set_queue),
            Setting("ring_size", "recent logged events kept for SELECT * FROM events",
                    lambda: str(query_log.ring.maxlen), set_ring),
            Setting("print_queries", "print every command to the proxy's stdout (on/off)",
                    lambda: "on" if self._printer in self.server.addons.addons else "off",
                    set_print),
            Setting("require_tls", "refuse new clients without TLS, ERR 3159 (on/off)",
                    lambda: "on" if self.server.tls is not None and self.server.tls.required
                    else "off", set_require_tls),
            Setting("backend_tls", "TLS to the backend for new connections: as-client, "
                    "disabled, preferred, required, verify-ca, verify-identity",
                    lambda: str(backend.tls.mode), set_backend_tls),
        ]

    @property
    def grace_period(self) -> float:
        return self._grace_period[0]

    # --- information ----------------------------------------------------------------

    def proxy_info(self) -> dict[str, object]:
        server = self.server
        return {
            "version": proxy_version(),
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "listening": ", ".join(str(a) for a in server.bound),
            "backend": str(server.backend.address),
            # TLS with clients: the certificate (or "self-signed"), "required" if so.
            "tls": (
                ("off" if server.tls is None else server.tls.certificate)
                + (" (required)" if server.tls is not None and server.tls.required else "")
            ),
            "backend_tls": str(server.backend.tls.mode),
            "connections": len(server.sessions),
            "connections_total": server.connections_total,
            "connections_refused": server.connections_refused,
            "queries_total": server.commands_total,
            # Where a new reader of SELECT * FROM events starts (the viewer, tail).
            "last_event_id": self.query_log.last_event_id,
            "logging_windows": len(self.query_log.windows),
        }

    def variable(self, name: str) -> str:
        """Answers to the SELECTs client libraries send on connect."""
        key = name.lower().lstrip("@").removeprefix("session.").removeprefix("global.")
        known = {
            "version_comment": "mysqlproxy admin interface",
            "version": f"{proxy_version()}-mysqlproxy-admin",
            "max_allowed_packet": "16777216",
            "database()": "",
            "user()": "admin",
            "connection_id()": "0",
            "1": "1",
            "autocommit": "1",
        }
        return known.get(key, "")
