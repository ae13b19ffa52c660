"""The admin command language: a few SQL-like statements over the proxy's live state.

    SELECT * FROM help
    SELECT * FROM status | windows | connections | backends | settings | proxy
    SELECT * FROM events [WHERE id > N] [LIMIT M]
    SELECT * FROM digests [ORDER BY column [ASC|DESC]] [LIMIT M]
    RESET digests
    LOG ON FOR 5m [SLOWER THAN 100ms] [USER u[,u]] [DB d[,d]] [CLIENT cidr[,cidr]]
           [COMMAND c[,c]] [MATCH 're'] [EXCLUDE 're'] [SAMPLE 0.1]
           [TO '/path' | TO STDOUT | TO RING] [FORMAT slowlog|text|jsonl]
           [MAX SIZE 100M] [KEEP 5]
    LOG OFF [TO '/path' | ALL]
    SET setting = value

Statements are parsed by hand: the grammar is tiny and its error messages must name
the word that was wrong, which a generic SQL parser would not do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mysqlproxy import units
from mysqlproxy.protocol.constants import Command
from mysqlproxy.querylog import formats
from mysqlproxy.querylog.filters import (
    DEFAULT_LOGGED_COMMANDS,
    LogFilter,
    compile_regex,
    parse_command,
    parse_network,
)
from mysqlproxy.querylog.window import WindowSpec

if TYPE_CHECKING:
    from mysqlproxy.admin.control import ControlPlane

Row = tuple[Any, ...]


@dataclass
class ResultSet:
    """A table answer."""

    columns: list[str]
    rows: list[Row] = field(default_factory=list)


@dataclass
class Done:
    """An OK answer, with a message shown by clients as the info string."""

    message: str = ""
    affected_rows: int = 0


class AdminError(Exception):
    """A statement the admin interface refuses; becomes an ERR packet."""

    def __init__(self, message: str, code: int = 1064, sql_state: str = "42000") -> None:
        super().__init__(message)
        self.code = code
        self.sql_state = sql_state


HELP: list[tuple[str, str]] = [
    ("SELECT * FROM help", "this list"),
    ("SELECT * FROM status", "each logging window: target, remaining time, events written "
     "and dropped, sink health"),
    ("SELECT * FROM proxy", "the proxy: version, uptime, listeners, backend, connections"),
    ("SELECT * FROM connections", "client connections, like SHOW PROCESSLIST"),
    ("SELECT * FROM backends", "the backend servers"),
    ("SELECT * FROM settings", "every runtime setting and its value"),
    ("SELECT * FROM events WHERE id > N LIMIT M", "recent logged events (ring buffer)"),
    ("SELECT * FROM digests ORDER BY total_us DESC LIMIT 20",
     "query classes over the rolling window: count, total, mean, p50/p95/p99, max, rows, "
     "errors (collected while a window WITH DIGESTS is open)"),
    ("RESET digests", "forget the digests collected so far"),
    ("LOG ON FOR 5m [SLOWER THAN 100ms] [USER u] [DB d] [CLIENT 10.0.0.0/8] "
     "[COMMAND query,stmt_execute|ALL] [MATCH 're'] [EXCLUDE 're'] [SAMPLE 0.1] "
     "[TO '/path'|STDOUT|RING|'ring:name'] [FORMAT slowlog|text|jsonl] [MAX SIZE 100M] "
     "[KEEP 5] [WITH DIGESTS]",
     "open a logging window (replaces the window on the same target); it closes by itself"),
    ("LOG OFF [TO '/path' | ALL]", "close a logging window (the default target), or all"),
    ("SET name = value", "change a setting at runtime (see SELECT * FROM settings)"),
]

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
      | (?P<op>>=|<=|<>|!=|[=<>,*();])
      | (?P<word>[^\s'"=<>,*();]+)
    )""",
    re.X | re.S,
)


@dataclass
class Token:
    kind: str  # "string", "op" or "word"
    text: str  # the unquoted value

    @property
    def upper(self) -> str:
        """The word upper-cased (or the operator), for keyword matching; "" for strings."""
        return "" if self.kind == "string" else self.text.upper()


def tokenize(statement: str) -> list[Token]:
    tokens = []
    pos = 0
    text = statement.strip().rstrip(";").strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise AdminError(f"cannot read {text[pos:pos + 20]!r}")
        pos = match.end()
        kind = match.lastgroup or "word"
        value = match.group(kind)
        if kind == "string":
            quote = value[0]
            value = value[1:-1].replace(quote * 2, quote)
            value = re.sub(r"\\(['\"\\])", r"\1", value)
        tokens.append(Token(kind, value))
    return tokens


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self, what: str) -> Token:
        token = self.peek()
        if token is None:
            raise AdminError(f"expected {what} at the end of the statement")
        self.pos += 1
        return token

    def accept(self, *words: str) -> bool:
        """Consume the words if they come next."""
        end = self.pos + len(words)
        if end > len(self.tokens):
            return False
        if all(self.tokens[self.pos + i].upper == w for i, w in enumerate(words)):
            self.pos = end
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            found = self.peek()
            raise AdminError(
                f"expected {' '.join(words)}"
                + (f", found {found.text!r}" if found else " at the end of the statement")
            )

    def value(self, what: str) -> str:
        token = self.next(what)
        if token.kind == "op":
            raise AdminError(f"expected {what}, found {token.text!r}")
        return token.text

    def value_list(self, what: str) -> list[str]:
        values = [self.value(what)]
        while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
            self.pos += 1
            values.append(self.value(what))
        return values

    def done(self) -> bool:
        return self.pos >= len(self.tokens)


def execute(control: ControlPlane, statement: str) -> ResultSet | Done:
    """Run one admin statement."""
    tokens = tokenize(statement)
    if not tokens:
        raise AdminError("empty statement; try SELECT * FROM help")
    parser = _Parser(tokens)
    head = tokens[0].upper
    if head == "SELECT":
        return _select(control, parser)
    if head == "LOG":
        return _log(control, parser)
    if head == "SET":
        return _set(control, parser)
    if head == "RESET":
        parser.expect("RESET")
        parser.expect("DIGESTS")
        count = len(control.query_log.digests.digests)
        control.query_log.digests.reset()
        return Done(f"forgot {count} digest(s)", count)
    if head == "SHOW" and len(tokens) >= 2 and tokens[1].upper in ("TABLES", "DATABASES"):
        return ResultSet(["Tables"], [(name,) for name in TABLES])
    if head in ("HELP", "?"):
        return _table_help(control, parser)
    raise AdminError(
        f"unknown command {tokens[0].text!r}; SELECT * FROM help lists what the admin "
        "interface understands",
        code=1047,
        sql_state="08S01",
    )


# --- SELECT ---------------------------------------------------------------------


def _select(control: ControlPlane, parser: _Parser) -> ResultSet:
    parser.expect("SELECT")
    token = parser.peek()
    if token is not None and token.text.startswith("@@"):
        # Clients ask these on connect (the mariadb CLI: @@version_comment).
        names = parser.value_list("a variable")
        return ResultSet(names, [tuple(control.variable(n) for n in names)])
    if token is not None and token.upper in ("DATABASE", "USER", "CONNECTION_ID", "1"):
        # The tokenizer splits DATABASE() into a word and two operators.
        values = []
        while True:
            name = parser.value("an expression")
            if parser.accept("(", ")"):
                name += "()"
            values.append(name)
            if not parser.accept(","):
                break
        return ResultSet(values, [tuple(control.variable(v) for v in values)])
    parser.expect("*")
    parser.expect("FROM")
    table = parser.value("a table name").lower()
    builder = TABLES.get(table)
    if builder is None:
        raise AdminError(
            f"unknown table {table!r}; tables: {', '.join(TABLES)}", code=1146, sql_state="42S02"
        )
    after_id = 0
    limit: int | None = None
    order: tuple[str, bool] | None = None
    if parser.accept("WHERE"):
        column = parser.value("a column").lower()
        if column != "id":
            raise AdminError("only WHERE id > N is supported")
        op = parser.next("an operator").text
        number = _int(parser.value("a number"), "id")
        after_id = {">": number, ">=": number - 1}.get(op, -1)
        if after_id < 0 and op not in (">", ">="):
            raise AdminError("only WHERE id > N or id >= N is supported")
    if parser.accept("ORDER", "BY"):
        column = parser.value("a column").lower()
        descending = parser.accept("DESC")
        if not descending:
            parser.accept("ASC")
        order = (column, descending)
    if parser.accept("LIMIT"):
        limit = _int(parser.value("a number"), "LIMIT")
    if not parser.done():
        raise AdminError(f"unexpected {parser.peek().text!r}")  # type: ignore[union-attr]
    if table == "events":
        return _table_events(control, after_id, limit if limit is not None else 100)
    result = builder(control, parser)
    if order is not None:
        _order(result, *order)
    if limit is not None:
        result.rows = result.rows[:limit]
    return result


def _order(result: ResultSet, column: str, descending: bool) -> None:
    if column not in result.columns:
        raise AdminError(
            f"cannot order by {column!r}; columns: {', '.join(result.columns)}",
            code=1054,
            sql_state="42S22",
        )
    index = result.columns.index(column)
    result.rows.sort(key=lambda row: (row[index] is None, row[index]), reverse=descending)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AdminError(f"{what} expects a whole number, got {text!r}") from None


def _table_help(control: ControlPlane, parser: _Parser) -> ResultSet:
    return ResultSet(["command", "description"], list(HELP))


def _table_status(control: ControlPlane, parser: _Parser) -> ResultSet:
    query_log = control.query_log
    rows: list[Row] = []
    windows = list(query_log.windows.values()) + list(reversed(query_log.closed_windows))
    for window in windows:
        rows.append(
            (
                window.target,
                window.spec.format if window.writer else "ring",
                window.ended or "open",
                round(query_log.remaining(window), 1),
                units.format_duration(query_log.remaining(window)),
                window.spec.filter.describe(),
                window.matched,
                window.written,
                window.dropped,
                "ok" if window.error is None else f"disabled: {window.error}",
                "yes" if window.replaced_previous else "no",
            )
        )
    return ResultSet(
        [
            "target",
            "format",
            "state",
            "remaining_seconds",
            "remaining",
            "filter",
            "events_matched",
            "events_written",
            "events_dropped",
            "sink_health",
            "replaced_previous",
        ],
        rows,
    )


def _table_proxy(control: ControlPlane, parser: _Parser) -> ResultSet:
    info = control.proxy_info()
    return ResultSet(["name", "value"], [(k, v) for k, v in info.items()])


def _table_connections(control: ControlPlane, parser: _Parser) -> ResultSet:
    now_ns = time.perf_counter_ns()
    rows: list[Row] = []
    for session in sorted(control.server.sessions, key=lambda s: s.connection_id):
        tracker = session.tracker
        command = "Connect"
        seconds = round(time.time() - session.connected_at, 1)
        if tracker is not None:
            current = tracker.current_command
            started = tracker.command_started_ns
            if current is not None and started is not None:
                command = Command.name_of(current)
                seconds = round((now_ns - started) / 1e9, 3)
            elif tracker.authenticated:
                command = "Sleep"
        rows.append(
            (
                session.connection_id,
                session.client_address,
                tracker.user if tracker else "",
                (tracker.schema if tracker else None) or "",
                command,
                seconds,
                tracker.thread_id if tracker else 0,
                str(session.backend.address),
                "yes" if session.client_tls else "no",
                "yes" if session.backend_tls else "no",
            )
        )
    return ResultSet(
        ["id", "client", "user", "schema", "command", "seconds", "server_thread_id", "backend",
         "client_tls", "backend_tls"],
        rows,
    )


def _table_backends(control: ControlPlane, parser: _Parser) -> ResultSet:
    backend = control.server.backend
    connections = len(control.server.sessions)
    return ResultSet(
        ["address", "connect_timeout", "connections", "last_error"],
        [(str(backend.address), backend.connect_timeout, connections, control.last_backend_error)],
    )


def _table_settings(control: ControlPlane, parser: _Parser) -> ResultSet:
    return ResultSet(
        ["name", "value", "description"],
        [(s.name, s.get(), s.description) for s in control.settings.values()],
    )


def _table_events(control: ControlPlane, after_id: int, limit: int) -> ResultSet:
    rows: list[Row] = []
    for event_id, event in control.query_log.recent(after_id, limit):
        rows.append(
            (
                event_id,
                round(event.started_at, 6),
                event.connection_id,
                event.thread_id,
                event.client_address,
                event.user,
                event.schema or "",
                event.command_name,
                formats.loggable_query(event),
                event.duration_us,
                event.first_byte_us,
                event.rows_sent,
                event.rows_affected,
                event.error_code,
                event.error_message,
                event.warnings,
                event.bytes_sent,
                event.bytes_received,
                event.insert_id,
                event.sql_state,
                event.result_sets,
                "yes" if event.command == Command.COM_STMT_EXECUTE else "no",
                "yes" if event.no_index_used else "no",
                "yes" if event.in_transaction else "no",
                event.backend_address,
            )
        )
    return ResultSet(
        [
            "id",
            "started_at",
            "connection_id",
            "thread_id",
            "client",
            "user",
            "schema",
            "command",
            "query",
            "duration_us",
            "first_byte_us",
            "rows_sent",
            "rows_affected",
            "error_code",
            "error_message",
            "warnings",
            "bytes_sent",
            "bytes_received",
            "insert_id",
            "sql_state",
            "result_sets",
            "prepared",
            "no_index_used",
            "in_transaction",
            "backend",
        ],
        rows,
    )


def _table_digests(control: ControlPlane, parser: _Parser) -> ResultSet:
    rows: list[Row] = []
    for row in control.query_log.digests.rows():
        rows.append(
            (
                row.query_id,
                row.fingerprint,
                row.count,
                row.total_us,
                round(row.mean_us, 1),
                round(row.p50_us, 1),
                round(row.p95_us, 1),
                round(row.p99_us, 1),
                row.max_us,
                round(row.rows_per_call, 2),
                row.errors,
                row.schema,
                round(row.first_seen, 3),
                round(row.last_seen, 3),
                row.example,
            )
        )
    return ResultSet(
        [
            "query_id",
            "fingerprint",
            "count",
            "total_us",
            "mean_us",
            "p50_us",
            "p95_us",
            "p99_us",
            "max_us",
            "rows_per_call",
            "errors",
            "schema",
            "first_seen",
            "last_seen",
            "example",
        ],
        rows,
    )


TABLES: dict[str, Callable[[ControlPlane, _Parser], ResultSet]] = {
    "help": _table_help,
    "status": _table_status,
    "windows": _table_status,
    "proxy": _table_proxy,
    "connections": _table_connections,
    "processlist": _table_connections,
    "backends": _table_backends,
    "settings": _table_settings,
    "events": lambda control, parser: _table_events(control, 0, 100),
    "digests": _table_digests,
}


# --- LOG ON / LOG OFF ---------------------------------------------------------------


def window_from_statement(statement: str, default_target: str) -> WindowSpec:
    """The window a full `LOG ON ...` statement asks for (used by `run --log-for`)."""
    parser = _Parser(tokenize(statement))
    parser.expect("LOG", "ON")
    return parse_log_on(parser, default_target)


def parse_log_on(parser: _Parser, default_target: str) -> WindowSpec:
    duration: float | None = None
    target = default_target
    fmt = "slowlog"
    max_size = 0
    keep = 5
    digests = False
    filter_args: dict[str, Any] = {}
    while not parser.done():
        if parser.accept("FOR"):
            duration = _duration(parser.value("a duration"), "FOR")
        elif parser.accept("SLOWER", "THAN"):
            threshold = _duration(parser.value("a threshold"), "SLOWER THAN", default_unit="ms")
            filter_args["slower_than_us"] = round(threshold * 1e6)
        elif parser.accept("USER"):
            filter_args["users"] = frozenset(parser.value_list("a user name"))
        elif parser.accept("DB") or parser.accept("SCHEMA"):
            filter_args["schemas"] = frozenset(parser.value_list("a schema name"))
        elif parser.accept("CLIENT"):
            try:
                filter_args["clients"] = tuple(
                    parse_network(v) for v in parser.value_list("a CIDR block")
                )
            except ValueError as exc:
                raise AdminError(str(exc)) from None
        elif parser.accept("COMMAND"):
            names = parser.value_list("a command")
            try:
                filter_args["commands"] = (
                    frozenset()
                    if [n.upper() for n in names] == ["ALL"]
                    else frozenset(parse_command(v) for v in names)
                )
            except ValueError as exc:
                raise AdminError(str(exc)) from None
        elif parser.accept("MATCH"):
            filter_args["match"] = _regex(parser.value("a regular expression"))
        elif parser.accept("EXCLUDE"):
            filter_args["exclude"] = _regex(parser.value("a regular expression"))
        elif parser.accept("SAMPLE"):
            text = parser.value("a fraction")
            try:
                filter_args["sample"] = float(text.rstrip("%")) / (100 if "%" in text else 1)
            except ValueError:
                raise AdminError(f"SAMPLE expects a fraction like 0.1, got {text!r}") from None
        elif parser.accept("TO"):
            token = parser.next("a file path, STDOUT or RING")
            if token.kind == "word" and token.upper in ("STDOUT", "RING"):
                target = token.text.lower()
            else:
                target = token.text
        elif parser.accept("FORMAT"):
            fmt = parser.value("a format").lower()
            if fmt not in formats.FORMATS:
                raise AdminError(f"FORMAT must be one of {', '.join(formats.FORMATS)}")
        elif parser.accept("MAX", "SIZE"):
            try:
                max_size = units.parse_size(parser.value("a size"))
            except ValueError as exc:
                raise AdminError(str(exc)) from None
        elif parser.accept("KEEP"):
            keep = _int(parser.value("a number"), "KEEP")
        elif parser.accept("WITH", "DIGESTS"):
            digests = True
        else:
            raise AdminError(f"unexpected {parser.peek().text!r} in LOG ON")  # type: ignore[union-attr]
    if duration is None:
        raise AdminError("LOG ON needs FOR <duration>, like LOG ON FOR 5m")
    # Statements by default; COMMAND ALL adds pings, quits, prepares and the rest.
    filter_args.setdefault("commands", DEFAULT_LOGGED_COMMANDS)
    try:
        return WindowSpec(
            duration=duration,
            target=target,
            format=fmt,
            filter=LogFilter(**filter_args),
            max_size=max_size,
            keep=keep,
            digests=digests,
        )
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def _duration(text: str, what: str, default_unit: str = "s") -> float:
    try:
        return units.parse_duration(text, default_unit)
    except ValueError as exc:
        raise AdminError(f"{what}: {exc}") from None


def _regex(text: str) -> re.Pattern[str]:
    try:
        return compile_regex(text)
    except ValueError as exc:
        raise AdminError(str(exc)) from None


def _log(control: ControlPlane, parser: _Parser) -> Done:
    parser.expect("LOG")
    if parser.accept("ON"):
        spec = parse_log_on(parser, control.default_log_target())
        try:
            window = control.query_log.open(spec)
        except OSError as exc:
            raise AdminError(
                f"cannot open {spec.target}: {exc}", code=1105, sql_state="HY000"
            ) from None
        verb = "replaced the window" if window.replaced_previous else "logging"
        health = "" if window.error is None else f"; sink disabled: {window.error}"
        kind = "ring buffer" if spec.ring_only else spec.format
        return Done(
            f"{verb} to {window.target} for {units.format_duration(spec.duration)}"
            f" ({kind}){health}"
        )
    if parser.accept("OFF"):
        if parser.accept("ALL"):
            closed = control.query_log.close_all()
            return Done(f"closed {closed} window(s)", closed)
        target = control.default_log_target()
        if parser.accept("TO"):
            token = parser.next("a file path, STDOUT or RING")
            target = token.text.lower() if token.upper in ("STDOUT", "RING") else token.text
        if not parser.done():
            raise AdminError(f"unexpected {parser.peek().text!r} in LOG OFF")  # type: ignore[union-attr]
        if not control.query_log.windows:
            return Done("no logging window is open", 0)
        if target not in control.query_log.windows and len(control.query_log.windows) == 1:
            # "LOG OFF" with a single window open means that one.
            target = next(iter(control.query_log.windows))
        if control.query_log.close(target):
            return Done(f"closed the window on {target}", 1)
        raise AdminError(
            f"no window on {target!r}; open windows: {', '.join(control.query_log.windows)}",
            code=1105,
            sql_state="HY000",
        )
    raise AdminError("expected LOG ON or LOG OFF")


# --- SET ------------------------------------------------------------------------------


_CLIENT_NOISE = ("NAMES", "CHARACTER", "AUTOCOMMIT", "SESSION", "@@SESSION", "SQL_MODE",
                 "CHARSET", "TIME_ZONE", "TRANSACTION")


def _set(control: ControlPlane, parser: _Parser) -> Done:
    parser.expect("SET")
    name_token = parser.next("a setting name")
    name = name_token.text.lower()
    if name_token.upper in _CLIENT_NOISE or name.startswith("@@") or name.startswith("@"):
        return Done()  # what client libraries send on connect: accepted, ignored
    setting = control.settings.get(name)
    if setting is None:
        raise AdminError(
            f"unknown setting {name!r}; SELECT * FROM settings lists them",
            code=1193,
            sql_state="HY000",
        )
    if not parser.accept("=") and not parser.accept("TO"):
        raise AdminError(f"expected SET {name} = value")
    value = parser.value("a value")
    if not parser.done():
        raise AdminError(f"unexpected {parser.peek().text!r}")  # type: ignore[union-attr]
    try:
        setting.set(value)
    except ValueError as exc:
        raise AdminError(f"{name}: {exc}", code=1231, sql_state="42000") from None
    return Done(f"{name} = {setting.get()}", 1)
