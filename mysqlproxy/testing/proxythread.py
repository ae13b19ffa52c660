"""An in-process proxy on its own event loop thread, for tests that drive it with
blocking clients and look at the events it recorded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mysqlproxy.hooks import AddonManager, ConnectionInfo
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.proxy.backends import Address, Backend
from mysqlproxy.proxy.limits import Limits
from mysqlproxy.proxy.server import ProxyServer
from mysqlproxy.proxy.tls import BackendTls, ClientTls


class EventRecorder:
    """An addon that keeps every hook call it sees (thread-safe for readers)."""

    def __init__(self) -> None:
        self.queries: list[QueryEvent] = []
        self.opened: list[ConnectionInfo] = []
        self.closed: list[tuple[ConnectionInfo, str | None]] = []
        self.auth_failures: list[tuple[ConnectionInfo, int, str]] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def query_completed(self, event: QueryEvent) -> None:
        with self._changed:
            self.queries.append(event)
            self._changed.notify_all()

    def connection_opened(self, connection: ConnectionInfo) -> None:
        with self._changed:
            self.opened.append(connection)
            self._changed.notify_all()

    def connection_closed(self, connection: ConnectionInfo, reason: str | None) -> None:
        with self._changed:
            self.closed.append((connection, reason))
            self._changed.notify_all()

    def authentication_failed(self, connection: ConnectionInfo, code: int, message: str) -> None:
        with self._changed:
            self.auth_failures.append((connection, code, message))
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0) -> bool:
        """Wait until predicate() is true (the proxy thread records asynchronously)."""
        with self._changed:
            return bool(self._changed.wait_for(predicate, timeout))

    def clear(self) -> None:
        with self._lock:
            self.queries.clear()
            self.opened.clear()
            self.closed.clear()
            self.auth_failures.clear()


class ProxyThread:
    """Runs a ProxyServer on a background thread. `port` is where clients connect."""

    def __init__(
        self,
        backend: Address,
        listen: Address | None = None,
        connect_timeout: float = 5.0,
        addons: list[object] | None = None,
        use_uvloop: bool = True,
        limits: Limits | None = None,
        tls: ClientTls | None = None,
        backend_tls: BackendTls | None = None,
    ) -> None:
        self.recorder = EventRecorder()
        manager = AddonManager()
        manager.add(self.recorder, *(addons or []))
        self.server = ProxyServer(
            [listen or Address("127.0.0.1", 0)],
            Backend(backend, connect_timeout, backend_tls or BackendTls()),
            manager,
            limits,
            tls,
        )
        self.use_uvloop = use_uvloop
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def address(self) -> Address:
        return self.server.bound[0]

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def events(self) -> list[QueryEvent]:
        return self.recorder.queries

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        if self.use_uvloop:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self._stop.wait()
        await self.server.shutdown(self._grace)

    def call(self, fn: object, *args: object) -> object:
        """Run fn(*args) on the proxy's loop and return its result."""
        assert self.loop is not None and callable(fn)

        async def invoke() -> object:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result(10)

    def stop(self, grace: float = 2.0) -> None:
        self._grace = grace
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)


@contextmanager
def running_proxy(backend: Address, **kwargs: object) -> Iterator[ProxyThread]:
    proxy = ProxyThread(backend, **kwargs)  # type: ignore[arg-type]
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
