"""Passwords in statements never reach a sink: every variant of the syntax."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import pytest

from mysqlproxy.hooks import AddonManager
from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.querylog import formats
from mysqlproxy.querylog.redact import REDACTED, mentions_password, redact_passwords
from mysqlproxy.querylog.window import QueryLog, WindowSpec, redact_event
from mysqlproxy.testing.events import make_query_event

SECRET = "s3cr3t-Pw"

# (statement with the secret in it, what it must become)
VARIANTS = [
    (
        f"CREATE USER 'bob'@'%' IDENTIFIED BY '{SECRET}'",
        "CREATE USER 'bob'@'%' IDENTIFIED BY <redacted>",
    ),
    (f"ALTER USER bob IDENTIFIED BY '{SECRET}'", "ALTER USER bob IDENTIFIED BY <redacted>"),
    (
        f"ALTER USER IF EXISTS bob@localhost IDENTIFIED BY '{SECRET}' PASSWORD EXPIRE",
        "ALTER USER IF EXISTS bob@localhost IDENTIFIED BY <redacted> PASSWORD EXPIRE",
    ),
    (
        f"CREATE USER bob IDENTIFIED BY PASSWORD '*{SECRET}'",
        "CREATE USER bob IDENTIFIED BY PASSWORD <redacted>",
    ),
    (
        f"CREATE USER bob IDENTIFIED WITH mysql_native_password BY '{SECRET}'",
        "CREATE USER bob IDENTIFIED WITH mysql_native_password BY <redacted>",
    ),
    (
        f"CREATE USER bob IDENTIFIED WITH 'caching_sha2_password' BY '{SECRET}'",
        "CREATE USER bob IDENTIFIED WITH 'caching_sha2_password' BY <redacted>",
    ),
    (
        f"CREATE USER bob IDENTIFIED WITH `sha256_password` BY '{SECRET}'",
        "CREATE USER bob IDENTIFIED WITH `sha256_password` BY <redacted>",
    ),
    (
        f"CREATE USER bob IDENTIFIED WITH mysql_native_password AS '*{SECRET}'",
        "CREATE USER bob IDENTIFIED WITH mysql_native_password AS <redacted>",
    ),
    (
        f"ALTER USER bob IDENTIFIED WITH caching_sha2_password BY '{SECRET}' "
        "RETAIN CURRENT PASSWORD",
        "ALTER USER bob IDENTIFIED WITH caching_sha2_password BY <redacted> "
        "RETAIN CURRENT PASSWORD",
    ),
    # MariaDB: IDENTIFIED VIA plugin USING PASSWORD('x') / USING 'hash' / AS 'hash'
    (
        f"CREATE USER bob IDENTIFIED VIA mysql_native_password USING PASSWORD('{SECRET}')",
        "CREATE USER bob IDENTIFIED VIA mysql_native_password USING PASSWORD(<redacted>)",
    ),
    (
        f"CREATE USER bob IDENTIFIED VIA ed25519 USING PASSWORD('{SECRET}') OR unix_socket",
        "CREATE USER bob IDENTIFIED VIA ed25519 USING PASSWORD(<redacted>) OR unix_socket",
    ),
    (
        f"CREATE USER bob IDENTIFIED VIA ed25519 USING PASSWORD('{SECRET}') "
        f"OR mysql_native_password USING PASSWORD('{SECRET}2')",
        "CREATE USER bob IDENTIFIED VIA ed25519 USING PASSWORD(<redacted>) "
        "OR mysql_native_password USING PASSWORD(<redacted>)",
    ),
    (
        f"CREATE USER bob IDENTIFIED VIA mysql_native_password USING '*{SECRET}'",
        "CREATE USER bob IDENTIFIED VIA mysql_native_password USING <redacted>",
    ),
    (
        f"CREATE USER bob IDENTIFIED VIA ed25519 AS '{SECRET}'",
        "CREATE USER bob IDENTIFIED VIA ed25519 AS <redacted>",
    ),
    # SET PASSWORD [FOR user] = PASSWORD('x') | = 'x' | = OLD_PASSWORD('x')
    (
        f"SET PASSWORD FOR 'bob'@'%' = PASSWORD('{SECRET}')",
        "SET PASSWORD FOR 'bob'@'%' = PASSWORD(<redacted>)",
    ),
    (f"SET PASSWORD = PASSWORD('{SECRET}')", "SET PASSWORD = PASSWORD(<redacted>)"),
    (f"SET PASSWORD FOR bob = '{SECRET}'", "SET PASSWORD FOR bob = <redacted>"),
    (f"SET PASSWORD='{SECRET}'", "SET PASSWORD=<redacted>"),
    (
        f"SET PASSWORD FOR bob@localhost = OLD_PASSWORD('{SECRET}')",
        "SET PASSWORD FOR bob@localhost = OLD_PASSWORD(<redacted>)",
    ),
    (
        f"SET PASSWORD FOR 'we=ird'@'%' = '{SECRET}'",
        "SET PASSWORD FOR 'we=ird'@'%' = <redacted>",
    ),
    # GRANT ... IDENTIFIED BY (MariaDB, MySQL 5.7)
    (
        f"GRANT ALL ON *.* TO bob IDENTIFIED BY '{SECRET}'",
        "GRANT ALL ON *.* TO bob IDENTIFIED BY <redacted>",
    ),
    (
        f"GRANT USAGE ON *.* TO 'bob'@'%' IDENTIFIED BY PASSWORD '*{SECRET}'",
        "GRANT USAGE ON *.* TO 'bob'@'%' IDENTIFIED BY PASSWORD <redacted>",
    ),
    # PASSWORD() and OLD_PASSWORD() anywhere
    (f"SELECT PASSWORD('{SECRET}')", "SELECT PASSWORD(<redacted>)"),
    (f"SELECT old_password( '{SECRET}' ) AS h", "SELECT old_password( <redacted> ) AS h"),
    (
        f"UPDATE mysql.user SET authentication_string = PASSWORD('{SECRET}') WHERE 1",
        "UPDATE mysql.user SET authentication_string = PASSWORD(<redacted>) WHERE 1",
    ),
    # quoting: backslash escapes, doubled quotes, double quotes, introducers, hex
    (
        "CREATE USER bob IDENTIFIED BY 's3cr\\'3t-\\\\Pw'",
        "CREATE USER bob IDENTIFIED BY <redacted>",
    ),
    ("CREATE USER bob IDENTIFIED BY 's3cr''3t-Pw'", "CREATE USER bob IDENTIFIED BY <redacted>"),
    (f'CREATE USER bob IDENTIFIED BY "{SECRET}"', "CREATE USER bob IDENTIFIED BY <redacted>"),
    ('CREATE USER bob IDENTIFIED BY "s3cr""3t-Pw"', "CREATE USER bob IDENTIFIED BY <redacted>"),
    ('SET PASSWORD = PASSWORD("s3cr\\"3t-Pw")', "SET PASSWORD = PASSWORD(<redacted>)"),
    (
        f"CREATE USER bob IDENTIFIED BY _utf8mb4'{SECRET}'",
        "CREATE USER bob IDENTIFIED BY <redacted>",
    ),
    (
        "CREATE USER bob IDENTIFIED BY X'73336372337426'",
        "CREATE USER bob IDENTIFIED BY <redacted>",
    ),
    # several users in one statement
    (
        f"CREATE USER a IDENTIFIED BY '{SECRET}', b@'%' IDENTIFIED BY '{SECRET}2'",
        "CREATE USER a IDENTIFIED BY <redacted>, b@'%' IDENTIFIED BY <redacted>",
    ),
    # multi-line and lower case
    (
        f"CREATE USER bob\n  IDENTIFIED\n  BY\n  '{SECRET}'\n  PASSWORD EXPIRE",
        "CREATE USER bob\n  IDENTIFIED\n  BY\n  <redacted>\n  PASSWORD EXPIRE",
    ),
    (f"create user bob identified by '{SECRET}'", "create user bob identified by <redacted>"),
    (f"set password for bob = password('{SECRET}')", "set password for bob = password(<redacted>)"),
    (
        f"grant select on db.* to bob identified\tby\r\n'{SECRET}'",
        "grant select on db.* to bob identified\tby\r\n<redacted>",
    ),
    # replication credentials
    (
        "CHANGE MASTER TO MASTER_HOST='db-1', MASTER_USER='repl', "
        f"MASTER_PASSWORD='{SECRET}', MASTER_PORT=3306",
        "CHANGE MASTER TO MASTER_HOST='db-1', MASTER_USER='repl', "
        "MASTER_PASSWORD=<redacted>, MASTER_PORT=3306",
    ),
    (
        f"change master to\n  master_password = '{SECRET}'",
        "change master to\n  master_password = <redacted>",
    ),
    (
        f"CHANGE REPLICATION SOURCE TO SOURCE_PASSWORD = '{SECRET}'",
        "CHANGE REPLICATION SOURCE TO SOURCE_PASSWORD = <redacted>",
    ),
    (
        f"START SLAVE USER='repl' PASSWORD='{SECRET}'",
        "START SLAVE USER='repl' PASSWORD=<redacted>",
    ),
    # MySQL 8: the current password after REPLACE is a password too
    (
        f"ALTER USER bob IDENTIFIED BY '{SECRET}' REPLACE '{SECRET}-old'",
        "ALTER USER bob IDENTIFIED BY <redacted> REPLACE <redacted>",
    ),
    (
        f"SET PASSWORD = '{SECRET}' REPLACE '{SECRET}-old'",
        "SET PASSWORD = <redacted> REPLACE <redacted>",
    ),
]


@pytest.mark.parametrize(("query", "expected"), VARIANTS, ids=[q for q, _ in VARIANTS])
def test_each_password_variant_is_redacted(query: str, expected: str) -> None:
    redacted = redact_passwords(query)
    assert redacted == expected
    assert "s3cr" not in redacted


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM orders WHERE id = 1",
        "SELECT password FROM users WHERE id = 7",
        "UPDATE users SET password_hash = 'abc' WHERE id = 7",
        "SELECT 'identified by' AS phrase",
        "CREATE USER bob IDENTIFIED BY RANDOM PASSWORD",
        "ALTER USER bob PASSWORD EXPIRE INTERVAL 90 DAY",
        "CREATE USER bob IDENTIFIED VIA unix_socket",
        "SELECT 'caf\\xc3' AS x",  # backslash-escaped non-UTF-8 text
        "",
    ],
)
def test_queries_without_a_password_are_unchanged(query: str) -> None:
    assert redact_passwords(query) == query


def test_redaction_is_idempotent() -> None:
    for query, expected in VARIANTS:
        assert redact_passwords(redact_passwords(query)) == expected


def test_mentions_password_is_the_cheap_precheck() -> None:
    assert mentions_password("create user x identified by 'y'")
    assert mentions_password("SELECT PASSWORD('x')")
    assert not mentions_password("SELECT 1")


# --- prepared statements ----------------------------------------------------------

PREPARED = [
    ("CREATE USER ? IDENTIFIED BY ?", ("bob", SECRET)),
    ("SET PASSWORD FOR ? = ?", ("bob", SECRET)),
    ("SET PASSWORD = ?", (20240101,)),  # a number is a password too when it is one
    ("SELECT PASSWORD(?)", (SECRET.encode(),)),
    ("INSERT INTO accounts (login, password) VALUES (?, ?)", ("bob", SECRET)),
    ("ALTER USER bob IDENTIFIED BY ?", (b"\xff" + SECRET.encode(),)),
]


def _prepared_event(statement: str, params: tuple[Any, ...]) -> QueryEvent:
    return make_query_event(
        command=Command.COM_STMT_EXECUTE, query=statement, statement_id=9, params=params
    )


def _secret_texts(params: tuple[object, ...]) -> list[str]:
    texts = []
    for value in params[1:] if len(params) > 1 else params:
        if isinstance(value, bytes):
            texts += [value.hex(), value.decode("utf-8", "replace")]
        texts.append(str(value))
    texts.append(SECRET)
    return texts


@pytest.mark.parametrize(("statement", "params"), PREPARED)
def test_redact_event_replaces_every_parameter_of_a_password_statement(
    statement: str, params: tuple[object, ...]
) -> None:
    event = _prepared_event(statement, params)
    cleaned = redact_event(event)
    assert cleaned.params == tuple(REDACTED for _ in params)
    assert cleaned.query == statement  # placeholders carry no secret


def test_redact_event_keeps_events_without_passwords_as_they_are() -> None:
    event = _prepared_event("SELECT * FROM t WHERE a = ?", ("x",))
    assert redact_event(event) is event
    plain = make_query_event(query="SELECT 1")
    assert redact_event(plain) is plain
    text = make_query_event(query=f"SET PASSWORD = '{SECRET}'")
    assert redact_event(text).query == "SET PASSWORD = <redacted>"


@pytest.mark.parametrize(("statement", "params"), PREPARED)
@pytest.mark.parametrize("fmt", ["slowlog", "text", "jsonl"])
def test_formats_never_show_a_prepared_password(
    statement: str, params: tuple[object, ...], fmt: str
) -> None:
    # Without the QueryLog in front (formats called directly), as well as with it.
    event = _prepared_event(statement, params)
    if fmt == "slowlog":
        out = formats.format_slowlog(event, None)
    elif fmt == "text":
        out = formats.format_text(event)
    else:
        out = formats.format_jsonl(event)
        record = json.loads(out)
        assert record["params"] == [REDACTED] * len(params)
        assert record["prepared"] is True
    for secret in _secret_texts(params):
        assert secret not in out, (secret, out)


@pytest.mark.parametrize("fmt", ["slowlog", "text", "jsonl"])
def test_the_query_log_redacts_before_sinks_and_the_ring_buffer(fmt: str) -> None:
    out = io.StringIO()
    clock = [100.0]
    query_log = QueryLog(AddonManager(), clock=lambda: clock[0], stdout=out)
    query_log.open(WindowSpec(duration=60, target="stdout", format=fmt))
    query_log.open(WindowSpec(duration=60, target="ring"))
    events = [make_query_event(query=q) for q, _ in VARIANTS]
    events += [_prepared_event(s, p) for s, p in PREPARED]
    for event in events:
        query_log.observe(event)
    query_log.close_all()
    for window in query_log.closed_windows:
        if window.writer is not None:
            assert window.writer.wait_closed(5)
            assert window.written == len(events)
    text = out.getvalue()
    assert text.count(REDACTED) >= len(events)
    assert "s3cr" not in text
    assert SECRET.encode().hex() not in text
    assert "20240101" not in text
    ring = query_log.recent(0, limit=1000)
    assert len(ring) == len(events)
    for _, event in ring:
        assert "s3cr" not in event.query
        assert all(p == REDACTED for p in event.params or ())


HOSTILE = [
    "SET PASSWORD FOR " + "'" * 10_001 + " = 'x'",  # a quote run splits exponentially
    "SET PASSWORD FOR x " * 40_000,  # each start scanning to the end: quadratic
    "SET PASSWORD " + "'a" * 200_001,
    "IDENTIFIED BY " + "'" * 200_001,
    "PASSWORD(" + "\\" * 200_001,
]


def test_redaction_time_stays_bounded_on_hostile_statements() -> None:
    # Redaction runs on the event loop: a crafted statement must not stall the proxy.
    # A subprocess, so that a runaway regex fails the test instead of hanging it.
    script = (
        "import json, sys, time\n"
        "from mysqlproxy.querylog.redact import redact_passwords\n"
        "for q in json.load(sys.stdin):\n"
        "    started = time.perf_counter()\n"
        "    redact_passwords(q)\n"
        "    print(round(time.perf_counter() - started, 3))\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(HOSTILE),
            capture_output=True,
            text=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("redaction took more than 20 s on a hostile statement")
    assert result.returncode == 0, result.stderr
    times = [float(t) for t in result.stdout.split()]
    assert len(times) == len(HOSTILE)
    assert max(times) < 5, times
