"""Fuzzing the client-facing side: 50 concurrent connections send random bytes and
mutations of real packets (handshake responses and every kind of command, framed and
unframed, in random pieces) through the proxy to MariaDB, and hang up in random ways,
for a few seconds. Meanwhile a well-behaved PyMySQL client runs queries and must never
fail. At the end: no session, task or file descriptor left, nothing logged as an error
(an exception other than ProtocolError in the relay would be), and no fuzz connection
left on the server.

Mutations come from a seeded generator (FUZZ_SEED in the environment picks another
seed); the interleaving of 50 connections is not reproducible, the inputs are.

The fuzz connections log in as a user that may only read and insert into one schema:
a random command byte can be COM_SHUTDOWN or COM_PROCESS_KILL, which must not reach the
server with rights that would hurt the other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.constants import Capability, FieldType
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.proxy.tasks import running_tasks
from mysqlproxy.testing import packets as pf
from mysqlproxy.testing.proxythread import ProxyThread
from tests.conftest import MariaDB
from tests.proxy.test_fault_injection import tolerant_server  # noqa: F401  (a fixture)
from tests.proxy.test_faults import connect, open_fds, wait_until

SEED = int(os.environ.get("FUZZ_SEED", "20261129"))
FUZZ_SECONDS = 8.0
CONNECTIONS = 50
SESSION_TIMEOUT = 5.0  # one fuzz connection's whole life, at most
QUIET = 0.05  # a reply is read until nothing more comes for this long
FUZZ_USER = "fuzz"

_LONGLONG = int(FieldType.MYSQL_TYPE_LONGLONG)
_VAR_STRING = int(FieldType.MYSQL_TYPE_VAR_STRING)
# Real commands, each as a client sends it: what the mutations start from.
COMMANDS: list[bytes] = [
    pf.com_query("SELECT 1"),
    pf.com_query("SELECT seq, REPEAT('x', 20) FROM mpt.seq_1_to_300"),
    pf.com_query("SELECT 1; SELECT 'two', 2; DO 3"),
    pf.com_query("SELECT a FROM mpt.fuzz_t LIMIT 3"),
    pf.com_query("SELECT * FROM no_such_table"),
    pf.com_query("LOAD DATA LOCAL INFILE 'fuzz.txt' INTO TABLE mpt.fuzz_t"),
    pf.com_query("USE mpt"),
    pf.com_query("SHOW WARNINGS"),
    pf.com_ping(),
    pf.com_init_db("mpt"),
    pf.com_statistics(),
    pf.com_field_list("fuzz_t"),
    pf.com_set_option(0),
    pf.com_set_option(1),
    pf.com_reset_connection(),
    pf.com_stmt_prepare("SELECT ? + 1, ?"),
    pf.com_stmt_prepare("SELECT seq FROM mpt.seq_1_to_50 WHERE seq > ?"),
    pf.com_stmt_execute(1, [_LONGLONG, _VAR_STRING], [41, "x"]),
    pf.com_stmt_execute(2, [_LONGLONG], [10], flags=1),  # with a cursor
    pf.com_stmt_fetch(2, 5),
    pf.com_stmt_send_long_data(1, 1, b"long data"),
    pf.com_stmt_reset(1),
    pf.com_stmt_close(1),
    pf.com_change_user(FUZZ_USER, database="mpt"),
]
INTERESTING_BYTES = (0x00, 0x01, 0x03, 0x7F, 0x80, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF)


# --- mutations ---------------------------------------------------------------------------


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits of `data`."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:  # flip a bit
            pos = min(pos, len(out) - 1)
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # an interesting byte
            out[min(pos, len(out) - 1)] = rng.choice(INTERESTING_BYTES)
        elif op == 2:  # insert random bytes
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and out:  # delete a slice
            del out[pos : pos + rng.randint(1, 8)]
        elif op == 4:  # truncate
            del out[pos:]
        elif op == 5 and out:  # duplicate a slice
            piece = out[pos : pos + rng.randint(1, 32)]
            out[pos:pos] = piece
        elif op == 6:  # splice in another command
            other = rng.choice(COMMANDS)
            out[pos:] = other[rng.randrange(len(other)) :]
        elif op == 7:  # a random tail
            out += rng.randbytes(rng.randint(1, 64))
        elif op == 8 and len(out) >= 4:  # lengths: a lenenc prefix or a count
            out[rng.randrange(len(out) - 3)] = rng.choice((0xFB, 0xFC, 0xFD, 0xFE, 0xFF))
    return bytes(out)


def frame(rng: random.Random, payload: bytes, sequence_id: int) -> bytes:
    """Mostly a proper packet; sometimes a header that lies."""
    packet = encode_packet(sequence_id, payload)
    roll = rng.random()
    if roll < 0.08:  # a wrong length
        length = rng.choice((0, 1, len(payload) + 1, 0xFFFFFF, rng.randrange(1 << 24)))
        packet = length.to_bytes(3, "little") + packet[3:]
    elif roll < 0.14:  # a wrong sequence id
        packet = packet[:3] + bytes((rng.randrange(256),)) + packet[4:]
    elif roll < 0.18:  # the whole thing mutated, header included
        packet = mutate(rng, packet)
    return packet


def safe(data: bytes) -> bool:
    """Never log in or change user as the superuser, whatever the mutation made."""
    return b"root" not in data


# --- one fuzz connection -------------------------------------------------------------------


@dataclass
class FuzzStats:
    sessions: int = 0
    logged_in: int = 0
    commands: int = 0
    infile_requests: int = 0
    bytes_sent: int = 0
    closed_by_proxy: int = 0


class FuzzClient:
    """One connection's conversation, driven by `rng`."""

    def __init__(self, port: int, rng: random.Random, stats: FuzzStats) -> None:
        self.port = port
        self.rng = rng
        self.stats = stats
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.stats.sessions += 1
        try:
            await self._conversation()
        finally:
            await self._hang_up()

    async def _conversation(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.1:  # garbage before the greeting
            await self.send(rng.randbytes(rng.randint(1, 200)))
            await self.drain()
            return
        greeting_bytes = await self.drain(1.0)
        if len(greeting_bytes) < 5:
            return
        try:
            greeting = messages.parse_greeting(greeting_bytes[4:])
        except Exception:  # an ERR (the server refusing): nothing more to try
            return
        caps = (pf.CLIENT_CAPABILITIES | Capability.CLIENT_CONNECT_WITH_DB) & greeting.capabilities
        if rng.random() < 0.5:
            caps |= Capability.CLIENT_DEPRECATE_EOF & greeting.capabilities
        response = pf.handshake_response(caps, FUZZ_USER, b"", "mpt")
        if roll < 0.3:  # a mutated handshake response, then perhaps more
            await self.send(frame(rng, mutate(rng, response), 1))
            await self.drain()
            if rng.random() < 0.5:
                await self.send(frame(rng, mutate(rng, rng.choice(COMMANDS)), 0))
                await self.drain()
            return
        await self.send(encode_packet(1, response))
        reply = await self.drain(1.0)
        if reply[4:5] != b"\x00":
            return  # refused (or worse): this connection is done
        self.stats.logged_in += 1
        if roll < 0.4:  # a stream of random bytes
            for _ in range(rng.randint(1, 5)):
                await self.send(rng.randbytes(rng.randint(1, 300)))
            await self.drain()
            return
        for _ in range(rng.randint(1, 12)):
            if not await self.command():
                return

    async def command(self) -> bool:
        """One command, valid or mutated, and whatever comes back; False once the proxy
        has closed the connection."""
        rng = self.rng
        payload = rng.choice(COMMANDS)
        if rng.random() < 0.6:
            payload = mutate(rng, payload)
        data = frame(rng, payload, 0)
        if rng.random() < 0.15:  # pipelined: a second command in the same breath
            data += frame(rng, rng.choice(COMMANDS), 0)
        await self.send(data)
        self.stats.commands += 1
        reply = await self.drain()
        if reply is None:
            return False
        if reply[4:5] == b"\xfb":  # LOCAL INFILE: send "file" contents, maybe broken
            self.stats.infile_requests += 1
            seq = (reply[3] + 1) & 0xFF
            contents = [rng.randbytes(rng.randint(0, 100)) + b"\n" for _ in range(3)]
            out = b""
            for chunk in contents:
                out += frame(rng, chunk, seq)
                seq = (seq + 1) & 0xFF
            out += encode_packet(seq, b"")
            await self.send(out if rng.random() < 0.8 else mutate(rng, out))
            if await self.drain() is None:
                return False
        return True

    async def send(self, data: bytes) -> None:
        """In random pieces, with small pauses between some."""
        if not safe(data):
            return
        writer = self.writer
        assert writer is not None
        pos = 0
        while pos < len(data):
            if writer.transport.is_closing():
                return  # the proxy hung up
            size = self.rng.choice((1, 3, 7, 64, 1500, len(data)))
            writer.write(data[pos : pos + size])
            pos += size
            if self.rng.random() < 0.1:
                await asyncio.sleep(self.rng.random() * 0.01)
        self.stats.bytes_sent += len(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def drain(self, first_wait: float = 0.3) -> bytes | None:
        """Read until the proxy goes quiet; None when it closed the connection."""
        reader = self.reader
        assert reader is not None
        received = bytearray()
        wait = first_wait
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), wait)
            except TimeoutError:
                return bytes(received)
            except ConnectionError:
                data = b""
            if not data:
                self.stats.closed_by_proxy += 1
                return None if not received else bytes(received)
            received += data
            wait = QUIET

    async def _hang_up(self) -> None:
        writer = self.writer
        if writer is None:
            return
        roll = self.rng.random()
        if roll < 0.3:  # a reset, as a killed client leaves
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if roll < 0.6:
            with contextlib.suppress(ConnectionError):
                writer.write(encode_packet(0, pf.com_quit()))
        writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1)


async def fuzz(port: int, seconds: float, stats: FuzzStats) -> None:
    deadline = time.monotonic() + seconds

    async def worker(number: int) -> None:
        rng = random.Random(SEED * 1000 + number)
        while time.monotonic() < deadline:
            client = FuzzClient(port, random.Random(rng.randrange(1 << 32)), stats)
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(client.run(), SESSION_TIMEOUT)

    await asyncio.gather(*(worker(n) for n in range(CONNECTIONS)))


# --- the well-behaved client ------------------------------------------------------------------


@dataclass
class WellBehaved:
    """A PyMySQL client running queries on one connection until stopped."""

    port: int
    queries: int = 0
    slowest: float = 0.0
    failures: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with connect(self.port, database="mpt", read_timeout=10) as conn, conn.cursor() as cur:
                while not self.stop.is_set():
                    n = self.queries
                    started = time.monotonic()
                    cur.execute("SELECT %s, CONCAT('row ', %s)", (n, n))
                    assert cur.fetchall() == ((n, f"row {n}"),)
                    if n % 10 == 0:
                        cur.execute("SELECT COUNT(*) FROM seq_1_to_1000")
                        assert cur.fetchall() == ((1000,),)
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    self.queries += 1
                    time.sleep(0.005)
        except BaseException as exc:  # the test reports it
            self.failures.append(exc)


def in_thread(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, name="well-behaved", daemon=True)
    thread.start()
    return thread


# --- the test ---------------------------------------------------------------------------------


@pytest.fixture
def fuzz_user(tolerant_server: MariaDB) -> Iterator[MariaDB]:  # noqa: F811
    with tolerant_server.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS mpt.fuzz_t (a TEXT)")
        cur.execute(f"CREATE USER IF NOT EXISTS '{FUZZ_USER}'@'%'")
        cur.execute(f"GRANT SELECT, INSERT ON mpt.* TO '{FUZZ_USER}'@'%'")
    yield tolerant_server
    with tolerant_server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{FUZZ_USER}'@'%'")
        cur.execute("DROP TABLE IF EXISTS mpt.fuzz_t")


def fuzz_threads(server: MariaDB) -> int:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (FUZZ_USER,)
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0


def test_fuzzed_clients_do_not_disturb_a_well_behaved_one(
    fuzz_user: MariaDB, proxy: ProxyThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # Warm up (lazy imports, first buffers), then take the counts to come back to.
    with connect(proxy.port, user=FUZZ_USER) as conn:
        conn.ping()
    assert wait_until(lambda: not proxy.server.sessions, 5)
    tasks_before = len(running_tasks())
    fds_before = open_fds()

    good = WellBehaved(proxy.port)
    thread = in_thread(good.run)
    stats = FuzzStats()
    started = time.monotonic()
    asyncio.run(fuzz(proxy.port, FUZZ_SECONDS, stats))
    fuzz_time = time.monotonic() - started
    good.stop.set()
    thread.join(15)

    report = f"seed {SEED}: {stats}, well-behaved client: {good.queries} queries"
    assert not good.failures, f"{report}; failed with {good.failures[0]!r}"
    assert good.queries >= 100, report
    assert good.slowest < 3.0, f"{report}; slowest query {good.slowest:.2f}s"
    assert fuzz_time < FUZZ_SECONDS + SESSION_TIMEOUT + 2, report
    # The fuzzing did reach every phase: logins, commands, file transfers.
    assert stats.sessions > 200 and stats.logged_in > 100 and stats.commands > 300, report
    assert stats.infile_requests > 0, report

    server = proxy.server
    assert wait_until(lambda: not server.sessions, 10), f"{len(server.sessions)} sessions left"
    assert wait_until(lambda: len(running_tasks()) <= tasks_before, 5), running_tasks()
    assert wait_until(lambda: open_fds() <= fds_before, 5), (
        f"{open_fds() - fds_before} file descriptors leaked"
    )
    assert wait_until(lambda: fuzz_threads(fuzz_user) == 0, 10), "fuzz connections left behind"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:5]]
    # And the proxy still serves.
    with connect(proxy.port) as conn, conn.cursor() as cur:
        cur.execute("SELECT 42")
        assert cur.fetchall() == ((42,),)
