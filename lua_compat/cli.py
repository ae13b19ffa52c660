"""``mysql-proxy``: a drop-in for mysql-proxy 0.8.5's command (reference section 10).

It takes the original's options and config file (``lua_compat.options``), logs as the
original did (``lua_compat.chassislog``), and runs the proxy plugin (``LuaProxy``) and
the admin plugin (``lua_compat.admin``) on one asyncio loop, sharing one Lua state.

Start-up order follows the original, because scripts and supervisors depend on it:
parse, open the log, set LUA_PATH/LUA_CPATH, ``--daemon`` (double fork), write
``--pid-file`` (before listening), ``--max-open-files``, open the listeners, drop to
``--user``. The process that listens is the one whose pid is in the pid file and in
``posix.getpid()``, so ``posix.kill(posix.getpid(), 9)`` takes the proxy down.

SIGTERM and SIGINT shut down gracefully, as does ``chassis.set_shutdown()``; SIGHUP
reopens the log file. Every start-up error is one log line and exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import resource
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lua_compat import chassislog, options
from lua_compat.modules.chassis import LEVEL_MESSAGE
from lua_compat.options import OptionError, ProxyCommandLine
from lua_compat.runtime import LuaRuntime
from mysqlproxy.proxy.backends import Address

log = logging.getLogger("lua_compat.cli")

MYSQL_PROXY_VERSION = "0.8.5"
DEFAULT_PORT = 3306
UNIX_PATH_MAX = 108
# Commands in flight get this long to finish after SIGTERM (mysql-proxy 0.8.5 closed
# them at once; a short grace keeps that spirit without cutting a result in half).
SHUTDOWN_GRACE = 5.0


class StartupError(Exception):
    """The proxy cannot start as configured; the message is the log line."""


# --- addresses ------------------------------------------------------------------------


def parse_address(text: str) -> Address:
    """mysql-proxy's address forms: ``host:port``, ``:port`` (all IPv4 interfaces),
    ``host`` (port 3306), ``[v6]:port``, ``[v6]`` and ``/path`` (Unix socket)."""
    if text.startswith("/"):
        if len(text.encode()) >= UNIX_PATH_MAX - 1:
            raise StartupError(f"unix-path is too long: {text}")
        return Address(unix_path=text)
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise StartupError(f"IP-address has to be in the form [<ip>][:<port>], is '{text}'")
        host = text[1:end]
        port_text = text[end + 2 :] if text[end + 1 : end + 2] == ":" else None
    elif ":" in text:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, None
    port = DEFAULT_PORT
    if port_text is not None:
        if port_text == "":
            raise StartupError(
                f"IP-address has to be in the form [<ip>][:<port>], is '{text}'. No port number"
            )
        digits = len(port_text) - len(port_text.lstrip("0123456789"))
        if digits < len(port_text) or not port_text.isascii():
            raise StartupError(
                f"IP-address has to be in the form [<ip>][:<port>], is '{text}'. "
                f"Failed to parse the port at '{port_text[digits:]}'"
            )
        port = int(port_text)
        if port > 65535:
            raise StartupError(f"illegal value {port} for port, only 1 ... 65535 allowed")
    return Address(host=host or "0.0.0.0", port=port)


def resolve_address(address: Address, text: str) -> Address:
    """Host names become the first IPv4/IPv6 address getaddrinfo gives (the original
    resolves once, at start-up, and shows the numeric name to scripts)."""
    if address.unix_path is not None:
        return address
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise StartupError(f'getaddrinfo("{text}") failed: {exc}') from None
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return Address(host=str(sockaddr[0]), port=address.port)
    raise StartupError(f'getaddrinfo("{text}") failed: no IPv4 or IPv6 address')


def backend_addresses(cmd: ProxyCommandLine) -> tuple[list[Address], list[Address]]:
    """The read-write and read-only backends, resolved; a duplicate is an error."""
    seen: set[str] = set()
    lists: tuple[list[Address], list[Address]] = ([], [])
    for target, texts in zip(
        lists, (cmd.backend_addresses, cmd.read_only_backend_addresses), strict=True
    ):
        for text in texts:
            address = resolve_address(parse_address(text), text)
            if str(address) in seen:
                raise StartupError(f"backend {text} is already known!")
            seen.add(str(address))
            target.append(address)
    return lists


@dataclass
class ListenPlan:
    """The addresses, parsed and resolved before daemonizing, so that a typo is an
    error on the terminal rather than in a log."""

    proxy: Address | None
    admin: Address | None
    backends: tuple[list[Address], list[Address]]

    @classmethod
    def of(cls, cmd: ProxyCommandLine) -> ListenPlan:
        proxy = admin = None
        backends: tuple[list[Address], list[Address]] = ([], [])
        if cmd.start_proxy:
            proxy = resolve_address(parse_address(cmd.proxy_address), cmd.proxy_address)
            backends = backend_addresses(cmd)
        if "admin" in cmd.plugins:
            text = str(cmd.get("admin-address", options.DEFAULT_ADMIN_ADDRESS))
            admin = resolve_address(parse_address(text), text)
        return cls(proxy, admin, backends)


# --- process set-up ---------------------------------------------------------------------


def set_lua_search_paths(cmd: ProxyCommandLine) -> None:
    """--lua-path/--lua-cpath set LUA_PATH/LUA_CPATH (read when the Lua state opens its
    libraries); without them an existing variable stays, else the basedir default."""
    for option, variable, pattern in (
        ("lua-path", "LUA_PATH", "?.lua"),
        ("lua-cpath", "LUA_CPATH", "?.so"),
    ):
        value = cmd.get(option)
        if value is not None:
            os.environ[variable] = value
        elif variable not in os.environ:
            os.environ[variable] = os.path.join(cmd.basedir, "lib", "mysql-proxy", "lua", pattern)


def daemonize(keep_stderr: bool) -> None:
    """Double fork into the background, as 0.8.5 does (new session, cwd /). stdin and
    stdout go to /dev/null; stderr too unless the log still goes there."""
    for sig in (signal.SIGTTOU, signal.SIGTTIN, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() != 0:
        os._exit(0)
    os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.fork() != 0:
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if not keep_stderr:
        os.dup2(null, 2)
    os.close(null)


def write_pid_file(path: str) -> None:
    """The pid, no newline, mode 0600; written before the listeners open."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StartupError(f"open({path}) failed: {exc.strerror}") from None
    try:
        os.write(fd, str(os.getpid()).encode())
    except OSError as exc:
        raise StartupError(f"write({path}) of {os.getpid()} failed: {exc.strerror}") from None
    finally:
        os.close(fd)


def remove_pid_file(path: str) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        if f.read().strip() == str(os.getpid()).encode():
            os.unlink(path)


def set_max_open_files(count: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        new_hard = hard if hard == resource.RLIM_INFINITY or hard >= count else count
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, new_hard))
    except (OSError, ValueError) as exc:
        raise StartupError(f"setting fdlimit = {count} failed: {exc}") from None
    log.debug("max open file-descriptors = %d", count)


def drop_privileges(user: str, handler: chassislog.ChassisLogHandler) -> None:
    """--user: after the ports are open, become that user (root only)."""
    if os.geteuid() != 0:
        raise StartupError("can only use the --user switch if running as root")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StartupError(f"unknown user: {user}") from None
    if handler.filename is not None:
        try:
            os.chown(handler.filename, entry.pw_uid, entry.pw_gid)
        except OSError as exc:
            raise StartupError(f"chown({handler.filename}) failed: {exc.strerror}") from None
    # initgroups as well: 0.8.5 kept root's supplementary groups, which was a hole
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    log.debug("now running as user: %s (%d/%d)", user, entry.pw_uid, entry.pw_gid)


# --- running --------------------------------------------------------------------------


class MysqlProxyProgram:
    """The plugins of one process and their shutdown."""

    def __init__(
        self,
        cmd: ProxyCommandLine,
        runtime: LuaRuntime,
        handler: chassislog.ChassisLogHandler,
        addresses: ListenPlan,
    ) -> None:
        self.cmd = cmd
        self.runtime = runtime
        self.handler = handler
        self.addresses = addresses
        self.proxy: Any = None
        self.admin: Any = None
        self.stop = asyncio.Event()

    async def start(self) -> None:
        cmd = self.cmd
        loop = asyncio.get_running_loop()
        self.runtime.chassis.basedir = cmd.basedir

        def set_shutdown() -> None:
            loop.call_soon_threadsafe(self._shutdown, None)

        self.runtime.chassis.shutdown = set_shutdown
        for plugin in cmd.plugins:
            if plugin == "proxy" and cmd.start_proxy:
                await self._start_proxy()
            elif plugin == "admin":
                await self._start_admin()
        user = cmd.get("user")
        if user is not None:
            drop_privileges(user, self.handler)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._shutdown, sig)
        loop.add_signal_handler(signal.SIGHUP, self.handler.reopen)

    async def _start_proxy(self) -> None:
        from lua_compat.engine import LuaProxy

        cmd = self.cmd
        proxy_options = proxy_plugin_options(cmd, self.addresses)
        self.proxy = LuaProxy(proxy_options, runtime=self.runtime)
        try:
            await self.proxy.start()
        except OSError as exc:
            raise StartupError(f"bind({cmd.proxy_address}) failed: {exc.strerror or exc}") from None
        log.log(LEVEL_MESSAGE, "proxy listening on port %s", cmd.proxy_address)
        for kind, texts in (
            ("read/write", cmd.backend_addresses),
            ("read-only", cmd.read_only_backend_addresses),
        ):
            for text in texts:
                log.log(LEVEL_MESSAGE, "added %s backend: %s", kind, text)

    async def _start_admin(self) -> None:
        from lua_compat.admin import AdminPlugin
        from lua_compat.scope import DEFAULT_HOOK_TIME_LIMIT

        cmd = self.cmd
        text = str(cmd.get("admin-address", options.DEFAULT_ADMIN_ADDRESS))
        assert self.addresses.admin is not None
        self.admin = AdminPlugin.for_runtime(
            self.addresses.admin,
            cmd.get("admin-username"),
            cmd.get("admin-password"),
            cmd.get("admin-lua-script"),
            self.runtime,
            DEFAULT_HOOK_TIME_LIMIT,
        )
        try:
            await self.admin.start()
        except OSError as exc:
            raise StartupError(f"bind({text}) failed: {exc.strerror or exc}") from None
        log.log(LEVEL_MESSAGE, "admin-server listening on port %s", text)

    def _shutdown(self, sig: int | None) -> None:
        if not self.stop.is_set():
            where = "signal handler" if sig is not None else "chassis.set_shutdown()"
            log.log(LEVEL_MESSAGE, "Initiating shutdown, requested from %s", where)
        self.stop.set()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if self.admin is not None:
            await self.admin.close()
        if self.proxy is not None:
            await self.proxy.shutdown(SHUTDOWN_GRACE)

    async def run(self) -> int:
        try:
            await self.start()
        except StartupError as exc:
            log.critical("%s", exc)
            await self.close()
            return 1
        await self.stop.wait()
        await self.close()
        return 0


def proxy_plugin_options(cmd: ProxyCommandLine, plan: ListenPlan) -> Any:
    """The proxy plugin's options (reference 10.2) as LuaProxy takes them."""
    from lua_compat.engine import LuaProxyOptions

    assert plan.proxy is not None
    rw, ro = plan.backends
    return LuaProxyOptions(
        listen=[plan.proxy],
        backends=rw,
        read_only_backends=ro,
        script=cmd.get("proxy-lua-script"),
        connect_timeout=cmd.timeout("connect"),
        read_timeout=cmd.timeout("read"),
        write_timeout=cmd.timeout("write"),
        pool_change_user=cmd.pool_change_user,
    )


def version_text(runtime: LuaRuntime) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ours = version("mysqlproxy")
    except PackageNotFoundError:
        ours = "0.0.0"
    try:
        lupa_version = version("lupa")
    except PackageNotFoundError:
        lupa_version = "?"
    lua = runtime.lua

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    lines = [
        f"mysql-proxy {MYSQL_PROXY_VERSION}",
        f"  chassis: mysqlproxy {ours}",
        f"  glib2: none (Python {sys.version.split()[0]})",
        "  libevent: none (asyncio)",
        f"  LUA: {text(lua.eval(b'_VERSION'))} (lupa {lupa_version})",
        f"    package.path: {text(lua.eval(b'package.path'))}",
        f"    package.cpath: {text(lua.eval(b'package.cpath'))}",
        "-- modules",
        f"  proxy: {MYSQL_PROXY_VERSION}",
        f"  admin: {MYSQL_PROXY_VERSION}",
    ]
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str], program: str = "mysql-proxy") -> int:
    """The whole program; returns the exit status."""
    handler = chassislog.install("message")  # like 0.8.5: messages show while starting
    try:
        cmd = options.parse(argv, program)
    except OptionError as exc:
        log.critical("%s", exc)
        return 1
    if cmd.help is not None:
        sys.stdout.write(options.help_text(cmd.help, cmd.plugins, os.path.basename(program)))
        return 0
    if cmd.version:
        set_lua_search_paths_for_version(cmd, program)
        sys.stdout.write(version_text(LuaRuntime()))
        return 0

    log_file = cmd.get("log-file")
    try:
        if log_file is not None:
            handler.open_file(log_file)
    except OSError as exc:
        log.critical("can't open log-file '%s': %s", log_file, exc.strerror)
        return 1
    if cmd.flag("log-use-syslog"):
        handler.start_syslog()
    chassislog.set_level(handler, cmd.log_level)
    for note in cmd.notes:
        level = logging.CRITICAL if note.startswith("--keepalive") else logging.WARNING
        log.log(level, "%s", note)

    pid_file = cmd.get("pid-file")
    try:
        plan = ListenPlan.of(cmd)
        set_lua_search_paths(cmd)
        if cmd.flag("daemon"):
            daemonize(keep_stderr=log_file is None and not cmd.flag("log-use-syslog"))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        if pid_file is not None:
            write_pid_file(pid_file)
        max_files = cmd.get("max-open-files")
        if max_files:
            set_max_open_files(int(max_files))
        runtime = LuaRuntime()
    except StartupError as exc:
        log.critical("%s", exc)
        return 1

    program_ = MysqlProxyProgram(cmd, runtime, handler, plan)
    try:
        status = asyncio.run(program_.run())
    except KeyboardInterrupt:
        status = 0
    if pid_file is not None and status == 0:
        remove_pid_file(pid_file)
    level = logging.CRITICAL if cmd.flag("verbose-shutdown") else LEVEL_MESSAGE
    log.log(level, "shutting down normally, exit code is: %d", status)
    return status


def set_lua_search_paths_for_version(cmd: ProxyCommandLine, program: str) -> None:
    """--version shows package.path/cpath as the proxy would set them."""
    if not cmd.basedir:
        cmd.basedir = cmd.get("basedir") or options.default_basedir(program)
    set_lua_search_paths(cmd)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        status = run(args, sys.argv[0] if sys.argv and sys.argv[0] else "mysql-proxy")
    except Exception as exc:  # a bug: one line, the traceback only at debug level
        log.critical("internal error: %s: %s", type(exc).__name__, exc)
        log.debug("internal error", exc_info=True)
        status = 1
    logging.shutdown()
    sys.exit(status)


if __name__ == "__main__":
    main()
