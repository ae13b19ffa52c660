"""Exact output of each format, prepared statements, and text that must stay valid."""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import decimal
import json
from typing import Any

import pytest

from mysqlproxy.protocol.constants import Command, ServerStatus
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.querylog import formats
from mysqlproxy.querylog.sinks import Formatter
from mysqlproxy.testing.events import make_query_event

# 2024-05-01 10:15:30.123456 UTC: the slow log writes UTC, so tests do not depend on TZ.
T0 = calendar.timegm((2024, 5, 1, 10, 15, 30)) + 0.123456


def make_event(**changes: Any) -> QueryEvent:
    changes.setdefault("started_at", T0)
    return make_query_event(**changes)


def prepared(statement: str, *params: Any, **changes: Any) -> QueryEvent:
    return make_event(
        command=Command.COM_STMT_EXECUTE,
        query=statement,
        statement_id=5,
        params=tuple(params),
        **changes,
    )


SLOW_HEAD = (
    "# Time: 2024-05-01T10:15:30.123456Z\n"
    "# User@Host: app[app] @  [127.0.0.1]  Id: 42\n"
    "# Schema: shop\n"
    "# Query_time: 0.012345  Lock_time: 0.000000  Rows_sent: 3  Rows_examined: 0  "
    "Rows_affected: 0  Bytes_sent: 300  Bytes_received: 30\n"
)


# --- slow log ---------------------------------------------------------------------


def test_slowlog_entry_exact() -> None:
    assert formats.format_slowlog(make_event(), None) == (
        SLOW_HEAD + "# Errno: 0  Warnings: 0  Command: COM_QUERY  Prepared: No\n"
        "use shop;\n"
        "SET timestamp=1714558530;\n"
        "SELECT *\n"
        "  FROM orders;\n"
    )


def test_slowlog_use_only_when_the_schema_changes() -> None:
    same = formats.format_slowlog(make_event(), "shop")
    assert "use " not in same
    other = formats.format_slowlog(make_event(schema="crm"), "shop")
    assert "# Schema: crm\n" in other
    assert "\nuse crm;\nSET timestamp=" in other
    none = formats.format_slowlog(make_event(schema=None), "shop")
    assert "Schema" not in none and "use " not in none


def test_formatter_tracks_the_schema_between_entries_and_resets_per_file() -> None:
    formatter = Formatter("slowlog", header="HEADER\n")
    assert formatter.start_file() == "HEADER\n"
    schemas = ["shop", "shop", None, "shop", "crm", "crm", "shop"]
    uses = [
        [ln for ln in formatter(make_event(schema=s)).splitlines() if ln.startswith("use ")]
        for s in schemas
    ]
    assert uses == [["use shop;"], [], [], [], ["use crm;"], [], ["use shop;"]]
    formatter.start_file()  # a new file (rotation, reopen) knows no schema yet
    assert "use shop;" in formatter(make_event(schema="shop"))
    assert Formatter("text", header="HEADER\n").start_file() == ""
    assert Formatter("jsonl", header="HEADER\n").start_file() == ""


def test_slowlog_fields_a_proxy_knows() -> None:
    entry = formats.format_slowlog(
        make_event(
            duration_us=2_503_112,
            rows_sent=0,
            rows_affected=17,
            bytes_sent=11,
            bytes_received=1234,
            error_code=1213,
            error_message="Deadlock found",
            warnings=2,
            thread_id=9001,
            user="batch",
            client_address="[2001:db8::7]:61000",
            query="UPDATE orders SET state = 'paid' WHERE id = 5",
        ),
        "shop",
    )
    assert entry.splitlines()[1:5] == [
        "# User@Host: batch[batch] @  [2001:db8::7]  Id: 9001",
        "# Schema: shop",
        "# Query_time: 2.503112  Lock_time: 0.000000  Rows_sent: 0  Rows_examined: 0  "
        "Rows_affected: 17  Bytes_sent: 11  Bytes_received: 1234",
        "# Errno: 1213  Warnings: 2  Command: COM_QUERY  Prepared: No",
    ]


def test_slowlog_unix_client_host() -> None:
    entry = formats.format_slowlog(make_event(client_address="unix:/run/p.sock"), None)
    assert "# User@Host: app[app] @  [unix]  Id: 42\n" in entry
    entry = formats.format_slowlog(make_event(client_address="unix"), None)
    assert "# User@Host: app[app] @  [unix]  Id: 42\n" in entry


@pytest.mark.parametrize(
    ("command", "argument", "line"),
    [
        (Command.COM_PING, "", "# administrator command: Ping;"),
        (Command.COM_QUIT, "", "# administrator command: Quit;"),
        (Command.COM_INIT_DB, "crm", "# administrator command: Init DB;"),
        (Command.COM_FIELD_LIST, "orders", "# administrator command: Field list;"),
        (Command.COM_STMT_CLOSE, "", "# administrator command: Stmt close;"),
        (Command.COM_STATISTICS, "", "# administrator command: Statistics;"),
        (Command.COM_RESET_CONNECTION, "", "# administrator command: Reset connection;"),
        (0x99, "", "# administrator command: Unknown 0x99;"),
    ],
)
def test_slowlog_administrator_commands(command: int, argument: str, line: str) -> None:
    entry = formats.format_slowlog(make_event(command=command, query=argument), "shop")
    assert entry.endswith("SET timestamp=1714558530;\n" + line + "\n")


def test_slowlog_header_is_what_pt_query_digest_skips() -> None:
    header = formats.format_slowlog_header("1.2.3", "127.0.0.1:3307")
    lines = header.splitlines()
    assert lines[0] == "mysqlproxy, Version: 1.2.3. started with:"
    assert lines[1].startswith("Tcp port: 3307  Unix socket: ")
    assert lines[2] == "Time                 Id Command    Argument"
    # pt-query-digest drops a "Tcp port:" line only when a port number follows.
    for listen in ["[::1]:3307", "unix:/run/p.sock, 0.0.0.0:3307", "unix:/run/p.sock"]:
        tcp_line = formats.format_slowlog_header("1", listen).splitlines()[1]
        assert tcp_line.split(":", 1)[1].strip()[0].isdigit(), tcp_line
    assert "Unix socket: /run/p.sock" in formats.format_slowlog_header("1", "unix:/run/p.sock")


def test_slowlog_lines_starting_with_hash_cannot_start_an_entry() -> None:
    entry = formats.format_slowlog(
        make_event(query="# Time: 2099-01-01T00:00:00Z\nSELECT 1\n# a comment;\n#x"), None
    )
    body = entry.split("SET timestamp=1714558530;\n", 1)[1]
    assert body == " # Time: 2099-01-01T00:00:00Z\nSELECT 1\n # a comment;\n #x;\n"


@pytest.mark.parametrize(
    ("query", "written"),
    [
        ("SELECT 1", "SELECT 1;\n"),
        ("SELECT 1;", "SELECT 1;\n"),
        ("SELECT 1;\n", "SELECT 1;\n"),  # a trailing newline must not hide the separator
        ("SELECT 1 ;  \n\n", "SELECT 1 ;\n"),
        ("SELECT 1\r\n", "SELECT 1;\n"),
        ("SELECT 1 -- done", "SELECT 1 -- done;\n"),
        ("", ";\n"),
    ],
)
def test_slowlog_statement_ends_with_exactly_one_semicolon_newline(
    query: str, written: str
) -> None:
    entry = formats.format_slowlog(make_event(query=query), "shop")
    assert entry.endswith("SET timestamp=1714558530;\n" + written)


@pytest.mark.parametrize(
    "query", ["use crm", "SET timestamp=5", "SET insert_id=10", "SET last_insert_id=3"]
)
def test_slowlog_query_that_looks_like_a_meta_line_stays_the_query(query: str) -> None:
    # pt-query-digest reads a first line starting with `use ` or `SET timestamp` as
    # the entry's meta data, and then finds no query at all.
    entry = formats.format_slowlog(make_event(query=query), "shop")
    assert entry.endswith(f"SET timestamp=1714558530;\n {query};\n")
    # Upper case is not a meta line for pt-query-digest: no space needed.
    upper = formats.format_slowlog(make_event(query=query.upper()), "shop")
    assert upper.endswith(f"SET timestamp=1714558530;\n{query.upper()};\n")


def test_slowlog_entries_of_odd_queries_stay_separate() -> None:
    formatter = Formatter("slowlog")
    queries = [
        "SELECT 1;\n",
        "SELECT 'a;\n#b'",
        "SELECT 'caf\\xe9 \\xff' AS bytes",  # non-UTF-8, backslash-escaped by the tracker
        "SELECT\n# comment line\n2",
        "use crm",
    ]
    log = "".join(formatter(make_event(query=q)) for q in queries)
    # pt-query-digest's record separator
    entries = log.split(";\n#")
    assert len(entries) == len(queries)
    assert log.count("\n# Time: ") + log.startswith("# Time: ") == len(queries)


# --- prepared statements ----------------------------------------------------------

PARAM_LITERALS = [
    (None, "NULL"),
    (0, "0"),
    (-42, "-42"),
    (18446744073709551615, "18446744073709551615"),
    (1.5, "1.5"),
    (-0.1, "-0.1"),
    (1e20, "1e+20"),
    (decimal.Decimal("3.10"), "3.10"),
    (decimal.Decimal("-0.000001"), "-0.000001"),
    ("plain", "'plain'"),
    ("it's", "'it\\'s'"),
    ("back\\slash", "'back\\\\slash'"),
    ("\\'", "'\\\\\\''"),
    ("two\nlines", "'two\nlines'"),
    ("", "''"),
    ("caf\u00e9", "'caf\u00e9'"),
    ("caf\u00e9".encode(), "'caf\u00e9'"),  # bytes that are UTF-8 read as text
    (b"it's", "'it\\'s'"),
    (b"\xff\x00\x10", "X'ff0010'"),  # bytes that are not: hex
    (b"", "''"),
    (datetime.date(2024, 1, 2), "'2024-01-02'"),
    (datetime.datetime(2024, 1, 2, 3, 4, 5), "'2024-01-02 03:04:05'"),
    (datetime.datetime(2024, 1, 2, 3, 4, 5, 6), "'2024-01-02 03:04:05.000006'"),
    (datetime.timedelta(hours=1, minutes=2, seconds=3), "'01:02:03'"),
    (datetime.timedelta(days=2, seconds=5, microseconds=120), "'48:00:05.000120'"),
    (datetime.timedelta(0), "'00:00:00'"),
    (-datetime.timedelta(hours=1), "'-01:00:00'"),
    (-datetime.timedelta(hours=30, microseconds=5), "'-30:00:00.000005'"),
    (datetime.timedelta(days=-1, seconds=3600), "'-23:00:00'"),
]


@pytest.mark.parametrize(
    ("value", "literal"), PARAM_LITERALS, ids=[repr(v) for v, _ in PARAM_LITERALS]
)
def test_sql_literal(value: Any, literal: str) -> None:
    assert formats.sql_literal(value) == literal


def test_every_parameter_type_interpolated_in_order() -> None:
    values = tuple(v for v, _ in PARAM_LITERALS)
    statement = "INSERT INTO t VALUES (" + ", ".join("?" for _ in values) + ")"
    expected = "INSERT INTO t VALUES (" + ", ".join(lit for _, lit in PARAM_LITERALS) + ")"
    assert formats.interpolate(statement, values) == expected
    event = prepared(statement, *values)
    assert formats.loggable_query(event) == "/* prepared */ " + expected


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT ?, '?', ?", "SELECT 1, '?', 2"),
        ('SELECT ?, "?", ?', 'SELECT 1, "?", 2'),
        ("SELECT `?`, ?, ?", "SELECT `?`, 1, 2"),
        ("SELECT 'it\\'s ?', ?, ?", "SELECT 'it\\'s ?', 1, 2"),
        ("SELECT 'it''s ?', ?, ?", "SELECT 'it''s ?', 1, 2"),
        ("SELECT `a``?`, ?, ?", "SELECT `a``?`, 1, 2"),
        ("SELECT /* ? */ ?, ?", "SELECT /* ? */ 1, 2"),
        ("SELECT ?, ? /* ? unterminated", "SELECT 1, 2 /* ? unterminated"),
        ("SELECT ? -- ?\n, ?", "SELECT 1 -- ?\n, 2"),
        ("SELECT ? --\t?\n, ?", "SELECT 1 --\t?\n, 2"),  # any blank after -- starts one
        ("SELECT ? # ?\n, ?", "SELECT 1 # ?\n, 2"),
        ("SELECT ?--?", "SELECT 1--2"),  # `--` without a blank is two minus signs
        ("SELECT ?, ?, ?", "SELECT 1, 2, ?"),  # fewer parameters than placeholders
        ("SELECT ?", "SELECT 1"),  # more parameters than placeholders
        ("SELECT 'unterminated ?", "SELECT 'unterminated ?"),
    ],
)
def test_placeholders_in_strings_and_comments_are_not_replaced(
    statement: str, expected: str
) -> None:
    assert formats.interpolate(statement, (1, 2)) == expected


def test_prepared_statements_are_marked_in_every_format() -> None:
    event = prepared("SELECT * FROM orders WHERE id = ? AND note = ?", 7, "it's")
    logged = "/* prepared */ SELECT * FROM orders WHERE id = 7 AND note = 'it\\'s'"
    assert formats.loggable_query(event) == logged
    slow = formats.format_slowlog(event, "shop")
    assert "  Command: COM_STMT_EXECUTE  Prepared: Yes\n" in slow
    assert slow.endswith("SET timestamp=1714558530;\n" + logged + ";\n")
    assert formats.format_text(event).endswith(
        " 42 -- /* prepared */ SELECT * FROM orders WHERE id = 7 AND note = 'it\\\\'s'"
        " -- 12.345 ms\n"
    )
    record = json.loads(formats.format_jsonl(event))
    assert record["prepared"] is True
    assert record["statement_id"] == 5
    assert record["query"] == "SELECT * FROM orders WHERE id = ? AND note = ?"
    assert record["logged_query"] == logged
    assert record["params"] == [7, "it's"]
    assert record["command"] == "COM_STMT_EXECUTE"


def test_prepared_statement_without_parameters() -> None:
    event = prepared("SELECT NOW()")
    assert formats.loggable_query(event) == "/* prepared */ SELECT NOW()"
    assert json.loads(formats.format_jsonl(event))["params"] == []


def test_jsonl_parameter_values() -> None:
    event = prepared(
        "CALL p(?, ?, ?, ?, ?, ?, ?, ?)",
        None,
        decimal.Decimal("1.10"),
        b"\xff\xfe",
        "caf\u00e9".encode(),
        datetime.date(2024, 1, 2),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        -datetime.timedelta(hours=1, microseconds=1),
        2.25,
    )
    assert json.loads(formats.format_jsonl(event))["params"] == [
        None,
        "1.10",
        {"hex": "fffe"},
        "caf\u00e9",
        "2024-01-02",
        "2024-01-02T03:04:05.000006",
        "-01:00:00.000001",
        2.25,
    ]


def test_other_prepared_commands_are_named() -> None:
    prepare = make_event(command=Command.COM_STMT_PREPARE, query="SELECT ?")
    assert formats.loggable_query(prepare) == "/* prepare */ SELECT ?"
    assert formats.format_slowlog(prepare, "shop").endswith("\n/* prepare */ SELECT ?;\n")
    init_db = make_event(command=Command.COM_INIT_DB, query="crm")
    assert formats.loggable_query(init_db) == "/* COM_INIT_DB */ crm"
    ping = make_event(command=Command.COM_PING, query="")
    assert formats.loggable_query(ping) == "/* COM_PING */"


# --- text -------------------------------------------------------------------------


def test_text_line_exact() -> None:
    # make_query_event's default start is 2026-11-29 08:05:01.25 local time.
    assert formats.format_text(make_query_event()) == (
        "2026-11-29 08:05:01 42 -- SELECT *\\n  FROM orders -- 12.345 ms\n"
    )


def test_text_line_with_an_error_and_administrator_commands() -> None:
    failed = make_query_event(query="SELECT * FROM nope", error_code=1146, duration_us=800)
    assert formats.format_text(failed) == (
        "2026-11-29 08:05:01 42 -- SELECT * FROM nope -- 0.800 ms -- error 1146\n"
    )
    ping = make_query_event(command=Command.COM_PING, query="", duration_us=25)
    assert formats.format_text(ping) == "2026-11-29 08:05:01 42 -- /* COM_PING */ -- 0.025 ms\n"
    init_db = make_query_event(command=Command.COM_INIT_DB, query="crm", duration_us=1)
    assert formats.format_text(init_db) == (
        "2026-11-29 08:05:01 42 -- /* COM_INIT_DB */ crm -- 0.001 ms\n"
    )


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("SELECT 1\nFROM t", "SELECT 1\\nFROM t"),
        ("SELECT 1\r\nFROM t", "SELECT 1\\r\\nFROM t"),
        ("SELECT 'a\\nb'", "SELECT 'a\\\\nb'"),  # a backslash-n in the SQL is not a newline
        ("SELECT '\\xff\\xfe'", "SELECT '\\\\xff\\\\xfe'"),  # non-UTF-8, escaped
        ("SELECT 'caf\u00e9'", "SELECT 'caf\u00e9'"),
    ],
)
def test_text_stays_one_line_and_reversible(query: str, shown: str) -> None:
    line = formats.format_text(make_query_event(query=query))
    assert line.count("\n") == 1 and "\r" not in line
    assert f" 42 -- {shown} -- 12.345 ms\n" in line
    logged = line.split(" -- ", 1)[1].rsplit(" -- ", 1)[0]
    unescaped = (
        logged.replace("\\\\", "\0").replace("\\n", "\n").replace("\\r", "\r").replace("\0", "\\")
    )
    assert unescaped == query


# --- jsonl ------------------------------------------------------------------------

_JSON_NAMES = {"client_address": "client", "backend_address": "backend"}


def test_jsonl_exact() -> None:
    record = json.loads(formats.format_jsonl(make_event()))
    assert record == {
        "time": "2024-05-01T10:15:30.123456+00:00",
        "started_at": T0,
        "connection_id": 7,
        "thread_id": 42,
        "client": "127.0.0.1:50000",
        "backend": "127.0.0.1:3306",
        "user": "app",
        "schema": "shop",
        "command": "COM_QUERY",
        "query": "SELECT *\n  FROM orders",
        "logged_query": "SELECT *\n  FROM orders",
        "prepared": False,
        "statement_id": None,
        "params": None,
        "first_byte_us": 1000,
        "duration_us": 12345,
        "rows_sent": 3,
        "rows_affected": 0,
        "insert_id": 0,
        "warnings": 0,
        "error_code": 0,
        "error_message": "",
        "sql_state": "",
        "bytes_received": 30,
        "bytes_sent": 300,
        "status": int(ServerStatus.SERVER_STATUS_AUTOCOMMIT),
        "no_index_used": False,
        "no_good_index_used": False,
        "in_transaction": False,
        "result_sets": 1,
        "truncated": False,
        "query_attributes": None,
    }


def test_jsonl_query_attributes_as_pairs() -> None:
    attributes = (("trace", "abc"), ("n", 3), ("n", None), ("blob", b"\xff"))
    record = json.loads(formats.format_jsonl(make_event(query_attributes=attributes)))
    assert record["query_attributes"] == [
        ["trace", "abc"], ["n", 3], ["n", None], ["blob", {"hex": "ff"}]
    ]


def test_jsonl_has_every_query_event_field() -> None:
    record = json.loads(formats.format_jsonl(make_event()))
    for field in dataclasses.fields(QueryEvent):
        assert _JSON_NAMES.get(field.name, field.name) in record, field.name


def test_jsonl_errors_flags_and_truncation() -> None:
    status = (
        ServerStatus.SERVER_STATUS_IN_TRANS
        | ServerStatus.SERVER_QUERY_NO_INDEX_USED
        | ServerStatus.SERVER_QUERY_NO_GOOD_INDEX_USED
    )
    record = json.loads(
        formats.format_jsonl(
            make_event(
                error_code=1064,
                error_message="You have an error in your SQL syntax",
                sql_state="42000",
                status=status,
                truncated=True,
                schema=None,
            )
        )
    )
    assert (record["error_code"], record["sql_state"]) == (1064, "42000")
    assert record["error_message"] == "You have an error in your SQL syntax"
    assert record["in_transaction"] and record["no_index_used"] and record["no_good_index_used"]
    assert record["status"] == int(status)
    assert record["truncated"] is True
    assert record["schema"] is None


@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1\nFROM t\r\nWHERE a = '\"'",
        "SELECT '\\xff\\xfe' AS raw",
        "SELECT 'caf\u00e9 \u2028 \U0001f600'",
        "SELECT '\0\x01\x1f'",
    ],
)
def test_jsonl_is_one_valid_line(query: str) -> None:
    line = formats.format_jsonl(make_event(query=query))
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line)["query"] == query
