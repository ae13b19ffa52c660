"""Real exchanges recorded from real clients and MariaDB (see captures/make_captures.py):
the tracker follows them to the end, forwards them unchanged, and reports what the
scripts that produced them did. Only facts fixed by those scripts are asserted (row
counts, errors, parameters), never values the server chose (thread ids, scrambles)."""

from __future__ import annotations

import datetime
import decimal

import pytest

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.constants import MASKED_CAPABILITIES, Capability, Command
from mysqlproxy.protocol.events import (
    Authenticated,
    AuthenticationFailed,
    QueryEvent,
)
from mysqlproxy.protocol.packets import PacketBuffer
from mysqlproxy.testing.capture import Recording
from mysqlproxy.testing.packets import CLIENT, SERVER
from tests.protocol.support import Replay, load_recordings, replay

RECORDINGS = dict(load_recordings())
DB = "mysqlproxy_capture"


def test_captures_are_present_and_small() -> None:
    assert sorted(RECORDINGS) == [
        "connector_prepared-0",
        "mariadb_cli-0",
        "pymysql-0",
        "pymysql-1",
        "pymysql-2",
        "pymysql-3",
        "raw_commands-0",
        "raw_commands-1",
    ]
    total = sum(len(c.data) for r in RECORDINGS.values() for c in r.chunks)
    assert 20_000 < total < 150_000


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_capture_is_followed_to_the_end_and_forwarded_unchanged(name: str) -> None:
    recording = RECORDINGS[name]
    result = replay(recording.chunks)
    assert result.tracker.idle
    client = b"".join(c.data for c in recording.chunks if c.direction == CLIENT)
    server = b"".join(c.data for c in recording.chunks if c.direction == SERVER)
    assert result.to_server == client
    # The greeting is the first server packet; everything after it is untouched.
    greeting_end = 4 + int.from_bytes(server[:3], "little")
    assert result.to_client[greeting_end:] == server[greeting_end:]
    seen = messages.parse_greeting(result.to_client[4:greeting_end])
    original = messages.parse_greeting(server[4:greeting_end])
    assert original.capabilities & Capability.CLIENT_COMPRESS
    assert seen.capabilities == original.capabilities & ~MASKED_CAPABILITIES


def _queries(name: str) -> tuple[Replay, dict[str, list[QueryEvent]]]:
    result = replay(RECORDINGS[name].chunks)
    by_text: dict[str, list[QueryEvent]] = {}
    for event in result.queries:
        by_text.setdefault(event.query, []).append(event)
    return result, by_text


def _one(by_text: dict[str, list[QueryEvent]], prefix: str) -> QueryEvent:
    found = [e for text, events in by_text.items() if text.startswith(prefix) for e in events]
    assert len(found) == 1, (prefix, found)
    return found[0]


def _counts(event: QueryEvent) -> tuple[int, int, int, int, int]:
    return (
        event.rows_sent,
        event.rows_affected,
        event.warnings,
        event.error_code,
        event.result_sets,
    )


def test_pymysql_text_protocol() -> None:
    result, q = _queries("pymysql-0")
    assert result.events[0] == Authenticated("root", DB, result.tracker.thread_id, _version(result))
    assert _counts(_one(q, "SELECT * FROM types")) == (3, 0, 0, 0, 1)
    assert _counts(_one(q, "INSERT INTO t VALUES (10")) == (0, 2, 0, 0, 0)
    single = _one(q, "INSERT INTO blobs (data) VALUES (X'0001")
    batch = _one(q, "INSERT INTO blobs (data) VALUES (X'61')")
    assert (single.rows_affected, single.insert_id) == (1, 1)
    assert (batch.rows_affected, batch.insert_id) == (3, 2)  # first id of the batch
    assert _counts(_one(q, "UPDATE t SET name = UPPER")) == (0, 3, 0, 0, 0)
    assert _counts(_one(q, "SELECT CAST('12abc'")) == (1, 0, 1, 0, 1)
    syntax = _one(q, "SELEC 1")
    assert (syntax.error_code, syntax.sql_state) == (1064, "42000")
    missing = _one(q, "SELECT * FROM does_not_exist")
    assert (missing.error_code, missing.sql_state) == (1146, "42S02")
    assert missing.error_message == f"Table '{DB}.does_not_exist' doesn't exist"
    assert _counts(_one(q, "SELECT 1 AS a; SELECT 'two'")) == (2, 1, 0, 0, 2)
    # multi(): SELECT 1; SELECT the six rows of t; UPDATE: two result sets and an OK.
    assert _counts(_one(q, "CALL multi()")) == (7, 0, 0, 0, 2)
    assert _counts(_one(q, "CALL with_out")) == (1, 0, 0, 0, 1)
    load = _one(q, "LOAD DATA LOCAL INFILE")
    assert _counts(load) == (0, 50, 0, 0, 0)
    file_bytes = sum(len(f"{i},row{i}\n") for i in range(50))
    assert load.bytes_received > file_bytes + len(load.query) + 1
    init_db = _one(q, "test")
    assert (init_db.command, init_db.schema) == (Command.COM_INIT_DB, DB)
    use = _one(q, f"USE {DB}")
    assert use.schema == "test"
    ping = [e for e in result.queries if e.command == Command.COM_PING]
    assert len(ping) == 1
    assert ping[0].schema == DB
    big = _one(q, "SELECT REPEAT('y', 20000)")
    assert big.rows_sent == 1
    assert 20_000 < big.bytes_sent < 20_200
    assert _one(q, "INSERT INTO t VALUES (12, 'in-trx')").in_transaction
    assert not _one(q, "ROLLBACK").in_transaction
    assert result.queries[-1].command == Command.COM_QUIT


def test_pymysql_kill_and_wrong_password() -> None:
    _, q = _queries("pymysql-2")
    assert _one(q, "KILL 2147483648").error_code == 1094
    refused = replay(RECORDINGS["pymysql-3"].chunks)
    assert len(refused.events) == 1
    failed = refused.events[0]
    assert isinstance(failed, AuthenticationFailed)
    assert (failed.user, failed.error_code) == ("root", 1045)


def test_mariadb_cli_script() -> None:
    result, q = _queries("mariadb_cli-0")
    assert _counts(_one(q, "SELECT * FROM types")) == (3, 0, 0, 0, 1)
    assert _counts(_one(q, "SELECT 1/0")) == (1, 0, 1, 0, 1)
    assert _counts(_one(q, "SHOW WARNINGS")) == (1, 0, 0, 0, 1)
    assert _one(q, "SELEC 1").error_code == 1064
    assert _one(q, "SELECT * FROM does_not_exist").error_code == 1146
    # `USE test` is COM_INIT_DB for the command-line client.
    init = [e for e in result.queries if e.command == Command.COM_INIT_DB]
    assert [(e.query, e.schema) for e in init] == [("test", DB), (DB, "test")]
    assert _counts(_one(q, "SELECT 1 AS a; SELECT 2 AS b; INSERT")) == (2, 1, 0, 0, 2)
    assert _counts(_one(q, "CALL multi()")) == (8, 0, 0, 0, 2)
    assert _counts(_one(q, "LOAD DATA LOCAL INFILE")) == (0, 30, 0, 0, 0)
    assert _counts(_one(q, "EXECUTE s USING @a")) == (1, 0, 0, 0, 1)
    assert _one(q, "SELECT REPEAT('x', 20000)").rows_sent == 1
    assert result.queries[-1].command == Command.COM_QUIT


def test_connector_binary_protocol() -> None:
    result, q = _queries("connector_prepared-0")
    executes = [e for e in result.queries if e.command == Command.COM_STMT_EXECUTE]
    select_types = executes[0]
    assert select_types.query.startswith("SELECT ti, si")
    assert (select_types.params, select_types.rows_sent) == ((0,), 3)
    every_type = executes[1]
    assert every_type.params == (
        42,
        -7,
        2**63 - 1,
        1.25,
        decimal.Decimal("-12.345"),
        "héllo",
        b"\x00\xffblob",
        datetime.date(2024, 2, 29),
        datetime.datetime(2024, 2, 29, 13, 14, 15, 123456),
        # mysql-connector sends -05:06:07 as "negative, 1 day 18:53:53" (Python's
        # days=-1, seconds=68033 written as magnitudes): decoded as the protocol says.
        -datetime.timedelta(days=1, hours=18, minutes=53, seconds=53),
        None,
        1,
    )
    assert every_type.rows_sent == 1
    long_data = executes[2]
    assert long_data.params == (b"long data " * 100,)
    sends = [e for e in result.queries if e.command == Command.COM_STMT_SEND_LONG_DATA]
    assert [e.query for e in sends] == ["INSERT INTO blobs (data) VALUES (?)"]
    duplicate = [e for e in executes if e.error_code]
    assert [(e.params, e.error_code) for e in duplicate] == [((300, "duplicate"), 1062)]
    assert [e.params for e in executes[-2:]] == [("x",), (None,)]
    assert [e.insert_id for e in executes[-2:]] == [6, 7]
    assert _counts(_one(q, "SELECT DATABASE(), CONNECTION_ID()")) == (1, 0, 0, 0, 1)


def test_connector_session_commands() -> None:
    result = replay(RECORDINGS["connector_prepared-0"].chunks)
    by_command: dict[int, list[QueryEvent]] = {}
    for event in result.queries:
        by_command.setdefault(event.command, []).append(event)
    assert by_command[Command.COM_STATISTICS][0].bytes_sent > 50
    change = by_command[Command.COM_CHANGE_USER][0]
    assert (change.query, change.schema, change.error_code) == ("root", "test", 0)
    after_change = result.events[result.events.index(change) + 1]
    assert after_change == Authenticated("root", DB, result.tracker.thread_id, _version(result))
    assert by_command[Command.COM_RESET_CONNECTION][0].error_code == 0
    assert result.queries[-2].schema == DB  # SELECT DATABASE() after the change


@pytest.mark.parametrize("name", ["raw_commands-0", "raw_commands-1"])
def test_raw_client_commands(name: str) -> None:
    result, q = _queries(name)
    deprecate = bool(result.tracker.capabilities & Capability.CLIENT_DEPRECATE_EOF)
    assert deprecate == (name == "raw_commands-0")
    commands = [e.command for e in result.queries]
    assert commands.count(Command.COM_FIELD_LIST) == 3
    field_lists = [e for e in result.queries if e.command == Command.COM_FIELD_LIST]
    assert [(e.query, e.error_code) for e in field_lists] == [
        ("t", 0),
        ("t", 0),
        ("does_not_exist", 1146),
    ]
    set_options = [e for e in result.queries if e.command == Command.COM_SET_OPTION]
    assert [e.error_code for e in set_options] == [0, 0]
    stats = [e for e in result.queries if e.command == Command.COM_STATISTICS]
    assert len(stats) == 1
    assert stats[0].bytes_sent > 50
    init = [e for e in result.queries if e.command == Command.COM_INIT_DB]
    assert [(e.query, e.error_code) for e in init] == [
        ("test", 0),
        ("no_such_schema", 1049),
        (DB, 0),
    ]
    select = "SELECT id, name FROM t WHERE id > ? ORDER BY id"
    cursor_flow = [(e.command, e.rows_sent, e.params) for e in q[select]]
    assert cursor_flow == [
        (Command.COM_STMT_PREPARE, 0, None),
        (Command.COM_STMT_EXECUTE, 0, (0,)),  # cursor opened: rows come with FETCH
        (Command.COM_STMT_FETCH, 2, None),
        (Command.COM_STMT_FETCH, 6, None),
        (Command.COM_STMT_RESET, 0, None),
        (Command.COM_STMT_EXECUTE, 5, (3,)),
        (Command.COM_STMT_CLOSE, 0, None),
    ]
    fetches = [e for e in q[select] if e.command == Command.COM_STMT_FETCH]
    assert len(fetches) == 2
    # MariaDB: CURSOR_EXISTS (0x40) while rows remain, LAST_ROW_SENT (0x80) at the end.
    assert [int(e.status) & 0xC0 for e in fetches] == [0x40, 0x80]
    insert = "INSERT INTO blobs (data) VALUES (?)"
    assert [(e.command, e.params) for e in q[insert]] == [
        (Command.COM_STMT_PREPARE, None),
        (Command.COM_STMT_SEND_LONG_DATA, None),
        (Command.COM_STMT_SEND_LONG_DATA, None),
        (Command.COM_STMT_EXECUTE, (b"first part second part",)),
        (Command.COM_STMT_CLOSE, None),
    ]
    assert _one(q, "SELEC nothing").error_code == 1064
    call = [e for e in q["CALL with_out(?, @z)"] if e.command == Command.COM_STMT_EXECUTE]
    assert [(e.params, e.rows_sent, e.result_sets) for e in call] == [((5,), 1, 1)]
    pipelined = [*q["SELECT 1"], *q["SELECT 2, 3"]]
    assert [e.rows_sent for e in pipelined] == [1, 1]
    unknown = [e for e in result.queries if e.command == 0x99]
    assert [(e.error_code, e.command_name) for e in unknown] == [(1047, "COM_UNKNOWN_0x99")]
    kill = [e for e in result.queries if e.command == Command.COM_PROCESS_KILL]
    assert [(e.query, e.error_code) for e in kill] == [("999999", 1094)]
    change = [e for e in result.queries if e.command == Command.COM_CHANGE_USER]
    assert len(change) == 1
    # The server answered with an auth switch; the client's empty reply is counted.
    assert change[0].bytes_received == _command_bytes(RECORDINGS[name], b"\x11") + 4
    assert change[0].error_code == 0
    assert result.queries[-1].command == Command.COM_QUIT


def _command_bytes(recording: Recording, first: bytes) -> int:
    """The size on the wire of the client's (single) command starting with `first`."""
    buffer = PacketBuffer()
    sizes = []
    for chunk in recording.chunks:
        if chunk.direction == CLIENT:
            buffer.feed(chunk.data)
            for packet in buffer:
                if packet.sequence_id == 0 and packet.payload[:1] == first:
                    sizes.append(4 + len(packet.payload))
    assert len(sizes) == 1
    return sizes[0]


def _version(result: Replay) -> str:
    greeting = result.tracker.greeting
    assert greeting is not None
    assert greeting.server_version.endswith("-MariaDB-0+deb12u1")
    return greeting.server_version
