"""The suite runner itself (lua_compat/suite.py), without mysql-proxy's source.

A small suite written here, in the upstream layout, runs against a stand-in proxy
(suite_standin.py) that records how it was started.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lua_compat import suite
from lua_compat.suite import (
    FAIL,
    PASS,
    SKIP,
    SuiteConfig,
    SuiteRun,
    compat_result,
    drop_errno_zero_statements,
)

STANDIN = Path(__file__).with_name("suite_standin.py")
MYSQLTEST = "/usr/bin/mariadb-test"
needs_mysqltest = pytest.mark.skipif(
    shutil.which(MYSQLTEST) is None, reason=f"{MYSQLTEST} not installed (Debian mariadb-test)"
)


# -- expected-result rewriting ---------------------------------------------------------


def test_mariadb_rewrites_of_expected_results() -> None:
    expected = (
        "connect;\n"
        "ERROR HY000: #07000Script failed to load.\n"
        "ERROR 2013 (HY000): Lost connection to MySQL server during query\n"
        "ERROR 2006 (HY000): MySQL server has gone away\n"
        "ERROR HY000: plain message stays\n"
    )
    got = compat_result(expected, mariadb=True, dummy_script="/tmp/dummy.lua")
    assert got == (
        "connect;\n"
        "ERROR 07000: Script failed to load.\n"
        "ERROR 2013 (HY000): Lost connection to server during query\n"
        "ERROR 2006 (HY000): Server has gone away\n"
        "ERROR HY000: plain message stays\n"
    )
    assert compat_result(expected, mariadb=False, dummy_script="/tmp/dummy.lua") == expected


def test_the_default_script_path_follows_the_run() -> None:
    expected = '\t[string "/tmp/dummy.lua"]:7: in function <[string "/tmp/dummy.lua"]:3>\n'
    got = compat_result(expected, mariadb=False, dummy_script="/tmp/mpsuite-x/dummy.lua")
    assert got == (
        '\t[string "/tmp/mpsuite-x/dummy.lua"]:7: in function '
        '<[string "/tmp/mpsuite-x/dummy.lua"]:3>\n'
    )


def test_connect_without_host_gets_localhost() -> None:
    test = "connect (s1, , , , , , /run/x.sock);\nconnect (c1,127.0.0.1,root,,,$P);\n"
    assert suite.compat_test(test) == (
        "connect (s1,localhost, , , , , /run/x.sock);\nconnect (c1,127.0.0.1,root,,,$P);\n"
    )


def test_errno_zero_statements_are_dropped_from_test_and_result() -> None:
    test = (
        "--error 1234\n"
        "select fail 1234;\n"
        "--error 0000\n"
        'select fail 0 "";  # trailing comment\n'
        "select ok;\n"
    )
    result = 'select fail 1234;\nERROR abcde: one\nselect fail 0 "";\nERROR xxxxx: \nselect ok;\n'
    new_test, new_result, dropped = drop_errno_zero_statements(test, result)
    assert dropped == ['select fail 0 ""']
    assert new_test == "--error 1234\nselect fail 1234;\nselect ok;\n"
    assert new_result == "select fail 1234;\nERROR abcde: one\nselect ok;\n"


def test_tests_without_errno_zero_are_unchanged() -> None:
    test, result = "select 1;\n", "select 1;\n1\n1\n"
    assert drop_errno_zero_statements(test, result) == (test, result, [])


# -- skip list, ports, sources -----------------------------------------------------


def test_skip_list_is_read_as_lua(tmp_path: Path) -> None:
    (tmp_path / "tests_to_skip.lua").write_text(
        "tests_to_skip = { ['a'] = 'reason a', ['b'] = \"it's b\" }\n"
        "if os.getenv('BUILD_OS') == 'tiny-os' then tests_to_skip['big'] = 'no memory' end\n"
    )
    assert suite.read_skip_list(tmp_path) == {"a": "reason a", "b": "it's b"}
    assert suite.read_skip_list(tmp_path, "tiny-os")["big"] == "no memory"
    assert suite.read_skip_list(tmp_path / "missing") == {}


def test_sources_are_never_extracted_under_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lib/load-multi.lua adds /tmp/?.lua to package.path only if no entry contains "/tmp/"
    monkeypatch.setenv("MYSQL_PROXY_SUITE_SRC_ROOT", str(tmp_path / "tmp" / "x"))
    monkeypatch.setenv("XDG_CACHE_HOME", "/tmp/cache")
    assert suite.source_root() is None
    elsewhere = Path("/var/cache/mysqlproxy-lua-suite-test")
    if not os.access(elsewhere.parent, os.W_OK):
        return
    monkeypatch.setenv("MYSQL_PROXY_SUITE_SRC_ROOT", str(elsewhere))
    try:
        assert suite.source_root() == elsewhere
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_ports_follow_the_upstream_layout() -> None:
    ports = suite.choose_ports(rng=random.Random(7))
    base = ports["PROXY_PORT"]
    assert base % 64 == 0 and 32768 <= base <= 60928
    assert ports["PROXY_CHAIN_PORT"] == base + 30
    assert ports["ADMIN_CHAIN_PORT"] == base + 45
    assert all(suite.port_is_free("127.0.0.1", p) for p in ports.values())


def write_mini_source(root: Path) -> Path:
    """A source tree in mysql-proxy's layout with a suite of our own."""
    base = root / "tests" / "suite" / "base"
    (base / "t").mkdir(parents=True)
    (base / "r").mkdir()
    (root / "lib" / "proxy").mkdir(parents=True)
    (root / "lib" / "proxy" / "helper.lua").write_text("return {}\n")
    (root / "tests" / "unit" / "lua").mkdir(parents=True)
    (base / "tests_to_skip.lua").write_text("tests_to_skip = { ['epsilon'] = 'left out' }\n")
    files = {
        # default proxy, empty script; connect lines are not echoed (12.5, prologue)
        "t/alpha.test": ("connect (c1,127.0.0.1,root,,test,$PROXY_PORT);\ndo 1;\ndisconnect c1;\n"),
        "r/alpha.result": "do 1;\n",
        # .lua only: copied to the default script, default proxy reused
        "t/beta.lua": "-- beta's script\n",
        "t/beta.test": "--echo port $PROXY_PORT\ndo 2;\n",
        "r/beta.result": "port PORT\ndo 2;\n",
        # .options: a chain with two backends
        "t/gamma.options": (
            "chain_proxy({ 'gamma-mock.lua', 'gamma-mock.lua' }, 'gamma-test.lua')\n"
        ),
        "t/gamma-mock.lua": "",
        "t/gamma-test.lua": "",
        "t/gamma.test": "do 3;\n",
        "r/gamma.result": "do 3;\n",
        # a result that does not match
        "t/delta.test": "do 4;\n",
        "r/delta.result": "do 5;\n",
        "t/epsilon.test": "do 6;\n",
        "r/epsilon.result": "do 6;\n",
        # an .options file that is not valid Lua
        "t/zeta.options": "chain_proxy(\n",
        "t/zeta.test": "do 7;\n",
        "r/zeta.result": "do 7;\n",
    }
    for name, text in files.items():
        (base / name).write_text(text)
    return root


def test_extract_from_a_checkout_and_from_a_bare_git_dir(tmp_path: Path) -> None:
    checkout = write_mini_source(tmp_path / "checkout")
    out = suite.extract_source(checkout, tmp_path / "a")
    assert (out / "tests/suite/base/t/alpha.test").exists()
    assert (out / "lib/proxy/helper.lua").exists()

    git = ["git", "-C", str(checkout), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "suite"], check=True)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(checkout), str(bare)], check=True)
    out = suite.extract_source(bare, tmp_path / "b")
    assert (out / "tests/suite/base/t/gamma.options").read_text().startswith("chain_proxy")
    assert sorted(suite.iter_test_names(bare)) == sorted(suite.iter_test_names(checkout))


def test_missing_source_is_reported_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(suite.SOURCE_ENV, raising=False)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert suite.main([]) == 2
    assert "MYSQL_PROXY_SRC" in err.getvalue()


# -- a whole run against the stand-in ------------------------------------------------


@needs_mysqltest
def test_a_run_against_the_standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_mini_source(tmp_path / "src")
    record = tmp_path / "starts.jsonl"
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    config = SuiteConfig(
        source=source,
        proxy_command=[sys.executable, str(STANDIN)],
        mysqltest=MYSQLTEST,
        keep_going=True,
        timeout=60,
        work_root=tmp_path,
    )
    out = io.StringIO()
    with SuiteRun(config, out=out) as run:
        port = run.ports["PROXY_PORT"]
        (run.suite / "r" / "beta.result").write_text(f"port {port}\ndo 2;\n")
        outcomes = {o.name: o for o in run.run_all()}
        dummy = Path(run.dummy_script)
        assert dummy.parent == run.run_dir
        lib, suite_dir = run.lua_lib, run.suite

    assert {n: o.status for n, o in outcomes.items()} == {
        "alpha": PASS,
        "beta": PASS,
        "delta": FAIL,
        "epsilon": SKIP,
        "gamma": PASS,
        "zeta": FAIL,
    }, out.getvalue()
    assert "left out" in outcomes["epsilon"].reason
    assert "-do 5;" in outcomes["delta"].details and "+do 4;" in outcomes["delta"].details
    assert "zeta.options" in outcomes["zeta"].details
    assert any(line.startswith("FAIL  zeta") for line in out.getvalue().splitlines())

    starts = [json.loads(line) for line in record.read_text().splitlines()]
    # alpha starts the default proxy, beta and delta reuse it (delta's failure stops
    # it), gamma starts 2 backends and a front proxy, zeta's options file fails to load
    scripts = [
        next(a.split("=", 1)[1] for a in s["argv"] if a.startswith("--proxy-lua-script="))
        for s in starts
    ]
    assert scripts == [
        str(dummy),
        f"{suite_dir}/t/gamma-mock.lua",
        f"{suite_dir}/t/gamma-mock.lua",
        f"{suite_dir}/t/gamma-test.lua",
    ]
    front = starts[3]["argv"]
    assert sorted(a for a in front if a.startswith("--proxy-backend-addresses=")) == [
        f"--proxy-backend-addresses=127.0.0.1:{port + 30}",
        f"--proxy-backend-addresses=127.0.0.1:{port + 31}",
    ]
    assert "--log-level=critical" in starts[1]["argv"]
    assert f"--proxy-address=127.0.0.1:{port}" in front
    for start in starts:
        assert start["env"]["LUA_PATH"].startswith(f"{lib}/?.lua;{suite_dir}/t/?.lua;")
        assert start["env"]["MYSQL_PROXY_VERSION"] == "0.8.5"


@needs_mysqltest
def test_fresh_default_proxy_per_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_mini_source(tmp_path / "src")
    record = tmp_path / "starts.jsonl"
    monkeypatch.setenv("STANDIN_RECORD", str(record))
    config = SuiteConfig(
        source=source,
        proxy_command=[sys.executable, str(STANDIN)],
        mysqltest=MYSQLTEST,
        tests_regex="^alpha$",
        reuse_default_proxy=False,
        work_root=tmp_path,
    )
    with SuiteRun(config, out=io.StringIO()) as run:
        assert run.run_test("alpha").status == PASS
        assert run.run_test("alpha").status == PASS
        assert not run.proxies
    assert len(record.read_text().splitlines()) == 2


@needs_mysqltest
def test_a_proxy_that_does_not_start_fails_the_test(tmp_path: Path) -> None:
    source = write_mini_source(tmp_path / "src")
    config = SuiteConfig(
        source=source,
        proxy_command=[sys.executable, "-c", "import sys; print('bad option'); sys.exit(1)"],
        mysqltest=MYSQLTEST,
        start_timeout=5,
        work_root=tmp_path,
    )
    with SuiteRun(config, out=io.StringIO()) as run:
        outcome = run.run_test("alpha")
    assert outcome.status == FAIL
    assert "exited with status 1" in outcome.details and "bad option" in outcome.details
