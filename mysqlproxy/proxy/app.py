"""The running proxy as one object: the relay, the query log, the admin interface, the
timers and signals that tie them together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from mysqlproxy.admin.control import ControlPlane, proxy_version
from mysqlproxy.admin.server import AdminCredentials, AdminServer
from mysqlproxy.hooks import AddonManager
from mysqlproxy.proxy.backends import Address, Backend
from mysqlproxy.proxy.limits import DEFAULT_MAX_PACKET_SIZE, Limits
from mysqlproxy.proxy.server import ListenError, ProxyServer
from mysqlproxy.proxy.tasks import spawn
from mysqlproxy.proxy.tls import BackendTls, BackendTlsMode, ClientTls
from mysqlproxy.querylog.formats import format_slowlog_header
from mysqlproxy.querylog.window import QueryLog, WindowSpec

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger(__name__)

# How often expired logging windows are looked for: "stops within a second".
EXPIRY_INTERVAL = 0.25


class AdminListenError(ListenError):
    """The admin address could not be bound (`run` may go on without it)."""


@dataclass
class ProxyConfig:
    """Everything `mysqlproxy run` was asked for."""

    listen: list[Address]
    backend: Address
    connect_timeout: float = 5.0
    grace_period: float = 10.0
    max_connections: int = 0  # 0: unlimited (`run` derives its default from the file limit)
    idle_timeout: float = 0.0  # seconds; 0: off
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE  # 0: no limit
    admin: Address | None = None
    admin_credentials: AdminCredentials | None = None
    log_target: str = "mysqlproxy-slow.log"
    initial_window: WindowSpec | None = None
    print_queries: bool = False
    metrics: Address | None = None
    extra_addons: list[object] = field(default_factory=list)
    client_tls: ClientTls | None = None  # None: CLIENT_SSL is not offered to clients
    backend_tls: BackendTls = field(default_factory=BackendTls)
    lua_script: str | None = None  # run mysql-proxy 0.8 Lua hooks (lua_compat) instead
    lua_hook_time_limit: float = 5.0


class ProxyApp:
    """Starts and stops the parts; `run()` serves until SIGTERM or SIGINT."""

    def __init__(self, config: ProxyConfig, stdout: TextIO | None = None) -> None:
        self.config = config
        self.stdout = stdout if stdout is not None else sys.stdout
        self.addons = AddonManager()
        self.server = ProxyServer(
            config.listen,
            Backend(config.backend, config.connect_timeout, config.backend_tls),
            self.addons,
            Limits(config.max_connections, config.idle_timeout, config.max_packet_size),
            config.client_tls,
        )
        backend_warning = config.backend_tls.unauthenticated_warning
        if config.client_tls is not None and config.lua_script is None and backend_warning:
            # Clients that verify the proxy's certificate would otherwise assume the
            # whole path is authenticated.
            log.warning("TLS with clients, but %s", backend_warning)
        if config.lua_script is not None:
            # The Lua engine serves the clients; logging, admin and metrics observe it
            # through the same addons and the same server interface.
            from lua_compat.engine import LuaProxy, LuaProxyOptions

            if config.client_tls is not None or config.backend_tls.mode != BackendTlsMode.AS_CLIENT:
                # `run` refuses the combination; TLS silently dropped would fail open.
                raise ValueError("the Lua engine has no TLS on either leg")
            self.server = LuaProxy(  # type: ignore[assignment]
                LuaProxyOptions(
                    listen=list(config.listen),
                    backends=[config.backend],
                    script=config.lua_script,
                    connect_timeout=config.connect_timeout,
                    addons=self.addons,
                    hook_time_limit=config.lua_hook_time_limit,
                    max_packet_size=config.max_packet_size,
                )
            )
            # The same limits object as the relay's: max_connections (and SET of it)
            # applies; the idle timeout does not, the engine has no sweep yet.
            self.server.limits = Limits(
                config.max_connections, config.idle_timeout, config.max_packet_size
            )
        listen = ", ".join(str(a) for a in config.listen)
        self.query_log = QueryLog(
            self.addons,
            stdout=self.stdout,
            slowlog_header=format_slowlog_header(proxy_version(), listen),
        )
        self._grace = [config.grace_period]
        printer = None
        if config.print_queries:
            from mysqlproxy.addons.printer import QueryPrinter

            printer = QueryPrinter(self.stdout)
            self.addons.add(printer)
        self.addons.add(*config.extra_addons)
        from mysqlproxy.addons.metrics import ProxyMetrics

        self.metrics = ProxyMetrics(lambda: len(self.server.sessions), self._log_metrics)
        self._metrics_server: object | None = None
        self.control = ControlPlane(
            self.server,
            self.query_log,
            default_log_target=config.log_target,
            grace_period=self._grace,
            printer=printer,
        )
        self.admin: AdminServer | None = None
        if config.admin is not None:
            self.admin = AdminServer(
                config.admin,
                config.admin_credentials or AdminCredentials.from_password("admin", ""),
                self.control,
            )
        self._stop = asyncio.Event()
        self._expiry_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        if self.admin is not None:
            try:
                await self.admin.start()
            except OSError as exc:
                await self.server.shutdown(0)
                raise AdminListenError(
                    f"cannot listen on {self.admin.address} (admin): {exc.strerror or exc}"
                ) from exc
        if self.config.metrics is not None:
            self._start_metrics(self.config.metrics)
        if self.config.initial_window is not None:
            self.query_log.open(self.config.initial_window)
        self._expiry_task = spawn(self._expire_windows(), "logging-window-expiry")

    def _start_metrics(self, address: Address) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        registry.register(self.metrics)
        self.addons.add(self.metrics)
        try:
            server, _thread = start_http_server(address.port, address.host, registry=registry)
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {address} (metrics): {exc.strerror or exc}"
            ) from exc
        self._metrics_server = server
        self.metrics_address = Address(address.host, server.server_port)

    def _log_metrics(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        written = CounterMetricFamily(
            "mysqlproxy_log_events_written", "Events written by logging sinks.",
            labels=["target"],
        )
        dropped = CounterMetricFamily(
            "mysqlproxy_log_events_dropped",
            "Events dropped by logging sinks (queue full or sink disabled).",
            labels=["target"],
        )
        for window in list(self.query_log.windows.values()):
            written.add_metric([window.target], window.written)
            dropped.add_metric([window.target], window.dropped)
        yield written
        yield dropped
        yield GaugeMetricFamily(
            "mysqlproxy_log_windows", "Logging windows open now.",
            value=len(self.query_log.windows),
        )

    def describe(self) -> str:
        listening = ", ".join(str(a) for a in self.server.bound)
        line = f"mysqlproxy: listening on {listening}, forwarding to {self.server.backend.address}"
        if self.admin is not None and self.admin.bound is not None:
            line += f", admin on {self.admin.bound}"
        if self._metrics_server is not None:
            line += f", metrics on http://{self.metrics_address}/metrics"
        return line

    async def _expire_windows(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            self.query_log.expire()

    def stop(self) -> None:
        self._stop.set()

    async def shutdown_after_signal(self) -> None:
        """Serve until SIGTERM or SIGINT (or stop()); SIGHUP reopens the log files."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reopen)
        try:
            await self._stop.wait()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            await self.shutdown()

    def _reopen(self) -> None:
        log.info("SIGHUP: reopening log files")
        self.query_log.reopen_files()

    async def shutdown(self) -> None:
        log.info("shutting down")
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        if self.admin is not None:
            await self.admin.close()
        if self._metrics_server is not None:
            shutdown = getattr(self._metrics_server, "shutdown", None)
            if shutdown is not None:
                await asyncio.get_running_loop().run_in_executor(None, shutdown)
        await self.server.shutdown(self._grace[0])
        windows = list(self.query_log.windows.values())
        self.query_log.close_all()
        for window in windows:
            if window.writer is not None:
                await asyncio.get_running_loop().run_in_executor(
                    None, window.writer.wait_closed, 5.0
                )
