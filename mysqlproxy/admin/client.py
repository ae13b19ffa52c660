"""The CLI's side of the admin interface: PyMySQL to talk, rich to print."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import click
import pymysql
from rich.console import Console
from rich.table import Table

from mysqlproxy.proxy.backends import Address, AddressError

PASSWORD_ENV = "MYSQLPROXY_ADMIN_PASSWORD"
CONNECT_TIMEOUT = 5


class AdminSession:
    """One connection to the admin interface."""

    def __init__(self, connection: pymysql.connections.Connection, where: str) -> None:
        self.connection = connection
        self.where = where

    def execute(self, statement: str) -> str:
        """Run a statement that answers OK; returns its message."""
        with self.connection.cursor() as cursor:
            try:
                cursor.execute(statement)
            except pymysql.MySQLError as exc:
                raise click.ClickException(_error_text(exc)) from None
            return _ok_message(self.connection)

    def query(self, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self.connection.cursor() as cursor:
            try:
                cursor.execute(statement)
            except pymysql.MySQLError as exc:
                raise click.ClickException(_error_text(exc)) from None
            columns = [d[0] for d in cursor.description or ()]
            return columns, list(cursor.fetchall())


def _ok_message(connection: Any) -> str:
    result = getattr(connection, "_result", None)
    message = getattr(result, "message", b"") or b""
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)


def _error_text(exc: pymysql.MySQLError) -> str:
    if len(exc.args) >= 2:
        return str(exc.args[1])
    return str(exc)


@contextmanager
def admin_session(admin: str, user: str) -> Iterator[AdminSession]:
    """Connect or fail with one clear line."""
    try:
        address = Address.parse(admin)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="--admin") from None
    password = os.environ.get(PASSWORD_ENV, "")
    params: dict[str, Any] = {
        "user": user,
        "password": password,
        "connect_timeout": CONNECT_TIMEOUT,
        "autocommit": None,
    }
    if address.unix_path is not None:
        params["unix_socket"] = address.unix_path
    else:
        params["host"] = "127.0.0.1" if address.host == "0.0.0.0" else address.host
        params["port"] = address.port
    try:
        connection = pymysql.connect(**params)
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args else 0
        if code == 1045:
            raise click.ClickException(
                f"the admin interface at {address} refused the login: {_error_text(exc)}"
                f" (the password comes from ${PASSWORD_ENV})"
            ) from None
        raise click.ClickException(
            f"cannot reach the admin interface at {address}: {_error_text(exc)}"
        ) from None
    except pymysql.MySQLError as exc:
        raise click.ClickException(f"admin interface at {address}: {_error_text(exc)}") from None
    try:
        yield AdminSession(connection, str(address))
    finally:
        with suppress(pymysql.MySQLError):
            connection.close()


def print_status(session: AdminSession, console: Console | None = None) -> None:
    console = console or Console()
    _, proxy_rows = session.query("SELECT * FROM proxy")
    info = {str(k): v for k, v in proxy_rows}
    console.print(
        f"[bold]mysqlproxy {info.get('version', '')}[/] on {info.get('listening', '')} → "
        f"{info.get('backend', '')}   connections: {info.get('connections', 0)}"
    )
    columns, rows = session.query("SELECT * FROM status")
    index = {name: i for i, name in enumerate(columns)}
    if not any(row[index["state"]] == "open" for row in rows):
        console.print("logging: [dim]off[/] (no window open)")
    if not rows:
        return
    # replaced_previous: `log on` on an open window's target replaced it.
    wanted = ["target", "format", "state", "remaining", "filter", "events_written",
              "events_dropped", "sink_health", "replaced_previous"]
    table = Table(title="logging windows")
    for name in wanted:
        table.add_column(name.replace("_", " "))
    for row in rows:
        cells = []
        for name in wanted:
            value = row[index[name]]
            text = str(value)
            if name == "sink_health" and text != "ok":
                text = f"[red]{text}[/]"
            cells.append(text)
        table.add_row(*cells)
    console.print(table)
