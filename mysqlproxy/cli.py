"""The `mysqlproxy` command. Thin: parses arguments, then calls the modules."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import click

from mysqlproxy.hooks import AddonManager
from mysqlproxy.proxy.backends import Address, AddressError, Backend
from mysqlproxy.proxy.server import ListenError, ProxyServer

log = logging.getLogger("mysqlproxy")


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


ADDRESS = AddressType()


@click.group()
@click.version_option(package_name="mysqlproxy")
def cli() -> None:
    """mysqlproxy: a MySQL wire-protocol sidecar with timed query logging."""


@cli.command()
@click.option(
    "--listen",
    "listen",
    type=ADDRESS,
    multiple=True,
    help="Address to accept clients on: host:port or unix:/path (repeatable). "
    "Default 127.0.0.1:4040.",
)
@click.option(
    "--backend",
    type=ADDRESS,
    default="127.0.0.1:3306",
    show_default=True,
    help="The MySQL or MariaDB server: host:port or unix:/path.",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the backend to accept.",
)
@click.option(
    "--grace-period",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="On SIGTERM/SIGINT, seconds to let commands in flight finish.",
)
@click.option(
    "--print-queries", is_flag=True, help="Print one line per completed command to stdout."
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def run(
    listen: Sequence[Address],
    backend: Address,
    connect_timeout: float,
    grace_period: float,
    print_queries: bool,
    log_level: str,
) -> None:
    """Run the proxy until SIGTERM or SIGINT."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    addons = AddonManager()
    if print_queries:
        from mysqlproxy.addons.printer import QueryPrinter

        addons.add(QueryPrinter())
    server = ProxyServer(
        list(listen) or [Address.parse("127.0.0.1:4040")],
        Backend(backend, connect_timeout=connect_timeout),
        addons,
    )
    _install_event_loop_policy()
    try:
        asyncio.run(_serve(server, grace_period))
    except ListenError as exc:
        raise click.ClickException(str(exc)) from None


async def _serve(server: ProxyServer, grace_period: float) -> None:
    await server.start()
    listening = ", ".join(str(a) for a in server.bound)
    click.echo(f"mysqlproxy: listening on {listening}, forwarding to {server.backend.address}")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.shutdown(grace_period)


def _install_event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:  # not on Linux: the standard loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


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
