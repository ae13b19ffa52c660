"""mysql-proxy's own suites against our ``mysql-proxy``: the acceptance test of issue 5.

Each upstream test of ``tests/suite/base`` and each file of ``tests/unit/lua`` is one
case. The upstream source (GPL) is read at run time from ``$MYSQL_PROXY_SRC`` or the
local mirror, never copied into this repository. Run the same with
``make lua-suite`` or ``python -m lua_compat.suite``.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lua_compat import suite

MIRROR = Path("/work/.mirror/mysql+mysql-proxy/repo")
NO_SOURCE = (
    "MYSQL_PROXY_SRC is not set and /work/.mirror/mysql+mysql-proxy/repo does not exist: "
    "no mysql-proxy source to take the suite from"
)


def _source() -> Path | None:
    if os.environ.get(suite.SOURCE_ENV):
        return Path(os.environ[suite.SOURCE_ENV])
    return MIRROR if MIRROR.exists() else None


SOURCE = _source()


def _cases(names: list[str]) -> list[object]:
    if SOURCE is None:
        return [pytest.param("-", marks=pytest.mark.skip(reason=NO_SOURCE))]
    if not names:
        reason = f"no upstream tests found in {SOURCE} (not a mysql-proxy checkout or git dir?)"
        return [pytest.param("-", marks=pytest.mark.skip(reason=reason))]
    return list(names)


SUITE_TESTS = _cases(list(suite.iter_test_names(SOURCE)) if SOURCE else [])


@pytest.fixture(scope="module")
def suite_run() -> Iterator[suite.SuiteRun]:
    assert SOURCE is not None
    mysqltest = "/usr/bin/mariadb-test"
    if shutil.which(mysqltest) is None:
        pytest.skip(f"{mysqltest} not installed (Debian package mariadb-test)")
    command = suite.default_proxy_command()
    if shutil.which(command[0]) is None:
        pytest.skip("no mysql-proxy command (.venv/bin/mysql-proxy or on PATH)")
    config = suite.SuiteConfig(
        source=SOURCE, proxy_command=command, mysqltest=mysqltest, keep_going=True, timeout=60
    )
    with suite.SuiteRun(config, out=io.StringIO()) as run:
        yield run


@pytest.mark.parametrize("name", SUITE_TESTS)
def test_upstream_suite(suite_run: suite.SuiteRun, name: str) -> None:
    outcome = suite_run.run_test(name)
    if outcome.status == suite.SKIP:
        pytest.skip(outcome.reason)
    if outcome.status == suite.FAIL:
        pytest.fail(f"{outcome.line()}\n{outcome.details}", pytrace=False)


@pytest.fixture(scope="module")
def unit_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert SOURCE is not None
    return suite.extract_source(SOURCE, tmp_path_factory.mktemp("mysql-proxy-src"))


def _unit_names() -> list[str]:
    return suite.source_file_names(SOURCE, "tests/unit/lua", ".lua") if SOURCE else []


@pytest.mark.parametrize("name", _cases(_unit_names()))
def test_upstream_lua_unit(unit_source: Path, name: str) -> None:
    path = unit_source / "tests" / "unit" / "lua" / f"{name}.lua"
    outcome = suite.run_unit_test(path, unit_source / "lib")
    if outcome.status == suite.FAIL:
        pytest.fail(f"{outcome.line()}\n{outcome.details}", pytrace=False)
