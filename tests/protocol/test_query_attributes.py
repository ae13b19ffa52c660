"""CLIENT_QUERY_ATTRIBUTES (MySQL 8.0.23+): the layouts of COM_QUERY and
COM_STMT_EXECUTE it brings, byte by byte, and the tracker's QueryEvents for them, fed
whole, byte by byte and in random pieces.

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query.html
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_execute.html
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from mysql.connector.protocol import MySQLProtocol

from mysqlproxy.protocol import messages
from mysqlproxy.protocol.constants import (
    MASKED_CAPABILITIES,
    Capability,
    Command,
    FieldType,
    ServerStatus,
)
from mysqlproxy.protocol.errors import ProtocolError
from mysqlproxy.protocol.events import Authenticated
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import MAX_CAPTURED_COMMAND
from mysqlproxy.testing import packets as pk
from mysqlproxy.testing.packets import CLIENT, SERVER, Column, Conversation
from tests.protocol.support import SPLITTERS, about_n_pieces, new_tracker, query_event, replay

QA = Capability.CLIENT_QUERY_ATTRIBUTES
# What MySQL 8 offers, less what the proxy masks: the greeting passes unchanged.
SERVER_CAPABILITIES = pk.MYSQL_SERVER_CAPABILITIES & ~MASKED_CAPABILITIES
LOGGED_IN = Authenticated("app", None, 42, pk.MYSQL_VERSION)
LONG = FieldType.MYSQL_TYPE_LONG
VARCHAR = FieldType.MYSQL_TYPE_VAR_STRING

# COM_QUERY with three attributes, written out by hand from the documented layout.
QUERY_WITH_ATTRIBUTES = (
    b"\x03"  # COM_QUERY
    b"\x03"  # parameter_count
    b"\x01"  # parameter_set_count (always 1)
    b"\x04"  # NULL bitmap: the third is NULL
    b"\x01"  # new_params_bind_flag (always 1)
    b"\xfd\x00" b"\x05trace"  # VAR_STRING, name
    b"\x08\x00" b"\x01n"  # LONGLONG
    b"\x06\x00" b"\x03nul"  # NULL
    b"\x03abc"  # values: the string
    b"\x07\x00\x00\x00\x00\x00\x00\x00"  # the integer
    b"SELECT 1"
)
ATTRIBUTES = (("trace", "abc"), ("n", 7), ("nul", None))


def login(*, client_asks: bool = True, deprecate_eof: bool = False) -> Conversation:
    """A MySQL 8 login; the server offers query attributes, the client takes them (or
    not)."""
    conv = Conversation()
    conv.server(pk.greeting_mysql(SERVER_CAPABILITIES, auth_plugin=pk.NATIVE_PASSWORD))
    caps = pk.CLIENT_CAPABILITIES | (QA if client_asks else Capability(0))
    if deprecate_eof:
        caps |= Capability.CLIENT_DEPRECATE_EOF
    conv.client(pk.handshake_response(caps))
    conv.server(pk.ok())
    return conv


def check(conv: Conversation, expected: list[Any]) -> list[Any]:
    """Every splitter gives the expected events and forwards the bytes unchanged."""
    events: list[Any] = []
    for name, split in SPLITTERS.items():
        result = replay(conv.chunks, split)
        assert result.events == expected, name
        assert result.to_server == conv.bytes_from(CLIENT), name
        assert result.to_client == conv.bytes_from(SERVER), name  # nothing masked
        events = result.events
    return events


# --- messages ------------------------------------------------------------------------


def test_parse_query_with_attributes_byte_table() -> None:
    request = messages.parse_query(QUERY_WITH_ATTRIBUTES, True)
    assert request.sql == b"SELECT 1"
    assert request.attributes == ATTRIBUTES
    assert request.sql_offset == len(QUERY_WITH_ATTRIBUTES) - len(b"SELECT 1")
    assert messages.encode_query("SELECT 1", ATTRIBUTES) == QUERY_WITH_ATTRIBUTES


def test_parse_query_without_attributes() -> None:
    # Negotiated but none sent: the two counts only.
    assert messages.parse_query(b"\x03\x00\x01DO 1", True) == messages.QueryRequest(
        b"DO 1", (), 3
    )
    assert messages.encode_query("DO 1", []) == b"\x03\x00\x01DO 1"
    # Not negotiated: the bytes after the command byte are the text, whatever they are.
    assert messages.parse_query(b"\x03\x00\x01DO 1", False).sql == b"\x00\x01DO 1"
    assert messages.encode_query("DO 1") == b"\x03DO 1"


@pytest.mark.parametrize("cut", range(2, len(QUERY_WITH_ATTRIBUTES) - len(b"SELECT 1")))
def test_parse_query_cut_inside_the_attributes(cut: int) -> None:
    with pytest.raises(ProtocolError):
        messages.parse_query(QUERY_WITH_ATTRIBUTES[:cut], True)


def test_parse_query_refuses_a_bind_flag_other_than_1() -> None:
    payload = bytearray(QUERY_WITH_ATTRIBUTES)
    payload[4] = 0
    with pytest.raises(ProtocolError, match="new_params_bind_flag"):
        messages.parse_query(bytes(payload), True)


def test_execute_with_attributes_byte_table() -> None:
    payload = (
        b"\x17" b"\x05\x00\x00\x00"  # statement 5
        b"\x08"  # flags: PARAMETER_COUNT_AVAILABLE
        b"\x01\x00\x00\x00"  # iteration count
        b"\x02"  # parameter_count: 1 placeholder + 1 attribute
        b"\x00"  # NULL bitmap
        b"\x01"  # new_params_bind_flag
        b"\x03\x00" b"\x00"  # LONG, no name
        b"\xfd\x00" b"\x02id"  # VAR_STRING, named: an attribute
        b"\x2a\x00\x00\x00"  # 42
        b"\x02xy"
    )
    request = messages.parse_execute(payload, 1, None, None, True)
    assert request == messages.ExecuteRequest(5, 8, (LONG, VARCHAR), (42,), (("id", "xy"),))
    built = messages.encode_execute(5, [LONG], [42], query_attributes=[("id", "xy")])
    assert built == payload
    # Read as if the capability were off, the same bytes mean something else.
    with pytest.raises(ProtocolError):
        messages.parse_execute(payload, 1, None, None, False)


def test_execute_reusing_types_with_attributes() -> None:
    payload = pk.com_stmt_execute(
        5, [LONG], [1], new_params_bound=False, query_attributes=[("id", "xy")]
    )
    request = messages.parse_execute(payload, 1, (LONG, VARCHAR), None, True)
    assert (request.params, request.attributes) == ((1,), (("", "xy"),))
    with pytest.raises(ProtocolError, match="never bound"):
        messages.parse_execute(payload, 1, (LONG,), None, True)


def test_execute_without_placeholders_or_attributes() -> None:
    # The capability adds nothing when there is nothing to send.
    payload = pk.com_stmt_execute(5, query_attributes=[])
    assert payload == b"\x17\x05\x00\x00\x00\x00\x01\x00\x00\x00"
    assert messages.parse_execute(payload, 0, None, None, True).attributes == ()


def test_execute_with_fewer_values_than_placeholders_is_refused() -> None:
    payload = b"\x17\x05\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x01\x03\x00\x00\x01\x00\x00\x00"
    assert messages.parse_execute(payload, 1, None, None, True).params == (1,)
    with pytest.raises(ProtocolError, match="sends 1 parameters"):
        messages.parse_execute(payload, 2, None, None, True)


@pytest.mark.parametrize(
    ("params", "attributes"),
    [
        ([], [("a", "x")]),
        # (Not a NULL attribute: mysql-connector-python 9.x skips a NULL's name and
        # fails with IndexError while building the packet.)
        ([7, "s"], [("trace", "t-1"), ("n", 3)]),
        ([None, 2.5], [("when", datetime.datetime(2024, 1, 2, 3, 4, 5))]),
        ([1], []),
    ],
)
def test_execute_as_mysql_connector_writes_it(params: list[Any], attributes: list[Any]) -> None:
    """The real client's packet builder (mysql-connector-python's pure protocol code),
    read back by our parser."""
    payload = b"\x17" + MySQLProtocol().make_stmt_execute(
        9, params, ["?"] * len(params), 0, {}, "utf8mb4", attributes
    )
    request = messages.parse_execute(payload, len(params), None, None, True)
    assert request.statement_id == 9
    assert list(request.params) == params
    assert list(request.attributes) == [tuple(a) for a in attributes]


# --- the tracker ---------------------------------------------------------------------


def test_capability_passes_both_ways_unmasked() -> None:
    tracker = new_tracker()
    assert SERVER_CAPABILITIES & QA
    greeting = encode_packet(0, pk.greeting_mysql(SERVER_CAPABILITIES))
    assert tracker.server_data(greeting) == greeting
    response = encode_packet(1, pk.handshake_response(pk.CLIENT_CAPABILITIES | QA))
    assert tracker.client_data(response) == response
    assert tracker.server_capabilities & QA
    assert tracker.capabilities & QA


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_query_with_attributes(deprecate_eof: bool) -> None:
    conv = login(deprecate_eof=deprecate_eof)
    sent, answer = conv.command(
        QUERY_WITH_ATTRIBUTES,
        *pk.text_result_set(["1"], [[b"1"]], deprecate_eof=deprecate_eof),
    )
    sent2, answer2 = conv.command(pk.com_query("DO 1", []), pk.ok())
    events = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "SELECT 1",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_sent=1,
                result_sets=1,
                query_attributes=ATTRIBUTES,
            ),
            query_event(
                Command.COM_QUERY, "DO 1", bytes_received=len(sent2), bytes_sent=len(answer2)
            ),
        ],
    )
    assert events[1].query_attributes == ATTRIBUTES
    assert events[2].query_attributes is None


def test_attributes_only_count_when_the_client_asked_for_them() -> None:
    # The server offers the capability, the client does not take it: the same bytes are
    # a query text that happens to start with \x03\x01...
    conv = login(client_asks=False)
    sent, answer = conv.command(QUERY_WITH_ATTRIBUTES, pk.err(1064, "syntax"))
    events = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                QUERY_WITH_ATTRIBUTES[1:].decode("utf-8", "backslashreplace"),
                bytes_received=len(sent),
                bytes_sent=len(answer),
                error_code=1064,
                error_message="syntax",
                sql_state="42000",
                status=ServerStatus(0),
            ),
        ],
    )
    assert events[1].query_attributes is None


def test_schema_follows_use_behind_attributes() -> None:
    conv = login()
    conv.command(pk.com_query("USE shop", [("trace", "x")]), pk.ok())
    conv.command(pk.com_query("SELECT 1", []), *pk.text_result_set(["1"], [], deprecate_eof=False))
    conv.command(pk.com_query("DROP DATABASE shop", []), pk.ok())
    conv.command(pk.com_query("SELECT 2", []), *pk.text_result_set(["1"], [], deprecate_eof=False))
    events = check(conv, replay(conv.chunks).events)
    assert [(e.query, e.schema) for e in events[1:]] == [
        ("USE shop", None),
        ("SELECT 1", "shop"),
        ("DROP DATABASE shop", "shop"),
        ("SELECT 2", None),
    ]


def test_malformed_attributes_are_left_to_the_server() -> None:
    # Cut inside the attributes: the server answers ER_MALFORMED_PACKET; the tracker
    # cannot tell the text apart and logs none, and the connection goes on.
    conv = login()
    conv.command(QUERY_WITH_ATTRIBUTES[:9], pk.err(1835, "Malformed packet"))
    conv.command(pk.com_query("DO 1", []), pk.ok())
    events = check(conv, replay(conv.chunks).events)
    assert [(e.query, e.error_code, e.query_attributes) for e in events[1:]] == [
        ("", 1835, None),
        ("DO 1", 0, None),
    ]


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_execute_with_attributes(deprecate_eof: bool) -> None:
    conv = login(deprecate_eof=deprecate_eof)
    text = "SELECT ?"
    columns = [Column("c", LONG)]
    conv.command(
        pk.com_stmt_prepare(text),
        *pk.prepare_response(3, ["?"], columns, deprecate_eof=deprecate_eof),
    )
    sent, answer = conv.command(
        pk.com_stmt_execute(3, [LONG], [5], query_attributes=[("trace", "t1"), ("n", None)]),
        *pk.binary_result_set(columns, [[5]], deprecate_eof=deprecate_eof),
    )
    # Again without rebinding: the types (and names) of the first execute hold.
    sent2, answer2 = conv.command(
        pk.com_stmt_execute(
            3, [LONG], [6], new_params_bound=False, query_attributes=[("trace", "t2"), ("n", None)]
        ),
        *pk.binary_result_set(columns, [[6]], deprecate_eof=deprecate_eof),
    )
    # No attributes at all: the parameter count is still there.
    sent3, answer3 = conv.command(
        pk.com_stmt_execute(3, [LONG], [7], query_attributes=[]),
        *pk.binary_result_set(columns, [[7]], deprecate_eof=deprecate_eof),
    )
    events = check(conv, replay(conv.chunks).events)
    executes = [e for e in events[1:] if e.command == Command.COM_STMT_EXECUTE]
    common = dict(statement_id=3, rows_sent=1, result_sets=1)
    assert executes == [
        query_event(
            Command.COM_STMT_EXECUTE,
            text,
            bytes_received=len(sent),
            bytes_sent=len(answer),
            params=(5,),
            query_attributes=(("trace", "t1"), ("n", None)),
            **common,
        ),
        query_event(
            Command.COM_STMT_EXECUTE,
            text,
            bytes_received=len(sent2),
            bytes_sent=len(answer2),
            params=(6,),
            # Without types the names are not sent again: the values are read with
            # the types bound first, and the attributes have no names.
            query_attributes=(("", "t2"), ("", None)),
            **common,
        ),
        query_event(
            Command.COM_STMT_EXECUTE,
            text,
            bytes_received=len(sent3),
            bytes_sent=len(answer3),
            params=(7,),
            **common,
        ),
    ]


def test_execute_attributes_on_a_statement_without_placeholders() -> None:
    conv = login()
    conv.command(pk.com_stmt_prepare("DO 1"), *pk.prepare_response(4, [], [], deprecate_eof=False))
    sent, answer = conv.command(
        pk.com_stmt_execute(4, query_attributes=[("trace", "x")]), pk.ok()
    )
    events = check(conv, replay(conv.chunks).events)
    assert events[-1] == query_event(
        Command.COM_STMT_EXECUTE,
        "DO 1",
        bytes_received=len(sent),
        bytes_sent=len(answer),
        statement_id=4,
        params=(),
        query_attributes=(("trace", "x"),),
    )


BLOB = FieldType.MYSQL_TYPE_BLOB


def _executes(conv: Conversation) -> list[Any]:
    events = replay(conv.chunks, about_n_pieces(20)).events
    return [
        (e.params, e.query_attributes, e.truncated)
        for e in events
        if getattr(e, "command", None) == Command.COM_STMT_EXECUTE
    ]


def test_types_bound_by_an_execute_cut_at_the_capture_limit_hold() -> None:
    """An execute whose value passes MAX_CAPTURED_COMMAND has no values to log, but the
    types it binds sit before the cut: a later execute that sends none is read with
    them (the server's), not with the types bound before."""
    conv = login()
    columns = [Column("c", BLOB)]
    conv.command(pk.com_stmt_prepare("SELECT ?"), *pk.prepare_response(
        3, ["?"], columns, deprecate_eof=False))
    ok = pk.ok()
    conv.command(pk.com_stmt_execute(3, [LONG], [5], query_attributes=[]), ok)
    big = b"x" * (MAX_CAPTURED_COMMAND + 1000)
    conv.command(pk.com_stmt_execute(3, [BLOB], [big], query_attributes=[("a", 1)]), ok)
    conv.command(
        pk.com_stmt_execute(
            3, [BLOB], [b"abc"], new_params_bound=False, query_attributes=[("a", 2)]
        ),
        ok,
    )
    assert _executes(conv) == [
        ((5,), None, False),
        (None, None, True),  # cut: its values are not decoded
        ((b"abc",), (("", 2),), False),
    ]


def test_types_cut_at_the_capture_limit_are_forgotten() -> None:
    """Cut inside the types themselves (a long attribute name): the types in force are
    unknown, so a later execute without types logs no parameters rather than values
    misread with the types bound before."""
    conv = login()
    columns = [Column("c", BLOB)]
    conv.command(pk.com_stmt_prepare("SELECT ?"), *pk.prepare_response(
        3, ["?"], columns, deprecate_eof=False))
    ok = pk.ok()
    conv.command(pk.com_stmt_execute(3, [LONG], [5], query_attributes=[("a", 0)]), ok)
    long_name = "n" * (MAX_CAPTURED_COMMAND + 10)
    conv.command(pk.com_stmt_execute(3, [BLOB], [b"x"], query_attributes=[(long_name, 1)]), ok)
    conv.command(
        pk.com_stmt_execute(
            3, [BLOB], [b"abcd"], new_params_bound=False, query_attributes=[("a", 2)]
        ),
        ok,
    )
    executes = _executes(conv)
    assert executes[0] == ((5,), (("a", 0),), False)
    assert executes[1] == (None, None, True)
    # Not b"\x04abc" read as a LONG with the first execute's types:
    assert executes[2] == (None, None, False)


@pytest.mark.parametrize("emit", [False, True], ids=["logging_off", "logging_on"])
def test_execute_values_are_decoded_only_for_an_event(
    emit: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With logging off an execute's values are never decoded; with it on, once."""
    conv = login()
    columns = [Column("c", LONG)]
    conv.command(pk.com_stmt_prepare("SELECT ?, ?"), *pk.prepare_response(
        3, ["?", "?"], columns, deprecate_eof=False))
    for value in (1, 2, 3):
        conv.command(
            pk.com_stmt_execute(
                3, [LONG, VARCHAR], [value, "s"], query_attributes=[("trace", "t")]
            ),
            *pk.binary_result_set(columns, [[value]], deprecate_eof=False),
        )
    decoded: list[int] = []
    read_value = messages._read_binary_value

    def counting(*args: Any) -> Any:
        decoded.append(1)
        return read_value(*args)

    monkeypatch.setattr(messages, "_read_binary_value", counting)
    tracker = new_tracker()
    tracker.emit_query_events = emit
    result = replay(conv.chunks, tracker=tracker)
    executes = [e for e in result.queries if e.command == Command.COM_STMT_EXECUTE]
    if emit:
        assert [e.params for e in executes] == [(1, "s"), (2, "s"), (3, "s")]
        assert len(decoded) == 3 * 3  # two parameters and one attribute, each once
    else:
        assert executes == [] and decoded == []
    assert tracker.statements[3].param_types == (LONG, VARCHAR, VARCHAR)
