"""`mysqlproxy log on/off/status` as an operator types them, against a running proxy:
every option reaches the admin interface, bad values are one line and a non-zero exit,
and status prints what is open."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mysqlproxy.cli import log_on_statement
from tests.conftest import MariaDB
from tests.proxyproc import RunningProxy, one_line_error, run_cli, running_proxy


@pytest.fixture(scope="module")
def proxyproc(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with running_proxy(mariadb.address, tmp_path_factory.mktemp("cli-log")) as proxy:
        yield proxy


@pytest.fixture
def clean(proxyproc: RunningProxy) -> Iterator[RunningProxy]:
    yield proxyproc
    proxyproc.admin_query("LOG OFF ALL")


def open_windows(proxy: RunningProxy) -> list[dict[str, object]]:
    return [row for row in proxy.status() if row["state"] == "open"]


def test_log_on_with_every_option(clean: RunningProxy, tmp_path: Path) -> None:
    target = tmp_path / "every.log"
    result = clean.cli(
        "log", "on", "--for", "1h30m", "--slower-than", "250us", "--user", "root",
        "--user", "app", "--db", "mpt", "--client", "127.0.0.0/8", "--client", "::1",
        "--match", r"it's \d+", "--exclude", "SLEEP", "--sample", "0.1", "--to", str(target),
        "--format", "jsonl", "--max-size", "100M", "--keep", "2",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"logging to {target} for 1h30m (jsonl)\n"
    assert result.stderr == ""
    [row] = open_windows(clean)
    assert row["target"] == str(target)
    assert row["format"] == "jsonl"
    assert row["filter"] == (
        r"SLOWER THAN 250us USER app,root DB mpt CLIENT 127.0.0.0/8,::1/128 MATCH 'it's \d+' "
        "EXCLUDE 'SLEEP' SAMPLE 0.1"
    )
    assert 5390 < float(str(row["remaining_seconds"])) <= 5400


@pytest.mark.parametrize(
    ("args", "remaining", "filter_text"),
    [
        (["--for", "90s", "--slower-than", "100ms"], 90, "SLOWER THAN 100000us"),
        (["--for", "5m", "--slower-than", "2s"], 300, "SLOWER THAN 2000000us"),
        (["--for", "45", "--slower-than", "250"], 45, "SLOWER THAN 250000us"),
        (["--for", "1h"], 3600, ""),
    ],
)
def test_durations_and_thresholds(clean: RunningProxy, tmp_path: Path, args: list[str],
                                  remaining: int, filter_text: str) -> None:
    result = clean.cli("log", "on", *args, "--to", str(tmp_path / "d.log"))
    assert result.returncode == 0, result.stderr
    [row] = open_windows(clean)
    assert remaining - 5 < float(str(row["remaining_seconds"])) <= remaining
    assert row["filter"] == filter_text


def test_a_relative_target_is_relative_to_the_operator(clean: RunningProxy,
                                                       tmp_path: Path) -> None:
    result = run_cli("log", "on", "--for", "1m", "--to", "relative.log", "--admin",
                 clean.admin_address, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert open_windows(clean)[0]["target"] == str(tmp_path / "relative.log")
    assert (tmp_path / "relative.log").exists()


def test_the_default_target_is_the_proxys(clean: RunningProxy) -> None:
    result = clean.cli("log", "on", "--for", "1m")
    assert result.stdout == (
        f"logging to {clean.workdir / 'mysqlproxy-slow.log'} for 1m00s (slowlog)\n")


def test_log_on_to_stdout(clean: RunningProxy) -> None:
    result = clean.cli("log", "on", "--for", "1m", "--to", "stdout", "--format", "text")
    assert result.stdout == "logging to stdout for 1m00s (text)\n"
    assert clean.cli("log", "off", "--to", "STDOUT").stdout == "closed the window on stdout\n"


def test_log_on_again_replaces(clean: RunningProxy, tmp_path: Path) -> None:
    target = str(tmp_path / "again.log")
    clean.cli("log", "on", "--for", "1m", "--to", target)
    result = clean.cli("log", "on", "--for", "2m", "--to", target, "--slower-than", "5ms")
    assert result.stdout == f"replaced the window to {target} for 2m00s (slowlog)\n"
    status = clean.cli("log", "status").stdout
    line = next(ln for ln in status.splitlines() if ln.startswith(f"│ {target} "))
    assert line.split("│")[-2].strip() == "yes"
    [row] = open_windows(clean)
    assert (row["replaced_previous"], row["filter"]) == ("yes", "SLOWER THAN 5000us")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--for", "5x"], ["--for", "invalid duration '5x'"]),
        (["--for", "5m", "--slower-than", "fast"], ["--slower-than", "'fast'"]),
        (["--for", "5m", "--sample", "2"], ["--sample", "2"]),
        (["--for", "5m", "--sample", "0"], ["--sample"]),
        (["--for", "5m", "--format", "xml"], ["--format", "'xml'"]),
        (["--for", "5m", "--max-size", "huge"], ["--max-size", "'huge'"]),
        (["--for", "5m", "--keep", "-1"], ["--keep"]),
        ([], ["--for is required"]),
    ],
)
def test_bad_options_are_usage_errors(clean: RunningProxy, args: list[str],
                                      words: list[str]) -> None:
    result = clean.cli("log", "on", *args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert not open_windows(clean)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--client", "not-an-ip"], ["invalid client address or CIDR block 'not-an-ip'"]),
        (["--match", "("], ["invalid regular expression '('"]),
        (["--for", "30d"], ["between 1s and 7d"]),
    ],
)
def test_values_the_proxy_refuses_are_one_line(clean: RunningProxy, args: list[str],
                                               words: list[str]) -> None:
    result = clean.cli("log", "on", "--for", "5m", *args)
    line = one_line_error(result)
    assert line.startswith("mysqlproxy: ")
    for word in words:
        assert word in line
    assert not open_windows(clean)


def test_log_off(clean: RunningProxy, tmp_path: Path) -> None:
    assert clean.cli("log", "off").stdout == "no logging window is open\n"
    one, two = str(tmp_path / "one.log"), str(tmp_path / "two.log")
    clean.cli("log", "on", "--for", "1m", "--to", one)
    assert clean.cli("log", "off").stdout == f"closed the window on {one}\n"
    clean.cli("log", "on", "--for", "1m", "--to", one)
    clean.cli("log", "on", "--for", "1m", "--to", two)
    # Two open: a bare `log off` must be told which.
    line = one_line_error(clean.cli("log", "off"))
    assert "open windows:" in line and one in line and two in line
    result = clean.cli("log", "off", "--to", two)
    assert result.stdout == f"closed the window on {two}\n"
    assert [row["target"] for row in open_windows(clean)] == [one]
    clean.cli("log", "on", "--for", "1m", "--to", two)
    assert clean.cli("log", "off", "--all").stdout == "closed 2 window(s)\n"
    assert not open_windows(clean)


def test_log_off_a_relative_target(clean: RunningProxy, tmp_path: Path) -> None:
    run_cli("log", "on", "--for", "1m", "--to", "rel.log", "--admin", clean.admin_address,
            cwd=tmp_path)
    result = run_cli("log", "off", "--to", "rel.log", "--admin", clean.admin_address,
                     cwd=tmp_path)
    assert result.stdout == f"closed the window on {tmp_path / 'rel.log'}\n"


def test_log_status_with_nothing_open(proxyproc: RunningProxy) -> None:
    proxyproc.admin_query("LOG OFF ALL")
    result = proxyproc.cli("log", "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("mysqlproxy ")
    assert f"127.0.0.1:{proxyproc.port} → {proxyproc.backend}" in lines[0]
    assert "connections: 0" in lines[0]
    assert "logging: off (no window open)" in result.stdout


def test_log_status_shows_each_window(clean: RunningProxy, tmp_path: Path) -> None:
    good = str(tmp_path / "good.log")
    blocker = tmp_path / "file"
    blocker.write_text("")
    clean.cli("log", "on", "--for", "10m", "--to", good, "--format", "text", "--user", "root")
    clean.cli("log", "on", "--for", "2m", "--to", f"{blocker}/bad.log")
    result = clean.cli("log", "status")
    assert result.returncode == 0
    assert "logging: off" not in result.stdout
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "target", "format", "state", "remaining", "filter", "events written", "events dropped",
        "sink health", "replaced previous"]
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in lines if line.startswith("│")}
    fmt, state, remaining, filter_text, written, dropped, health, replaced = rows[good]
    assert (fmt, state, filter_text, written, dropped, health, replaced) == (
        "text", "open", "USER root", "0", "0", "ok", "no")
    assert re.fullmatch(r"9m5\ds|10m00s", remaining), remaining
    bad = rows[f"{blocker}/bad.log"]
    assert bad[1] == "open"
    assert bad[6].startswith("disabled: Not a directory")


def test_the_statement_the_cli_sends() -> None:
    """Quotes and backslashes survive the trip (the proxy's parser is tested above)."""
    statement = log_on_statement("5m", match=r"a'b\d", users=["o'brien"], target="stdout")
    assert statement == (
        r"LOG ON FOR '5m' USER 'o\'brien' MATCH 'a\'b\\d' TO STDOUT FORMAT slowlog"
    )


def test_quotes_round_trip(clean: RunningProxy) -> None:
    result = clean.cli("log", "on", "--for", "1m", "--to", "stdout", "--match", r"a'b\d",
                       "--user", "o'brien")
    assert result.returncode == 0, result.stderr
    assert open_windows(clean)[0]["filter"] == r"USER o'brien MATCH 'a'b\d'"
