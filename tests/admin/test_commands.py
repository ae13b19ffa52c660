"""The admin command language, spoken by PyMySQL to a running proxy: every table,
every setting, LOG ON/OFF with every option, and the errors (unknown commands name
`help`, syntax errors name the word that was wrong)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors
import pytest

from tests.conftest import MariaDB
from tests.proxyproc import RunningProxy, read_lines, running_proxy, wait_until

Rows = list[dict[str, Any]]


@pytest.fixture(scope="module")
def proxyproc(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with running_proxy(mariadb.address, tmp_path_factory.mktemp("admin-commands")) as proxy:
        yield proxy


@pytest.fixture
def admin(proxyproc: RunningProxy) -> Iterator[Admin]:
    session = Admin(proxyproc)
    yield session
    session.run("LOG OFF ALL")
    session.close()


class Admin:
    """One admin connection with short helpers."""

    def __init__(self, proxy: RunningProxy) -> None:
        self.proxy = proxy
        self.conn = proxy.admin(cursorclass=pymysql.cursors.DictCursor)

    def rows(self, statement: str) -> Rows:
        with self.conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall())

    def run(self, statement: str) -> tuple[int, str]:
        """An OK statement: (affected rows, info message)."""
        with self.conn.cursor() as cur:
            affected = cur.execute(statement)
        message = self.conn._result.message
        return affected, message.decode() if isinstance(message, bytes) else str(message or "")

    def error(self, statement: str) -> tuple[int, str]:
        """A refused statement: (error code, message). The connection stays usable."""
        with pytest.raises(pymysql.MySQLError) as info, self.conn.cursor() as cur:
            cur.execute(statement)
        code, message = info.value.args
        assert self.rows("SELECT * FROM backends"), "the connection survives an error"
        return int(code), str(message)

    def no_clients(self) -> None:
        """Wait until client connections of earlier tests have closed (asynchronously)."""
        assert wait_until(lambda: self.rows("SELECT * FROM connections") == [])

    def settings(self) -> dict[str, str]:
        return {row["name"]: row["value"] for row in self.rows("SELECT * FROM settings")}

    def close(self) -> None:
        self.conn.close()


# --- help and the client-library chatter -----------------------------------------------


def test_help_documents_every_statement(admin: Admin) -> None:
    rows = admin.rows("SELECT * FROM help")
    assert list(rows[0]) == ["command", "description"]
    commands = [row["command"] for row in rows]
    for expected in ("SELECT * FROM status", "SELECT * FROM proxy", "SELECT * FROM connections",
                     "SELECT * FROM backends", "SELECT * FROM settings",
                     "SELECT * FROM events WHERE id > N LIMIT M", "SET name = value"):
        assert expected in commands
    log_on = next(c for c in commands if c.startswith("LOG ON"))
    for option in ("FOR", "SLOWER THAN", "USER", "DB", "CLIENT", "COMMAND", "MATCH", "EXCLUDE",
                   "SAMPLE", "TO", "FORMAT", "MAX SIZE", "KEEP"):
        assert f"[{option} " in log_on or f"LOG ON {option} " in log_on, option
    assert any(c.startswith("LOG OFF") for c in commands)
    # Every table help names can be selected.
    for command in commands:
        if command.startswith("SELECT * FROM "):
            admin.rows(command.replace(" N ", " 0 ").replace(" M", " 5"))
    assert all(row["description"] for row in rows)


@pytest.mark.parametrize("statement", ["select * from HELP", "SELECT * FROM help;", "help",
                                       "  select   *   from   help  "])
def test_help_spellings(admin: Admin, statement: str) -> None:
    assert len(admin.rows(statement)) >= 10


def test_version_comment_as_the_mariadb_client_asks(admin: Admin) -> None:
    assert admin.rows("select @@version_comment limit 1") == [
        {"@@version_comment": "mysqlproxy admin interface"}
    ]


def test_other_connect_time_questions(admin: Admin) -> None:
    row = admin.rows("SELECT DATABASE(), USER()")[0]
    assert row == {"DATABASE()": "", "USER()": "admin"}
    assert admin.rows("SELECT @@max_allowed_packet")[0]["@@max_allowed_packet"] == "16777216"
    assert admin.run("SET NAMES utf8mb4") == (0, "")
    assert admin.run("SET autocommit = 1") == (0, "")
    tables = [row["Tables"] for row in admin.rows("SHOW TABLES")]
    assert {"help", "status", "connections", "events", "settings"} <= set(tables)
    admin.conn.ping()
    admin.conn.select_db("anything")


# --- the tables --------------------------------------------------------------------------


def test_proxy_table(admin: Admin, proxyproc: RunningProxy) -> None:
    admin.no_clients()
    with proxyproc.connect():
        info = {row["name"]: row["value"] for row in admin.rows("SELECT * FROM proxy")}
    assert info["pid"] == str(proxyproc.pid)
    assert info["listening"] == f"127.0.0.1:{proxyproc.port}"
    assert info["backend"] == str(proxyproc.backend)
    assert info["connections"] == "1"
    assert int(info["connections_total"]) >= 1
    assert float(info["uptime_seconds"]) > 0
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", info["version"])
    assert info["logging_windows"] == "0"


def test_backends_table(admin: Admin, proxyproc: RunningProxy) -> None:
    admin.no_clients()
    with proxyproc.connect(), proxyproc.connect():
        rows = admin.rows("SELECT * FROM backends")
    assert rows == [{"address": str(proxyproc.backend), "connect_timeout": 5.0,
                     "connections": 2, "last_error": ""}]


def test_connections_table_shows_a_running_query(admin: Admin, proxyproc: RunningProxy) -> None:
    admin.no_clients()
    sleeper = proxyproc.connect(database="mpt")
    idle = proxyproc.connect()
    with sleeper.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        (thread_id,) = cur.fetchone()
    host, port = sleeper._sock.getsockname()[:2]
    local = f"{host}:{port}"
    done = threading.Event()

    def sleep() -> None:
        with sleeper.cursor() as cur:
            cur.execute("SELECT SLEEP(2)")
        done.set()

    thread = threading.Thread(target=sleep)
    thread.start()
    try:
        def running() -> dict[str, Any] | None:
            for row in admin.rows("SELECT * FROM connections"):
                if row["command"] == "COM_QUERY" and row["seconds"] >= 1.0:
                    return row
            return None

        assert wait_until(running, timeout=2.5, interval=0.1)
        rows = admin.rows("SELECT * FROM connections")
    finally:
        thread.join()
        sleeper.close()
        idle.close()
    assert done.is_set()
    busy = [row for row in rows if row["command"] == "COM_QUERY"]
    assert len(busy) == 1
    row = busy[0]
    assert row["user"] == "root"
    assert row["schema"] == "mpt"
    assert row["client"] == local
    assert row["server_thread_id"] == thread_id
    assert row["backend"] == str(proxyproc.backend)
    assert 1.0 <= row["seconds"] < 2.5
    others = [r for r in rows if r is not row]
    assert [r["command"] for r in others] == ["Sleep"]
    assert others[0]["schema"] == ""
    assert wait_until(lambda: admin.rows("SELECT * FROM processlist") == [])


def test_settings_table(admin: Admin, proxyproc: RunningProxy) -> None:
    rows = admin.rows("SELECT * FROM settings")
    assert [row["name"] for row in rows] == [
        "backend", "connect_timeout", "max_connections", "idle_timeout", "max_packet_size",
        "grace_period", "log_target", "log_queue_size", "ring_size", "print_queries",
        "require_tls", "backend_tls",
    ]
    settings = {row["name"]: row["value"] for row in rows}
    assert settings["backend"] == str(proxyproc.backend)
    assert settings["log_target"] == str(proxyproc.workdir / "mysqlproxy-slow.log")
    assert settings["print_queries"] == "off"
    assert all(row["description"] for row in rows)


def test_status_table(admin: Admin, proxyproc: RunningProxy, tmp_path: Path) -> None:
    target = tmp_path / "status.log"
    admin.run(f"LOG ON FOR 90s TO '{target}'")
    rows = admin.rows("SELECT * FROM status")
    assert list(rows[0]) == ["target", "format", "state", "remaining_seconds", "remaining",
                             "filter", "events_matched", "events_written", "events_dropped",
                             "sink_health", "replaced_previous"]
    row = rows[0]
    assert row["target"] == str(target)
    assert (row["format"], row["state"], row["filter"]) == ("slowlog", "open", "")
    assert 85 < row["remaining_seconds"] <= 90
    assert row["remaining"] in ("1m29s", "1m30s", "1m28s")
    assert (row["events_written"], row["events_dropped"], row["sink_health"]) == (0, 0, "ok")
    windows = admin.rows("SELECT * FROM windows")
    assert [(r["target"], r["state"]) for r in windows] == [(r["target"], r["state"]) for r in rows]
    admin.run(f"LOG OFF TO '{target}'")
    closed = admin.rows("SELECT * FROM status")[0]
    assert (closed["target"], closed["state"], closed["remaining_seconds"]) == (
        str(target), "closed", 0)


def test_events_where_id_limit(admin: Admin, proxyproc: RunningProxy) -> None:
    admin.run("LOG ON FOR 60s TO RING MATCH 'evtest'")
    with proxyproc.connect(database="mpt") as conn, conn.cursor() as cur:
        for i in range(6):
            cur.execute(f"SELECT {i} AS evtest")
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM no_such_table_evtest")
    events = admin.rows("SELECT * FROM events WHERE id > 0 LIMIT 1000")
    ours = [e for e in events if "evtest" in e["query"]]
    assert [e["query"] for e in ours] == [f"SELECT {i} AS evtest" for i in range(6)] + [
        "SELECT * FROM no_such_table_evtest"]
    first = ours[0]["id"]
    assert [e["id"] for e in ours] == list(range(first, first + 7))
    page = admin.rows(f"SELECT * FROM events WHERE id > {first + 1} LIMIT 2")
    assert [e["query"] for e in page] == ["SELECT 2 AS evtest", "SELECT 3 AS evtest"]
    page = admin.rows(f"SELECT * FROM events WHERE id >= {first + 5}")
    assert [e["id"] for e in page] == [first + 5, first + 6]
    assert admin.rows(f"SELECT * FROM events WHERE id > {first + 6}") == []
    assert len(admin.rows(f"SELECT * FROM events WHERE id > {first - 1} LIMIT 3")) == 3
    row = ours[0]
    assert (row["user"], row["schema"], row["command"]) == ("root", "mpt", "COM_QUERY")
    assert (row["rows_sent"], row["error_code"]) == (1, 0)
    assert row["duration_us"] >= row["first_byte_us"] > 0
    failed = ours[-1]
    assert (failed["error_code"], failed["rows_sent"]) == (1146, 0)
    assert "no_such_table_evtest" in failed["error_message"]
    # The ring window counts what it kept.
    status = admin.rows("SELECT * FROM status")[0]
    assert (status["target"], status["format"], status["events_written"]) == ("ring", "ring", 7)


@pytest.mark.parametrize(
    ("statement", "words"),
    [
        ("SELECT * FROM events WHERE id < 3", ["only WHERE id > N"]),
        ("SELECT * FROM events WHERE name > 3", ["only WHERE id > N"]),
        ("SELECT * FROM events WHERE id > x", ["'x'"]),
        ("SELECT * FROM events LIMIT lots", ["LIMIT", "'lots'"]),
        ("SELECT * FROM events WHERE", ["a column", "end of the statement"]),
    ],
)
def test_events_syntax_errors(admin: Admin, statement: str, words: list[str]) -> None:
    code, message = admin.error(statement)
    assert code == 1064
    for word in words:
        assert word in message


# --- SET ---------------------------------------------------------------------------------


def test_set_backend(admin: Admin, proxyproc: RunningProxy) -> None:
    kept = proxyproc.connect()
    try:
        assert admin.run("SET backend = '127.0.0.1:1'") == (1, "backend = 127.0.0.1:1")
        assert admin.rows("SELECT * FROM backends")[0]["address"] == "127.0.0.1:1"
        with pytest.raises(pymysql.err.OperationalError):
            proxyproc.connect()
        with kept.cursor() as cur:  # connections already open keep their backend
            cur.execute("SELECT 1")
        assert "127.0.0.1:1" in admin.rows("SELECT * FROM backends")[0]["last_error"]
    finally:
        admin.run(f"SET backend = '{proxyproc.backend}'")
        kept.close()
    with proxyproc.connect() as conn:
        conn.ping()


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("connect_timeout", "2.5", "2.5"),
        ("connect_timeout", "'1500ms'", "1.5"),
        ("max_connections", "500", "500"),
        ("max_connections", "0", "0"),
        ("idle_timeout", "'5m'", "300"),
        ("idle_timeout", "off", "off"),
        ("idle_timeout", "0", "off"),
        ("max_packet_size", "'16M'", "16777216"),
        ("max_packet_size", "0", "0"),
        ("grace_period", "0", "0"),
        ("grace_period", "'1m'", "60"),
        ("log_queue_size", "5", "5"),
        ("ring_size", "50", "50"),
        ("print_queries", "off", "off"),
        ("log_target", "'/tmp/pt-admin-elsewhere.log'", "/tmp/pt-admin-elsewhere.log"),
    ],
)
def test_set_each_setting(admin: Admin, name: str, value: str, shown: str) -> None:
    before = admin.settings()[name]
    try:
        assert admin.run(f"SET {name} = {value}") == (1, f"{name} = {shown}")
        assert admin.settings()[name] == shown
        assert admin.run(f"set {name} to {value}") == (1, f"{name} = {shown}")
    finally:
        admin.run(f"SET {name} = '{before}'")
    assert admin.settings()[name] == before


def test_set_connect_timeout_shows_in_backends(admin: Admin) -> None:
    admin.run("SET connect_timeout = 3")
    try:
        assert admin.rows("SELECT * FROM backends")[0]["connect_timeout"] == 3.0
    finally:
        admin.run("SET connect_timeout = 5")


@pytest.mark.parametrize(
    ("statement", "code", "words"),
    [
        ("SET backend = 'nowhere'", 1231, ["backend:", "'nowhere'"]),
        ("SET backend = '127.0.0.1:99999'", 1231, ["out of range"]),
        ("SET connect_timeout = 'soon'", 1231, ["connect_timeout:", "'soon'"]),
        ("SET connect_timeout = 0", 1231, ["must be positive"]),
        ("SET max_connections = -1", 1231, ["max_connections:", "0 (unlimited)"]),
        ("SET max_connections = lots", 1231, ["max_connections:", "'lots'"]),
        ("SET idle_timeout = 'later'", 1231, ["idle_timeout:", "'later'"]),
        ("SET max_packet_size = 100", 1231, ["max_packet_size:", "between 1k and 1G"]),
        ("SET max_packet_size = '2G'", 1231, ["max_packet_size:", "between 1k and 1G"]),
        ("SET max_packet_size = huge", 1231, ["max_packet_size:", "'huge'"]),
        ("SET grace_period = 'x'", 1231, ["grace_period:", "'x'"]),
        ("SET log_queue_size = 0", 1231, ["log_queue_size:", "positive"]),
        ("SET log_queue_size = many", 1231, ["'many'"]),
        ("SET ring_size = -1", 1231, ["ring_size:", "positive"]),
        ("SET print_queries = maybe", 1231, ["print_queries:", "'maybe'"]),
        ("SET no_such_setting = 1", 1193, ["'no_such_setting'", "SELECT * FROM settings"]),
        ("SET connect_timeout 3", 1064, ["SET connect_timeout = value"]),
        ("SET connect_timeout = 3 4", 1064, ["unexpected '4'"]),
        ("SET", 1064, ["a setting name"]),
    ],
)
def test_set_bad_values(admin: Admin, statement: str, code: int, words: list[str]) -> None:
    before = admin.settings()
    got_code, message = admin.error(statement)
    assert got_code == code, message
    for word in words:
        assert word in message, message
    assert admin.settings() == before


def test_set_print_queries(admin: Admin, proxyproc: RunningProxy) -> None:
    admin.run("SET print_queries = on")
    try:
        with proxyproc.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 'printed-now'")
        assert wait_until(lambda: "printed-now" in proxyproc.stdout(), 5)
    finally:
        admin.run("SET print_queries = off")
    assert admin.settings()["print_queries"] == "off"
    with proxyproc.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 'not-printed'")
    time.sleep(0.2)
    assert "not-printed" not in proxyproc.stdout()


def test_set_log_target_is_where_log_on_writes(admin: Admin, proxyproc: RunningProxy,
                                               tmp_path: Path) -> None:
    target = tmp_path / "default-target.log"
    before = admin.settings()["log_target"]
    admin.run(f"SET log_target = '{target}'")
    try:
        _, message = admin.run("LOG ON FOR 30s FORMAT text")
        assert message == f"logging to {target} for 30s (text)"
        with proxyproc.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 'to-the-default-target'")
        assert admin.run("LOG OFF") == (1, f"closed the window on {target}")
    finally:
        admin.run(f"SET log_target = '{before}'")
    assert wait_until(lambda: any("to-the-default-target" in ln for ln in read_lines(target)))


def test_set_ring_size(admin: Admin, proxyproc: RunningProxy) -> None:
    admin.run("SET ring_size = 3")
    try:
        admin.run("LOG ON FOR 30s TO RING MATCH 'ringsize'")
        with proxyproc.connect() as conn, conn.cursor() as cur:
            for i in range(5):
                cur.execute(f"SELECT {i} AS ringsize")
        events = admin.rows("SELECT * FROM events WHERE id > 0")
        assert [e["query"] for e in events] == [f"SELECT {i} AS ringsize" for i in (2, 3, 4)]
    finally:
        admin.run("SET ring_size = 10000")


def test_set_log_queue_size_applies_to_new_windows(admin: Admin, tmp_path: Path) -> None:
    admin.run("SET log_queue_size = 7")
    try:
        assert admin.settings()["log_queue_size"] == "7"
        _, message = admin.run(f"LOG ON FOR 30s TO '{tmp_path / 'q.log'}'")
        assert message.startswith("logging to ")
    finally:
        admin.run("SET log_queue_size = 10000")


# --- LOG ON / LOG OFF ----------------------------------------------------------------------


def test_log_on_with_every_option(admin: Admin, tmp_path: Path) -> None:
    target = tmp_path / "every option.log"
    _, message = admin.run(
        "LOG ON FOR 90s SLOWER THAN 250us USER root, 'app' DB mpt, other "
        "CLIENT 127.0.0.0/8, '::1' COMMAND query, ping MATCH 'sel''ect' EXCLUDE 'skip' "
        f"SAMPLE 50% TO '{target}' FORMAT text MAX SIZE 1M KEEP 3"
    )
    assert message == f"logging to {target} for 1m30s (text)"
    row = admin.rows("SELECT * FROM status")[0]
    assert (row["target"], row["format"], row["state"]) == (str(target), "text", "open")
    assert row["filter"] == (
        "SLOWER THAN 250us USER app,root DB mpt,other CLIENT 127.0.0.0/8,::1/128 "
        "COMMAND COM_QUERY,COM_PING MATCH 'sel'ect' EXCLUDE 'skip' SAMPLE 0.5"
    )
    assert target.exists()


@pytest.mark.parametrize(
    ("options", "shown"),
    [
        ("SLOWER THAN 100", "SLOWER THAN 100000us"),  # a bare threshold is milliseconds
        ("SLOWER THAN '1.5s'", "SLOWER THAN 1500000us"),
        ("SCHEMA mpt", "DB mpt"),
        ("CLIENT 10.1.2.3", "CLIENT 10.1.2.3/32"),
        ("COMMAND ALL", ""),
        ("COMMAND com_stmt_execute", "COMMAND COM_STMT_EXECUTE"),
        ("SAMPLE 0.25", "SAMPLE 0.25"),
        ("SAMPLE 1", ""),
        ('MATCH "a\\\\d"', "MATCH 'a\\d'"),
    ],
)
def test_log_on_option_forms(admin: Admin, tmp_path: Path, options: str, shown: str) -> None:
    admin.run(f"LOG ON FOR 1m {options} TO '{tmp_path / 'forms.log'}'")
    assert admin.rows("SELECT * FROM status")[0]["filter"] == shown


@pytest.mark.parametrize(("duration", "shown"), [("90", "1m30s"), ("'1h30m'", "1h30m"),
                                                  ("2m", "2m00s"), ("45s", "45s")])
def test_log_on_durations(admin: Admin, tmp_path: Path, duration: str, shown: str) -> None:
    _, message = admin.run(f"LOG ON FOR {duration} TO '{tmp_path / 'd.log'}'")
    assert message == f"logging to {tmp_path / 'd.log'} for {shown} (slowlog)"


def test_log_on_to_stdout(admin: Admin, proxyproc: RunningProxy) -> None:
    _, message = admin.run("LOG ON FOR 30s TO STDOUT FORMAT jsonl MATCH 'on-stdout'")
    assert message == "logging to stdout for 30s (jsonl)"
    with proxyproc.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 'on-stdout'")
    assert wait_until(lambda: '"query": "SELECT \'on-stdout\'"' in proxyproc.stdout(), 5)
    assert admin.run("LOG OFF TO STDOUT") == (1, "closed the window on stdout")


def test_log_on_replaces_and_log_off(admin: Admin, tmp_path: Path) -> None:
    target = tmp_path / "replace.log"
    admin.run(f"LOG ON FOR 1m TO '{target}'")
    _, message = admin.run(f"LOG ON FOR 2m TO '{target}' FORMAT jsonl")
    assert message == f"replaced the window to {target} for 2m00s (jsonl)"
    rows = [r for r in admin.rows("SELECT * FROM status") if r["target"] == str(target)]
    assert [(r["state"], r["replaced_previous"]) for r in rows] == [("open", "yes")]
    other = tmp_path / "other.log"
    admin.run(f"LOG ON FOR 1m TO '{other}'")
    assert len([r for r in admin.rows("SELECT * FROM status") if r["state"] == "open"]) == 2
    # With two windows open, LOG OFF must say which.
    code, message = admin.error("LOG OFF")
    assert code == 1105
    assert "open windows:" in message and str(target) in message and str(other) in message
    assert admin.run(f"LOG OFF TO '{other}'") == (1, f"closed the window on {other}")
    assert admin.run("LOG OFF") == (1, f"closed the window on {target}")
    assert admin.run("LOG OFF") == (0, "no logging window is open")
    mine = [r for r in admin.rows("SELECT * FROM status")
            if r["target"] in (str(target), str(other))]
    assert [r["state"] for r in mine] == ["closed", "closed"]
    assert all(r["remaining_seconds"] == 0 for r in mine)


def test_log_off_all(admin: Admin, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        admin.run(f"LOG ON FOR 1m TO '{tmp_path / name}'")
    admin.run("LOG ON FOR 1m TO RING")
    assert admin.run("log off all") == (4, "closed 4 window(s)")
    assert admin.rows("SELECT * FROM proxy")[-1] == {"name": "logging_windows", "value": "0"}


def test_log_on_an_unwritable_target_says_so(admin: Admin, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _, message = admin.run(f"LOG ON FOR 1m TO '{blocker}/log'")
    assert message.startswith(f"logging to {blocker}/log for 1m00s (slowlog); sink disabled: ")
    assert "Not a directory" in message
    row = admin.rows("SELECT * FROM status")[0]
    assert row["sink_health"].startswith("disabled: Not a directory")


@pytest.mark.parametrize(
    ("statement", "words"),
    [
        ("LOG ON", ["LOG ON needs FOR <duration>"]),
        ("LOG ON TO '/tmp/x'", ["LOG ON needs FOR"]),
        ("LOG ON FOR 5x", ["FOR:", "'5x'"]),
        ("LOG ON FOR", ["a duration", "end of the statement"]),
        ("LOG ON FOR 8d", ["between 1s and 7d"]),
        ("LOG ON FOR 5m SLOWER 3", ["unexpected 'SLOWER'"]),
        ("LOG ON FOR 5m SLOWER THAN fast", ["SLOWER THAN:", "'fast'"]),
        ("LOG ON FOR 5m FORMAT xml", ["FORMAT must be one of slowlog, text, jsonl"]),
        ("LOG ON FOR 5m SAMPLE lots", ["SAMPLE", "'lots'"]),
        ("LOG ON FOR 5m SAMPLE 0", ["sample must be in (0, 1]"]),
        ("LOG ON FOR 5m SAMPLE 2", ["sample must be in (0, 1]"]),
        ("LOG ON FOR 5m CLIENT 'not-an-ip'", ["'not-an-ip'"]),
        ("LOG ON FOR 5m COMMAND frobnicate", ["unknown command 'frobnicate'"]),
        ("LOG ON FOR 5m MATCH '('", ["invalid regular expression '('"]),
        ("LOG ON FOR 5m MAX SIZE huge", ["invalid size 'huge'"]),
        ("LOG ON FOR 5m KEEP some", ["KEEP", "'some'"]),
        ("LOG ON FOR 5m KEEP -1", ["keep cannot be negative"]),
        ("LOG ON FOR 5m USER", ["a user name"]),
        ("LOG ON FOR 5m USER =", ["a user name", "'='"]),
        ("LOG ON FOR 5m TO", ["a file path, STDOUT or RING"]),
        ("LOG ON FOR 5m BOGUS", ["unexpected 'BOGUS' in LOG ON"]),
        ("LOG ON FOR 5m 'unterminated", ["cannot read", "'unterminated"]),
        ("LOG", ["expected LOG ON or LOG OFF"]),
        ("LOG SOMETIMES", ["expected LOG ON or LOG OFF"]),
        ("LOG OFF NOW", ["unexpected 'NOW' in LOG OFF"]),
    ],
)
def test_log_syntax_errors(admin: Admin, statement: str, words: list[str]) -> None:
    code, message = admin.error(statement)
    assert code == 1064, message
    for word in words:
        assert word in message, message
    assert all(r["state"] != "open" for r in admin.rows("SELECT * FROM status"))


def test_log_off_an_unknown_target(admin: Admin, tmp_path: Path) -> None:
    admin.run(f"LOG ON FOR 1m TO '{tmp_path / 'one'}'")
    admin.run(f"LOG ON FOR 1m TO '{tmp_path / 'two'}'")
    code, message = admin.error("LOG OFF TO '/no/such/window'")
    assert code == 1105
    assert "no window on '/no/such/window'" in message


# --- what the language does not know ---------------------------------------------------------


@pytest.mark.parametrize("statement", ["FROBNICATE", "DROP TABLE help", "show processlist",
                                       "INSERT INTO settings VALUES (1)", "KILL 3"])
def test_unknown_commands_name_help(admin: Admin, statement: str) -> None:
    code, message = admin.error(statement)
    assert code == 1047
    word = statement.split()[0]
    assert message.startswith(f"unknown command '{word}'")
    assert "SELECT * FROM help" in message


@pytest.mark.parametrize(
    ("statement", "code", "words"),
    [
        ("SELECT * FROM nosuch", 1146, ["unknown table 'nosuch'", "help", "status", "events"]),
        ("SELECT * FRM help", 1064, ["expected FROM", "'FRM'"]),
        ("SELECT id FROM help", 1064, ["expected *", "'id'"]),
        ("SELECT * FROM help extra", 1064, ["unexpected 'extra'"]),
        ("SELECT * FROM", 1064, ["a table name", "end of the statement"]),
        ("SELECT", 1064, ["expected *", "end of the statement"]),
        ("SELECT * FROM status LIMIT", 1064, ["a number", "end of the statement"]),
        (";", 1064, ["empty statement", "SELECT * FROM help"]),
    ],
)
def test_syntax_errors_name_the_bad_word(admin: Admin, statement: str, code: int,
                                         words: list[str]) -> None:
    got, message = admin.error(statement)
    assert got == code, message
    for word in words:
        assert word in message, message


def test_limit_on_tables(admin: Admin) -> None:
    assert len(admin.rows("SELECT * FROM help LIMIT 2")) == 2
    assert len(admin.rows("SELECT * FROM settings LIMIT 0")) == 0
