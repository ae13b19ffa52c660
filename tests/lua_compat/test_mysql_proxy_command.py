"""The ``mysql-proxy`` command as a real process: exit codes, pid file, daemon mode,
signals, log file, Lua search paths, privilege drop, and both plugins together."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from tests.conftest import MariaDB

_SCRIPT = Path(sys.executable).with_name("mysql-proxy")
MYSQL_PROXY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "lua_compat.cli"]

# A fake server made of a script (no MariaDB needed): answers every query with
# (pid, uid, query, a value from a module found on the Lua path), and obeys a few
# commands.
MOCK = """
local proto = require("mysql.proto")
local posix = require("posix")
local chassis = require("chassis")

function connect_server()
  proxy.response = { type = proxy.MYSQLD_PACKET_RAW,
                     packets = { proto.to_challenge_packet({ server_version = 50099 }) } }
  return proxy.PROXY_SEND_RESULT
end

function read_query(packet)
  if packet:byte() ~= proxy.COM_QUERY then
    proxy.response = { type = proxy.MYSQLD_PACKET_OK }
    return proxy.PROXY_SEND_RESULT
  end
  local q = packet:sub(2)
  if q:lower():find("^set ") then
    proxy.response = { type = proxy.MYSQLD_PACKET_OK }
    return proxy.PROXY_SEND_RESULT
  end
  proxy.global.hits = (proxy.global.hits or 0) + 1
  if q == "kill -9" then posix.kill(posix.getpid(), 9) end
  if q == "shutdown" then chassis.set_shutdown() end
  if q:find("^log ") then chassis.message(q:sub(5)) end
  local found, mod = pcall(require, "helpermod")
  proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
    fields = { { name = "pid" }, { name = "uid" }, { name = "q" }, { name = "mod" } },
    rows = { { posix.getpid(), posix.getuid(), q, found and mod or "none" } } } }
  return proxy.PROXY_SEND_RESULT
end
"""

ADMIN = """
function read_query(packet)
  local q = packet:sub(2)
  if packet:byte() ~= proxy.COM_QUERY or q:lower():find("^set ") then
    proxy.response = { type = proxy.MYSQLD_PACKET_OK }
    return proxy.PROXY_SEND_RESULT
  end
  local b = proxy.global.backends
  proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
    fields = { { name = "hits" }, { name = "backends" }, { name = "first" } },
    rows = { { proxy.global.hits or 0, #b, b[1] and b[1].dst.name } } } }
  return proxy.PROXY_SEND_RESULT
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"mysql-proxy exited with {proc.returncode}: {output(proc)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def output(proc: subprocess.Popen[bytes]) -> str:
    with contextlib.suppress(Exception):
        _, err = proc.communicate(timeout=5)
        return err.decode(errors="replace")
    return ""


def wait_gone(pid: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still running")


def query(port: int, sql: str, **kwargs: object) -> tuple[object, ...]:
    with (
        pymysql.connect(
            host="127.0.0.1", port=port, user="root", connect_timeout=5, read_timeout=10, **kwargs
        ) as conn,
        conn.cursor() as cur,
    ):  # type: ignore[arg-type]
        cur.execute(sql)
        return tuple(cur.fetchone() or ())


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "mock.lua").write_text(MOCK)
    (tmp_path / "admin.lua").write_text(ADMIN)
    return tmp_path


@contextlib.contextmanager
def mysql_proxy(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [*MYSQL_PROXY, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MYSQL_PROXY, *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


# --- exit codes and messages ---------------------------------------------------------------


def test_version() -> None:
    result = run("--version", "--lua-path=/opt/lua/?.lua", "--lua-cpath=/opt/lua/?.so")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "mysql-proxy 0.8.5"
    assert "    package.path: /opt/lua/?.lua" in lines
    assert "    package.cpath: /opt/lua/?.so" in lines
    assert run("-V").stdout.splitlines()[0] == "mysql-proxy 0.8.5"


def test_help() -> None:
    result = run("--help-all", "--plugins=admin")
    assert result.returncode == 0
    assert "--admin-lua-script=<filename>" in result.stdout
    assert "--proxy-backend-addresses" not in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-such-option"], "Unknown option --no-such-option (use --help to show all options)"),
        (["--admin-address=:4041"], "Unknown option --admin-address"),
        (["--proxy-connect-timeout=fast"], "Cannot parse double value 'fast'"),
        (
            ["-b", "127.0.0.1:3306", "-b", "127.0.0.1:3306"],
            "backend 127.0.0.1:3306 is already known!",
        ),
        (["--proxy-address=127.0.0.1:99999"], "illegal value 99999 for port"),
        (["--plugins=admin"], "--admin-username needs to be set"),
        (["--log-level=chatty"], "--log-level=... failed, level 'chatty' is unknown"),
    ],
)
def test_errors_are_one_line_and_exit_1(argv: list[str], message: str) -> None:
    result = run(*argv)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: \(critical\) ", lines[0])
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_insecure_defaults_file_is_refused(workdir: Path) -> None:
    cnf = workdir / "proxy.cnf"
    cnf.write_text("[mysql-proxy]\nproxy-address = :1\n")
    cnf.chmod(0o644)
    result = run(f"--defaults-file={cnf}")
    assert result.returncode == 1
    assert "aren't secure (0660 or stricter required)" in result.stderr


# --- running, pid file, signals ------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_pid_file_and_graceful_signal(workdir: Path, sig: signal.Signals) -> None:
    port = free_port()
    with mysql_proxy(
        f"--proxy-address=127.0.0.1:{port}",
        "--proxy-lua-script=mock.lua",
        "--pid-file=run/mp.pid",
        f"--basedir={workdir}",
        "--verbose-shutdown",
        cwd=Path("/"),
    ) as proc:
        (workdir / "run").mkdir(exist_ok=True)
        wait_listening(port, proc)
        pid_file = workdir / "run" / "mp.pid"
        assert pid_file.read_bytes() == str(proc.pid).encode()  # no newline
        assert stat.S_IMODE(pid_file.stat().st_mode) == 0o600
        pid, uid, q, _ = query(port, "hello")
        assert (int(pid), int(uid), q) == (proc.pid, os.getuid(), "hello")
        proc.send_signal(sig)
        assert proc.wait(20) == 0
        err = output(proc)
    assert "(critical) shutting down normally, exit code is: 0" in err
    assert not pid_file.exists()


@pytest.fixture
def pid_dir(workdir: Path) -> Path:
    (workdir / "run").mkdir()
    return workdir / "run"


def test_pid_file_is_written_before_listening(workdir: Path, pid_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with mysql_proxy(
            f"--proxy-address=127.0.0.1:{port}",
            f"--pid-file={pid_dir}/mp.pid",
            cwd=workdir,
        ) as proc:
            assert proc.wait(20) == 1
            err = output(proc)
            assert (pid_dir / "mp.pid").read_text() == str(proc.pid)
    assert f"bind(127.0.0.1:{port}) failed" in err
    assert "Traceback" not in err


def test_posix_kill_9_kills_the_listening_process(workdir: Path) -> None:
    port = free_port()
    with mysql_proxy(
        f"--proxy-address=127.0.0.1:{port}", f"--proxy-lua-script={workdir}/mock.lua", cwd=workdir
    ) as proc:
        wait_listening(port, proc)
        with pytest.raises(pymysql.err.OperationalError):
            query(port, "kill -9")
        assert proc.wait(20) == -signal.SIGKILL


def test_chassis_set_shutdown_stops_the_proxy(workdir: Path) -> None:
    port = free_port()
    with mysql_proxy(
        f"--proxy-address=127.0.0.1:{port}", f"--proxy-lua-script={workdir}/mock.lua", cwd=workdir
    ) as proc:
        wait_listening(port, proc)
        query(port, "shutdown")
        assert proc.wait(20) == 0


def test_daemon(workdir: Path, pid_dir: Path) -> None:
    port = free_port()
    pid_file = pid_dir / "mp.pid"
    started = subprocess.run(
        [
            *MYSQL_PROXY,
            "--daemon",
            f"--proxy-address=127.0.0.1:{port}",
            "--proxy-lua-script=mock.lua",
            "--pid-file=run/mp.pid",
            f"--basedir={workdir}",
            "--log-file=mp.log",
        ],
        cwd=workdir,
        capture_output=True,
        timeout=30,
    )
    assert started.returncode == 0, started.stderr
    daemon = 0
    try:
        wait_listening(port, None)
        daemon = int(pid_file.read_text())
        assert daemon != os.getpid()
        assert os.getsid(daemon) != os.getsid(0)  # its own session
        assert os.readlink(f"/proc/{daemon}/cwd") == "/"
        pid, _, _, _ = query(port, "who")
        assert int(pid) == daemon  # the pid file names the listening process
        os.kill(daemon, signal.SIGTERM)
        wait_gone(daemon)
        assert not pid_file.exists()
    finally:
        if daemon:
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon, signal.SIGKILL)


def test_log_file_and_sighup_reopen(workdir: Path) -> None:
    port = free_port()
    log = workdir / "mp.log"
    with mysql_proxy(
        f"--proxy-address=127.0.0.1:{port}",
        "--proxy-lua-script=mock.lua",
        "--log-file=mp.log",
        "--log-level=message",
        f"--basedir={workdir}",
        cwd=Path("/"),
    ) as proc:
        wait_listening(port, proc)
        query(port, "log first line")
        log.rename(workdir / "mp.log.1")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        query(port, "log second line")
        proc.terminate()
        assert proc.wait(20) == 0
    old = (workdir / "mp.log.1").read_text()
    new = log.read_text()
    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: \(message\) \(mock.lua:\d+\) first line$", old, re.M
    )
    assert "(message) proxy listening on port 127.0.0.1:" in old
    assert "second line" in new and "first line" not in new
    assert stat.S_IMODE(log.stat().st_mode) & 0o007 == 0


def test_ignored_options_start_and_leave_notes(workdir: Path) -> None:
    port = free_port()
    with mysql_proxy(
        f"--proxy-address=127.0.0.1:{port}",
        f"--proxy-lua-script={workdir}/mock.lua",
        "--plugin-dir=/nonexistent",
        "--event-threads=8",
        "--proxy-skip-profiling",
        "--proxy-fix-bug-25371",
        "--log-backtrace-on-crash",
        "--log-level=warning",
        cwd=workdir,
    ) as proc:
        wait_listening(port, proc)
        proc.terminate()
        assert proc.wait(20) == 0
        err = output(proc)
    for name in ("plugin-dir", "event-threads", "proxy-skip-profiling", "proxy-fix-bug-25371"):
        assert f"(warning) --{name} is accepted and ignored" in err


# --- Lua search paths ------------------------------------------------------------------


def write_module(directory: Path, value: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "helpermod.lua").write_text(f"return '{value}'\n")


def test_lua_path_option(workdir: Path) -> None:
    write_module(workdir / "mods", "from --lua-path")
    port = free_port()
    env = dict(os.environ, LUA_PATH="/nowhere/?.lua")
    with mysql_proxy(
        f"--proxy-address=127.0.0.1:{port}",
        f"--proxy-lua-script={workdir}/mock.lua",
        f"--lua-path={workdir}/mods/?.lua",
        cwd=workdir,
        env=env,
    ) as proc:
        wait_listening(port, proc)
        assert query(port, "x")[3] == "from --lua-path"


def test_lua_path_environment_and_default(workdir: Path) -> None:
    write_module(workdir / "envmods", "from LUA_PATH")
    write_module(workdir / "lib" / "mysql-proxy" / "lua", "from basedir")
    env = {k: v for k, v in os.environ.items() if k not in ("LUA_PATH", "LUA_CPATH")}
    for extra, expected in (
        ({"LUA_PATH": f"{workdir}/envmods/?.lua"}, "from LUA_PATH"),
        ({}, "from basedir"),
    ):
        port = free_port()
        with mysql_proxy(
            f"--proxy-address=127.0.0.1:{port}",
            "--proxy-lua-script=mock.lua",
            f"--basedir={workdir}",
            cwd=Path("/"),
            env={**env, **extra},
        ) as proc:
            wait_listening(port, proc)
            assert query(port, "x")[3] == expected


def test_defaults_file_configures_the_proxy(workdir: Path) -> None:
    port = free_port()
    cnf = workdir / "proxy.cnf"
    cnf.write_text(
        f"[mysql-proxy]\nproxy-address = 127.0.0.1:{port}\nproxy-lua-script = mock.lua\n"
        f"basedir = {workdir}\nmax-open-files = 333\n"
    )
    cnf.chmod(0o640)
    with mysql_proxy(f"--defaults-file={cnf}", cwd=Path("/")) as proc:
        wait_listening(port, proc)
        assert query(port, "via file")[2] == "via file"
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert re.search(r"^Max open files\s+333\s", limits, re.M)


@pytest.mark.skipif(os.geteuid() != 0, reason="--user needs root")
def test_user_drops_privileges() -> None:
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        script = Path(tmp) / "mock.lua"
        script.write_text(MOCK)
        script.chmod(0o644)
        port = free_port()
        with mysql_proxy(
            f"--proxy-address=127.0.0.1:{port}",
            f"--proxy-lua-script={script}",
            "--user=nobody",
            cwd=Path(tmp),
        ) as proc:
            wait_listening(port, proc)
            assert int(query(port, "x")[1]) == nobody.pw_uid
            status = Path(f"/proc/{proc.pid}/status").read_text()
            assert re.search(rf"^Uid:\s+{nobody.pw_uid}\s", status, re.M)
            assert re.search(r"^Groups:\s*(\d+\s*)*$", status, re.M)
            assert not re.search(r"^Groups:.*\b0\b", status, re.M)  # root's groups dropped


@pytest.mark.skipif(os.geteuid() != 0, reason="--user needs root")
def test_unknown_user(workdir: Path) -> None:
    port = free_port()
    with mysql_proxy(
        f"--proxy-address=127.0.0.1:{port}", "--user=no-such-user-here", cwd=workdir
    ) as proc:
        assert proc.wait(20) == 1
        assert "unknown user: no-such-user-here" in output(proc)


# --- both plugins ------------------------------------------------------------------------


def test_proxy_and_admin_share_proxy_global(workdir: Path, mariadb_cli: str) -> None:
    port, admin_port = free_port(), free_port()
    with mysql_proxy(
        "--plugins=proxy",
        "--plugins=admin",
        f"--proxy-address=127.0.0.1:{port}",
        "--proxy-backend-addresses=127.0.0.1:1",
        "--proxy-lua-script=mock.lua",
        f"--admin-address=127.0.0.1:{admin_port}",
        "--admin-username=boss",
        "--admin-password=pw",
        "--admin-lua-script=admin.lua",
        f"--basedir={workdir}",
        cwd=workdir,
    ) as proc:
        wait_listening(port, proc)
        wait_listening(admin_port, proc)
        query(port, "one")
        query(port, "two")
        with (
            pymysql.connect(host="127.0.0.1", port=admin_port, user="boss", password="pw") as conn,
            conn.cursor() as cur,
        ):
            cur.execute("select")
            assert cur.fetchone() == ("2", "1", "127.0.0.1:1")
        result = subprocess.run(
            [
                mariadb_cli,
                "--no-defaults",
                "-h127.0.0.1",
                f"-P{admin_port}",
                "-uboss",
                "-ppw",
                "--skip-ssl",
                "--batch",
                "--skip-column-names",
                "-e",
                "select",
            ],
            capture_output=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().split("\t")[:2] == ["2", "1"]


def test_no_proxy_starts_only_the_admin_plugin(workdir: Path) -> None:
    port, admin_port = free_port(), free_port()
    with mysql_proxy(
        "--plugins=proxy,admin",
        "--no-proxy",
        f"--proxy-address=127.0.0.1:{port}",
        f"--admin-address=127.0.0.1:{admin_port}",
        "--admin-username=boss",
        "--admin-password=pw",
        f"--admin-lua-script={workdir}/admin.lua",
        cwd=workdir,
    ) as proc:
        wait_listening(admin_port, proc)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), 2).close()
        with (
            pymysql.connect(host="127.0.0.1", port=admin_port, user="boss", password="pw") as conn,
            conn.cursor() as cur,
        ):
            cur.execute("select")
            assert cur.fetchone() == ("0", "0", None)  # no backends without the proxy plugin


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a process as another user")
def test_user_option_needs_root() -> None:
    try:
        result = subprocess.run(
            [*MYSQL_PROXY, f"--proxy-address=127.0.0.1:{free_port()}", "--user=root"],
            user="nobody",
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
        )
    except PermissionError:
        pytest.skip("the virtualenv is not readable by nobody")
    if "Permission denied" in result.stderr and "can only use" not in result.stderr:
        pytest.skip("the virtualenv is not readable by nobody")
    assert result.returncode == 1
    assert "(critical) can only use the --user switch if running as root" in result.stderr


def upstream_file(path: str) -> str | None:
    """A file of mysql-proxy's source (GPL: read at run time, never kept here)."""
    src = os.environ.get("MYSQL_PROXY_SRC", "/work/.mirror/mysql+mysql-proxy/repo")
    if os.path.isfile(os.path.join(src, path)):
        return Path(src, path).read_text()
    result = subprocess.run(
        ["git", f"--git-dir={src}", "show", f"HEAD:{path}"], capture_output=True, text=True
    )
    return result.stdout if result.returncode == 0 else None


def test_upstream_admin_lua_lists_the_backends(workdir: Path, mariadb_cli: str) -> None:
    source = upstream_file("lib/admin.lua")
    if source is None:
        pytest.skip("mysql-proxy's source is not available (set MYSQL_PROXY_SRC)")
    (workdir / "upstream-admin.lua").write_text(source)
    port, admin_port = free_port(), free_port()
    with mysql_proxy(
        "--plugins=proxy,admin",
        f"--proxy-address=127.0.0.1:{port}",
        "-b",
        "127.0.0.1:3306",
        "-r",
        "127.0.0.1:3307",
        f"--admin-address=127.0.0.1:{admin_port}",
        "--admin-username=root",
        "--admin-password=pw",
        f"--admin-lua-script={workdir}/upstream-admin.lua",
        cwd=workdir,
    ) as proc:
        wait_listening(admin_port, proc)
        result = subprocess.run(
            [
                mariadb_cli,
                "--no-defaults",
                "-h127.0.0.1",
                f"-P{admin_port}",
                "-uroot",
                "-ppw",
                "--skip-ssl",
                "--batch",
                "-e",
                "SELECT * FROM backends",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "backend_ndx\taddress\tstate\ttype\tuuid\tconnected_clients",
        "1\t127.0.0.1:3306\tunknown\trw\tNULL\t0",
        "2\t127.0.0.1:3307\tunknown\tro\tNULL\t0",
    ]


# --- in front of a real server ---------------------------------------------------------------

COUNTING = """
function read_query(packet)
  if packet:byte() == proxy.COM_QUERY then
    proxy.global.queries = (proxy.global.queries or 0) + 1
  end
end
"""

ADMIN_COUNT = """
function read_query(packet)
  local q = packet:sub(2)
  if packet:byte() ~= proxy.COM_QUERY or q:lower():find("^set ") then
    proxy.response = { type = proxy.MYSQLD_PACKET_OK }
    return proxy.PROXY_SEND_RESULT
  end
  proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
    fields = { { name = "queries" } }, rows = { { proxy.global.queries or 0 } } } }
  return proxy.PROXY_SEND_RESULT
end
"""


def test_in_front_of_mariadb(workdir: Path, mariadb: MariaDB, mariadb_cli: str) -> None:
    (workdir / "counting.lua").write_text(COUNTING)
    (workdir / "count-admin.lua").write_text(ADMIN_COUNT)
    port, admin_port = free_port(), free_port()
    with mysql_proxy(
        "--plugins=proxy,admin",
        f"--proxy-address=127.0.0.1:{port}",
        f"--proxy-backend-addresses={mariadb.host}:{mariadb.port}",
        "--proxy-lua-script=counting.lua",
        f"--admin-address=127.0.0.1:{admin_port}",
        "--admin-username=boss",
        "--admin-password=pw",
        "--admin-lua-script=count-admin.lua",
        f"--basedir={workdir}",
        cwd=workdir,
    ) as proc:
        wait_listening(port, proc)
        with (
            pymysql.connect(
                host="127.0.0.1",
                port=port,
                user=mariadb.user,
                password=mariadb.password,
                database="mpt",
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT seq FROM seq_1_to_500")
            assert len(cur.fetchall()) == 500
            cur.execute("SELECT DATABASE(), 1 + 1")
            assert cur.fetchone() == ("mpt", 2)
        result = subprocess.run(
            [
                mariadb_cli,
                "--no-defaults",
                "-h127.0.0.1",
                f"-P{port}",
                f"-u{mariadb.user}",
                "--skip-ssl",
                "--batch",
                "--skip-column-names",
                "-e",
                "SELECT 40 + 2",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "42"
        with (
            pymysql.connect(host="127.0.0.1", port=admin_port, user="boss", password="pw") as conn,
            conn.cursor() as cur,
        ):
            cur.execute("count")
            (count,) = cur.fetchone()
        # PyMySQL: SET NAMES + 2 SELECTs; the CLI: its version_comment query + 1 SELECT
        assert int(count) >= 5
        proc.terminate()
        assert proc.wait(20) == 0
