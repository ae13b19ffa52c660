"""mysql-proxy's command line and config file (reference section 10), parsed without
starting anything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lua_compat import cli, options
from lua_compat.options import OptionError, parse
from mysqlproxy.proxy.backends import Address

BASE = ["--basedir=/opt/mp"]


def parsed(*argv: str, program: str = "/usr/local/bin/mysql-proxy") -> options.ProxyCommandLine:
    return parse(list(argv), program)


def error_of(*argv: str) -> str:
    with pytest.raises(OptionError) as info:
        parse(list(argv), "/usr/local/bin/mysql-proxy")
    return str(info.value)


# --- defaults ----------------------------------------------------------------------------


def test_defaults() -> None:
    cmd = parsed()
    assert cmd.plugins == ["proxy"]
    assert cmd.start_proxy is True
    assert cmd.proxy_address == ":4040"
    assert cmd.backend_addresses == ["127.0.0.1:3306"]
    assert cmd.read_only_backend_addresses == []
    assert cmd.get("proxy-lua-script") is None
    assert cmd.log_level == "critical"
    assert cmd.timeout("connect") == 2.0
    assert cmd.timeout("read") == cmd.timeout("write") == 8 * 3600
    assert cmd.pool_change_user is True
    assert cmd.basedir == "/usr/local"  # the parent of the program's directory
    for flag in ("daemon", "verbose-shutdown", "log-use-syslog", "no-proxy", "version"):
        assert cmd.flag(flag) is False
    assert cmd.notes == []


def test_default_basedir_follows_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real" / "bin").mkdir(parents=True)
    (tmp_path / "real" / "bin" / "mysql-proxy").write_text("")
    (tmp_path / "link").mkdir()
    os.symlink(tmp_path / "real" / "bin" / "mysql-proxy", tmp_path / "link" / "mp")
    assert options.default_basedir(str(tmp_path / "link" / "mp")) == str(tmp_path / "real")


# --- every option, both spellings --------------------------------------------------------

VALUE_OPTIONS = [
    ("user", "nobody", "nobody"),
    ("basedir", "/srv/x", "/srv/x"),
    ("log-level", "debug", "debug"),
    ("lua-path", "/a/?.lua;;", "/a/?.lua;;"),
    ("lua-cpath", "/a/?.so", "/a/?.so"),
    ("max-open-files", "2048", 2048),
    ("event-threads", "0x4", 4),
    ("proxy-address", "127.0.0.1:4045", "127.0.0.1:4045"),
    ("proxy-connect-timeout", "0.5", 0.5),
    ("proxy-read-timeout", "60", 60.0),
    ("proxy-write-timeout", "1e2", 100.0),
]


@pytest.mark.parametrize(("name", "text", "value"), VALUE_OPTIONS)
def test_value_option_both_forms(name: str, text: str, value: object) -> None:
    base = [] if name == "basedir" else BASE
    assert parsed(f"--{name}={text}", *base).values[name] == value
    assert parsed(f"--{name}", text, *base).values[name] == value


@pytest.mark.parametrize(
    ("name", "text", "resolved"),
    [
        ("pid-file", "run/mp.pid", "/opt/mp/run/mp.pid"),
        ("log-file", "log/mp.log", "/opt/mp/log/mp.log"),
        ("plugin-dir", "lib/plugins", "/opt/mp/lib/plugins"),
        ("proxy-lua-script", "share/x.lua", "/opt/mp/share/x.lua"),
    ],
)
def test_file_options_resolve_against_basedir(name: str, text: str, resolved: str) -> None:
    assert parsed(f"--{name}={text}", *BASE).values[name] == resolved
    assert parsed(f"--{name}", f"/abs/{text}", *BASE).values[name] == f"/abs/{text}"


@pytest.mark.parametrize(
    "flag",
    [
        "verbose-shutdown",
        "daemon",
        "log-use-syslog",
        "log-backtrace-on-crash",
        "keepalive",
        "proxy-skip-profiling",
        "proxy-fix-bug-25371",
        "no-proxy",
        "proxy-pool-no-change-user",
    ],
)
def test_flags(flag: str) -> None:
    assert parsed(f"--{flag}").flag(flag) is True
    # a flag does not take a value: GLib calls --flag=x an unknown option
    assert error_of(f"--{flag}=1") == f"Unknown option --{flag}=1 (use --help to show all options)"


def test_flag_effects() -> None:
    assert parsed("--no-proxy").start_proxy is False
    assert parsed("--proxy-pool-no-change-user").pool_change_user is False


def test_short_options() -> None:
    cmd = parsed("-P", ":5000", "-b", "10.0.0.1:3306", "-b", "10.0.0.2", "-r", "10.0.0.3:3307")
    assert cmd.proxy_address == ":5000"
    assert cmd.backend_addresses == ["10.0.0.1:3306", "10.0.0.2"]
    assert cmd.read_only_backend_addresses == ["10.0.0.3:3307"]
    assert parsed("-s", "x.lua", *BASE).get("proxy-lua-script") == "/opt/mp/x.lua"
    assert parsed("-V").version is True


def test_arrays_accumulate_and_strings_take_the_last() -> None:
    cmd = parsed(
        "--proxy-backend-addresses=a:1",
        "--proxy-backend-addresses",
        "b:2",
        "-b",
        "c:3",
        "--proxy-address=:1",
        "--proxy-address=:2",
    )
    assert cmd.backend_addresses == ["a:1", "b:2", "c:3"]
    assert cmd.proxy_address == ":2"


def test_value_is_the_next_argument_whatever_it_looks_like() -> None:
    assert parsed("--lua-path", "-x", *BASE).get("lua-path") == "-x"
    assert parsed("--lua-path", "--daemon", *BASE).flag("daemon") is False


def test_plugins() -> None:
    assert parsed("--plugins=admin", *ADMIN).plugins == ["admin"]
    assert parsed("--plugins=admin", *ADMIN).start_proxy is False
    assert parsed("--plugins=proxy", "--plugins", "admin", *ADMIN).plugins == ["proxy", "admin"]
    assert parsed("--plugins=proxy,admin", *ADMIN).plugins == ["proxy", "admin"]
    assert parsed("--plugins=").plugins == []  # GLib skips empty names
    assert "no such plugin" in error_of("--plugins=debug")


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--foo"], "Unknown option --foo (use --help to show all options)"),
        (["-x"], "Unknown option -x (use --help to show all options)"),
        (
            ["--proxy-adress=:1"],
            "Unknown option --proxy-adress=:1 (use --help to show all options)",
        ),
        (["--proxy"], "Unknown option --proxy (use --help to show all options)"),  # no prefixes
        (["stray"], "unknown option: stray"),
        (["--proxy-address"], "Missing argument for --proxy-address"),
        (["-b"], "Missing argument for -b"),
        (["--max-open-files=many"], "Cannot parse integer value 'many' for --max-open-files"),
        (
            ["--event-threads=99999999999"],
            "Integer value '99999999999' for --event-threads out of range",
        ),
        (
            ["--proxy-connect-timeout=soon"],
            "Cannot parse double value 'soon' for --proxy-connect-timeout",
        ),
        (["--log-level=loud"], "--log-level=... failed, level 'loud' is unknown"),
        (
            ["--basedir=relative/dir"],
            "--basedir option must be an absolute path, but was relative/dir",
        ),
        (
            ["--log-file=/tmp/x", "--log-use-syslog"],
            "log-file and log-use-syslog were given, but only one is allowed",
        ),
        (["--event-threads=0"], "--event-threads has to be >= 1, is 0"),
    ],
)
def test_errors(argv: list[str], message: str) -> None:
    assert error_of(*argv) == message


def test_version_and_help_win_over_unknown_options() -> None:
    assert parsed("--bogus", "--version").version is True
    assert parsed("--bogus", "--help").help == "help"
    assert parsed("--help-all").help == "help-all"


# --- the admin plugin's options --------------------------------------------------------

ADMIN = ["--admin-username=a", "--admin-password=pw", "--admin-lua-script=/x/admin.lua"]


@pytest.mark.parametrize(
    "name", ["admin-address", "admin-username", "admin-password", "admin-lua-script"]
)
def test_admin_options_are_unknown_without_the_plugin(name: str) -> None:
    assert error_of(f"--{name}=x") == f"Unknown option --{name} (use --help to show all options)"


def test_admin_options_with_the_plugin() -> None:
    cmd = parsed("--plugins=admin", *ADMIN, "--admin-address=:5041")
    assert cmd.get("admin-username") == "a"
    assert cmd.get("admin-password") == "pw"
    assert cmd.get("admin-address") == ":5041"
    assert (
        parsed("--plugins=admin", *ADMIN[:2], "--admin-lua-script=adm.lua", *BASE).get(
            "admin-lua-script"
        )
        == "/opt/mp/adm.lua"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (ADMIN[1:], "--admin-username needs to be set"),
        ([ADMIN[0], ADMIN[2]], "--admin-password needs to be set"),
        ([ADMIN[0], "--admin-password=", ADMIN[2]], "--admin-password cannot be empty"),
        (ADMIN[:2], "--admin-lua-script needs to be set"),
    ],
)
def test_admin_required_options(argv: list[str], message: str) -> None:
    assert error_of("--plugins=admin", *argv).startswith(message)


# --- the defaults file ---------------------------------------------------------------------


def defaults_file(tmp_path: Path, body: str, mode: int = 0o600) -> str:
    path = tmp_path / "mysql-proxy.cnf"
    path.write_text(body)
    path.chmod(mode)
    return str(path)


def test_defaults_file_values(tmp_path: Path) -> None:
    cnf = defaults_file(
        tmp_path,
        "# a comment\n"
        "[other]\nproxy-address = :1\n"
        "[mysql-proxy]\n"
        "proxy-address = 127.0.0.1:4999   \n"
        "proxy-backend-addresses = 10.0.0.1:3306, 10.0.0.2:3306,\n"
        "proxy-lua-script = scripts/log.lua\n"
        "daemon = true\n"
        "max-open-files = 4096\n"
        "proxy-connect-timeout = 1.5\n"
        "lua-path = /with\\sspace/?.lua\n"
        "basedir = /opt/mp\n",
    )
    cmd = parsed(f"--defaults-file={cnf}")
    assert cmd.proxy_address == "127.0.0.1:4999"  # trailing blanks chomped
    assert cmd.backend_addresses == ["10.0.0.1:3306", "10.0.0.2:3306"]
    assert cmd.get("proxy-lua-script") == "/opt/mp/scripts/log.lua"
    assert cmd.flag("daemon") is True
    assert cmd.get("max-open-files") == 4096
    assert cmd.timeout("connect") == 1.5
    assert cmd.get("lua-path") == "/with space/?.lua"
    assert cmd.basedir == "/opt/mp"


def test_defaults_file_precedence_quirk(tmp_path: Path) -> None:
    """Strings and arrays: the command line wins. Flags, ints, doubles: the file wins."""
    cnf = defaults_file(
        tmp_path,
        "[mysql-proxy]\n"
        "proxy-address = :1111\n"
        "proxy-backend-addresses = 10.9.9.9:3306\n"
        "daemon = false\n"
        "max-open-files = 100\n"
        "proxy-read-timeout = 7\n",
    )
    cmd = parsed(
        f"--defaults-file={cnf}",
        "--proxy-address=:2222",
        "-b",
        "10.1.1.1:3306",
        "--daemon",
        "--max-open-files=200",
        "--proxy-read-timeout=9",
    )
    assert cmd.proxy_address == ":2222"
    assert cmd.backend_addresses == ["10.1.1.1:3306"]
    assert cmd.flag("daemon") is False
    assert cmd.get("max-open-files") == 100
    assert cmd.timeout("read") == 7.0


def test_defaults_file_can_load_the_admin_plugin(tmp_path: Path) -> None:
    cnf = defaults_file(
        tmp_path,
        "[mysql-proxy]\nplugins = proxy, admin\nadmin-username = root\n"
        "admin-password = secret\nadmin-lua-script = /x/admin.lua\n",
    )
    cmd = parsed(f"--defaults-file={cnf}", "--admin-address=:6041")
    assert cmd.plugins == ["proxy", "admin"]
    assert cmd.get("admin-password") == "secret"
    assert cmd.get("admin-address") == ":6041"


@pytest.mark.parametrize("mode", [0o604, 0o602, 0o601, 0o644])
def test_defaults_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    cnf = defaults_file(tmp_path, "[mysql-proxy]\n", mode)
    assert error_of(f"--defaults-file={cnf}") == (
        f"loading config from '{cnf}' failed: permissions of {cnf} aren't secure "
        "(0660 or stricter required)"
    )


def test_defaults_file_0660_is_accepted(tmp_path: Path) -> None:
    cnf = defaults_file(tmp_path, "[mysql-proxy]\nproxy-address = :7\n", 0o660)
    assert parsed(f"--defaults-file={cnf}").proxy_address == ":7"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("proxy-address = :1\n", "Key file does not start with a group"),
        ("[mysql-proxy]\njust words\n", "which is not a key-value pair, group, or comment"),
        (
            "[mysql-proxy]\ndaemon = maybe\n",
            "key 'daemon' which has a value that cannot be interpreted",
        ),
        (
            "[mysql-proxy]\nmax-open-files = lots\n",
            "Value 'lots' cannot be interpreted as a number",
        ),
        ("[mysql-proxy]\nproxy-address = \\q\n", "invalid escape sequence"),
    ],
)
def test_defaults_file_errors(tmp_path: Path, body: str, message: str) -> None:
    cnf = defaults_file(tmp_path, body)
    assert message in error_of(f"--defaults-file={cnf}")


def test_defaults_file_missing_or_not_a_file(tmp_path: Path) -> None:
    assert "cannot stat" in error_of(f"--defaults-file={tmp_path}/none.cnf")
    assert "isn't a regular file" in error_of(f"--defaults-file={tmp_path}")


def test_ignored_options_leave_a_note() -> None:
    cmd = parsed("--plugin-dir=/x", "--event-threads=8", "--keepalive", "--proxy-skip-profiling")
    notes = "\n".join(cmd.notes)
    for name in ("plugin-dir", "event-threads", "keepalive", "proxy-skip-profiling"):
        assert f"--{name} is accepted and ignored" in notes


def test_help_lists_plugin_options() -> None:
    assert "--proxy-backend-addresses" in options.help_text("help-proxy", ["proxy"])
    assert "--admin-lua-script" not in options.help_text("help-all", ["proxy"])
    assert "--admin-lua-script" in options.help_text("help-all", ["proxy", "admin"])


# --- addresses (reference 5.3) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (":4040", Address("0.0.0.0", 4040)),
        ("127.0.0.1:3307", Address("127.0.0.1", 3307)),
        ("10.1.2.3", Address("10.1.2.3", 3306)),
        ("[::1]:4040", Address("::1", 4040)),
        ("[::1]", Address("::1", 3306)),
        ("/tmp/mysql-proxy.sock", Address(unix_path="/tmp/mysql-proxy.sock")),
    ],
)
def test_parse_address(text: str, address: Address) -> None:
    assert cli.parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1:", "No port number"),
        ("127.0.0.1:33a", "Failed to parse the port at 'a'"),
        ("127.0.0.1:70000", "illegal value 70000 for port"),
        ("[::1:3306", "has to be in the form"),
        ("/" + "x" * 200, "unix-path is too long"),
    ],
)
def test_parse_address_errors(text: str, message: str) -> None:
    with pytest.raises(cli.StartupError, match=message):
        cli.parse_address(text)


def test_host_names_resolve_to_numeric_addresses() -> None:
    resolved = cli.resolve_address(cli.parse_address("localhost:3306"), "localhost:3306")
    assert resolved.host in ("127.0.0.1", "::1") and resolved.port == 3306
    with pytest.raises(cli.StartupError, match=r'getaddrinfo\("no-such-host.invalid:1"\) failed'):
        cli.resolve_address(cli.parse_address("no-such-host.invalid:1"), "no-such-host.invalid:1")


@pytest.mark.parametrize(
    "argv",
    [
        ["-b", "127.0.0.1:3306", "-b", "127.0.0.1:3306"],
        ["-b", "127.0.0.1", "-b", "127.0.0.1:3306"],  # the same after the default port
        ["-b", "127.0.0.1:3306", "-r", "127.0.0.1:3306"],  # across read-write and read-only
    ],
)
def test_duplicate_backends_are_an_error(argv: list[str]) -> None:
    with pytest.raises(cli.StartupError, match="is already known!"):
        cli.backend_addresses(parsed(*argv))


def test_backends_in_order() -> None:
    rw, ro = cli.backend_addresses(
        parsed("-b", "127.0.0.1:3306", "-b", "127.0.0.1:3307", "-r", "[::1]:3308")
    )
    assert rw == [Address("127.0.0.1", 3306), Address("127.0.0.1", 3307)]
    assert ro == [Address("::1", 3308)]


# --- what the proxy plugin is given --------------------------------------------------------


def test_proxy_plugin_options() -> None:
    cmd = parsed(
        "--proxy-address=127.0.0.1:4999",
        "-b",
        "127.0.0.1:3306",
        "-r",
        "127.0.0.1:3307",
        "--proxy-lua-script=/s/x.lua",
        "--proxy-connect-timeout=0.25",
        "--proxy-read-timeout=30",
        "--proxy-write-timeout=40",
        "--proxy-pool-no-change-user",
    )
    opts = cli.proxy_plugin_options(cmd, cli.ListenPlan.of(cmd))
    assert opts.listen == [Address("127.0.0.1", 4999)]
    assert opts.backends == [Address("127.0.0.1", 3306)]
    assert opts.read_only_backends == [Address("127.0.0.1", 3307)]
    assert opts.script == "/s/x.lua"
    assert (opts.connect_timeout, opts.read_timeout, opts.write_timeout) == (0.25, 30.0, 40.0)
    assert opts.pool_change_user is False
    assert opts.lua_path is None  # LUA_PATH is set in the environment instead


def test_default_listen_is_all_interfaces() -> None:
    opts = cli.proxy_plugin_options(parsed(), cli.ListenPlan.of(parsed()))
    assert opts.listen == [Address("0.0.0.0", 4040)]
    assert opts.backends == [Address("127.0.0.1", 3306)]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_zero_or_negative_timeouts_keep_the_defaults(value: str) -> None:
    cmd = parsed(f"--proxy-connect-timeout={value}", f"--proxy-read-timeout={value}")
    assert cmd.timeout("connect") == 2.0
    assert cmd.timeout("read") == 8 * 3600


def test_listen_plan_without_the_proxy_plugin() -> None:
    cmd = parsed("--plugins=admin", *ADMIN, "--admin-address=127.0.0.1:6000")
    plan = cli.ListenPlan.of(cmd)
    assert plan.proxy is None and plan.backends == ([], [])
    assert plan.admin == Address("127.0.0.1", 6000)
