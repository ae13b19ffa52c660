"""The scripts we ship in lua_compat/scripts/ (log.lua, auditing.lua, rewrite.lua), run
by the Lua engine in front of the private MariaDB, through real clients."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pymysql
import pytest

from tests.conftest import MariaDB, run_cli
from tests.lua_compat.conftest import connect, run_lua_proxy

SCRIPTS = Path(__file__).resolve().parents[2] / "lua_compat" / "scripts"
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (\d+) -- (.*)$")


# --- log.lua -------------------------------------------------------------------------


def test_log_lua_writes_date_thread_id_and_query_per_com_query(
    mariadb: MariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = tmp_path / "queries.log"
    monkeypatch.setenv("LOG_FILE", str(log_file))
    with (
        run_lua_proxy(str(SCRIPTS / "log.lua"), [mariadb.address]) as proxy,
        connect(proxy, database="mpt") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT CONNECTION_ID()")
        (thread_id,) = cur.fetchone()
        cur.execute("SELECT 'two\nlines' AS v")
        assert cur.fetchone() == ("two\nlines",)
        conn.ping()  # COM_PING: not a query, not logged
        conn.select_db("mysql")  # COM_INIT_DB: not logged either
    text = log_file.read_text()
    lines = text.split("\n")
    stamps = [LOG_LINE.match(line) for line in lines if LOG_LINE.match(line)]
    assert {int(m.group(2)) for m in stamps} == {thread_id}
    # PyMySQL's own SET NAMES / SET AUTOCOMMIT first, then ours; a query with a newline
    # in it keeps it (the classic format), and the ping and select_db are not there
    assert [m.group(3) for m in stamps] == [
        "SET NAMES utf8mb4", "SET AUTOCOMMIT = 0", "SELECT CONNECTION_ID()", "SELECT 'two",
    ]
    assert text.endswith(f" {thread_id} -- SELECT 'two\nlines' AS v\n")


def test_log_lua_through_the_mariadb_cli(
    mariadb: MariaDB, mariadb_cli: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = tmp_path / "queries.log"
    monkeypatch.setenv("LOG_FILE", str(log_file))
    with run_lua_proxy(str(SCRIPTS / "log.lua"), [mariadb.address]) as proxy:
        result = run_cli(mariadb_cli, proxy.bound[0].port,
                         "SELECT 6*7 AS answer; SELECT no_such_column;")
    assert result.stdout.decode().split() == ["answer", "42"]
    assert b"Unknown column 'no_such_column'" in result.stderr  # errors pass unchanged
    queries = [LOG_LINE.match(line).group(3)  # type: ignore[union-attr]
               for line in log_file.read_text().splitlines()]
    assert "SELECT 6*7 AS answer" in queries
    assert "SELECT no_such_column" in queries


def test_log_lua_with_an_unwritable_log_file_still_passes_queries(
    mariadb: MariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LOG_FILE", str(tmp_path / "no-such-dir" / "queries.log"))
    with (
        run_lua_proxy(str(SCRIPTS / "log.lua"), [mariadb.address]) as proxy,
        connect(proxy) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 1 + 1")
        assert cur.fetchone() == (2,)
    assert "log.lua: cannot open" in capfd.readouterr().err


def test_log_lua_redacts_passwords_and_flushes_within_a_second(
    mariadb: MariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_file = tmp_path / "queries.log"
    monkeypatch.setenv("LOG_FILE", str(log_file))
    with (
        run_lua_proxy(str(SCRIPTS / "log.lua"), [mariadb.address]) as proxy,
        connect(proxy) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("CREATE USER IF NOT EXISTS 'logged'@'%' IDENTIFIED BY 'hunter2'")
        cur.execute("ALTER USER 'logged'@'%' IDENTIFIED VIA mysql_native_password "
                    "USING PASSWORD('hunter3')")
        cur.execute("SET PASSWORD FOR 'logged'@'%' = PASSWORD('hunter4')")
        cur.execute("DROP USER 'logged'@'%'")
        time.sleep(1.1)
        cur.execute("SELECT 'after a second'")  # flushes what came before
        written_while_connected = log_file.read_text()
    assert "IDENTIFIED BY '<redacted>'" in written_while_connected
    assert "USING PASSWORD('<redacted>')" in written_while_connected
    assert "PASSWORD('<redacted>')" in written_while_connected
    assert "DROP USER 'logged'@'%'" in written_while_connected
    assert "hunter" not in log_file.read_text()


# --- auditing.lua --------------------------------------------------------------------


def test_auditing_lua_logs_logins_failures_and_logouts(
    mariadb: MariaDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_file = tmp_path / "audit.log"
    monkeypatch.setenv("AUDIT_LOG_FILE", str(audit_file))
    with connect_direct(mariadb) as admin, admin.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS 'audited'@'%' IDENTIFIED BY 'right'")
        cur.execute("GRANT SELECT ON mpt.* TO 'audited'@'%'")
    with run_lua_proxy(str(SCRIPTS / "auditing.lua"), [mariadb.address]) as proxy:
        with (
            connect(proxy, user="audited", password="right", database="mpt") as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT CONNECTION_ID()")
            (thread_id,) = cur.fetchone()
            cur.execute("SELECT 1")
        with pytest.raises(pymysql.err.OperationalError) as refused:
            connect(proxy, user="audited", password="wrong")
        assert refused.value.args[0] == 1045
    lines = audit_file.read_text().splitlines()
    events = [line[20:] for line in lines]  # after "YYYY-MM-DD HH:MM:SS "
    assert events[0].startswith("login ok user=audited db=mpt client=127.0.0.1:")
    assert events[0].endswith(f" thread={thread_id}")
    assert re.fullmatch(r"logout user=audited client=127\.0\.0\.1:\d+ queries=\d+", events[1])
    assert int(events[1].rsplit("=", 1)[1]) >= 2
    assert events[2].startswith("login failed user=audited db= client=127.0.0.1:")
    assert "error=1045 Access denied for user 'audited'" in events[2]
    assert len(events) == 3  # a failed login has no logout line
    assert "right" not in audit_file.read_text()  # never a password


# --- rewrite.lua ---------------------------------------------------------------------


def test_rewrite_lua_tags_queries_with_the_client(mariadb: MariaDB) -> None:
    with (
        run_lua_proxy(str(SCRIPTS / "rewrite.lua"), [mariadb.address]) as proxy,
        connect(proxy, database="mpt") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT info FROM information_schema.processlist WHERE id = CONNECTION_ID()")
        (seen_by_server,) = cur.fetchone()
        local_port = conn._sock.getsockname()[1]  # type: ignore[union-attr]
    assert seen_by_server.startswith(f"/* client=127.0.0.1:{local_port} user=root */ SELECT info")


def test_rewrite_lua_refuses_denied_statements_without_reaching_the_server(
    mariadb: MariaDB,
) -> None:
    with connect_direct(mariadb) as admin, admin.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS rewrite_keep")
    with (
        run_lua_proxy(str(SCRIPTS / "rewrite.lua"), [mariadb.address]) as proxy,
        connect(proxy) as conn,
        conn.cursor() as cur,
    ):
        with pytest.raises(pymysql.err.OperationalError) as refused:
            cur.execute("  /* cleanup */ drop   database rewrite_keep")
        assert refused.value.args[0] == 1142
        assert "refused by the proxy" in refused.value.args[1]
        cur.execute("SELECT 'still usable'")  # the connection goes on
        assert cur.fetchone() == ("still usable",)
    with connect_direct(mariadb) as admin, admin.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'rewrite_keep'")
        assert cur.fetchone() == ("rewrite_keep",)


def test_rewrite_lua_reports_slow_queries_and_streams_their_results(
    mariadb: MariaDB, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Thresholds far apart from the queries' own times, so a loaded machine does not
    # turn the fast query slow.
    monkeypatch.setenv("SLOW_MS", "400")
    with (
        run_lua_proxy(str(SCRIPTS / "rewrite.lua"), [mariadb.address]) as proxy,
        connect(proxy, database="mpt") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT SLEEP(0.8) AS slept")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT 'quick' AS fast_one")
        assert cur.fetchone() == ("quick",)
        cur.execute("SELECT seq FROM seq_1_to_20000")  # a result streamed, not buffered
        assert len(cur.fetchall()) == 20000
    err = capfd.readouterr().err
    assert re.search(r"rewrite\.lua: slow query \(\d+\.\d ms\): /\* client=.*SELECT SLEEP", err)
    assert "fast_one" not in err


def connect_direct(mariadb: MariaDB) -> pymysql.connections.Connection:  # type: ignore[type-arg]
    return pymysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user,
                           password=mariadb.password, autocommit=True)
