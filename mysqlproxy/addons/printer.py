"""`mysqlproxy run --print-queries`: one line per completed command."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent

_MAX_QUERY_CHARS = 2000


def format_query_line(event: QueryEvent) -> str:
    """time, duration, user@client, schema, rows, then the query on one line."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.started_at))
    millis = int(event.started_at * 1000) % 1000
    duration_ms = event.duration_us / 1000
    rows = event.rows_sent if event.rows_sent else event.rows_affected
    if event.command == Command.COM_QUERY:
        query = event.query
    else:
        query = f"{event.command_name} {event.query}".rstrip()
    query = " ".join(query.split())
    if len(query) > _MAX_QUERY_CHARS:
        query = query[:_MAX_QUERY_CHARS] + "..."
    if event.params is not None:
        query += "  -- params: " + ", ".join(_short(p) for p in event.params)
    outcome = f"ERR {event.error_code}" if event.error_code else f"rows={rows}"
    return (
        f"{stamp}.{millis:03d} {duration_ms:10.3f} ms  "
        f"#{event.connection_id} {event.user or '-'}@{event.client_address}  "
        f"db={event.schema or '-'}  {outcome}  {query}"
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class QueryPrinter:
    """Prints each QueryEvent to `outfile` (stdout by default)."""

    def __init__(self, outfile: TextIO | None = None) -> None:
        self.outfile = outfile if outfile is not None else sys.stdout

    def query_completed(self, event: QueryEvent) -> None:
        self.outfile.write(format_query_line(event) + "\n")
        self.outfile.flush()
