"""Helpers for tests that compare QueryEvents with what real clients and the server
reported: finding the event a client command produced, and counting the bytes a
PyMySQL connection really wrote and read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.testing.proxythread import ProxyThread


def wait_events(
    proxy: ProxyThread, predicate: Callable[[QueryEvent], bool], count: int = 1,
    timeout: float = 10.0,
) -> list[QueryEvent]:
    """The events matching predicate, once there are `count` of them. The proxy thread
    dispatches an event just after relaying the response, so the client may see its
    result a moment before the event is recorded."""

    def matching() -> list[QueryEvent]:
        return [e for e in list(proxy.events) if predicate(e)]

    proxy.recorder.wait_for(lambda: len(matching()) >= count, timeout)
    found = matching()
    assert len(found) == count, f"expected {count} matching event(s), got {found}"
    return found


def query_event(proxy: ProxyThread, sql: str, connection_id: int | None = None) -> QueryEvent:
    """The single COM_QUERY event whose text is `sql`."""
    return wait_events(
        proxy,
        lambda e: e.command == Command.COM_QUERY
        and e.query == sql
        and (connection_id is None or e.connection_id == connection_id),
    )[0]


def connection_id_of(proxy: ProxyThread, conn: Any) -> int:
    """The proxy's connection id for a PyMySQL connection, found from a marker query
    (the event's thread id is then checked against the server's CONNECTION_ID())."""
    marker = f"SELECT CONNECTION_ID() /* marker {id(conn)} */"
    with conn.cursor() as cur:
        cur.execute(marker)
        ((thread_id,),) = cur.fetchall()
    event = query_event(proxy, marker)
    assert event.thread_id == thread_id
    return event.connection_id


class ByteCounter:
    """Counts the bytes a PyMySQL connection writes to and reads from its socket, by
    wrapping the two methods all its I/O goes through."""

    def __init__(self, conn: Any) -> None:
        self.sent = 0
        self.received = 0
        self.last_read = b""  # PyMySQL reads a header, then the payload in one read
        read_bytes, write_bytes = conn._read_bytes, conn._write_bytes

        def counting_read(num_bytes: int) -> bytes:
            data: bytes = read_bytes(num_bytes)
            self.received += len(data)
            self.last_read = data
            return data

        def counting_write(data: bytes) -> None:
            self.sent += len(data)
            write_bytes(data)

        conn._read_bytes = counting_read
        conn._write_bytes = counting_write

    def reset(self) -> None:
        self.sent = 0
        self.received = 0

    @property
    def last_status(self) -> int:
        """The status flags of the last packet the client read: the OK or EOF that
        ended the response (PyMySQL keeps the status of OK packets only)."""
        payload = self.last_read
        if payload[:1] == b"\xfe" and len(payload) < 9:
            return int.from_bytes(payload[3:5], "little")
        assert payload[:1] in (b"\x00", b"\xfe"), payload[:1]
        pos = 1
        for _ in range(2):  # affected rows, last insert id
            first = payload[pos]
            pos += 1 + {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first, 0)
        return int.from_bytes(payload[pos : pos + 2], "little")
