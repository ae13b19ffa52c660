"""How a QueryEvent is written: the slow query log that pt-query-digest reads, the
classic log.lua text line, and JSON lines.

Each formatter is a pure function of the event (and, for the slow log, of the schema
the previous entry left current), so tests need no files.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import json
import re
import time
from typing import Any

from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.protocol.messages import ParamValue
from mysqlproxy.querylog.redact import REDACTED, mentions_password, redact_passwords

FORMATS = ("slowlog", "text", "jsonl")
PREPARED_MARK = "/* prepared */ "
# Lines pt-query-digest's SlowLogParser takes as meta data (case-sensitive, as there).
_SLOWLOG_META_LINE = re.compile(r"use |SET (?:last_insert_id|insert_id|timestamp)")


def sql_literal(value: ParamValue) -> str:
    """A parameter as SQL literal text, for interpolating prepared statements."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | decimal.Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return "X'" + value.hex() + "'"
        return _quote(text)
    if isinstance(value, datetime.timedelta):
        return "'" + _format_timedelta(value) + "'"
    if isinstance(value, datetime.datetime):
        return f"'{value.isoformat(sep=' ')}'"
    if isinstance(value, datetime.date):
        return f"'{value.isoformat()}'"
    return _quote(str(value))


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _format_timedelta(value: datetime.timedelta) -> str:
    sign = "-" if value < datetime.timedelta(0) else ""
    value = abs(value)
    total = value.days * 86400 + value.seconds
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
    if value.microseconds:
        text += f".{value.microseconds:06d}"
    return text


def interpolate(statement: str, params: tuple[ParamValue, ...]) -> str:
    """The statement with each ? placeholder (outside quotes and comments) replaced by
    its parameter's literal."""
    pieces = _placeholder_split(statement)
    if len(pieces) - 1 > len(params):  # fewer parameters than placeholders
        return _interpolate_slowly(statement, params)
    out = [pieces[0]]
    for index, piece in enumerate(pieces[1:]):
        out.append(sql_literal(params[index]))
        out.append(piece)
    return "".join(out)


@functools.lru_cache(maxsize=2048)
def _placeholder_split(statement: str) -> tuple[str, ...]:
    """The statement cut at its placeholders. Cached: a prepared statement's text is
    executed over and over, and scanning it is most of the cost of interpolating."""
    pieces: list[str] = []
    current: list[str] = []
    for part in _scan(statement, None):
        if part is None:
            pieces.append("".join(current))
            current = []
        else:
            current.append(part)
    pieces.append("".join(current))
    return tuple(pieces)


def _interpolate_slowly(statement: str, params: tuple[ParamValue, ...]) -> str:
    return "".join(p for p in _scan(statement, params) if p is not None)


def _scan(statement: str, params: tuple[ParamValue, ...] | None) -> list[str | None]:
    """The statement in parts; each placeholder becomes its parameter's literal, or
    None when `params` is None."""
    out: list[str | None] = []
    index = 0
    pos = 0
    n = len(statement)
    while pos < n:
        ch = statement[pos]
        if ch in "'\"`":
            end = pos + 1
            while end < n:
                if statement[end] == "\\" and ch != "`":
                    end += 2
                    continue
                if statement[end] == ch:
                    if end + 1 < n and statement[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            out.append(statement[pos : end + 1])
            pos = end + 1
        elif statement.startswith("/*", pos):
            end = statement.find("*/", pos + 2)
            end = n if end < 0 else end + 2
            out.append(statement[pos:end])
            pos = end
        elif ch == "#" or (
            # MySQL: `--` starts a comment when a blank or control character follows.
            statement.startswith("--", pos) and pos + 2 < n and statement[pos + 2] <= " "
        ):
            end = statement.find("\n", pos)
            end = n if end < 0 else end
            out.append(statement[pos:end])
            pos = end
        elif ch == "?" and params is None:
            out.append(None)
            pos += 1
        elif ch == "?" and params is not None and index < len(params):
            out.append(sql_literal(params[index]))
            index += 1
            pos += 1
        else:
            out.append(ch)
            pos += 1
    return out


def loggable_query(event: QueryEvent) -> str:
    """The text a sink writes: the query, or for prepared statements the statement with
    its parameters interpolated and marked; passwords redacted. Commands without text
    are named (COM_PING, COM_INIT_DB shop, ...)."""
    command = event.command
    if command == Command.COM_QUERY:
        text = event.query
    elif command == Command.COM_STMT_EXECUTE:
        params = event.params
        if params and mentions_password(event.query):
            # Any parameter may be the password (INSERT INTO t (login, password) ...).
            params = tuple(REDACTED for _ in params)
        text = PREPARED_MARK + (interpolate(event.query, params) if params else event.query)
    elif command == Command.COM_STMT_PREPARE:
        text = "/* prepare */ " + event.query
    else:
        text = f"/* {event.command_name} */ {event.query}".rstrip()
    return redact_passwords(text)


def admin_command_name(command: int) -> str:
    """COM_INIT_DB -> 'Init DB', COM_PING -> 'Ping' (as mysqld writes them)."""
    name = Command.name_of(command).removeprefix("COM_").replace("_", " ").capitalize()
    return name.replace(" db", " DB")


def format_slowlog_header(version: str, listen: str) -> str:
    """The server-style preamble (pt-query-digest skips it)."""
    # pt-query-digest skips "Tcp port:" only with a number after it; any other text
    # there would become the first entry's query.
    addresses = [a.strip() for a in listen.split(",") if a.strip()]
    sockets = [a.removeprefix("unix:") for a in addresses if a.startswith("unix:")]
    ports = [a.rpartition(":")[2] for a in addresses if not a.startswith("unix:")]
    ports = [p for p in ports if p.isdigit()] or ["0"]
    return (
        f"mysqlproxy, Version: {version}. started with:\n"
        f"Tcp port: {' '.join(ports)}  Unix socket: {' '.join(sockets)}\n"
        "Time                 Id Command    Argument\n"
    )


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    """ISO date and time of a second (consecutive entries share it: cached)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def format_slowlog(event: QueryEvent, current_schema: str | None) -> str:
    """One slow log entry. A `use db;` line is written when the schema differs from
    the one the previous entry left current."""
    host, _, _ = event.client_address.rpartition(":")
    host = host.strip("[]") or event.client_address
    if event.command in (Command.COM_QUERY, Command.COM_STMT_EXECUTE, Command.COM_STMT_PREPARE):
        query = loggable_query(event)
    else:
        # The server's own slow log words for commands without SQL text.
        query = f"# administrator command: {admin_command_name(event.command)}"
    # A line starting with '#' would read as a new entry's header.
    if not query.startswith("# administrator command:"):
        query = "\n".join(" " + ln if ln.startswith("#") else ln for ln in query.split("\n"))
        # A first line like mysqld's own `use db;` or `SET timestamp=N;` would be read
        # as this entry's meta data, leaving it without a query.
        if _SLOWLOG_META_LINE.match(query):
            query = " " + query
    # Trailing blanks after the ';' would hide the ";\n#" that separates entries.
    query = query.rstrip()
    if not query.endswith(";"):
        query += ";"
    lines = [
        f"# Time: {_utc_second(int(event.started_at))}.{int(event.started_at % 1 * 1e6):06d}Z",
        f"# User@Host: {event.user}[{event.user}] @  [{host}]  Id: {event.thread_id}",
    ]
    if event.schema:
        lines.append(f"# Schema: {event.schema}")
    lines.append(
        f"# Query_time: {event.duration_us / 1e6:.6f}  Lock_time: 0.000000  "
        f"Rows_sent: {event.rows_sent}  Rows_examined: 0  Rows_affected: {event.rows_affected}  "
        f"Bytes_sent: {event.bytes_sent}  Bytes_received: {event.bytes_received}"
    )
    lines.append(
        f"# Errno: {event.error_code}  Warnings: {event.warnings}  "
        f"Command: {event.command_name}  Prepared: "
        f"{'Yes' if event.command == Command.COM_STMT_EXECUTE else 'No'}"
    )
    if event.schema and event.schema != current_schema:
        lines.append(f"use {event.schema};")
    lines.append(f"SET timestamp={int(event.started_at)};")
    lines.append(query)
    return "\n".join(lines) + "\n"


def format_text(event: QueryEvent) -> str:
    """The classic log.lua line, `YYYY-MM-DD HH:MM:SS <thread id> -- <query>`, with the
    duration after it. Newlines in the query are escaped to keep one line per event."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.started_at))
    query = loggable_query(event).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    outcome = f" -- error {event.error_code}" if event.error_code else ""
    return f"{stamp} {event.thread_id} -- {query} -- {event.duration_us / 1000:.3f} ms{outcome}\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": value.hex()}
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return _format_timedelta(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def event_dict(event: QueryEvent) -> dict[str, Any]:
    """Every QueryEvent field as JSON-ready values, the query redacted. `logged_query`
    is what the text and slow log formats write (parameters interpolated)."""
    logged = loggable_query(event)
    params = None if event.params is None else [_json_value(p) for p in event.params]
    if params and (REDACTED in logged or mentions_password(event.query)):
        # A parameter may be the password itself (CREATE USER ? IDENTIFIED BY ?).
        params = [REDACTED] * len(params)
    return {
        "time": datetime.datetime.fromtimestamp(event.started_at, tz=datetime.UTC).isoformat(),
        "started_at": event.started_at,
        "connection_id": event.connection_id,
        "thread_id": event.thread_id,
        "client": event.client_address,
        "backend": event.backend_address,
        "user": event.user,
        "schema": event.schema,
        "command": event.command_name,
        "query": redact_passwords(event.query),
        "logged_query": logged,
        "prepared": event.command == Command.COM_STMT_EXECUTE,
        "statement_id": event.statement_id,
        "params": params,
        "first_byte_us": event.first_byte_us,
        "duration_us": event.duration_us,
        "rows_sent": event.rows_sent,
        "rows_affected": event.rows_affected,
        "insert_id": event.insert_id,
        "warnings": event.warnings,
        "error_code": event.error_code,
        "error_message": event.error_message,
        "sql_state": event.sql_state,
        "bytes_received": event.bytes_received,
        "bytes_sent": event.bytes_sent,
        "status": int(event.status),
        "no_index_used": event.no_index_used,
        "no_good_index_used": event.no_good_index_used,
        "in_transaction": event.in_transaction,
        "result_sets": event.result_sets,
        "truncated": event.truncated,
        # [name, value] pairs, in the order sent (names may repeat); null when none.
        "query_attributes": None
        if event.query_attributes is None
        else [[name, _json_value(value)] for name, value in event.query_attributes],
    }


def format_jsonl(event: QueryEvent) -> str:
    return json.dumps(event_dict(event), ensure_ascii=False, default=str) + "\n"
