"""What one proxy lets its clients hold: connections, idle time, packet size.

Where each limit is enforced:

- max_connections: at accept (server.py). A client over the limit is answered with
  ERR 1040 "Too many connections" in place of the greeting, with sequence id 0, as the
  server does, and hung up on; no backend connection is opened for it. Admin
  connections are not counted (an operator can always get in to raise it).
- idle_timeout: by a sweep (`sweep_idle`, run by server.py and by the Lua engine)
  every quarter of the timeout (at most every second). A client the server is waiting
  for (no command in flight, or the greeting unanswered) that sent nothing for that
  long is closed with its backend connection; an idle backend is sent COM_QUIT first,
  so it does not count an aborted connection. A client between commands is told why
  first, as MySQL 8.0.24+ does: ERR 4031 (ER_CLIENT_INTERACTION_TIMEOUT) with sequence
  id 0, where its next command's answer would start. A command in flight is never
  cut, however long it runs or stalls.
- max_packet_size: in the tracker's client framer (protocol/tracker.py), on the header
  of the piece that takes a logical packet (its 0xFFFFFF pieces added up) over the
  limit, read with the payload byte that comes with it. None of that piece's payload
  reaches the backend, which is then closed. The client gets ERR 1153 with the
  sequence id the server's own answer would carry; the proxy then half-closes, drops
  what the client still sends for up to LINGER_SECONDS (closing on unread data sends a
  reset, which can destroy the ERR unread) and closes, as MySQL closes the connection.
  Commands pipelined before it are answered first. A change applies to open
  connections from their next packet. It covers every client packet after the
  handshake response (commands, auth data, LOCAL INFILE contents); the handshake
  response itself and the server's control packets have fixed 1 MiB limits
  (MAX_CONTROL_PACKET), the admin interface its own (MAX_ADMIN_PACKET).

The relay never holds a whole packet: it forwards chunks as they arrive, and the
tracker copies at most the first MAX_CAPTURED_COMMAND bytes of a command for its event.
So max_packet_size does not protect the proxy's memory (backpressure does that); it
protects the backend, which buffers a whole packet per connection up to its own
max_allowed_packet, and spares it and the link the bytes of a packet that would be
refused anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

# MySQL 8's default max_allowed_packet. MariaDB's is 16M: a client sending between the
# two is refused by the server itself, with the same error. A backend configured for
# more needs --max-packet-size raised to match.
DEFAULT_MAX_PACKET_SIZE = 64 << 20
# The protocol's ceiling (max_allowed_packet cannot be set higher).
MAX_PACKET_SIZE_CEILING = 1 << 30

# How often the idle sweep runs while idle_timeout is off (to notice it switched on).
IDLE_SWEEP_OFF_INTERVAL = 1.0

# Each proxied connection holds two file descriptors: the client's and the backend's.
FDS_PER_CONNECTION = 2
# Kept free for listeners, admin and metrics connections, log files, the interpreter.
RESERVED_FDS = 64


@dataclass(slots=True)
class Limits:
    """The limits in force. Mutable: the control plane changes them at runtime. A new
    max_connections applies to the next accept, a new idle_timeout to the next sweep,
    a new max_packet_size to the next packet of every connection. 0 switches each off."""

    max_connections: int = 0
    idle_timeout: float = 0.0  # seconds
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE


def raise_file_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (the event loop uses
    epoll, not select(), so descriptors beyond 1024 are fine); returns the soft limit in
    force afterwards. A service manager's default soft limit (1024 under systemd) would
    otherwise cap the proxy at about 480 clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _kernel_file_ceiling()
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = _kernel_file_ceiling()
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connections_for_file_limit(file_limit: int) -> int:
    """How many clients fit in `file_limit` descriptors."""
    return max(1, (file_limit - RESERVED_FDS) // FDS_PER_CONNECTION)


def _kernel_file_ceiling() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1 << 20


def check_max_packet_size(size: int) -> int:
    """`size` if it is a usable max_packet_size (0, or 1 KiB to 1 GiB as MySQL's
    max_allowed_packet), else ValueError."""
    if size and not 1024 <= size <= MAX_PACKET_SIZE_CEILING:
        raise ValueError("must be 0 (no limit) or between 1k and 1G, as max_allowed_packet")
    return size


class IdleChecked(Protocol):
    """A connection the idle sweep looks at (Session, the Lua engine's LuaConnection)."""

    def idle_check(self, now: float, timeout: float) -> None: ...


def sweep_interval(timeout: float) -> float:
    """How often a sweep enforcing `timeout` runs: a quarter of it (a connection is
    closed at most a quarter late), at most every second, at least every 50 ms."""
    return min(max(timeout / 4, 0.05), 1.0)


async def sweep_idle(limits: Limits, connections: Callable[[], Iterable[IdleChecked]]) -> None:
    """Close clients idle longer than limits.idle_timeout: each connection's idle_check
    decides. One pass over the connections every quarter of the timeout: nothing on the
    relay's path pays for it. Runs until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        timeout = limits.idle_timeout
        if timeout <= 0:
            await asyncio.sleep(IDLE_SWEEP_OFF_INTERVAL)
            continue
        await asyncio.sleep(sweep_interval(timeout))
        timeout = limits.idle_timeout
        if timeout <= 0:
            continue
        now = loop.time()
        for connection in list(connections()):
            connection.idle_check(now, timeout)
