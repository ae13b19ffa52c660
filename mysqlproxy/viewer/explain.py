"""EXPLAIN for the detail screen, through a side connection straight to the backend
(not through the proxy, so it is never logged or counted as traffic).

Only SELECT-like statements are explained: EXPLAIN of an UPDATE is harmless too, but an
operator who pressed enter on a row expects to read a plan, not to wonder what ran.
The session is read-only and each EXPLAIN runs in the event's schema. Calls block:
the viewer makes them from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymysql

from mysqlproxy.querylog.formats import PREPARED_MARK

PASSWORD_ENV = "MYSQLPROXY_DB_PASSWORD"
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 15

_LEADING_NOISE = re.compile(r"^(?:\s+|/\*.*?\*/|--[ \t][^\n]*\n?|#[^\n]*\n?|\()*", re.S)
_WRITES = re.compile(r"\b(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.I)


class ExplainError(Exception):
    """EXPLAIN could not run; the message is one line for the operator."""


@dataclass(frozen=True)
class DatabaseDSN:
    """Where the side connection goes: mysql://user:password@host:port[/schema].
    The password may also come from $MYSQLPROXY_DB_PASSWORD."""

    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    database: str = ""
    unix_socket: str | None = None

    @classmethod
    def parse(cls, text: str) -> DatabaseDSN:
        url = urllib.parse.urlsplit(text)
        if url.scheme not in ("mysql", "mariadb"):
            raise ValueError(f"{text!r}: expected mysql://user:password@host:port")
        query = urllib.parse.parse_qs(url.query)
        try:
            port = url.port or 3306
        except ValueError:
            raise ValueError(f"{text!r}: the port is not a number") from None
        password = urllib.parse.unquote(url.password or "") or os.environ.get(PASSWORD_ENV, "")
        return cls(
            host=url.hostname or "127.0.0.1",
            port=port,
            user=urllib.parse.unquote(url.username or "root"),
            password=password,
            database=url.path.lstrip("/"),
            unix_socket=(query.get("unix_socket") or [""])[0] or None,
        )

    def __str__(self) -> str:
        where = self.unix_socket or f"{self.host}:{self.port}"
        return f"{self.user}@{where}"


def explainable_text(query: str) -> str | None:
    """The statement EXPLAIN should run for a logged query, or None when it is not a
    SELECT-like statement. The marker the log puts on prepared statements goes."""
    text = query.strip()
    text = text.removeprefix(PREPARED_MARK.strip()).strip()
    head = _LEADING_NOISE.sub("", text)
    first = head.split(None, 1)[0].upper() if head else ""
    if first == "SELECT":
        return text
    if first == "WITH" and not _WRITES.search(head):
        return text
    return None


@dataclass(frozen=True)
class Plan:
    """EXPLAIN's answer."""

    columns: list[str]
    rows: list[tuple[str, ...]]


class Explainer:
    """Runs EXPLAIN on one side connection, reopened when it breaks."""

    def __init__(self, dsn: DatabaseDSN, connect: Callable[..., Any] = pymysql.connect) -> None:
        self.dsn = dsn
        self._connect_fn = connect
        self._connection: Any = None
        self._lock = threading.Lock()

    def explain(self, query: str, schema: str = "") -> Plan:
        statement = explainable_text(query)
        if statement is None:
            raise ExplainError("only SELECT statements are explained")
        with self._lock:
            for attempt in (1, 2):
                try:
                    connection = self._open()
                    database = schema or self.dsn.database
                    if database:
                        connection.select_db(database)
                    with connection.cursor() as cursor:
                        cursor.execute("EXPLAIN " + statement)
                        columns = [d[0] for d in cursor.description or ()]
                        rows = [
                            tuple("" if v is None else str(v) for v in row)
                            for row in cursor.fetchall()
                        ]
                    return Plan(columns, rows)
                except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
                    code = exc.args[0] if exc.args else 0
                    self.close_locked()
                    # A connection the server dropped since the last EXPLAIN: once more.
                    if attempt == 1 and code in (2006, 2013, 0):
                        continue
                    raise ExplainError(f"EXPLAIN via {self.dsn}: {_error_text(exc)}") from None
                except pymysql.MySQLError as exc:
                    raise ExplainError(f"EXPLAIN failed: {_error_text(exc)}") from None
                except OSError as exc:
                    self.close_locked()
                    raise ExplainError(f"EXPLAIN via {self.dsn}: {exc}") from None
        raise ExplainError("EXPLAIN failed")  # not reached

    def _open(self) -> Any:
        if self._connection is None:
            params: dict[str, Any] = {
                "user": self.dsn.user,
                "password": self.dsn.password,
                "connect_timeout": CONNECT_TIMEOUT,
                "read_timeout": READ_TIMEOUT,
                "write_timeout": READ_TIMEOUT,
                "charset": "utf8mb4",
            }
            if self.dsn.unix_socket:
                params["unix_socket"] = self.dsn.unix_socket
            else:
                params["host"] = self.dsn.host
                params["port"] = self.dsn.port
            connection = self._connect_fn(**params)
            with connection.cursor() as cursor:
                # Belt and braces: EXPLAIN of a SELECT writes nothing anyway.
                cursor.execute("SET SESSION TRANSACTION READ ONLY")
            self._connection = connection
        return self._connection

    def close_locked(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to do
                connection.close()

    def close(self) -> None:
        with self._lock:
            self.close_locked()


def _error_text(exc: BaseException) -> str:
    args: tuple[Any, ...] = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[1], str):
        return args[1]
    return str(exc) or type(exc).__name__
