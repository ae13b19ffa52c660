"""mysql-proxy 0.8.5's command line and configuration file (reference section 10).

Pure: argv and file text in, a ``ProxyCommandLine`` out, or an ``OptionError`` whose
message is the one line the program prints before exiting 1.

The parser is written here rather than on argparse because mysql-proxy uses GLib's
option parser and operators' command lines depend on its rules, which argparse does
not follow: an option's value is the next argument whatever it looks like
(``--lua-path -x`` is a value, argparse calls it a missing argument), there are no
abbreviations and no ``-Pvalue`` forms, a flag given ``=value`` is an unknown option,
the set of known options depends on ``--plugins`` (which may come from the config
file), and the config file's values are merged per option type, so the parser must
know which options the command line set.

Rules kept from the original:

* ``--name=value`` and ``--name value``; short ``-P``, ``-b``, ``-r``, ``-s`` (value in
  the next argument) and ``-V``; array options accumulate, other options: last wins.
* ``--defaults-file``: a GLib key file, group ``[mysql-proxy]``, ``,`` separates list
  items, booleans ``true``/``false``; refused when "others" have any permission on it.
  For strings and arrays the command line wins; for flags, integers and doubles the
  file's value overwrites the command line's (the original's quirk, kept on purpose:
  operators' start scripts may depend on it).
* ``--plugins`` defaults to ``proxy`` only; the ``--admin-*`` options are unknown
  unless the admin plugin is loaded.
* Relative ``--pid-file``, ``--log-file``, ``--plugin-dir``, ``--proxy-lua-script`` and
  ``--admin-lua-script`` are resolved against ``--basedir``, which must be absolute and
  defaults to the parent of the directory holding the program.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["flag", "string", "filename", "array", "int", "double"]

KEYFILE_GROUP = "mysql-proxy"
KNOWN_PLUGINS = ("proxy", "admin")
LOG_LEVELS = ("error", "critical", "warning", "message", "info", "debug")


class OptionError(Exception):
    """The command line or config file is wrong; the message is the whole story."""


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One option as mysql-proxy 0.8.5 registers it."""

    name: str
    kind: Kind
    group: str  # "base" (command line only), "chassis", "proxy", "admin"
    help: str
    short: str | None = None
    arg: str | None = None  # the placeholder shown in --help
    resolve: bool = False  # relative paths are resolved against --basedir
    ignored: str | None = None  # why the option is accepted but has no effect here


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("version", "flag", "base", "Show version", short="V"),
    OptionSpec("defaults-file", "string", "base", "configuration file", arg="<file>"),
    OptionSpec(
        "verbose-shutdown", "flag", "chassis", "Always log the exit code when shutting down"
    ),
    OptionSpec("daemon", "flag", "chassis", "Start in daemon-mode"),
    OptionSpec("user", "string", "chassis", "Run mysql-proxy as user", arg="<user>"),
    OptionSpec(
        "basedir",
        "string",
        "chassis",
        "Base directory to prepend to relative paths in the config",
        arg="<absolute path>",
    ),
    OptionSpec(
        "pid-file",
        "string",
        "chassis",
        "PID file in case we are started as daemon",
        arg="<file>",
        resolve=True,
    ),
    OptionSpec(
        "plugin-dir",
        "string",
        "chassis",
        "path to the plugins",
        arg="<path>",
        resolve=True,
        ignored="plugins are built in",
    ),
    OptionSpec("plugins", "array", "chassis", "plugins to load", arg="<name>"),
    OptionSpec(
        "log-level",
        "string",
        "chassis",
        "log all messages of level ... or higher",
        arg="(error|warning|info|message|debug)",
    ),
    OptionSpec(
        "log-file",
        "string",
        "chassis",
        "log all messages in a file",
        arg="<file>",
        resolve=True,
    ),
    OptionSpec("log-use-syslog", "flag", "chassis", "log all messages to syslog"),
    OptionSpec(
        "log-backtrace-on-crash",
        "flag",
        "chassis",
        "try to invoke debugger on crash",
        ignored="Python logs its own tracebacks",
    ),
    OptionSpec(
        "keepalive",
        "flag",
        "chassis",
        "try to restart the proxy if it crashed",
        ignored="use a process supervisor (systemd, docker) to restart the proxy",
    ),
    OptionSpec("max-open-files", "int", "chassis", "maximum number of open files (ulimit -n)"),
    OptionSpec(
        "event-threads",
        "int",
        "chassis",
        "number of event-handling threads (default: 1)",
        ignored="one asyncio event loop serves all connections",
    ),
    OptionSpec("lua-path", "string", "chassis", "set the LUA_PATH", arg="<...>"),
    OptionSpec("lua-cpath", "string", "chassis", "set the LUA_CPATH", arg="<...>"),
    OptionSpec(
        "proxy-address",
        "string",
        "proxy",
        "listening address:port of the proxy-server (default: :4040)",
        short="P",
        arg="<host:port>",
    ),
    OptionSpec(
        "proxy-read-only-backend-addresses",
        "array",
        "proxy",
        "address:port of the remote slave-server (default: not set)",
        short="r",
        arg="<host:port>",
    ),
    OptionSpec(
        "proxy-backend-addresses",
        "array",
        "proxy",
        "address:port of the remote backend-servers (default: 127.0.0.1:3306)",
        short="b",
        arg="<host:port>",
    ),
    OptionSpec(
        "proxy-skip-profiling",
        "flag",
        "proxy",
        "disables profiling of queries (default: enabled)",
        ignored="it has no effect in mysql-proxy 0.8.5 either",
    ),
    OptionSpec(
        "proxy-fix-bug-25371",
        "flag",
        "proxy",
        "fix bug #25371 (mysqld > 5.1.12) for older libmysql versions",
        ignored="the Bug #25371 check is always on, as in mysql-proxy 0.8.5",
    ),
    OptionSpec(
        "proxy-lua-script",
        "filename",
        "proxy",
        "filename of the lua script (default: not set)",
        short="s",
        arg="<file>",
        resolve=True,
    ),
    OptionSpec("no-proxy", "flag", "proxy", "don't start the proxy-module (default: enabled)"),
    OptionSpec(
        "proxy-pool-no-change-user",
        "flag",
        "proxy",
        "don't use CHANGE_USER to reset the connection coming from the pool (default: enabled)",
    ),
    OptionSpec(
        "proxy-connect-timeout",
        "double",
        "proxy",
        "connect timeout in seconds (default: 2.0 seconds)",
    ),
    OptionSpec(
        "proxy-read-timeout", "double", "proxy", "read timeout in seconds (default: 8 hours)"
    ),
    OptionSpec(
        "proxy-write-timeout", "double", "proxy", "write timeout in seconds (default: 8 hours)"
    ),
    OptionSpec(
        "admin-address",
        "string",
        "admin",
        "listening address:port of the admin-server (default: :4041)",
        arg="<host:port>",
    ),
    OptionSpec("admin-username", "string", "admin", "username to allow to log in", arg="<string>"),
    OptionSpec("admin-password", "string", "admin", "password to allow to log in", arg="<string>"),
    OptionSpec(
        "admin-lua-script",
        "filename",
        "admin",
        "script to execute by the admin plugin",
        arg="<filename>",
        resolve=True,
    ),
)

BY_NAME = {o.name: o for o in OPTIONS}
BY_SHORT = {o.short: o for o in OPTIONS if o.short}
HELP_FLAGS = ("help", "help-all", "help-proxy", "help-admin")

DEFAULT_PROXY_ADDRESS = ":4040"
DEFAULT_BACKEND = "127.0.0.1:3306"
DEFAULT_ADMIN_ADDRESS = ":4041"
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_READ_WRITE_TIMEOUT = 8 * 3600.0


@dataclass
class ProxyCommandLine:
    """Every option's final value, after the config file and --basedir were applied."""

    values: dict[str, Any]
    plugins: list[str]
    basedir: str
    help: str | None = None  # "help", "help-all", "help-proxy" or "help-admin"
    notes: list[str] = field(default_factory=list)  # ignored options, for the log

    def get(self, name: str, default: Any = None) -> Any:
        value = self.values.get(name)
        return default if value is None else value

    def flag(self, name: str) -> bool:
        return bool(self.values.get(name))

    @property
    def version(self) -> bool:
        return self.flag("version")

    @property
    def start_proxy(self) -> bool:
        return "proxy" in self.plugins and not self.flag("no-proxy")

    @property
    def pool_change_user(self) -> bool:
        return not self.flag("proxy-pool-no-change-user")

    @property
    def log_level(self) -> str:
        return str(self.get("log-level", "critical"))

    @property
    def proxy_address(self) -> str:
        return str(self.get("proxy-address", DEFAULT_PROXY_ADDRESS))

    @property
    def backend_addresses(self) -> list[str]:
        return list(self.get("proxy-backend-addresses") or [DEFAULT_BACKEND])

    @property
    def read_only_backend_addresses(self) -> list[str]:
        return list(self.get("proxy-read-only-backend-addresses") or [])

    def timeout(self, name: str) -> float:
        default = DEFAULT_CONNECT_TIMEOUT if name == "connect" else DEFAULT_READ_WRITE_TIMEOUT
        value = self.values.get(f"proxy-{name}-timeout")
        # Negative keeps the built-in timeout, as in 0.8.5; so does 0, which 0.8.5 took
        # literally (every connect and read timing out at once).
        return float(value) if value is not None and value > 0 else default


# --- the command line -----------------------------------------------------------------


@dataclass
class _Parsed:
    values: dict[str, Any] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # unknown options, in order
    positional: list[str] = field(default_factory=list)
    help: str | None = None


def _convert(spec: OptionSpec, text: str, shown: str) -> Any:
    if spec.kind == "int":
        # GLib: strtol(base 0), the whole text, within a C int
        try:
            value = int(text.strip(), 0)
        except ValueError:
            raise OptionError(f"Cannot parse integer value '{text}' for {shown}") from None
        if not -(2**31) <= value < 2**31:
            raise OptionError(f"Integer value '{text}' for {shown} out of range")
        return value
    if spec.kind == "double":
        try:
            number = float(text.strip())
        except ValueError:
            raise OptionError(f"Cannot parse double value '{text}' for {shown}") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise OptionError(f"Double value '{text}' for {shown} out of range")
        return number
    return text


def _store(parsed: _Parsed, spec: OptionSpec, value: Any) -> None:
    if spec.kind == "array":
        parsed.values.setdefault(spec.name, []).append(value)
    else:
        parsed.values[spec.name] = value


def parse_argv(argv: Sequence[str]) -> _Parsed:
    """Split argv into options (all groups known here) and leftovers. Value errors
    raise at once; unknown options are collected, since --version and --help win over
    them and plugin options are only known once --plugins is."""
    parsed = _Parsed()
    i = 0
    args = list(argv)
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            parsed.positional.extend(args[i:])
            break
        if arg.startswith("--"):
            name, eq, inline = arg[2:].partition("=")
            if name in HELP_FLAGS and not eq:
                parsed.help = parsed.help or name
                continue
            spec = BY_NAME.get(name)
            if spec is None:
                parsed.unknown.append(arg)
                continue
            if spec.kind == "flag":
                if eq:
                    parsed.unknown.append(arg)
                else:
                    parsed.values[spec.name] = True
                continue
            if eq:
                value = inline
            elif i < len(args):
                value = args[i]
                i += 1
            else:
                raise OptionError(f"Missing argument for --{name}")
            _store(parsed, spec, _convert(spec, value, f"--{name}"))
        elif arg.startswith("-") and len(arg) > 1:
            # GLib groups short flags (-Vb x); an option with a value takes the next arg
            for letter in arg[1:]:
                if letter == "?" or letter == "h":
                    parsed.help = parsed.help or "help"
                    continue
                spec = BY_SHORT.get(letter)
                if spec is None:
                    parsed.unknown.append(f"-{letter}")
                    continue
                if spec.kind == "flag":
                    parsed.values[spec.name] = True
                elif i < len(args):
                    _store(parsed, spec, _convert(spec, args[i], f"-{letter}"))
                    i += 1
                else:
                    raise OptionError(f"Missing argument for -{letter}")
        else:
            parsed.positional.append(arg)
    return parsed


# --- the config file ----------------------------------------------------------------

_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _unescape(raw: str, key: str, for_list: bool = False) -> str:
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            if i + 1 >= len(raw):
                raise OptionError(
                    f"Key file contains escape character at end of line (key '{key}')"
                )
            nxt = raw[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            elif for_list and nxt == ",":
                out.append("\\,")  # kept for the list splitter
            else:
                raise OptionError(
                    f"Key file contains invalid escape sequence '\\{nxt}' (key '{key}')"
                )
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_keyfile(text: str, filename: str) -> dict[str, dict[str, str]]:
    """A GLib key file: ``[group]`` headers, ``key=value`` lines, ``#`` comments.
    Values are kept raw (escapes are decoded per type when read)."""
    groups: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            end = stripped.find("]")
            name = stripped[1:end] if end > 0 else ""
            if end < 0 or not name or stripped[end + 1 :].strip():
                raise OptionError(f"{filename}: invalid group name: {stripped}")
            current = groups.setdefault(name, {})
            continue
        key, eq, value = stripped.partition("=")
        key = key.rstrip()
        if not eq or not key:
            raise OptionError(
                f"{filename}: Key file contains line '{line}' which is not a key-value pair, "
                "group, or comment"
            )
        if current is None:
            raise OptionError(f"{filename}: Key file does not start with a group")
        if re.search(r"\[[^]]*\]$", key):
            continue  # a localised value (key[de]=...): never what an option reads
        current[key] = value.lstrip()
    return groups


def _keyfile_value(spec: OptionSpec, raw: str, filename: str) -> Any:
    key = spec.name
    if spec.kind == "array":
        text = _unescape(raw, key, for_list=True)
        items = re.split(r"(?<!\\),", text)
        if items and items[-1] == "":
            items.pop()  # GLib ignores a trailing separator
        return [item.replace("\\,", ",").strip() for item in items]
    text = _unescape(raw, key)
    if spec.kind == "flag":
        word = text.strip()
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
        raise OptionError(
            f"{filename}: Key file contains key '{key}' which has a value that cannot be "
            "interpreted."
        )
    if spec.kind == "int":
        try:
            return int(text.strip(), 10)
        except ValueError:
            raise OptionError(
                f"{filename}: Value '{text}' cannot be interpreted as a number (key '{key}')."
            ) from None
    if spec.kind == "double":
        try:
            return float(text.strip())
        except ValueError:
            raise OptionError(
                f"{filename}: Value '{text}' cannot be interpreted as a float number (key '{key}')."
            ) from None
    return text.rstrip()  # mysql-proxy chomps trailing spaces of strings


def read_defaults_file(path: str) -> dict[str, str]:
    """The [mysql-proxy] group of a config file, after mysql-proxy's permission check."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise OptionError(
            f"loading config from '{path}' failed: cannot stat({path}): {exc.strerror}"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise OptionError(f"loading config from '{path}' failed: {path} isn't a regular file")
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IXOTH):
        raise OptionError(
            f"loading config from '{path}' failed: permissions of {path} aren't secure "
            "(0660 or stricter required)"
        )
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        raise OptionError(f"loading config from '{path}' failed: {exc.strerror}") from None
    return parse_keyfile(text, path).get(KEYFILE_GROUP, {})


# --- putting it together ------------------------------------------------------------


def default_basedir(program: str) -> str:
    """The parent of the directory the program lives in (mysql-proxy's rule)."""
    path = program
    if not os.path.isabs(path):
        found = shutil.which(path) if os.sep not in path else None
        path = os.path.abspath(found or path)
    return os.path.dirname(os.path.dirname(os.path.realpath(path)))


def resolve_path(basedir: str, value: str) -> str:
    if os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(basedir, value)) if value else basedir


def parse(argv: Sequence[str], program: str = "mysql-proxy") -> ProxyCommandLine:
    """argv (without the program name) -> the effective options. Raises OptionError."""
    parsed = parse_argv(argv)
    values = parsed.values
    file_values: dict[str, str] = {}
    defaults_file = values.get("defaults-file")
    if defaults_file is not None:
        file_values = read_defaults_file(defaults_file)

    # --plugins decides which option groups exist (the file may name them too)
    plugin_spec = BY_NAME["plugins"]
    if "plugins" not in values and "plugins" in file_values:
        values["plugins"] = _keyfile_value(plugin_spec, file_values["plugins"], str(defaults_file))
    # GLib does not split "--plugins=proxy,admin" (0.8.5 then fails to find a plugin
    # named "proxy,admin"); we do, as the config file does: no plugin name has a comma.
    names = [
        part.strip() for item in values.get("plugins") or ["proxy"] for part in item.split(",")
    ]
    plugins = [p for p in names if p != ""]
    plugins = list(dict.fromkeys(plugins))

    cmdline = ProxyCommandLine(values=values, plugins=plugins, basedir="", help=parsed.help)
    if values.get("version") or parsed.help:
        return cmdline  # GLib prints these before it complains about anything else

    for name in plugins:
        if name not in KNOWN_PLUGINS:
            raise OptionError(
                f"loading module '{name}' failed: no such plugin (built in: "
                f"{', '.join(KNOWN_PLUGINS)}); setting --plugin-dir=<dir> does not help here"
            )
    active_groups = {"base", "chassis", *plugins}
    unknown = list(parsed.unknown)
    for name in list(values):
        spec = BY_NAME[name]
        if spec.group not in active_groups:
            unknown.insert(0, f"--{name}")
            del values[name]
    if unknown:
        raise OptionError(f"Unknown option {unknown[0]} (use --help to show all options)")
    if parsed.positional:
        raise OptionError(f"unknown option: {parsed.positional[0]}")

    # the config file: strings/arrays only where the command line left them unset;
    # flags, ints and doubles overwrite (0.8.5's keyfile quirk)
    for spec in OPTIONS:
        if spec.group not in active_groups or spec.group == "base":
            continue
        raw = file_values.get(spec.name)
        if raw is None:
            continue
        value = _keyfile_value(spec, raw, str(defaults_file))
        if spec.kind in ("string", "filename", "array"):
            if values.get(spec.name) is None:
                values[spec.name] = value
        else:
            values[spec.name] = value

    basedir = values.get("basedir")
    if basedir is not None:
        if not os.path.isabs(basedir):
            raise OptionError(f"--basedir option must be an absolute path, but was {basedir}")
    else:
        basedir = default_basedir(program)
    cmdline.basedir = basedir
    for spec in OPTIONS:
        if spec.resolve and values.get(spec.name) is not None:
            values[spec.name] = resolve_path(basedir, values[spec.name])

    level = values.get("log-level")
    if level is not None and level not in LOG_LEVELS:
        raise OptionError(f"--log-level=... failed, level '{level}' is unknown")
    if values.get("log-file") and values.get("log-use-syslog"):
        raise OptionError("log-file and log-use-syslog were given, but only one is allowed")
    threads = values.get("event-threads")
    if threads is not None and threads < 1:
        raise OptionError(f"--event-threads has to be >= 1, is {threads}")
    if "admin" in plugins:
        _check_admin(values)
    for spec in OPTIONS:
        if spec.ignored and values.get(spec.name):
            cmdline.notes.append(f"--{spec.name} is accepted and ignored: {spec.ignored}")
    return cmdline


def _check_admin(values: dict[str, Any]) -> None:
    if values.get("admin-username") is None:
        raise OptionError("--admin-username needs to be set")
    if values.get("admin-password") is None:
        raise OptionError("--admin-password needs to be set")
    if values.get("admin-password") == "":
        raise OptionError("--admin-password cannot be empty")
    if values.get("admin-lua-script") is None:
        raise OptionError(
            "--admin-lua-script needs to be set, <install-dir>/lib/mysql-proxy/lua/admin.lua "
            "may be a good value"
        )


# --- help -----------------------------------------------------------------------------

_GROUP_TITLES = {
    "proxy": ("proxy-module", "Show options for the proxy-module"),
    "admin": ("admin-module", "Show options for the admin-module"),
}


def help_text(which: str, plugins: Sequence[str], program: str = "mysql-proxy") -> str:
    """GLib-style --help / --help-all / --help-<plugin>."""

    def rows(group: str) -> list[str]:
        out = []
        for spec in OPTIONS:
            if spec.group != group and not (group == "chassis" and spec.group == "base"):
                continue
            left = f"--{spec.name}"
            if spec.short:
                left = f"-{spec.short}, {left}"
            if spec.kind != "flag":
                left += f"={spec.arg or '<value>'}"
            out.append(f"  {left:<44} {spec.help}")
        return out

    lines = [f"Usage:\n  {program} [OPTION...] - MySQL Proxy", ""]
    shown = [p for p in plugins if p in _GROUP_TITLES]
    if which == "help":
        lines.append("Help Options:")
        lines.append(f"  {'-?, --help':<44} Show help options")
        lines.append(f"  {'--help-all':<44} Show all help options")
        for p in shown:
            lines.append(f"  {'--help-' + p:<44} {_GROUP_TITLES[p][1]}")
        lines += ["", "Application Options:", *rows("chassis")]
    elif which == "help-all":
        for p in shown:
            lines += [f"{_GROUP_TITLES[p][0]}", *rows(p), ""]
        lines += ["Application Options:", *rows("chassis")]
    else:
        p = which.removeprefix("help-")
        if p in shown:
            lines += [f"{_GROUP_TITLES[p][0]}", *rows(p)]
    return "\n".join(lines) + "\n"
