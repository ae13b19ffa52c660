"""QueryEvents for tests of observers (printer, sinks, digests)."""

from __future__ import annotations

import time
from typing import Any

from mysqlproxy.protocol.constants import Command, ServerStatus
from mysqlproxy.protocol.events import QueryEvent


def make_query_event(**changes: Any) -> QueryEvent:
    """A plausible completed SELECT; keyword arguments replace any field."""
    fields: dict[str, Any] = dict(
        started_at=time.mktime((2026, 11, 29, 8, 5, 1, 0, 0, -1)) + 0.25,
        connection_id=7,
        thread_id=42,
        client_address="127.0.0.1:50000",
        backend_address="127.0.0.1:3306",
        user="app",
        schema="shop",
        command=Command.COM_QUERY,
        query="SELECT *\n  FROM orders",
        statement_id=None,
        params=None,
        first_byte_us=1000,
        duration_us=12345,
        rows_sent=3,
        rows_affected=0,
        insert_id=0,
        warnings=0,
        error_code=0,
        error_message="",
        sql_state="",
        bytes_received=30,
        bytes_sent=300,
        status=ServerStatus.SERVER_STATUS_AUTOCOMMIT,
        result_sets=1,
        truncated=False,
        query_attributes=None,
    )
    fields.update(changes)
    return QueryEvent(**fields)
