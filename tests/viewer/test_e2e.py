"""The viewer against a real proxy (`mysqlproxy run` as a child process) in front of
the test MariaDB: slow queries run by real clients arrive in the live list and in the
digests; the viewer holds its window and closes it; when the proxy goes away it says
so and retries, and when the proxy comes back it renews its window and goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest

from mysqlproxy.proxy.backends import Address
from mysqlproxy.viewer.app import TopApp
from mysqlproxy.viewer.data import AdminSource
from tests.conftest import MariaDB
from tests.proxyproc import ADMIN_PASSWORD, ADMIN_USER, RunningProxy, start_proxy
from tests.viewer.screen_text import screen_text

SIZE = (140, 40)


async def until(predicate: Callable[[], object], timeout: float = 15.0,
                what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def run_queries(proxy: RunningProxy, *statements: str) -> None:
    with proxy.connect(database="mpt") as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
            cur.fetchall()


def open_targets(proxy: RunningProxy) -> set[str]:
    return {row["target"] for row in proxy.status() if row["state"] == "open"}


def source_for(proxy: RunningProxy, threshold_us: int = 150_000) -> AdminSource:
    return AdminSource(Address("127.0.0.1", proxy.admin_port), ADMIN_USER, ADMIN_PASSWORD,
                       threshold_us=threshold_us)


async def test_slow_queries_arrive_in_the_viewer(mariadb: MariaDB, tmp_path: Path) -> None:
    proxy = start_proxy(mariadb.address, tmp_path / "proxy")
    try:
        source = source_for(proxy)
        app = TopApp(source, poll_interval=0.1)
        async with app.run_test(size=SIZE):
            await until(lambda: app.proxy is not None, what="the first poll")
            assert source.window_target in open_targets(proxy)
            await asyncio.to_thread(
                run_queries, proxy, "SELECT SLEEP(0.2)", "SELECT 1", "SELECT SLEEP(0.2)",
                "SELECT SLEEP(0.2)",
            )
            await until(lambda: len(app.events) >= 3, what="three slow queries")
            await until(lambda: any(d.fingerprint == "select sleep(?)" for d in app.digests),
                        what="the digest of SELECT SLEEP")
            await until(lambda: app.proxy is not None and app.proxy.queries_total >= 4,
                        what="the query counter")
            assert [e.query for e in app.events] == ["SELECT SLEEP(0.2)"] * 3
            assert all(e.duration_us >= 200_000 and e.schema == "mpt" for e in app.events)
            digest = next(d for d in app.digests if d.fingerprint == "select sleep(?)")
            assert digest.count == 3 and digest.p50_us >= 190_000
            text = screen_text(app)
            assert f"backend {mariadb.address}" in text
            assert "SELECT SLEEP(0.2)" in text
            assert f"{source.window_target} (this viewer)" in text
            assert app.dropped == 0
        await asyncio.to_thread(source.close)
        assert source.window_target not in open_targets(proxy)
    finally:
        proxy.stop()


async def test_the_proxy_goes_away_and_comes_back(mariadb: MariaDB, tmp_path: Path) -> None:
    first = start_proxy(mariadb.address, tmp_path / "first")
    admin_port = first.admin_port
    second: RunningProxy | None = None
    source = source_for(first)
    app = TopApp(source, poll_interval=0.1, retry_interval=0.3)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await until(lambda: app.proxy is not None, what="the first poll")
            await asyncio.to_thread(first.stop)
            await until(lambda: app.attempt >= 2, what="two failed attempts")
            await pilot.pause()
            text = screen_text(app)
            assert f"lost the admin interface at 127.0.0.1:{admin_port}" in text
            assert "Connection refused" in text
            assert "retrying" in text and "(attempt " in text
            assert "Traceback" not in text

            second = start_proxy(mariadb.address, tmp_path / "second",
                                 admin=f"127.0.0.1:{admin_port}")
            await until(lambda: not app.problem, what="the viewer to reconnect")
            assert source.window_target in open_targets(second)
            await asyncio.to_thread(run_queries, second, "SELECT SLEEP(0.2)")
            await until(lambda: any(e.query == "SELECT SLEEP(0.2)" for e in app.events),
                        what="a slow query through the new proxy")
            await pilot.pause()
            assert "retrying" not in screen_text(app)
    finally:
        await asyncio.to_thread(source.close)
        if second is not None:
            assert source.window_target not in open_targets(second)
            second.stop()
        first.stop()


def test_a_wrong_password_is_one_clear_line(mariadb: MariaDB, tmp_path: Path) -> None:
    proxy = start_proxy(mariadb.address, tmp_path / "proxy")
    try:
        source = AdminSource(Address("127.0.0.1", proxy.admin_port), ADMIN_USER, "wrong")
        with pytest.raises(Exception, match="refused the login") as info:
            source.poll()
        assert "MYSQLPROXY_ADMIN_PASSWORD" in str(info.value)
        assert not isinstance(info.value, pymysql.MySQLError)
    finally:
        proxy.stop()
