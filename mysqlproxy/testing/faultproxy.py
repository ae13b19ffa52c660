"""A TCP fault proxy for tests: it sits between mysqlproxy and its backend, relays the
bytes, and on command delays, stalls, resets or half-closes them, per direction, on
every link or on one, at runtime.

    with running_fault_proxy(mariadb.address) as faults:
        proxy = ProxyThread(faults.address)        # mysqlproxy -> faults -> MariaDB
        faults.set(DOWNSTREAM, Stall())            # every open link, and new ones
        faults.links[0].set(UPSTREAM, Reset())     # one link only
        faults.set(DOWNSTREAM, Pass())             # heal (held bytes are delivered)

UPSTREAM is what the client side (mysqlproxy) sends to the server side; DOWNSTREAM is
the server's answers. The faults, for one direction of a link:

- `Pass()`: bytes go through as they come (the default).
- `Delay(seconds)`: each chunk is delivered that long after it arrived, in order.
- `Stall()`: nothing is delivered, and the sender is no longer read, so its TCP window
  fills as behind a dead link. Back to Pass() (or a Delay) delivers what was held.
- `Reset()`: the receiver of the direction gets a reset now (SO_LINGER 0, then close),
  and the sender's connection is closed (FIN). On a new link: as soon as it is made.
- `HalfClose()`: the receiver of the direction gets a FIN now; later bytes in that
  direction are dropped; the other direction goes on.

A link whose side sends a FIN passes the FIN on (once the bytes held before it are
delivered); it is closed once both directions have ended or either side is lost.
`FaultProxy.set(..., existing=False)` changes only links made from then on: the
connections already open are the unaffected ones a test compares with.

The fault proxy runs on its own event loop (a thread, from running_fault_proxy); its
methods may be called from any thread. Its tasks are not mysqlproxy's: they never show
in mysqlproxy.proxy.tasks.running_tasks().
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar, cast

from mysqlproxy.proxy.backends import Address
from mysqlproxy.testing.loopthread import running_on_loop_thread

T = TypeVar("T")
_HIGH_WATER = 256 * 1024


class Direction(enum.Enum):
    """Which way the bytes flow through a link."""

    UPSTREAM = "client to server"
    DOWNSTREAM = "server to client"


UPSTREAM = Direction.UPSTREAM
DOWNSTREAM = Direction.DOWNSTREAM


@dataclass(frozen=True, slots=True)
class Pass:
    """Relay as the bytes come."""


@dataclass(frozen=True, slots=True)
class Delay:
    """Deliver each chunk `seconds` after it arrived."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Stall:
    """Hold everything; stop reading the sender."""


@dataclass(frozen=True, slots=True)
class Reset:
    """Reset the receiver's connection, close the sender's."""


@dataclass(frozen=True, slots=True)
class HalfClose:
    """Send the receiver a FIN; drop later bytes of this direction."""


Fault = Pass | Delay | Stall | Reset | HalfClose


class _Side(asyncio.Protocol):
    """One TCP connection of a link: the client's (accepted) or the server's."""

    def __init__(self, link: Link, is_client: bool) -> None:
        self.link = link
        self.is_client = is_client
        self.transport: asyncio.Transport | None = None
        self.eof = False  # the peer sent a FIN
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)
        if self.is_client:
            self.link.client_connected(self)
        else:
            self.link.server = self
            self.transport.pause_reading()  # until the link's faults are applied

    def data_received(self, data: bytes) -> None:
        self.link.received(self.is_client, data)

    def eof_received(self) -> bool:
        self.eof = True
        self.link.eof(self.is_client)
        return True  # keep the other direction open; the link closes when both end

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.link.side_lost(self.is_client)

    def pause_writing(self) -> None:
        self.link.flow(self.is_client, paused=True)

    def resume_writing(self) -> None:
        self.link.flow(self.is_client, paused=False)


class _Flow:
    """One direction of a link: its fault and the bytes it holds back."""

    def __init__(self, fault: Fault) -> None:
        self.fault: Fault = fault
        self.held: deque[tuple[float, bytes]] = deque()  # (due time, chunk)
        self.eof = False  # the sender's FIN, to pass on after the held bytes
        self.ended = False  # FIN passed on, or the receiver half-closed or gone
        self.receiver_paused = False  # the receiver's write buffer is full
        self.timer: asyncio.TimerHandle | None = None
        self.bytes_relayed = 0


class Link:
    """One connection through the fault proxy: the client's side and the server's."""

    def __init__(self, proxy: FaultProxy, number: int, up: Fault, down: Fault) -> None:
        self.proxy = proxy
        self.number = number
        self.client: _Side | None = None
        self.server: _Side | None = None
        self.flows = {UPSTREAM: _Flow(up), DOWNSTREAM: _Flow(down)}
        self.closed = False
        self.connect_error: Exception | None = None
        self._connect_task: asyncio.Task[None] | None = None

    # --- state a test looks at ---------------------------------------------------

    @property
    def client_closed(self) -> bool:
        """The client side (mysqlproxy) ended its connection: FIN or reset."""
        return self.client is not None and (self.client.eof or self.client.lost)

    @property
    def server_closed(self) -> bool:
        """The server side ended its connection: FIN or reset."""
        return self.server is not None and (self.server.eof or self.server.lost)

    def bytes_relayed(self, direction: Direction) -> int:
        return self.flows[direction].bytes_relayed

    def set(self, direction: Direction, fault: Fault) -> None:
        """Change this link's fault for one direction (from any thread)."""
        self.proxy.call(self._set, direction, fault)

    # --- set-up ------------------------------------------------------------------

    def client_connected(self, side: _Side) -> None:
        self.client = side
        assert side.transport is not None
        side.transport.pause_reading()  # until the server side exists
        self._connect_task = asyncio.get_running_loop().create_task(
            self._connect(), name=f"faultproxy-connect-{self.number}"
        )

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        target = self.proxy.target
        try:
            if target.unix_path is not None:
                await loop.create_unix_connection(
                    lambda: _Side(self, is_client=False), target.unix_path
                )
            else:
                await loop.create_connection(
                    lambda: _Side(self, is_client=False), target.host, target.port
                )
        except OSError as exc:
            self.connect_error = exc
            self.close()
            return
        if self.closed:
            self.close()
            return
        for direction, flow in self.flows.items():
            self._apply(direction, flow.fault)
        if not self.closed:
            self._resume_reading(UPSTREAM)
            self._resume_reading(DOWNSTREAM)

    # --- relaying ----------------------------------------------------------------

    def _ends(self, direction: Direction) -> tuple[_Side | None, _Side | None]:
        """(sender, receiver) of a direction."""
        if direction is UPSTREAM:
            return self.client, self.server
        return self.server, self.client

    def received(self, from_client: bool, data: bytes) -> None:
        direction = UPSTREAM if from_client else DOWNSTREAM
        flow = self.flows[direction]
        if flow.ended or self.closed:
            return  # half-closed toward the receiver: dropped
        fault = flow.fault
        if isinstance(fault, Pass) and not flow.held:
            self._deliver(direction, data)
            return
        due = asyncio.get_running_loop().time()
        if isinstance(fault, Delay):
            due += fault.seconds
        flow.held.append((due, data))
        if isinstance(fault, Stall):
            self._pause_reading(direction)
        else:
            self._schedule(direction)

    def _deliver(self, direction: Direction, data: bytes) -> None:
        _, receiver = self._ends(direction)
        if receiver is not None and receiver.transport is not None and not receiver.lost:
            receiver.transport.write(data)
            self.flows[direction].bytes_relayed += len(data)

    def _schedule(self, direction: Direction) -> None:
        """Deliver held chunks that are due; set a timer for the next one."""
        flow = self.flows[direction]
        if flow.timer is not None:
            flow.timer.cancel()
            flow.timer = None
        if isinstance(flow.fault, Stall | HalfClose | Reset) or self.closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        while flow.held and flow.held[0][0] <= now:
            self._deliver(direction, flow.held.popleft()[1])
        if flow.held:
            flow.timer = loop.call_at(flow.held[0][0], self._schedule, direction)
        elif flow.eof:
            self._pass_eof(direction)

    def eof(self, from_client: bool) -> None:
        direction = UPSTREAM if from_client else DOWNSTREAM
        flow = self.flows[direction]
        flow.eof = True
        if not flow.held and not isinstance(flow.fault, Stall):
            self._pass_eof(direction)

    def _pass_eof(self, direction: Direction) -> None:
        flow = self.flows[direction]
        if flow.ended:
            return
        flow.ended = True
        _write_eof(self._ends(direction)[1])
        if all(f.ended for f in self.flows.values()):
            self.close()

    def side_lost(self, is_client: bool) -> None:
        self.close()

    def flow(self, receiver_is_client: bool, paused: bool) -> None:
        """The receiver's write buffer filled or drained: pause or resume its sender."""
        direction = DOWNSTREAM if receiver_is_client else UPSTREAM
        self.flows[direction].receiver_paused = paused
        if paused:
            self._pause_reading(direction)
        elif not isinstance(self.flows[direction].fault, Stall):
            self._resume_reading(direction)

    def _pause_reading(self, direction: Direction) -> None:
        sender, _ = self._ends(direction)
        if sender is not None and sender.transport is not None and not sender.lost:
            with contextlib.suppress(RuntimeError):
                sender.transport.pause_reading()

    def _resume_reading(self, direction: Direction) -> None:
        sender, _ = self._ends(direction)
        flow = self.flows[direction]
        if flow.receiver_paused or isinstance(flow.fault, Stall):
            return
        if sender is not None and sender.transport is not None and not sender.lost:
            with contextlib.suppress(RuntimeError):
                sender.transport.resume_reading()

    # --- faults ------------------------------------------------------------------

    def _set(self, direction: Direction, fault: Fault) -> None:
        self.flows[direction].fault = fault
        if self.server is not None and not self.closed:
            self._apply(direction, fault)

    def _apply(self, direction: Direction, fault: Fault) -> None:
        receiver = self._ends(direction)[1]
        if isinstance(fault, Reset):
            if receiver is not None:
                _reset(receiver)
            self.close()
        elif isinstance(fault, HalfClose):
            flow = self.flows[direction]
            flow.held.clear()
            flow.ended = True
            _write_eof(receiver)
            if all(f.ended for f in self.flows.values()):
                self.close()
            else:
                self._resume_reading(direction)  # read on, and drop
        elif isinstance(fault, Stall):
            self._pause_reading(direction)
        else:
            self._schedule(direction)
            self._resume_reading(direction)

    def close(self) -> None:
        """Close both sides (what is queued for writing is flushed first). A side whose
        peer is not read closes with a reset, as the kernel does with unread data."""
        if self.closed:
            return
        self.closed = True
        for flow in self.flows.values():
            if flow.timer is not None:
                flow.timer.cancel()
            flow.held.clear()
        for side in (self.client, self.server):
            if side is not None and side.transport is not None and not side.transport.is_closing():
                side.transport.close()
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        self.proxy.link_closed(self)

    def abort(self) -> None:
        for side in (self.client, self.server):
            if side is not None and side.transport is not None:
                side.transport.abort()
        self.close()


def _write_eof(side: _Side | None) -> None:
    if side is None or side.transport is None or side.lost or side.transport.is_closing():
        return
    if side.transport.can_write_eof():
        with contextlib.suppress(OSError):  # the peer is already gone
            side.transport.write_eof()


def _reset(side: _Side) -> None:
    transport = side.transport
    if transport is None or side.lost:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class FaultProxy:
    """Listens on `listen` (a free loopback port by default) and links every accepted
    connection to `target`."""

    def __init__(self, target: Address, listen: Address | None = None) -> None:
        self.target = target
        self.listen = listen or Address("127.0.0.1", 0)
        self.address = self.listen
        self.links: list[Link] = []
        self.faults: dict[Direction, Fault] = {UPSTREAM: Pass(), DOWNSTREAM: Pass()}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._open: set[Link] = set()

    async def start(self) -> Address:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self._server = await loop.create_server(self._accept, self.listen.host, self.listen.port)
        port = self._server.sockets[0].getsockname()[1]
        self.address = Address(self.listen.host, port)
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._open):
            link.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        await asyncio.sleep(0)  # let the transports finish closing

    def _accept(self) -> asyncio.Protocol:
        link = Link(self, len(self.links), self.faults[UPSTREAM], self.faults[DOWNSTREAM])
        self.links.append(link)
        self._open.add(link)
        return _Side(link, is_client=True)

    def link_closed(self, link: Link) -> None:
        self._open.discard(link)

    @property
    def open_links(self) -> int:
        return len(self._open)

    def set(
        self, direction: Direction, fault: Fault, *, existing: bool = True, new: bool = True
    ) -> None:
        """Set a direction's fault on the open links (existing) and on links made from
        now on (new). From any thread."""
        self.call(self._set, direction, fault, existing, new)

    def heal(self) -> None:
        """Pass() both ways, on every link and new ones."""
        self.set(UPSTREAM, Pass())
        self.set(DOWNSTREAM, Pass())

    def _set(self, direction: Direction, fault: Fault, existing: bool, new: bool) -> None:
        if new:
            self.faults[direction] = fault
        if existing:
            for link in list(self._open):
                link._set(direction, fault)

    def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run fn(*args) on the fault proxy's loop; wait for it when called from
        another thread."""
        loop = self.loop
        if loop is None:
            raise RuntimeError("the fault proxy is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn(*args)

        async def invoke() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), loop).result(10)


@contextlib.contextmanager
def running_fault_proxy(target: Address, listen: Address | None = None) -> Iterator[FaultProxy]:
    """A FaultProxy on its own event loop thread; `.address` is where it listens."""
    proxy = FaultProxy(target, listen)
    with running_on_loop_thread(proxy, "fault-proxy") as running:
        yield running
