"""Run mysql-proxy's own test suites against our drop-in ``mysql-proxy`` command.

Two modes (reference sections 11 and 12):

* the functional suite ``tests/suite/base``: each ``t/<name>.test`` is a mysqltest
  script; the proxies it talks to are started by a ``.options`` file (Lua, executed
  here in a lupa Lua 5.1 runtime that provides the driver's ``start_proxy``,
  ``chain_proxy`` ... API), most of them with "mock" Lua scripts that play the MySQL
  server, so no real server is needed;
* ``--unit``: the stand-alone Lua unit tests of ``tests/unit/lua``, run in our Lua
  runtime with our ``mysql.*`` modules.

mysql-proxy is GPL and is never copied into this project: the runner extracts
``tests/suite``, ``tests/unit/lua`` and ``lib`` at run time into a temporary directory
(not under /tmp: see ``source_root``) from ``--mysql-proxy-src`` or ``$MYSQL_PROXY_SRC``
(a checkout or a bare git dir).

The expected results were recorded with MySQL 5.x's mysqltest; Debian ships MariaDB's
``mariadb-test``, which differs in ways that section 12.5 lists. The runner rewrites a
copy of each expected result accordingly (``compat_result``), of a test file where the
client refuses its syntax (``compat_test``) and, for the one statement MariaDB's client
cannot run at all (an ERR packet with errno 0), drops it from copies of the test and
the result (``drop_errno_zero_statements``); the verdict line says so.

Usage: ``python -m lua_compat.suite [--tests REGEX] [--keep-going] [--verbose]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import fcntl
import io
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

SOURCE_ENV = "MYSQL_PROXY_SRC"
SOURCE_MISSING = (
    "mysql-proxy source not available: pass --mysql-proxy-src PATH or set "
    "MYSQL_PROXY_SRC to a checkout or bare git dir of github.com/mysql/mysql-proxy"
)

# What upstream's build-time wrapper exports (tests/suite/lua-tests-wrapper.sh.in); the
# ``constants`` test compares proxy.PROXY_VERSION with it.
DEFAULT_PROXY_VERSION = "0.8.5"

# The path the upstream driver uses for the default proxy's script. ``lineno``'s
# expected result shows it as the chunk name; the runner uses a per-run path and
# rewrites that line of the expected result (see ``compat_result``).
UPSTREAM_DUMMY_SCRIPT = "/tmp/dummy.lua"

# Tests that talk to a real MySQL server (reference 11.5); skipped without --with-server.
NEEDS_SERVER = frozenset({"bug_30867", "bug_61998", "change_user", "select_affected_rows", "xtab2"})

# Port layout of the upstream driver (11.1): offsets from a base in steps of 64.
PORT_OFFSETS = {
    "PROXY_PORT": 0,
    "PROXY_MASTER_PORT": 10,
    "ADMIN_PORT": 15,
    "PROXY_SLAVE_PORT": 20,
    "ADMIN_MASTER_PORT": 25,
    "PROXY_CHAIN_PORT": 30,
    "ADMIN_SLAVE_PORT": 35,
    "ADMIN_CHAIN_PORT": 45,
}
# failover chains two mock backends: PROXY_CHAIN_PORT and PROXY_CHAIN_PORT + 1.
_EXTRA_PORT_OFFSETS = (31,)
PORT_RANGE = (32768, 60928)

# mariadb-test's default of 500 connect retries makes a dead proxy look like a hang.
MAX_CONNECT_RETRIES = 20

# A failure shows at most this much of the expected/got diff.
MAX_DIFF_LINES = 80

# Expected-result rewrites for MariaDB's client (12.5): the client parses the SQL state
# of an ERR that arrives instead of the greeting, and words two client errors
# differently.
MARIADB_RESULT_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^ERROR HY000: #([0-9A-Za-z]{5})(.*)$", re.M), r"ERROR \1: \2"),
    (
        re.compile(re.escape("Lost connection to MySQL server during query")),
        "Lost connection to server during query",
    ),
    (re.compile(re.escape("MySQL server has gone away")), "Server has gone away"),
)

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


class SuiteSetupError(RuntimeError):
    """The suite cannot run at all (no source, no client, no proxy command)."""


@dataclasses.dataclass
class Outcome:
    """What happened to one upstream test."""

    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    details: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        extra = f" ({self.reason})" if self.reason else ""
        if self.notes:
            extra += " [" + "; ".join(self.notes) + "]"
        timing = f" {self.seconds:.1f}s" if self.status != SKIP else ""
        return f"{self.status}  {self.name}{timing}{extra}"


# -- source --------------------------------------------------------------------------


def find_source(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The mysql-proxy source given on the command line or in $MYSQL_PROXY_SRC."""
    value = explicit or os.environ.get(SOURCE_ENV)
    if not value:
        return None
    return Path(value)


def source_root() -> Path | None:
    """Where to extract the upstream sources: a directory whose path has no ``/tmp/``.

    lib/load-multi.lua writes generated modules to /tmp/ and puts ``/tmp/?.lua`` on
    package.path only ``if not package.path:match('/tmp/')``; upstream's LUA_PATH
    pointed into the build tree, so with sources extracted under /tmp the generated
    modules are never found (load_multi fails). ``$MYSQL_PROXY_SUITE_SRC_ROOT`` wins;
    else ~/.cache/mysqlproxy-lua-suite; else the tmp dir (None).
    """
    explicit = os.environ.get("MYSQL_PROXY_SUITE_SRC_ROOT")
    candidates = [Path(explicit)] if explicit else []
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    candidates.append(Path(cache) / "mysqlproxy-lua-suite")
    for candidate in candidates:
        if "/tmp/" in str(candidate.resolve()) + "/":
            continue
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    return None


def _is_bare_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


SOURCE_PARTS = ("tests/suite", "tests/unit/lua", "lib")


def extract_source(src: Path, dest: Path) -> Path:
    """Copy the suite, the Lua unit tests and lib/ from ``src`` into ``dest``.

    ``src`` is a checkout (a directory with ``tests/suite/base``) or a bare git dir,
    whose HEAD is read with ``git archive``. Returns ``dest``.
    """
    if not src.exists():
        raise SuiteSetupError(f"{SOURCE_MISSING} ({src} does not exist)")
    if (src / "tests" / "suite" / "base").is_dir():
        for part in SOURCE_PARTS:
            if (src / part).is_dir():
                shutil.copytree(src / part, dest / part)
        return dest
    if _is_bare_git_dir(src) or (src / ".git").exists():
        git_dir = src if _is_bare_git_dir(src) else src / ".git"
        parts = [
            part
            for part in SOURCE_PARTS
            if subprocess.run(
                ["git", f"--git-dir={git_dir}", "cat-file", "-e", f"HEAD:{part}"],
                capture_output=True,
                check=False,
            ).returncode
            == 0
        ]
        archive = subprocess.run(
            ["git", f"--git-dir={git_dir}", "archive", "--format=tar", "HEAD", *parts],
            capture_output=True,
            check=False,
        )
        if archive.returncode != 0:
            raise SuiteSetupError(
                f"git archive of {src} failed: {archive.stderr.decode(errors='replace')}"
            )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout), mode="r:") as tar:
            tar.extractall(dest, filter="data")
        return dest
    raise SuiteSetupError(
        f"{src} is neither a mysql-proxy checkout (no tests/suite/base) nor a git dir"
    )


# -- expected results and test files for the client in use --------------------------


def compat_result(expected: str, *, mariadb: bool, dummy_script: str) -> str:
    """The expected result as the client in use prints it (reference 12.5)."""
    text = expected
    if dummy_script != UPSTREAM_DUMMY_SCRIPT:
        text = text.replace(UPSTREAM_DUMMY_SCRIPT, dummy_script)
    if mariadb:
        for pattern, replacement in MARIADB_RESULT_REWRITES:
            text = pattern.sub(replacement, text)
    return text


_CONNECT_WITHOUT_HOST = re.compile(r"^(\s*connect\s*\(\s*[^,\s]+\s*,)\s*,", re.M | re.I)


def compat_test(test: str) -> str:
    """Rewrites of a test file for MariaDB's client.

    ``connect (name, , , , , , /path.sock)``: MySQL 5.x's mysqltest took an empty host
    as localhost, mariadb-test refuses it ("Missing required argument 'host'").
    """
    return _CONNECT_WITHOUT_HOST.sub(r"\1localhost,", test)


_ERRNO_ZERO = re.compile(r"^\s*-{2}\s*error\s+0+\s*$", re.I)


def drop_errno_zero_statements(test: str, result: str) -> tuple[str, str, list[str]]:
    """Remove statements that expect an ERR packet with errno 0.

    MariaDB's client turns errno 0 into its own error 5026 and the test aborts, so
    ``--error 0000`` cannot be checked with it (12.5). Drops the ``--error`` line, the
    statement after it and, from the result, its echo and the ERROR line below that.
    Returns the new test, the new result and the dropped statements.
    """
    out: list[str] = []
    dropped: list[str] = []
    lines = test.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        if _ERRNO_ZERO.match(lines[i]) and i + 1 < len(lines):
            statement = lines[i + 1].split(";", 1)[0].strip()
            dropped.append(statement)
            i += 2
            continue
        out.append(lines[i])
        i += 1
    result_lines = result.splitlines(keepends=True)
    kept: list[str] = []
    j = 0
    while j < len(result_lines):
        echoed = result_lines[j].rstrip("\n").rstrip(";").strip()
        if echoed in dropped:
            j += 1
            if j < len(result_lines) and result_lines[j].startswith("ERROR "):
                j += 1
            continue
        kept.append(result_lines[j])
        j += 1
    return "".join(out), "".join(kept), dropped


def read_skip_list(suite: Path, build_os: str | None = None) -> dict[str, str]:
    """``tests_to_skip`` from ``<suite>/tests_to_skip.lua`` (a Lua file), name -> reason."""
    path = suite / "tests_to_skip.lua"
    if not path.exists():
        return {}
    lua = _new_lua()
    lua.globals().os.getenv = lambda name: build_os if name == "BUILD_OS" else None
    lua.execute(path.read_text())
    table = lua.globals().tests_to_skip
    if table is None:
        return {}
    return {str(k): str(v) for k, v in table.items()}


def _new_lua() -> Any:
    import lupa.lua51

    return lupa.lua51.LuaRuntime(unpack_returned_tuples=True)


# -- ports and processes -------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_ports(host: str = "127.0.0.1", rng: random.Random | None = None) -> dict[str, int]:
    """A base port (multiple of 64) whose whole layout of ports is free (12.3 step 2)."""
    rng = rng or random.Random()
    offsets = [*PORT_OFFSETS.values(), *_EXTRA_PORT_OFFSETS]
    low, high = PORT_RANGE
    for _ in range(200):
        base = low + 64 * rng.randrange((high - low) // 64 + 1)
        if all(port_is_free(host, base + off) for off in offsets):
            return {name: base + off for name, off in PORT_OFFSETS.items()}
    raise SuiteSetupError("no free block of ports found between 32768 and 60928")


def listening_tcp_ports() -> set[int] | None:
    """Ports with a listening TCP socket, from /proc (None where /proc has no net/tcp).

    Readiness is judged without connecting: a connection would run the scripts'
    connect_server hooks, and several tests count those.
    """
    ports: set[int] = set()
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for row in f:
                    fields = row.split()
                    if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
            found = True
        except OSError:
            continue
    return ports if found else None


def _address_is_listening(address: str) -> bool:
    if address.startswith("/"):
        return os.path.exists(address)
    port_text = address.rsplit(":", 1)[-1]
    if not port_text.isdigit():
        return True  # not ours to judge; the client's connect retries cover it
    ports = listening_tcp_ports()
    return True if ports is None else int(port_text) in ports


@dataclasses.dataclass
class ProxyProcess:
    """One ``mysql-proxy`` started for a test."""

    name: str
    argv: list[str]
    options: list[tuple[str, str]]
    popen: subprocess.Popen[bytes]
    log_path: Path
    pid_file: Path | None
    started_by_default_options: bool = False

    def option(self, key: str) -> str | None:
        for k, v in self.options:
            if k == key:
                return v
        return None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = text.splitlines()[-lines:]
        return "\n".join(tail) if tail else "(log empty)"


# -- the .options API (reference 11.1), in Lua, on top of a few Python functions -----

# Mirrors what the upstream driver offers .options files; written from the reference's
# description. ``py`` carries the Python side; ``cfg`` the values the driver keeps
# local (MySQL address, verbosity).
_OPTIONS_PRELUDE = r"""
local py, cfg = ...

local function option_pairs(opts)
  local list = {}
  for k, v in pairs(opts) do
    if type(v) == "table" then
      for _, item in pairs(v) do list[#list + 1] = { k, tostring(item) } end
    else
      list[#list + 1] = { k, tostring(v) }
    end
  end
  return list
end

function start_proxy(name, opts)
  assert(type(opts) == "table", "start_proxy(): options must be a table")
  local script = opts["proxy-lua-script"]
  if script ~= nil and not py.file_exists(script) then
    opts["proxy-lua-script"] = global_basedir .. "/t/" .. script
  end
  py.start_proxy(name, option_pairs(opts))
end

function stop_proxy()
  py.stop_proxies()
end

function simulate_replication(master_options, slave_options)
  master_options = master_options or default_master_options
  master_options["pid-file"] = master_options["pid-file"] or PROXY_MASTER_PIDFILE
  slave_options = slave_options or default_slave_options
  slave_options["pid-file"] = slave_options["pid-file"] or PROXY_SLAVE_PIDFILE
  start_proxy("master", master_options)
  start_proxy("slave", slave_options)
end

function chain_proxy(backend_scripts, front_script, use_replication)
  if type(backend_scripts) ~= "table" then backend_scripts = { backend_scripts } end
  local addresses = {}
  for i, script in ipairs(backend_scripts) do
    addresses[i] = PROXY_HOST .. ":" .. (PROXY_CHAIN_PORT + i - 1)
    local opts = {
      ["proxy-backend-addresses"] = cfg.mysql_address,
      ["proxy-address"] = addresses[i],
      ["pid-file"] = PROXY_CHAIN_PIDFILE .. i,
      ["proxy-lua-script"] = script or DEFAULT_SCRIPT_FILENAME,
      ["plugin-dir"] = PROXY_LIBPATH,
      ["basedir"] = PROXY_TEST_BASEDIR,
      ["log-level"] = (cfg.verbose == 4) and "debug" or "critical",
    }
    if use_replication == true then
      if not py.is_running("master") then simulate_replication() end
      opts["proxy-backend-addresses"] = PROXY_HOST .. ":" .. PROXY_MASTER_PORT
    end
    start_proxy("backend_proxy" .. i, opts)
  end
  start_proxy("second_proxy", {
    ["proxy-backend-addresses"] = addresses,
    ["proxy-address"] = PROXY_HOST .. ":" .. PROXY_PORT,
    ["pid-file"] = PROXY_PIDFILE,
    ["proxy-lua-script"] = front_script or DEFAULT_SCRIPT_FILENAME,
    ["plugin-dir"] = PROXY_LIBPATH,
    ["basedir"] = PROXY_TEST_BASEDIR,
    ["log-level"] = (cfg.verbose == 3) and "debug" or "critical",
  })
end

function sql_execute(queries, proxy_name)
  assert(type(queries) == "string" or type(queries) == "table", "invalid type for query")
  if type(queries) == "string" then queries = { queries } end
  local text = ""
  for _, q in pairs(queries) do text = text .. ";" .. q end
  return py.sql_execute(text, proxy_name)
end
"""


@dataclasses.dataclass
class SuiteConfig:
    """Everything a run needs to know; built from the command line."""

    source: Path
    proxy_command: list[str]
    mysqltest: str = "/usr/bin/mariadb-test"
    mysql_client: str = "mariadb"
    tests_regex: str | None = None
    keep_going: bool = False
    verbose: int = 0
    include_skipped: bool = False
    with_server: bool = False
    reuse_default_proxy: bool = True
    timeout: float = 120.0
    start_timeout: float = 15.0
    proxy_version: str | None = None
    mysql_host: str = "127.0.0.1"
    mysql_port: int = 3306
    mysql_user: str = "root"
    mysql_password: str = ""
    proxy_host: str = "127.0.0.1"
    dummy_script: str | None = None  # default: <run dir>/dummy.lua
    keep_workdir: bool = False
    work_root: Path | None = None  # where the run directory goes (default: the tmp dir)
    build_os: str | None = None


class SuiteRun:
    """One run of ``tests/suite/base``: extracted sources, ports, the running proxies.

    Use as a context manager; ``run_test(name)`` runs one test and may be called for
    the tests in order (the default proxy is reused between consecutive tests without
    ``.options``, as upstream does).
    """

    def __init__(self, config: SuiteConfig, out: TextIO | None = None) -> None:
        self.config = config
        self.out = out or sys.stdout
        self.proxies: dict[str, ProxyProcess] = {}
        self._stack = contextlib.ExitStack()
        self._failed = False
        self._current_test = ""

    # -- set-up ----------------------------------------------------------------------

    def __enter__(self) -> SuiteRun:
        try:
            self._set_up()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _set_up(self) -> None:
        cfg = self.config
        if shutil.which(cfg.mysqltest) is None:
            raise SuiteSetupError(
                f"mysqltest client {cfg.mysqltest!r} not found (Debian: apt-get install "
                "mariadb-test)"
            )
        if not cfg.proxy_command or shutil.which(cfg.proxy_command[0]) is None:
            raise SuiteSetupError(f"proxy command {shlex.join(cfg.proxy_command)!r} not found")
        self.run_dir = Path(tempfile.mkdtemp(prefix="mpsuite-", dir=cfg.work_root))
        if not cfg.keep_workdir:
            self._stack.callback(self._remove_run_dir)
        root = source_root()
        if root is None:
            self.say("# warning: sources extracted under /tmp; load_multi cannot pass there")
        self.src_dir = Path(tempfile.mkdtemp(prefix="mpsuite-src-", dir=root))
        if not cfg.keep_workdir:
            self._stack.callback(self._remove_src_dir)
        self.src = extract_source(cfg.source, self.src_dir)
        self.suite = self.src / "tests" / "suite" / "base"
        self.lua_lib = self.src / "lib"
        for sub in ("plugins", "log", "r", "t"):
            (self.run_dir / sub).mkdir()
        # load-data-infile's mock asks the client to upload ./Makefile (11.3).
        (self.run_dir / "Makefile").write_text("# uploaded by the load-data-infile test\n")
        self.prologue = self.run_dir / "prologue.inc"
        self.prologue.write_text("--disable_connect_log\n")
        self.dummy_script = cfg.dummy_script or str(self.run_dir / "dummy.lua")
        if self.dummy_script == UPSTREAM_DUMMY_SCRIPT:
            self._lock_upstream_dummy()
        Path(self.dummy_script).write_bytes(b"")
        self.mariadb = self._client_is_mariadb()
        self.proxy_version = cfg.proxy_version or DEFAULT_PROXY_VERSION
        self.skip_list = read_skip_list(self.suite, cfg.build_os)
        self.ports = choose_ports(cfg.proxy_host)
        self._stack.callback(self.stop_proxies)

    def _remove_run_dir(self) -> None:
        if self._failed:
            self.say(f"# work directory kept for inspection: {self.run_dir}")
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _remove_src_dir(self) -> None:
        if self._failed:
            self.say(f"# extracted sources kept for inspection: {self.src_dir}")
            return
        shutil.rmtree(self.src_dir, ignore_errors=True)

    def _lock_upstream_dummy(self) -> None:
        lock = open(UPSTREAM_DUMMY_SCRIPT + ".lock", "w")  # noqa: SIM115 - held for the run
        self._stack.callback(lock.close)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise SuiteSetupError(
                f"another run holds {UPSTREAM_DUMMY_SCRIPT}.lock; runs using "
                f"{UPSTREAM_DUMMY_SCRIPT} must not overlap"
            ) from exc

    def _client_is_mariadb(self) -> bool:
        version = subprocess.run(
            [self.config.mysqltest, "--version"], capture_output=True, text=True, check=False
        )
        return "mariadb" in (version.stdout + version.stderr).lower()

    def close(self) -> None:
        self._stack.close()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def debug(self, text: str, level: int = 1) -> None:
        if self.config.verbose >= level:
            self.say("# " + text)

    # -- test list -------------------------------------------------------------------

    def all_tests(self) -> list[str]:
        return sorted(p.stem for p in (self.suite / "t").glob("*.test"))

    def selected_tests(self) -> list[str]:
        regex = self.config.tests_regex
        names = self.all_tests()
        if regex:
            pattern = re.compile(regex)
            names = [n for n in names if pattern.search(n)]
        return names

    def skip_reason(self, name: str) -> str | None:
        cfg = self.config
        if not cfg.include_skipped and name in self.skip_list:
            return f"tests_to_skip.lua: {self.skip_list[name]}"
        if name in NEEDS_SERVER and not cfg.with_server:
            return "needs a MySQL server (--with-server)"
        return None

    # -- globals for .options files --------------------------------------------------

    def _options_globals(self) -> dict[str, Any]:
        cfg = self.config
        rd = self.run_dir
        ports = {k: str(v) for k, v in self.ports.items()}
        mysql_address = f"{cfg.mysql_host}:{cfg.mysql_port}"

        def defaults(port_key: str, pid_file: str) -> dict[str, str]:
            return {
                "proxy-backend-addresses": mysql_address,
                "proxy-address": f"{cfg.proxy_host}:{ports[port_key]}",
                "pid-file": pid_file,
                "proxy-lua-script": self.dummy_script,
                "plugin-dir": str(rd / "plugins"),
                "basedir": str(rd),
            }

        pid = {
            "PROXY_PIDFILE": str(rd / "mysql-proxy-test.pid"),
            "PROXY_MASTER_PIDFILE": str(rd / "mysql-proxy-test-master.pid"),
            "PROXY_SLAVE_PIDFILE": str(rd / "mysql-proxy-test-slave.pid"),
            "PROXY_CHAIN_PIDFILE": str(rd / "mysql-proxy-test-chain.pid"),
            "PROXY_BACKEND_PIDFILE": str(rd / "mysql-proxy-test-backend.pid"),
        }
        return {
            "PROXY_HOST": cfg.proxy_host,
            **ports,
            "ADMIN_USER": os.environ.get("ADMIN_USER", "root"),
            "ADMIN_PASSWORD": os.environ.get("ADMIN_PASSWORD", ""),
            "ADMIN_DEFAULT_SCRIPT_FILENAME": os.environ.get("ADMIN_DEFAULT_SCRIPT_FILENAME", ""),
            **pid,
            "PROXY_TEST_BASEDIR": str(rd),
            "PROXY_LIBPATH": str(rd / "plugins"),
            "DEFAULT_SCRIPT_FILENAME": self.dummy_script,
            "default_proxy_name": "default",
            "global_basedir": str(self.suite),
            "default_proxy_options": defaults("PROXY_PORT", pid["PROXY_PIDFILE"]),
            "default_master_options": defaults("PROXY_MASTER_PORT", pid["PROXY_MASTER_PIDFILE"]),
            "default_slave_options": defaults("PROXY_SLAVE_PORT", pid["PROXY_SLAVE_PIDFILE"]),
        }

    def execute_options(self, path: Path, *, script: str, by_default_options: bool) -> None:
        """Run a ``.options`` file in a fresh Lua runtime with the driver's API.

        ``default_proxy_options`` is fresh per test, so the aliasing in
        change_user.options and client_address_socket.options cannot leak into later
        tests (an upstream quirk, 11.1).
        """
        lua = _new_lua()
        g = lua.globals()
        for key, value in self._options_globals().items():
            g[key] = lua.table_from(value) if isinstance(value, dict) else value
        g.default_proxy_options["proxy-lua-script"] = script

        def start(name: str, pairs: Any) -> None:
            options = [(str(p[1]), str(p[2])) for p in pairs.values()]
            self.start_proxy(name, options, started_by_default_options=by_default_options)

        def sql_execute(text: str, proxy_name: str | None) -> int:
            return self.sql_execute(text, proxy_name)

        py = lua.table_from(
            {
                "file_exists": lambda p: os.path.exists(p),
                "start_proxy": start,
                "stop_proxies": self.stop_proxies,
                "is_running": lambda name: name in self.proxies,
                "sql_execute": sql_execute,
            }
        )
        cfg = lua.table_from(
            {
                "mysql_address": f"{self.config.mysql_host}:{self.config.mysql_port}",
                "verbose": self.config.verbose,
            }
        )
        lua.execute(_OPTIONS_PRELUDE, py, cfg)
        loaded = lua.eval("loadstring")(path.read_text(), "@" + str(path))
        if isinstance(loaded, tuple):  # nil, message
            raise RuntimeError(f"{path.name}: {loaded[1]}")
        loaded()

    # -- proxies ---------------------------------------------------------------------

    def proxy_env(self) -> dict[str, str]:
        """Inherited environment + what the upstream driver adds for every proxy.

        LUA_PATH is the driver's INCLUDE_PATH: lib/ first (``require("proxy.test")``),
        then the suite's t/, then the system and the user's Lua paths.
        """
        system_path = os.environ.get("LUA_LDIR", "/usr/share/lua/5.1/?.lua")
        user_path = os.environ.get("LUA_PATH", "/usr/local/share/?.lua")
        env = dict(os.environ)
        env["LUA_PATH"] = ";".join(
            [f"{self.lua_lib}/?.lua", f"{self.suite}/t/?.lua", system_path, user_path]
        )
        env["MYSQL_PROXY_VERSION"] = self.proxy_version
        return env

    def start_proxy(
        self,
        name: str,
        options: list[tuple[str, str]],
        *,
        started_by_default_options: bool = False,
    ) -> ProxyProcess:
        if name in self.proxies:
            # upstream overwrote its bookkeeping and left the old one running; we
            # stop it so ports and pid files are free
            self._stop([self.proxies.pop(name)])
        values = dict(options)
        pid_file = Path(values["pid-file"]) if "pid-file" in values else None
        address = values.get("proxy-address", ":4040")
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
        if address == "/tmp/mysql-proxy-test.sock" or (
            address.startswith("/") and address.startswith(str(self.run_dir))
        ):
            Path(address).unlink(missing_ok=True)
        argv = [*self.config.proxy_command, *(f"--{k}={v}" for k, v in options)]
        log_path = self.run_dir / "log" / f"{self._current_test or 'run'}.proxy-{name}.log"
        self.debug(f"start {name}: {shlex.join(argv)}")
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                env=self.proxy_env(),
                start_new_session=True,
            )
        proxy = ProxyProcess(
            name, argv, options, popen, log_path, pid_file, started_by_default_options
        )
        self.proxies[name] = proxy
        self._wait_up(proxy, address)
        return proxy

    def _wait_up(self, proxy: ProxyProcess, address: str) -> None:
        """Pid file with a live pid, and the address listening (12.3 step 5)."""
        deadline = time.monotonic() + self.config.start_timeout
        while True:
            if not proxy.alive():
                raise RuntimeError(
                    f"proxy {proxy.name!r} exited with status {proxy.popen.returncode} "
                    f"during start-up; its log:\n{proxy.log_tail()}"
                )
            pid_ok = proxy.pid_file is None or _read_pid(proxy.pid_file) is not None
            if pid_ok and _address_is_listening(address):
                pid = _read_pid(proxy.pid_file) if proxy.pid_file else None
                if pid is not None and pid != proxy.popen.pid:
                    self.debug(
                        f"{proxy.name}: pid file says {pid}, the started process is "
                        f"{proxy.popen.pid}"
                    )
                return
            if time.monotonic() > deadline:
                what = "no pid file" if not pid_ok else f"{address} not listening"
                raise RuntimeError(
                    f"proxy {proxy.name!r} not up after {self.config.start_timeout:.0f}s "
                    f"({what}); its log:\n{proxy.log_tail()}"
                )
            time.sleep(0.05)

    def stop_proxies(self) -> None:
        proxies = list(self.proxies.values())
        self.proxies.clear()
        self._stop(proxies)

    def _stop(self, proxies: Sequence[ProxyProcess]) -> None:
        """SIGTERM, wait up to 5 s, then SIGKILL; only processes this run started."""
        for proxy in proxies:
            if proxy.alive():
                with contextlib.suppress(ProcessLookupError):
                    proxy.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proxy in proxies:
            try:
                proxy.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"# proxy {proxy.name!r} ignored SIGTERM for 5s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proxy.popen.pid, signal.SIGKILL)
                proxy.popen.wait()
            if proxy.pid_file is not None:
                proxy.pid_file.unlink(missing_ok=True)
            address = proxy.option("proxy-address") or ""
            if address == "/tmp/mysql-proxy-test.sock":
                Path(address).unlink(missing_ok=True)

    def sql_execute(self, text: str, proxy_name: str | None) -> int:
        """Run statements with the command-line client, through a proxy or directly."""
        cfg = self.config
        if proxy_name is not None:
            proxy = self.proxies.get(proxy_name)
            if proxy is None:
                raise RuntimeError(f"proxy {proxy_name} not active")
            host, port = (proxy.option("proxy-address") or ":").rsplit(":", 1)
        else:
            host, port = cfg.proxy_host, str(cfg.mysql_port)
        argv = [
            cfg.mysql_client,
            "--no-defaults",
            f"--user={cfg.mysql_user}",
            f"--password={cfg.mysql_password}",
            "--database=test",
            f"--host={host}",
            f"--port={port}",
            f"--execute={text}",
        ]
        self.debug("$ " + shlex.join(argv))
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proxy_name is not None and done.returncode != 0:
            raise RuntimeError(f"error using mysql client: {done.stderr.strip()}")
        return done.returncode

    # -- one test --------------------------------------------------------------------

    def run_test(self, name: str) -> Outcome:
        reason = self.skip_reason(name)
        if reason is not None:
            return Outcome(name, SKIP, reason)
        self._current_test = name
        started = time.monotonic()
        outcome = Outcome(name, PASS)
        try:
            self._before_test(name)
            self._run_mysqltest(name, outcome)
        except Exception as exc:
            outcome.status = FAIL
            outcome.reason = outcome.reason or "set-up failed"
            outcome.details = f"{exc}"
        finally:
            outcome.seconds = time.monotonic() - started
            self._after_test(outcome)
            self._current_test = ""
        if outcome.status == FAIL:
            self._failed = True
        return outcome

    def _before_test(self, name: str) -> None:
        """Script choice and proxy set-up, as upstream's ``before_test`` (11.1)."""
        t_dir = self.suite / "t"
        script = t_dir / f"{name}.lua"
        options = t_dir / f"{name}.options"
        dummy = Path(self.dummy_script)
        if script.exists() and options.exists():
            script_path = str(script)
            dummy.write_bytes(b"")
        elif script.exists():
            script_path = self.dummy_script
            dummy.write_bytes(script.read_bytes())
        else:
            script_path = self.dummy_script
            dummy.write_bytes(b"")
        if options.exists():
            self.stop_proxies()
            self.execute_options(options, script=script_path, by_default_options=False)
            return
        default = self.proxies.get("default")
        if (
            self.config.reuse_default_proxy
            and len(self.proxies) == 1
            and default is not None
            and default.started_by_default_options
            and default.alive()
        ):
            self.debug("reusing the running default proxy")
            return
        self.stop_proxies()
        default_options = t_dir / "default.options"
        if default_options.exists():
            self.execute_options(default_options, script=script_path, by_default_options=True)
        else:
            values = {**self._options_globals()["default_proxy_options"]}
            values["proxy-lua-script"] = script_path
            self.start_proxy("default", list(values.items()), started_by_default_options=True)

    def _after_test(self, outcome: Outcome) -> None:
        for proxy in self.proxies.values():
            if not proxy.alive():
                code = proxy.popen.returncode
                how = f"killed by signal {-code}" if code < 0 else f"status {code}"
                outcome.notes.append(f"proxy {proxy.name} exited during the test ({how})")
        default = self.proxies.get("default")
        only_default = len(self.proxies) == 1 and default is not None
        if (
            outcome.status == FAIL
            or not only_default
            or not self.config.reuse_default_proxy
            or (default is not None and not default.alive())
        ):
            if outcome.status == FAIL:
                logs = [
                    f"--- proxy {p.name} (script {p.option('proxy-lua-script')}), log tail:\n"
                    + p.log_tail()
                    for p in self.proxies.values()
                ]
                if logs:
                    outcome.details += "\n" + "\n".join(logs)
            self.stop_proxies()

    def _test_and_result(self, name: str, outcome: Outcome) -> tuple[Path, Path]:
        test_file = self.suite / "t" / f"{name}.test"
        expected = (self.suite / "r" / f"{name}.result").read_text()
        result = compat_result(expected, mariadb=self.mariadb, dummy_script=self.dummy_script)
        if self.mariadb:
            original = test_file.read_text()
            test_text, result, dropped = drop_errno_zero_statements(original, result)
            if dropped:
                outcome.notes.append(
                    "not checked with mariadb-test (errno 0 becomes 5026, 12.5): "
                    + ", ".join(dropped)
                )
            test_text = compat_test(test_text)
            if test_text != original:
                test_file = self.run_dir / "t" / f"{name}.test"
                test_file.write_text(test_text)
        result_file = self.run_dir / "r" / f"{name}.result"
        result_file.write_text(result)
        return test_file, result_file

    def mysqltest_env(self) -> dict[str, str]:
        cfg = self.config
        env = dict(os.environ)
        env.update(
            MYSQL_USER=cfg.mysql_user,
            MYSQL_PASSWORD=cfg.mysql_password,
            PROXY_HOST=cfg.proxy_host,
            PROXY_PORT=str(self.ports["PROXY_PORT"]),
            PROXY_CHAIN_PORT=str(self.ports["PROXY_CHAIN_PORT"]),
            MASTER_PORT=str(self.ports["PROXY_MASTER_PORT"]),
            SLAVE_PORT=str(self.ports["PROXY_SLAVE_PORT"]),
            srcdir=str(self.suite.parent) + "/",
        )
        return env

    def mysqltest_argv(self, test_file: Path, result_file: Path) -> list[str]:
        cfg = self.config
        argv = [cfg.mysqltest, "--no-defaults"]
        if self.mariadb:
            argv += ["--skip-ssl", f"--prologue={self.prologue}"]
        argv += [
            f"--user={cfg.mysql_user}",
            f"--password={cfg.mysql_password}",
            "--database=test",
            *self._default_connection(),
            f"--test-file={test_file}",
            f"--result-file={result_file}",
            f"--logdir={self.run_dir / 'log'}",
            f"--tmpdir={self.run_dir}",
            f"--max-connect-retries={MAX_CONNECT_RETRIES}",
        ]
        if cfg.verbose >= 2:
            argv.append("--verbose")
        return argv

    def _default_connection(self) -> list[str]:
        """Where mysqltest's ``default`` connection goes: the proxy on PROXY_PORT.

        When the test's proxy listens only on a Unix socket (client_address_socket),
        the default connection uses that socket; upstream's driver connected to
        PROXY_PORT regardless, so that test could not pass there (it is skip-listed).
        """
        port = self.ports["PROXY_PORT"]
        addresses = [p.option("proxy-address") or "" for p in self.proxies.values()]
        if not any(a.endswith(f":{port}") for a in addresses):
            sockets = [a for a in addresses if a.startswith("/")]
            if sockets:
                return ["--host=localhost", f"--socket={sockets[0]}"]
        return [f"--host={self.config.proxy_host}", f"--port={port}"]

    def _run_mysqltest(self, name: str, outcome: Outcome) -> None:
        test_file, result_file = self._test_and_result(name, outcome)
        argv = self.mysqltest_argv(test_file, result_file)
        self.debug("$ " + shlex.join(argv))
        for stale in (f"{name}.reject", f"{name}.log"):
            (self.run_dir / "log" / stale).unlink(missing_ok=True)
        popen = subprocess.Popen(
            argv,
            cwd=self.run_dir,
            env=self.mysqltest_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        try:
            _stdout, stderr = popen.communicate(timeout=self.config.timeout)
        except BaseException as exc:
            if not isinstance(exc, subprocess.TimeoutExpired):
                popen.kill()  # interrupted: don't leave the client behind
                popen.wait()
                raise
            # SIGTERM first: mariadb-test then leaves its output so far in <name>.log,
            # which shows the statement it hung on
            popen.terminate()
            try:
                _stdout, stderr = popen.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                popen.kill()
                _stdout, stderr = popen.communicate()
            outcome.status = FAIL
            outcome.reason = (
                f"mysqltest timed out after {self.config.timeout:.0f}s "
                "(hung after the last statement of the output below)"
            )
            self._describe_failure(name, result_file, stderr, outcome)
            return
        if popen.returncode == 0:
            return
        outcome.status = FAIL
        outcome.reason = _first_error_line(stderr) or f"mysqltest exit status {popen.returncode}"
        self._describe_failure(name, result_file, stderr, outcome)

    def _describe_failure(
        self, name: str, result_file: Path, stderr: str, outcome: Outcome
    ) -> None:
        """Expected vs got diff and mysqltest's complaint, into ``outcome.details``."""
        parts = []
        got = _find_reject(name, self.run_dir)
        if got is not None:
            partial = got.suffix == ".log"
            diff = list(
                difflib.unified_diff(
                    result_file.read_text().splitlines(keepends=True),
                    got.read_text(errors="replace").splitlines(keepends=True),
                    fromfile=f"expected r/{name}.result",
                    tofile=f"got {got.name}"
                    + (" (output until mysqltest stopped)" if partial else ""),
                )
            )
            if len(diff) > MAX_DIFF_LINES:
                diff = [*diff[:MAX_DIFF_LINES], f"... ({len(diff) - MAX_DIFF_LINES} more lines)\n"]
            parts.append("".join(diff) or f"(no difference in {got.name})")
        if got is not None and got.suffix == ".reject":
            # mysqltest's own copy of the diff above is left out
            stderr = "\n".join(
                line for line in stderr.splitlines() if line.startswith(("mysqltest", "Result"))
            )
        parts.append("--- mysqltest stderr\n" + _tail(stderr, 40))
        outcome.details = "\n".join(parts)

    # -- the whole suite -------------------------------------------------------------

    def run_all(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for name in self.selected_tests():
            outcome = self.run_test(name)
            outcomes.append(outcome)
            self.report(outcome)
            if outcome.status == FAIL and not self.config.keep_going:
                self.say("# stopping at the first failure (use --keep-going to go on)")
                break
        return outcomes

    def report(self, outcome: Outcome) -> None:
        self.say(outcome.line())
        if outcome.status == FAIL and outcome.details:
            self.say(_indent(outcome.details))


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _find_reject(name: str, run_dir: Path) -> Path | None:
    """mysqltest's output: ``.reject`` when it ran to the end, ``.log`` when it stopped."""
    for candidate in (
        run_dir / "log" / f"{name}.reject",
        run_dir / "r" / f"{name}.reject",
        run_dir / "log" / f"{name}.log",
    ):
        if candidate.exists():
            return candidate
    return None


def _first_error_line(stderr: str) -> str:
    for line in stderr.splitlines():
        if "At line" in line or "failed" in line.lower() or "error" in line.lower():
            return line.strip()[:200]
    return ""


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def summarize(outcomes: Sequence[Outcome], not_run: Sequence[str] = ()) -> str:
    counts = {status: sum(o.status == status for o in outcomes) for status in (PASS, FAIL, SKIP)}
    line = f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped"
    if not_run:
        line += f", {len(not_run)} not run"
    return line


# -- Lua unit tests (12.6) -----------------------------------------------------------


_UNIT_PRELUDE = r"""
local lib, script, on_print, on_exit = ...
-- a plain interpreter, as upstream's lua-runner: no proxy table, arg[0] = the script
proxy = nil
arg = { [0] = script }
package.path = lib .. "/?.lua;" .. package.path
print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
  on_print(table.concat(parts, "\t"))
end
os.exit = function(code) on_exit(code or 0) error("__os_exit__", 0) end
"""

_UNIT_SUMMARY = re.compile(r"(\d+) passed, (\d+) failed")


def run_unit_test(path: Path, lua_lib: Path) -> Outcome:
    """One file of tests/unit/lua in our Lua runtime (with our mysql.* modules)."""
    from lua_compat.runtime import LuaRuntime

    started = time.monotonic()
    printed: list[str] = []
    exit_code: list[int] = []
    runtime = LuaRuntime()
    lua = runtime.lua

    def on_print(text: bytes) -> None:
        printed.append(text.decode("utf-8", "replace"))

    def on_exit(code: Any) -> None:
        exit_code.append(int(code) if not isinstance(code, bool) else (0 if code else 1))

    outcome = Outcome(path.stem, PASS)
    try:
        lua.execute(
            _UNIT_PRELUDE.encode(), str(lua_lib).encode(), str(path).encode(), on_print, on_exit
        )
        loaded = lua.eval(b"loadfile")(str(path).encode())
        if isinstance(loaded, tuple):  # nil, message
            message = loaded[1]
            raise RuntimeError(message.decode() if isinstance(message, bytes) else message)
        returned = loaded()
        code = exit_code[0] if exit_code else returned
        if code not in (None, 0):
            outcome.status = FAIL
            outcome.reason = f"returned {code!r}"
    except Exception as exc:
        if exit_code and "__os_exit__" in str(exc):
            if exit_code[0] != 0:
                outcome.status, outcome.reason = FAIL, f"os.exit({exit_code[0]})"
        else:
            outcome.status = FAIL
            outcome.reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            outcome.details = str(exc)
    for line in printed:
        m = _UNIT_SUMMARY.search(line)
        if m and int(m.group(2)) != 0:
            outcome.status = FAIL
            outcome.reason = outcome.reason or line.strip()
    if outcome.status == FAIL:
        outcome.details = (outcome.details + "\n" + "\n".join(printed[-40:])).strip()
    outcome.seconds = time.monotonic() - started
    return outcome


def run_unit_tests(source: Path, regex: str | None, out: TextIO) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="mpunit-") as tmp:
        src = extract_source(source, Path(tmp))
        unit_dir = src / "tests" / "unit" / "lua"
        outcomes = []
        for path in sorted(unit_dir.glob("*.lua")):
            if regex and not re.search(regex, path.stem):
                continue
            outcome = run_unit_test(path, src / "lib")
            outcomes.append(outcome)
            print(outcome.line(), file=out, flush=True)
            if outcome.status == FAIL and outcome.details:
                print(_indent(outcome.details), file=out, flush=True)
        return outcomes


# -- command line --------------------------------------------------------------------


def default_proxy_command() -> list[str]:
    """``.venv/bin/mysql-proxy`` of this project, else ``mysql-proxy`` on PATH."""
    root = Path(__file__).resolve().parent.parent
    for candidate in (
        root / ".venv" / "bin" / "mysql-proxy",
        Path(sys.executable).parent / "mysql-proxy",
    ):
        if candidate.exists():
            return [str(candidate)]
    found = shutil.which("mysql-proxy")
    return [found] if found else ["mysql-proxy"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lua_compat.suite",
        description="Run mysql-proxy's tests/suite/base (or, with --unit, tests/unit/lua) "
        "against our mysql-proxy command.",
    )
    p.add_argument("--mysql-proxy-src", help=f"checkout or bare git dir (default: ${SOURCE_ENV})")
    p.add_argument(
        "--proxy-command",
        help="the proxy to test, split like a shell would "
        "(default: .venv/bin/mysql-proxy, else mysql-proxy on PATH)",
    )
    p.add_argument("--mysqltest", default="/usr/bin/mariadb-test")
    p.add_argument("--mysql-client", default="mariadb", help="for sql_execute() (server tests)")
    p.add_argument(
        "--tests",
        "--filter",
        dest="tests",
        metavar="REGEX",
        help="only tests whose name matches (re.search)",
    )
    p.add_argument("--keep-going", action="store_true", help="don't stop at the first failure")
    p.add_argument("--verbose", "-v", action="count", default=0)
    p.add_argument("--include-skipped", action="store_true", help="ignore tests_to_skip.lua")
    p.add_argument(
        "--with-server",
        action="store_true",
        help="run the tests that need a real MySQL server (--mysql-*)",
    )
    p.add_argument(
        "--private-server",
        action="store_true",
        help="start a private MariaDB for the server tests (implies --with-server)",
    )
    p.add_argument("--mysql-host", default="127.0.0.1")
    p.add_argument("--mysql-port", type=int, default=3306)
    p.add_argument("--mysql-user", default="root")
    p.add_argument("--mysql-password", default="")
    p.add_argument(
        "--fresh-default-proxy",
        action="store_true",
        help="start the default proxy anew for every test instead of reusing it",
    )
    p.add_argument(
        "--proxy-version",
        help=f"MYSQL_PROXY_VERSION for the proxies (default {DEFAULT_PROXY_VERSION})",
    )
    p.add_argument(
        "--dummy-script",
        help="the default proxy's script path (default: one per "
        f"run; {UPSTREAM_DUMMY_SCRIPT} as upstream, with a lock)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per test")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--unit", action="store_true", help="run tests/unit/lua instead")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source = find_source(args.mysql_proxy_src)
    if source is None:
        print(SOURCE_MISSING, file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        if args.unit:
            outcomes = run_unit_tests(source, args.tests, sys.stdout)
            print(f"{summarize(outcomes)} in {time.monotonic() - started:.1f}s")
            return 1 if any(o.status == FAIL for o in outcomes) else 0
        config = SuiteConfig(
            source=source,
            proxy_command=shlex.split(args.proxy_command)
            if args.proxy_command
            else default_proxy_command(),
            mysqltest=args.mysqltest,
            mysql_client=args.mysql_client,
            tests_regex=args.tests,
            keep_going=args.keep_going,
            verbose=args.verbose,
            include_skipped=args.include_skipped,
            with_server=args.with_server,
            reuse_default_proxy=not args.fresh_default_proxy,
            timeout=args.timeout,
            proxy_version=args.proxy_version,
            mysql_host=args.mysql_host,
            mysql_port=args.mysql_port,
            mysql_user=args.mysql_user,
            mysql_password=args.mysql_password,
            dummy_script=args.dummy_script,
            keep_workdir=args.keep_workdir,
            build_os=os.environ.get("BUILD_OS"),
        )
        with contextlib.ExitStack() as stack:
            if args.private_server:
                config.with_server = True
                config.mysql_host, config.mysql_port = stack.enter_context(private_server())
            return _run_suite(config, started)
    except SuiteSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def private_server() -> Iterator[tuple[str, int]]:
    """A private MariaDB (mysqlproxy.testing.privatedb) with the ``test`` database."""
    from mysqlproxy.testing.privatedb import PrivateDBError, PrivateMariaDB

    try:
        with PrivateMariaDB() as db:
            db.execute("CREATE DATABASE IF NOT EXISTS test")
            print(f"# private MariaDB on {db.host}:{db.port}", flush=True)
            yield db.host, db.port
    except PrivateDBError as exc:
        raise SuiteSetupError(f"private MariaDB: {exc}") from exc


def _run_suite(config: SuiteConfig, started: float) -> int:
    with SuiteRun(config) as run:
        run.say(
            f"# proxy: {shlex.join(config.proxy_command)}; client: {config.mysqltest} "
            f"({'MariaDB' if run.mariadb else 'MySQL'}); base port {run.ports['PROXY_PORT']}"
        )
        selected = run.selected_tests()
        outcomes = run.run_all()
        not_run = selected[len(outcomes) :]
        print(f"{summarize(outcomes, not_run)} in {time.monotonic() - started:.1f}s")
        return 1 if any(o.status == FAIL for o in outcomes) else 0


def source_file_names(source: Path, folder: str, suffix: str) -> list[str]:
    """Names (without suffix) of ``folder/*suffix`` in a checkout or a git dir, unextracted.

    For pytest collection, which must know the upstream tests before running any.
    """
    if (source / folder).is_dir():
        return sorted(p.name.removesuffix(suffix) for p in (source / folder).glob("*" + suffix))
    git_dir = source if _is_bare_git_dir(source) else source / ".git"
    listing = subprocess.run(
        ["git", f"--git-dir={git_dir}", "ls-tree", "--name-only", "HEAD", folder + "/"],
        capture_output=True,
        text=True,
        check=False,
    )
    return sorted(
        Path(line).name.removesuffix(suffix)
        for line in listing.stdout.splitlines()
        if line.endswith(suffix)
    )


def iter_test_names(source: Path) -> Iterator[str]:
    """Test names of tests/suite/base."""
    yield from source_file_names(source, "tests/suite/base/t", ".test")


if __name__ == "__main__":
    sys.exit(main())
