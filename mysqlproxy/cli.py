"""The `mysqlproxy` command. Thin: parses arguments, then calls the modules."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from mysqlproxy import units
from mysqlproxy.proxy.backends import Address, AddressError
from mysqlproxy.proxy.tls import BackendTlsMode

log = logging.getLogger("mysqlproxy")

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_ADMIN = "127.0.0.1:4041"
PASSWORD_ENV = "MYSQLPROXY_ADMIN_PASSWORD"


class AddressType(click.ParamType):  # type: ignore[type-arg]
    name = "address"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> Address:
        if isinstance(value, Address):
            return value
        try:
            return Address.parse(str(value))
        except AddressError as exc:
            self.fail(str(exc), param, ctx)


class DurationType(click.ParamType):  # type: ignore[type-arg]
    """90s, 5m, 1h30m; thresholds 250us, 100ms, 2s. The value is the text, checked."""

    def __init__(self, default_unit: str = "s") -> None:
        self.default_unit = default_unit
        self.name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> str:
        try:
            units.parse_duration(str(value), self.default_unit)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return str(value)


class SizeType(click.ParamType):  # type: ignore[type-arg]
    name = "size"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        try:
            return units.parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


ADDRESS = AddressType()


@click.group()
@click.version_option(package_name="mysqlproxy")
def cli() -> None:
    """mysqlproxy: a MySQL wire-protocol sidecar with timed query logging."""


def window_options(for_option: str) -> Callable[[F], F]:
    """The options of a logging window, shared by `run --log-for` and `log on --for`."""

    def decorate(fn: F) -> F:
        options = [
            click.option(for_option, "window_for", type=DurationType(),
                         help="How long the logging window stays open (90s, 5m, 1h30m)."),
            click.option("--slower-than", type=DurationType("ms"),
                         help="Only commands slower than this (250us, 100ms, 2s)."),
            click.option("--user", "users", multiple=True, help="Only this user (repeatable)."),
            click.option("--db", "schemas", multiple=True,
                         help="Only this schema (repeatable)."),
            click.option("--client", "clients", multiple=True,
                         help="Only clients in this CIDR block (repeatable)."),
            click.option("--match", help="Only queries matching this regular expression."),
            click.option("--exclude", help="Skip queries matching this regular expression."),
            click.option("--sample", type=click.FloatRange(min=0, min_open=True, max=1),
                         help="Keep this fraction of matching queries (0.1 = 10%)."),
            click.option("--to", "target",
                         help="File to write (or 'stdout'). Default: the proxy's log_target."),
            click.option("--format", "fmt", type=click.Choice(["slowlog", "text", "jsonl"]),
                         default="slowlog", show_default=True),
            click.option("--max-size", type=SizeType(),
                         help="Rotate the file at this size (100M)."),
            click.option("--keep", type=click.IntRange(min=0),
                         help="Rotated files to keep (default 5)."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def log_on_statement(
    window_for: str,
    slower_than: str | None = None,
    users: Sequence[str] = (),
    schemas: Sequence[str] = (),
    clients: Sequence[str] = (),
    match: str | None = None,
    exclude: str | None = None,
    sample: float | None = None,
    target: str | None = None,
    fmt: str = "slowlog",
    max_size: int | None = None,
    keep: int | None = None,
) -> str:
    """The admin statement for a window. File targets become absolute here, where the
    operator's working directory is known."""
    parts = ["LOG ON FOR", _quote(window_for)]
    if slower_than:
        parts += ["SLOWER THAN", _quote(slower_than)]
    if users:
        parts += ["USER", ", ".join(_quote(u) for u in users)]
    if schemas:
        parts += ["DB", ", ".join(_quote(s) for s in schemas)]
    if clients:
        parts += ["CLIENT", ", ".join(_quote(c) for c in clients)]
    if match:
        parts += ["MATCH", _quote(match)]
    if exclude:
        parts += ["EXCLUDE", _quote(exclude)]
    if sample is not None:
        parts += ["SAMPLE", repr(sample)]
    if target:
        if target.lower() in ("stdout", "ring"):
            parts += ["TO", target.upper()]
        else:
            parts += ["TO", _quote(os.path.abspath(target))]
    parts += ["FORMAT", fmt]
    if max_size:
        parts += ["MAX SIZE", str(max_size)]
    if keep is not None:
        parts += ["KEEP", str(keep)]
    return " ".join(parts)


# --- mysqlproxy run ----------------------------------------------------------------


@cli.command()
@click.option("--listen", "listen", type=ADDRESS, multiple=True,
              help="Address to accept clients on: host:port or unix:/path (repeatable). "
                   "Default 127.0.0.1:4040.")
@click.option("--backend", type=ADDRESS, default="127.0.0.1:3306", show_default=True,
              help="The MySQL or MariaDB server: host:port or unix:/path.")
@click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=5.0,
              show_default=True, help="Seconds to wait for the backend to accept and greet.")
@click.option("--grace-period", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="On SIGTERM/SIGINT, seconds to let commands in flight finish.")
@click.option("--max-connections", type=click.IntRange(min=0), default=None,
              help="Clients served at once; more are refused with ERR 1040 (0: no limit). "
                   "Default: as many as the open file limit allows, two files each.")
@click.option("--idle-timeout", type=DurationType(), default=None,
              help="Close a client idle this long (90s, 5m, 8h); never one whose command "
                   "is running. Default: off.")
@click.option("--max-packet-size", type=SizeType(), default="64M", show_default=True,
              help="Largest client packet; larger are refused with ERR 1153, as the server's "
                   "max_allowed_packet does (0: no limit). Raise it with the server's.")
@click.option("--print-queries", is_flag=True,
              help="Print one line per completed command to stdout.")
@click.option("--admin", "admin", default=None,
              help=f"Admin interface address (MySQL protocol), or 'off'. Default {DEFAULT_ADMIN}.")
@click.option("--admin-user", default="admin", show_default=True)
@click.option("--admin-password-file", type=click.Path(dir_okay=False),
              help=f"File holding the admin password (else ${PASSWORD_ENV}).")
@click.option("--metrics", type=ADDRESS, default=None,
              help="Serve Prometheus metrics on this address (e.g. 127.0.0.1:9104).")
@click.option("--log-target", default="mysqlproxy-slow.log", show_default=True,
              help="File a logging window writes to when it names none.")
@click.option("--tls-cert", type=click.Path(dir_okay=False),
              help="Certificate (PEM, chain allowed) for TLS with clients: CLIENT_SSL is "
                   "offered and clients that ask get TLS. Default: no TLS with clients.")
@click.option("--tls-key", type=click.Path(dir_okay=False),
              help="Private key of --tls-cert (PEM), if not in the same file.")
@click.option("--tls-self-signed", is_flag=True,
              help="TLS with clients using a throw-away self-signed certificate made at "
                   "start-up (for trying TLS out; needs the cryptography package).")
@click.option("--require-tls", is_flag=True,
              help="Refuse clients that do not use TLS (ERR 3159), as the server's "
                   "require_secure_transport does.")
@click.option("--backend-tls", type=click.Choice([m.value for m in BackendTlsMode]),
              default="as-client", show_default=True,
              help="TLS to the backend: as-client (when the client uses TLS and the server "
                   "offers it), disabled, preferred (whenever offered), required, verify-ca, "
                   "verify-identity. Only the verify modes check the certificate.")
@click.option("--backend-ca", type=click.Path(dir_okay=False),
              help="CA file for --backend-tls verify-ca/verify-identity (default: the "
                   "system's CAs).")
@click.option("--backend-cert", type=click.Path(dir_okay=False),
              help="Client certificate to present to a backend that asks for one.")
@click.option("--backend-key", type=click.Path(dir_okay=False),
              help="Private key of --backend-cert, if not in the same file.")
@window_options("--log-for")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
@click.option("--lua-script", type=click.Path(dir_okay=False), default=None,
              help="Run a mysql-proxy 0.8 Lua script's hooks on every connection "
                   "(reloaded when the file changes).")
def run(
    listen: Sequence[Address],
    backend: Address,
    connect_timeout: float,
    grace_period: float,
    max_connections: int | None,
    idle_timeout: str | None,
    max_packet_size: int,
    print_queries: bool,
    admin: str | None,
    admin_user: str,
    admin_password_file: str | None,
    metrics: Address | None,
    log_target: str,
    tls_cert: str | None,
    tls_key: str | None,
    tls_self_signed: bool,
    require_tls: bool,
    backend_tls: str,
    backend_ca: str | None,
    backend_cert: str | None,
    backend_key: str | None,
    window_for: str | None,
    log_level: str,
    lua_script: str | None = None,
    **window: Any,
) -> None:
    """Run the proxy until SIGTERM or SIGINT."""
    from mysqlproxy.admin import commands
    from mysqlproxy.admin.server import AdminConfigError, AdminCredentials
    from mysqlproxy.proxy import limits
    from mysqlproxy.proxy.app import ProxyConfig
    from mysqlproxy.proxy.server import ListenError

    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    admin_address: Address | None = None
    admin_explicit = admin is not None
    if (admin or DEFAULT_ADMIN).lower() not in ("off", "none", "no"):
        try:
            admin_address = Address.parse(admin or DEFAULT_ADMIN)
        except AddressError as exc:
            raise click.BadParameter(str(exc), param_hint="--admin") from None
    try:
        limits.check_max_packet_size(max_packet_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-packet-size") from None
    password = _admin_password(admin_password_file)
    # Off loopback the admin server refuses to start without a password (one line).
    if admin_address is not None and not password and admin_address.is_loopback:
        log.warning("the admin interface on %s has no password; set %s", admin_address,
                    PASSWORD_ENV)
    initial_window = None
    if window_for is not None:
        statement = log_on_statement(window_for, **window)
        try:
            initial_window = commands.window_from_statement(statement, os.path.abspath(log_target))
        except commands.AdminError as exc:
            raise click.BadParameter(str(exc), param_hint="--log-for") from None
    if lua_script is not None:
        _refuse_tls_with_lua(tls_cert, tls_self_signed, require_tls, backend_tls)
    client_tls, backend_tls_settings = _tls_settings(
        tls_cert, tls_key, tls_self_signed, require_tls,
        backend_tls, backend_ca, backend_cert, backend_key,
    )
    file_limit = limits.raise_file_limit()
    if max_connections is None:
        max_connections = limits.connections_for_file_limit(file_limit)
    elif max_connections == 0 or max_connections > limits.connections_for_file_limit(file_limit):
        log.warning("--max-connections %d: the open file limit (%d) allows about %d clients; "
                    "past that, new clients wait or fail instead of getting ERR 1040",
                    max_connections, file_limit, limits.connections_for_file_limit(file_limit))
    config = ProxyConfig(
        listen=list(listen) or [Address.parse("127.0.0.1:4040")],
        backend=backend,
        connect_timeout=connect_timeout,
        grace_period=grace_period,
        max_connections=max_connections,
        idle_timeout=units.parse_duration(idle_timeout) if idle_timeout else 0.0,
        max_packet_size=max_packet_size,
        admin=admin_address,
        admin_credentials=AdminCredentials.from_password(admin_user, password),
        log_target=log_target,
        initial_window=initial_window,
        print_queries=print_queries,
        metrics=metrics,
        client_tls=client_tls,
        backend_tls=backend_tls_settings,
        lua_script=os.path.abspath(lua_script) if lua_script else None,
    )
    _install_event_loop_policy()
    try:
        asyncio.run(_serve(config, admin_explicit))
    except (ListenError, AdminConfigError) as exc:
        raise click.ClickException(str(exc)) from None


def _refuse_tls_with_lua(
    cert: str | None, self_signed: bool, require: bool, backend_mode: str
) -> None:
    """The Lua engine has no TLS on either leg: TLS options next to --lua-script would be
    ignored, and the operator would believe in TLS that is not there (fail-open)."""
    given = [
        name
        for name, asked in (
            ("--tls-cert", cert),
            ("--tls-self-signed", self_signed),
            ("--require-tls", require),
            (f"--backend-tls {backend_mode}", backend_mode != BackendTlsMode.AS_CLIENT),
        )
        if asked
    ]
    if given:
        raise click.UsageError(
            f"--lua-script cannot be combined with {', '.join(given)}: "
            "the Lua engine has no TLS on either leg"
        )


def _tls_settings(
    cert: str | None,
    key: str | None,
    self_signed: bool,
    require: bool,
    backend_mode: str,
    backend_ca: str | None,
    backend_cert: str | None,
    backend_key: str | None,
) -> tuple[Any, Any]:
    """The --tls-* and --backend-* options, checked, as (ClientTls | None, BackendTls)."""
    from mysqlproxy.proxy import tls

    if self_signed and cert:
        raise click.UsageError("give --tls-cert or --tls-self-signed, not both")
    if key and not cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    if require and not (cert or self_signed):
        raise click.UsageError("--require-tls needs --tls-cert or --tls-self-signed")
    if backend_key and not backend_cert:
        raise click.UsageError("--backend-key needs --backend-cert")
    if backend_ca and not tls.BackendTlsMode(backend_mode).verifies:
        log.warning("--backend-ca is used by --backend-tls verify-ca and verify-identity "
                    "only; with %s the backend's certificate is not checked", backend_mode)
    try:
        client = None
        if self_signed:
            client = tls.self_signed_client_tls(require)
        elif cert:
            client = tls.client_tls(cert, key, require)
        backend = tls.backend_tls(backend_mode, backend_ca, backend_cert, backend_key)
    except tls.TlsConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return client, backend


async def _serve(config: Any, admin_explicit: bool) -> None:
    from mysqlproxy.proxy.app import AdminListenError, ProxyApp

    app = ProxyApp(config)
    try:
        await app.start()
    except AdminListenError:  # not another listener (--metrics): those stop the proxy
        if admin_explicit or config.admin is None:
            raise
        # The default admin port is taken (another proxy on this host): run without it.
        log.warning("admin interface disabled: %s is in use; use --admin to choose another "
                    "address", config.admin)
        config.admin = None
        app = ProxyApp(config)
        await app.start()
    click.echo(app.describe())
    sys.stdout.flush()
    await app.shutdown_after_signal()


def _admin_password(password_file: str | None) -> str:
    if password_file is not None:
        try:
            with open(password_file, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {password_file}: {exc.strerror}", param_hint="--admin-password-file"
            ) from None
    return os.environ.get(PASSWORD_ENV, "")


def _install_event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # not on Linux: the standard loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- mysqlproxy log on/off/status ----------------------------------------------------


def admin_options(fn: F) -> F:
    fn = click.option("--admin", "admin", default=DEFAULT_ADMIN, show_default=True,
                      help="The proxy's admin interface.")(fn)
    fn = click.option("--admin-user", default="admin", show_default=True)(fn)
    return fn


@cli.group("log")
def log_group() -> None:
    """Turn query logging on for a while, off, or see its status."""


@log_group.command("on")
@admin_options
@window_options("--for")
def log_on(admin: str, admin_user: str, window_for: str | None, **window: Any) -> None:
    """Open a logging window; it closes by itself when the time is up."""
    if window_for is None:
        raise click.UsageError("--for is required, like --for 5m")
    from mysqlproxy.admin.client import admin_session

    with admin_session(admin, admin_user) as session:
        message = session.execute(log_on_statement(window_for, **window))
    click.echo(message)


@log_group.command("off")
@admin_options
@click.option("--to", "target", help="Close the window on this file (default: the only one).")
@click.option("--all", "close_all", is_flag=True, help="Close every window.")
def log_off(admin: str, admin_user: str, target: str | None, close_all: bool) -> None:
    """Close a logging window now."""
    from mysqlproxy.admin.client import admin_session

    if close_all:
        statement = "LOG OFF ALL"
    elif target:
        where = target.upper() if target.lower() in ("stdout", "ring") else _quote(
            os.path.abspath(target))
        statement = f"LOG OFF TO {where}"
    else:
        statement = "LOG OFF"
    with admin_session(admin, admin_user) as session:
        click.echo(session.execute(statement))


@log_group.command("status")
@admin_options
def log_status(admin: str, admin_user: str) -> None:
    """The logging windows, with remaining time, events written and dropped."""
    from mysqlproxy.admin.client import admin_session, print_status

    with admin_session(admin, admin_user) as session:
        print_status(session)


# --- mysqlproxy top / tail ---------------------------------------------------------------


def _viewer_source(admin: str, admin_user: str, slower_than: str, purpose: str,
                   digests: bool) -> Any:
    from mysqlproxy.viewer.data import AdminSource, parse_threshold

    try:
        address = Address.parse(admin)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="--admin") from None
    return AdminSource(address, admin_user, os.environ.get(PASSWORD_ENV, ""),
                       threshold_us=parse_threshold(slower_than), purpose=purpose,
                       digests=digests, proxy_state=digests)


@cli.command()
@admin_options
@click.option("--slower-than", type=DurationType("ms"), default="50ms", show_default=True,
              help="Show statements slower than this (250us, 100ms, 2s).")
@click.option("--db-dsn", metavar="mysql://USER:PASS@HOST:PORT",
              help="Run EXPLAIN on the selected query through a direct connection to the "
                   "backend (the password may come from $MYSQLPROXY_DB_PASSWORD).")
@click.option("--max-rows", type=click.IntRange(min=10), default=500, show_default=True,
              help="Slow queries kept in the live list.")
def top(admin: str, admin_user: str, slower_than: str, db_dsn: str | None,
        max_rows: int) -> None:
    """The live viewer: slow queries as they happen, digests, the proxy's state."""
    from mysqlproxy.viewer.app import TopApp, run_until_quit
    from mysqlproxy.viewer.explain import DatabaseDSN, Explainer

    explainer = None
    if db_dsn:
        try:
            explainer = Explainer(DatabaseDSN.parse(db_dsn))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--db-dsn") from None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.ClickException("top needs a terminal; in a pipe use `mysqlproxy tail`")
    source = _viewer_source(admin, admin_user, slower_than, "viewer", digests=True)
    try:
        # SIGTERM/SIGHUP quit like `q`: the window on the proxy is closed below.
        run_until_quit(TopApp(source, explainer=explainer, max_events=max_rows))
    finally:
        source.close()
        if explainer is not None:
            explainer.close()


@cli.command()
@admin_options
@click.option("--slower-than", type=DurationType("ms"), default="50ms", show_default=True,
              help="Stream statements slower than this (0 streams them all).")
@click.option("--format", "fmt", type=click.Choice(["text", "jsonl"]), default="text",
              show_default=True, help="text: the log.lua line; jsonl: one JSON object each.")
def tail(admin: str, admin_user: str, slower_than: str, fmt: str) -> None:
    """Stream events to stdout, one per line, for grep and jq."""
    from mysqlproxy.viewer import tail as tailing
    from mysqlproxy.viewer.data import SourceUnavailable

    source = _viewer_source(admin, admin_user, slower_than, "tail", digests=False)
    try:
        tailing.run(source, fmt)
    except SourceUnavailable as exc:
        raise click.ClickException(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: errors are one line on stderr and a non-zero exit, never a traceback."""
    try:
        cli.main(args=argv, prog_name="mysqlproxy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"mysqlproxy: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
