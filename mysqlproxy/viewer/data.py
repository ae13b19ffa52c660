"""What the viewer shows, and where it comes from.

The viewer and `tail` read a *data source*: an object with the methods of
`DataSource`. `AdminSource` is the real one: it polls the proxy's admin interface
with PyMySQL (blocking calls, made from a worker thread, never from the UI), holds a
ring-only logging window of its own and renews it, so the window expires by itself
about 30 seconds after the viewer dies. Tests and the throughput measurement feed the
app from `mysqlproxy.viewer.fake.ScriptedSource` instead.

How events arrive: the proxy keeps a ring buffer of the events that matched any open
window, numbered 1, 2, 3... (`SELECT * FROM events WHERE id > N`). The source keeps
the last id it saw; a gap before the first id of the next batch means the ring
overflowed between two polls, and the gap is counted as dropped. Other windows put
their events in the same ring, so the source keeps only those its own window would
have kept (slower than the threshold, statements only).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pymysql

from mysqlproxy import units
from mysqlproxy.proxy.backends import Address

WINDOW_SECONDS = 30  # the viewer's window lives this long unless renewed
RENEW_EVERY = 10.0  # seconds between renewals: two may fail before the window ends
PROXY_EVERY = 1.0  # seconds between reads of the proxy's state (and so of QPS)
DIGESTS_EVERY = 2.0  # seconds between reads of the digest table
EVENTS_PER_QUERY = 2000  # LIMIT of one SELECT * FROM events
MAX_QUERIES_PER_POLL = 5  # a poll reads at most this many full batches
DIGEST_LIMIT = 500
CONNECT_TIMEOUT = 3
READ_TIMEOUT = 5
# What a window keeps without COMMAND ALL (mysqlproxy.querylog.filters).
STATEMENT_COMMANDS = frozenset({"COM_QUERY", "COM_STMT_EXECUTE"})


class SourceUnavailable(Exception):
    """The admin interface cannot be reached or refused a statement; the message is
    one line for the operator."""


# --- records ------------------------------------------------------------------------


def _int(value: object) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return value
    return int(float(str(value)))


def _float(value: object) -> float:
    if value is None or value == "":
        return 0.0
    return float(str(value))


def _bool(value: object) -> bool:
    return str(value).lower() in ("yes", "1", "true", "on")


def _str(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass(frozen=True, slots=True)
class SlowQuery:
    """One logged event, as `SELECT * FROM events` gives it. `query` is the logged
    text: prepared statements have their parameters interpolated, passwords are
    redacted."""

    id: int
    started_at: float
    connection_id: int
    thread_id: int
    client: str
    user: str
    schema: str
    command: str
    query: str
    duration_us: int
    first_byte_us: int = 0
    rows_sent: int = 0
    rows_affected: int = 0
    error_code: int = 0
    error_message: str = ""
    warnings: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    insert_id: int = 0
    sql_state: str = ""
    result_sets: int = 0
    prepared: bool = False
    no_index_used: bool = False
    in_transaction: bool = False
    backend: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> SlowQuery:
        return cls(
            id=_int(row.get("id")),
            started_at=_float(row.get("started_at")),
            connection_id=_int(row.get("connection_id")),
            thread_id=_int(row.get("thread_id")),
            client=_str(row.get("client")),
            user=_str(row.get("user")),
            schema=_str(row.get("schema")),
            command=_str(row.get("command")),
            query=_str(row.get("query")),
            duration_us=_int(row.get("duration_us")),
            first_byte_us=_int(row.get("first_byte_us")),
            rows_sent=_int(row.get("rows_sent")),
            rows_affected=_int(row.get("rows_affected")),
            error_code=_int(row.get("error_code")),
            error_message=_str(row.get("error_message")),
            warnings=_int(row.get("warnings")),
            bytes_sent=_int(row.get("bytes_sent")),
            bytes_received=_int(row.get("bytes_received")),
            insert_id=_int(row.get("insert_id")),
            sql_state=_str(row.get("sql_state")),
            result_sets=_int(row.get("result_sets")),
            prepared=_bool(row.get("prepared")),
            no_index_used=_bool(row.get("no_index_used")),
            in_transaction=_bool(row.get("in_transaction")),
            backend=_str(row.get("backend")),
        )

    @property
    def rows(self) -> int:
        """Rows sent, or affected for statements that send none."""
        return self.rows_sent or self.rows_affected


@dataclass(frozen=True, slots=True)
class Digest:
    """One query class over the proxy's rolling window (`SELECT * FROM digests`)."""

    query_id: str
    fingerprint: str
    count: int
    total_us: int
    mean_us: float
    p50_us: float
    p95_us: float
    p99_us: float
    max_us: int
    rows_per_call: float
    errors: int
    schema: str = ""
    first_seen: float = 0.0
    last_seen: float = 0.0
    example: str = ""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Digest:
        return cls(
            query_id=_str(row.get("query_id")),
            fingerprint=_str(row.get("fingerprint")),
            count=_int(row.get("count")),
            total_us=_int(row.get("total_us")),
            mean_us=_float(row.get("mean_us")),
            p50_us=_float(row.get("p50_us")),
            p95_us=_float(row.get("p95_us")),
            p99_us=_float(row.get("p99_us")),
            max_us=_int(row.get("max_us")),
            rows_per_call=_float(row.get("rows_per_call")),
            errors=_int(row.get("errors")),
            schema=_str(row.get("schema")),
            first_seen=_float(row.get("first_seen")),
            last_seen=_float(row.get("last_seen")),
            example=_str(row.get("example")),
        )


@dataclass(frozen=True, slots=True)
class WindowState:
    """One logging window (`SELECT * FROM status`)."""

    target: str
    format: str
    state: str
    remaining_seconds: float
    filter: str = ""
    events_written: int = 0
    events_dropped: int = 0
    sink_health: str = "ok"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> WindowState:
        return cls(
            target=_str(row.get("target")),
            format=_str(row.get("format")),
            state=_str(row.get("state")),
            remaining_seconds=_float(row.get("remaining_seconds")),
            filter=_str(row.get("filter")),
            events_written=_int(row.get("events_written")),
            events_dropped=_int(row.get("events_dropped")),
            sink_health=_str(row.get("sink_health")) or "ok",
        )

    @property
    def is_open(self) -> bool:
        return self.state == "open"


@dataclass(frozen=True, slots=True)
class ProxyState:
    """The header: `SELECT * FROM proxy` and the open windows. `qps` is None until two
    readings of queries_total exist."""

    version: str = ""
    listening: str = ""
    backend: str = ""
    connections: int = 0
    queries_total: int = 0
    qps: float | None = None
    windows: tuple[WindowState, ...] = ()


@dataclass
class Poll:
    """What one round of polling brought. `digests` and `proxy` are None when they
    were not read this round (they are read less often than events)."""

    events: list[SlowQuery] = field(default_factory=list)  # oldest first
    dropped: int = 0  # events lost in the ring since the previous poll
    digests: list[Digest] | None = None
    proxy: ProxyState | None = None


class DataSource(Protocol):
    """What the viewer and `tail` need. Every method may block on the network: call
    them from a worker thread. Errors are SourceUnavailable with a readable message."""

    threshold_us: int  # events faster than this are not shown
    window_target: str  # the ring window this source holds ('' if none)
    where: str  # for messages: "the admin interface at 127.0.0.1:4041"

    def poll(self) -> Poll: ...

    def start_file_log(self, path: str, minutes: float, slower_than_us: int = 0) -> str: ...

    def stop_file_log(self, path: str) -> str: ...

    def close(self) -> None: ...


# --- the admin interface --------------------------------------------------------------


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_threshold(text: str) -> int:
    """'50ms' -> 50000 (microseconds); a bare number is milliseconds."""
    return round(units.parse_duration(text, "ms") * 1e6)


def window_name(purpose: str) -> str:
    """A ring target no other viewer on any host will pick."""
    return f"ring:{purpose}-{os.getpid()}-{secrets.token_hex(3)}"


Connect = Callable[..., Any]
T = TypeVar("T")


class AdminSource:
    """Polls the admin interface over one PyMySQL connection.

    Not thread-safe by design of PyMySQL; a lock serialises the poller and the
    occasional command (start/stop a file window) that come from other workers.
    A lost connection raises SourceUnavailable once; the next call reconnects and
    renews the window at once.
    """

    def __init__(
        self,
        address: Address,
        user: str = "admin",
        password: str = "",
        *,
        threshold_us: int = 50_000,
        purpose: str = "viewer",
        digests: bool = True,
        proxy_state: bool = True,
        window_seconds: int = WINDOW_SECONDS,
        renew_every: float = RENEW_EVERY,
        clock: Callable[[], float] = time.monotonic,
        connect: Connect = pymysql.connect,
    ) -> None:
        self.address = address
        self.user = user
        self.password = password
        self.threshold_us = threshold_us
        self.want_digests = digests
        self.want_proxy = proxy_state
        self.window_seconds = window_seconds
        self.renew_every = renew_every
        self.clock = clock
        self._connect_fn = connect
        self.window_target = window_name(purpose)
        self.where = f"the admin interface at {address}"
        self._lock = threading.Lock()
        self._connection: Any = None
        self._last_id: int | None = None  # None: not known yet (take the proxy's)
        self._proxy_pid = ""
        self._next_renew = 0.0
        self._next_proxy = 0.0
        self._next_digests = 0.0
        self._queries_seen: tuple[float, int] | None = None
        self.connected_once = False
        self.closed = False

    # --- statements -----------------------------------------------------------------

    def log_on_statement(self) -> str:
        parts = [f"LOG ON FOR {self.window_seconds}s TO {_quote(self.window_target)}"]
        if self.threshold_us > 0:
            parts.append(f"SLOWER THAN {self.threshold_us}us")
        if self.want_digests:
            parts.append("WITH DIGESTS")
        return " ".join(parts)

    # --- the DataSource methods ---------------------------------------------------------

    def poll(self) -> Poll:
        with self._lock:
            return self._guarded(self._poll)

    def start_file_log(self, path: str, minutes: float, slower_than_us: int = 0) -> str:
        statement = f"LOG ON FOR {minutes:g}m TO {_quote(os.path.abspath(path))}"
        if slower_than_us > 0:
            statement += f" SLOWER THAN {slower_than_us}us"
        with self._lock:
            return self._guarded(lambda: self._execute(statement))

    def stop_file_log(self, path: str) -> str:
        statement = f"LOG OFF TO {_quote(os.path.abspath(path))}"
        with self._lock:
            return self._guarded(lambda: self._execute(statement))

    def close(self) -> None:
        """Close the window (if the proxy is there) and the connection. Never raises;
        if the proxy cannot be told, the window expires by itself."""
        with self._lock:
            self.closed = True
            if not self.connected_once:
                return
            statement = f"LOG OFF TO {_quote(self.window_target)}"
            for _attempt in (1, 2):
                try:
                    if self._connection is None:
                        self._connect()
                    self._execute(statement)
                    break
                except (pymysql.MySQLError, OSError):
                    # Interrupted mid-poll (Ctrl-C) the connection may be out of step:
                    # once more on a new one.
                    self._disconnect()
            self._disconnect()

    # --- internals ----------------------------------------------------------------

    def _guarded(self, action: Callable[[], T]) -> T:
        if self.closed:
            raise SourceUnavailable("the viewer is closing")
        try:
            if self._connection is None:
                self._connect()
                self._on_connected()
            return action()
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
            if code == 1045:
                self._disconnect()
                raise SourceUnavailable(
                    f"{self.where} refused the login: {_error_text(exc)} (the password "
                    "comes from $MYSQLPROXY_ADMIN_PASSWORD)"
                ) from None
            if code < 2000 and self._connection is not None:
                # PyMySQL raises server errors it has no class for (the admin
                # interface's 1105 "cannot open ...") as OperationalError too.
                raise SourceUnavailable(f"{self.where} refused: {_error_text(exc)}") from None
            self._disconnect()
            verb = "lost" if self.connected_once else "cannot reach"
            raise SourceUnavailable(f"{verb} {self.where}: {_error_text(exc)}") from None
        except (pymysql.err.InterfaceError, OSError) as exc:
            self._disconnect()
            raise SourceUnavailable(f"lost {self.where}: {_error_text(exc)}") from None
        except pymysql.MySQLError as exc:
            # The proxy answered but refused a statement: it stays connected.
            raise SourceUnavailable(f"{self.where} refused: {_error_text(exc)}") from None

    def _connect(self) -> None:
        params: dict[str, Any] = {
            "user": self.user,
            "password": self.password,
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
            "write_timeout": READ_TIMEOUT,
            "autocommit": None,
        }
        if self.address.unix_path is not None:
            params["unix_socket"] = self.address.unix_path
        else:
            host = self.address.host
            params["host"] = "127.0.0.1" if host in ("0.0.0.0", "") else host
            params["port"] = self.address.port
        try:
            self._connection = self._connect_fn(**params)
        except pymysql.err.OperationalError:
            raise
        except pymysql.MySQLError as exc:
            raise pymysql.err.OperationalError(2003, _error_text(exc)) from None

    def _on_connected(self) -> None:
        """Where to start reading events, and the window, right after (re)connecting."""
        info = self._proxy_info()
        pid = info.get("pid", "")
        last = info.get("last_event_id")
        proxy_last = _int(last) if last is not None else None
        if proxy_last is None:
            # An older proxy without last_event_id: read from the oldest the ring has,
            # and do not count the ring's beginning as drops.
            if self._last_id is None or pid != self._proxy_pid:
                self._last_id = -1
        elif self._last_id is None or pid != self._proxy_pid or proxy_last < self._last_id:
            # First connection, or the proxy restarted: start at its newest event.
            self._last_id = proxy_last
        self._proxy_pid = pid
        self._queries_seen = None
        self.connected_once = True
        self._renew()

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # a broken socket: nothing to do
                connection.close()

    def _query(self, statement: str) -> list[dict[str, Any]]:
        with self._connection.cursor() as cursor:
            cursor.execute(statement)
            columns = [d[0] for d in cursor.description or ()]
            return [dict(zip(columns, row, strict=False)) for row in cursor.fetchall()]

    def _execute(self, statement: str) -> str:
        with self._connection.cursor() as cursor:
            cursor.execute(statement)
        result = getattr(self._connection, "_result", None)
        message = getattr(result, "message", b"") or b""
        return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)

    def _proxy_info(self) -> dict[str, Any]:
        return {_str(r.get("name")): r.get("value") for r in self._query("SELECT * FROM proxy")}

    def _renew(self) -> None:
        self._execute(self.log_on_statement())
        self._next_renew = self.clock() + self.renew_every

    def _poll(self) -> Poll:
        now = self.clock()
        if now >= self._next_renew:
            self._renew()
        poll = Poll()
        self._read_events(poll)
        if self.want_proxy and now >= self._next_proxy:
            poll.proxy = self._read_proxy(now)
            self._next_proxy = now + PROXY_EVERY
        if self.want_digests and now >= self._next_digests:
            rows = self._query(f"SELECT * FROM digests ORDER BY total_us DESC LIMIT {DIGEST_LIMIT}")
            poll.digests = [Digest.from_row(r) for r in rows]
            self._next_digests = now + DIGESTS_EVERY
        return poll

    def _read_events(self, poll: Poll) -> None:
        for _ in range(MAX_QUERIES_PER_POLL):
            after = max(self._last_id or 0, 0)
            rows = self._query(f"SELECT * FROM events WHERE id > {after} LIMIT {EVENTS_PER_QUERY}")
            if not rows:
                return
            first = _int(rows[0].get("id"))
            if self._last_id is not None and self._last_id >= 0 and first > self._last_id + 1:
                poll.dropped += first - self._last_id - 1
            self._last_id = _int(rows[-1].get("id"))
            poll.events.extend(keep_events(
                (SlowQuery.from_row(r) for r in rows), self.threshold_us
            ))
            if len(rows) < EVENTS_PER_QUERY:
                return

    def _read_proxy(self, now: float) -> ProxyState:
        info = self._proxy_info()
        windows = tuple(
            w for w in (WindowState.from_row(r) for r in self._query("SELECT * FROM status"))
            if w.is_open
        )
        total = _int(info.get("queries_total"))
        qps: float | None = None
        if self._queries_seen is not None:
            then, before = self._queries_seen
            if now > then and total >= before:
                qps = (total - before) / (now - then)
        self._queries_seen = (now, total)
        return ProxyState(
            version=_str(info.get("version")),
            listening=_str(info.get("listening")),
            backend=_str(info.get("backend")),
            connections=_int(info.get("connections")),
            queries_total=total,
            qps=qps,
            windows=windows,
        )


def keep_events(events: Iterable[SlowQuery], threshold_us: int) -> list[SlowQuery]:
    """The events this viewer's own window would have kept: the ring also holds those
    of other windows, with other filters."""
    return [
        e for e in events
        if e.duration_us >= threshold_us and (not e.command or e.command in STATEMENT_COMMANDS)
    ]


def _error_text(exc: BaseException) -> str:
    args: Sequence[Any] = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    return str(exc) or type(exc).__name__
