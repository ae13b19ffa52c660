"""The tracker, command by command: exact QueryEvents for exchanges built with the packet
factory, each fed whole, one byte at a time and in random pieces (the events must not
depend on how the bytes arrive), with the forwarded bytes equal to the input."""

from __future__ import annotations

import datetime
import decimal
import re
from collections.abc import Mapping

import pytest

from mysqlproxy.protocol.constants import (
    MASKED_CAPABILITIES,
    Capability,
    Command,
    FieldType,
    ServerStatus,
)
from mysqlproxy.protocol.errors import ProtocolError, UnsupportedFeature
from mysqlproxy.protocol.events import (
    Authenticated,
    AuthenticationFailed,
    QueryEvent,
    TrackerEvent,
)
from mysqlproxy.protocol.messages import ParamValue
from mysqlproxy.protocol.packets import encode_packet
from mysqlproxy.protocol.tracker import MAX_CAPTURED_COMMAND
from mysqlproxy.testing import packets as pk
from mysqlproxy.testing.packets import CLIENT, SERVER, Column, Conversation
from tests.protocol.support import (
    SPLITTERS,
    FakeClock,
    Replay,
    Splitter,
    about_n_pieces,
    bytewise,
    new_tracker,
    query_event,
    replay,
    whole,
)

AUTOCOMMIT = ServerStatus.SERVER_STATUS_AUTOCOMMIT
IN_TRANS = ServerStatus.SERVER_STATUS_IN_TRANS
MORE = ServerStatus.SERVER_MORE_RESULTS_EXISTS
NO_INDEX = ServerStatus.SERVER_QUERY_NO_INDEX_USED
NO_GOOD_INDEX = ServerStatus.SERVER_QUERY_NO_GOOD_INDEX_USED
CURSOR = ServerStatus.SERVER_STATUS_CURSOR_EXISTS
LAST_ROW = ServerStatus.SERVER_STATUS_LAST_ROW_SENT
NO_STATUS = ServerStatus(0)
LOGGED_IN = Authenticated("app", None, 42, pk.MARIADB_VERSION)
MAX = 0xFFFFFF

EOF_MODES = pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])


def check(
    conv: Conversation,
    expected: list[TrackerEvent],
    splitters: Mapping[str, Splitter] = SPLITTERS,
) -> Replay:
    """Feed the conversation with every splitter: the same events each time, and the
    forwarded bytes equal the input (the greeting has its capability bytes masked, and
    is checked by the masking tests)."""
    client_bytes = conv.bytes_from(CLIENT)
    server_bytes = conv.bytes_from(SERVER)
    greeting_length = len(conv.chunks[0].data)
    result = None
    for name, split in splitters.items():
        result = replay(conv.chunks, split)
        assert result.events == expected, name
        assert result.to_server == client_bytes, name
        assert len(result.to_client) == len(server_bytes), name
        assert result.to_client[greeting_length:] == server_bytes[greeting_length:], name
    assert result is not None
    return result


def fails(conv: Conversation, message: str, splitters: Mapping[str, Splitter] = SPLITTERS) -> None:
    """Every way of feeding the conversation ends in a ProtocolError matching `message`."""
    for name, split in splitters.items():
        with pytest.raises(ProtocolError, match=message):
            replay(conv.chunks, split)
            pytest.fail(f"{name}: no ProtocolError")


# --- connection phase ---------------------------------------------------------------------


def test_login_mariadb() -> None:
    conv = pk.login(user="app", database="shop", thread_id=1234)
    result = check(conv, [Authenticated("app", "shop", 1234, pk.MARIADB_VERSION)])
    tracker = result.tracker
    assert tracker.user == "app"
    assert tracker.schema == "shop"
    assert tracker.thread_id == 1234
    assert tracker.authenticated
    assert tracker.idle
    assert tracker.phase_name == "IDLE"


def test_login_mysql() -> None:
    conv = pk.login(mariadb=False, user="u")
    check(conv, [Authenticated("u", None, 42, pk.MYSQL_VERSION)])


def test_login_ok_reporting_schema_by_session_tracking() -> None:
    conv = Conversation()
    conv.server(pk.greeting_mariadb())
    caps = pk.CLIENT_CAPABILITIES | Capability.CLIENT_SESSION_TRACK
    conv.client(pk.handshake_response(caps, "app", b"", "first"))
    state = AUTOCOMMIT | ServerStatus.SERVER_SESSION_STATE_CHANGED
    conv.server(pk.ok(status=state, info=pk.session_state_schema("second")))
    assert check(conv, [Authenticated("app", "second", 42, pk.MARIADB_VERSION)]).tracker.schema == (
        "second"
    )


def test_login_with_auth_switch() -> None:
    conv = Conversation()
    conv.server(pk.greeting_mariadb())
    conv.client(pk.handshake_response(auth_plugin="client_ed25519"))
    conv.server(pk.auth_switch_request("mysql_native_password", pk.SCRAMBLE))
    conv.client(b"\x11" * 20)
    conv.server(pk.ok())
    assert [c.data[3] for c in conv.chunks] == [0, 1, 2, 3, 4]
    check(conv, [LOGGED_IN])


def test_login_with_caching_sha2_fast_auth() -> None:
    conv = Conversation()
    conv.server(pk.greeting_mysql())
    conv.client(pk.handshake_response(auth_response=b"\x22" * 32, auth_plugin="x"))
    conv.server(pk.auth_more_data(b"\x03"))  # fast authentication succeeded
    conv.server(pk.ok())
    check(conv, [Authenticated("app", None, 42, pk.MYSQL_VERSION)])


def test_login_with_caching_sha2_full_auth() -> None:
    conv = Conversation()
    conv.server(pk.greeting_mysql())
    conv.client(pk.handshake_response(auth_response=b"\x22" * 32))
    conv.server(pk.auth_more_data(b"\x04"))  # perform full authentication
    conv.client(b"\x02")  # request the public key
    conv.server(pk.auth_more_data(b"-----BEGIN PUBLIC KEY-----\n" + b"k" * 400))
    conv.client(b"\x33" * 256)  # the password, RSA encrypted
    conv.server(pk.ok())
    assert [c.data[3] for c in conv.chunks] == [0, 1, 2, 3, 4, 5, 6]
    check(conv, [Authenticated("app", None, 42, pk.MYSQL_VERSION)])


def test_login_refused() -> None:
    conv = Conversation()
    conv.server(pk.greeting_mariadb())
    conv.client(pk.handshake_response(user="bob"))
    conv.server(pk.err(1045, "Access denied for user 'bob'", "28000"))
    result = check(conv, [AuthenticationFailed("bob", 1045, "Access denied for user 'bob'")])
    assert not result.tracker.authenticated
    assert result.tracker.phase_name == "CLOSED"
    # A last ERR from the server is tolerated; anything from the client is not.
    assert result.tracker.server_data(encode_packet(3, pk.err(1, "bye"))) is not None
    with pytest.raises(ProtocolError, match="after the connection ended"):
        result.tracker.client_data(encode_packet(0, pk.com_ping()))


def test_greeting_replaced_by_error() -> None:
    conv = Conversation()
    conv.server(pk.err(1040, "Too many connections", "08004"))
    result = replay(conv.chunks, bytewise)
    assert result.events == [AuthenticationFailed("", 1040, "Too many connections")]
    assert result.to_client == conv.bytes_from(SERVER)  # forwarded unchanged
    with pytest.raises(ProtocolError):
        result.tracker.client_data(b"\x01\x00\x00\x01\x00")


def test_handshake_response_and_auth_data_in_one_chunk() -> None:
    tracker = new_tracker()
    tracker.server_data(encode_packet(0, pk.greeting_mysql()))
    # A caching_sha2 client that asks for the public key without waiting.
    data = encode_packet(1, pk.handshake_response()) + encode_packet(2, b"\x02")
    assert tracker.client_data(data) == data
    tracker.server_data(encode_packet(3, pk.ok()))
    assert tracker.events == [Authenticated("app", None, 42, pk.MYSQL_VERSION)]
    assert tracker.idle


# --- masking --------------------------------------------------------------------------------

BASE_MARIADB = pk.MARIADB_SERVER_CAPABILITIES & ~MASKED_CAPABILITIES
BASE_MYSQL = pk.MYSQL_SERVER_CAPABILITIES & ~MASKED_CAPABILITIES
MASKED_BITS = [
    Capability.CLIENT_SSL,
    Capability.CLIENT_ZSTD_COMPRESSION_ALGORITHM,
    Capability.CLIENT_OPTIONAL_RESULTSET_METADATA,
    Capability.MULTI_FACTOR_AUTHENTICATION,
    Capability.CLIENT_CAPABILITY_EXTENSION,
    Capability.CLIENT_SSL_VERIFY_SERVER_CERT,
]
MARIADB_EXTENDED = [
    Capability.MARIADB_CLIENT_PROGRESS,
    Capability.MARIADB_CLIENT_COM_MULTI,
    Capability.MARIADB_CLIENT_STMT_BULK_OPERATIONS,
    Capability.MARIADB_CLIENT_CACHE_METADATA,
    Capability.MARIADB_CLIENT_BULK_UNIT_RESULTS,
    Capability(1 << 63),  # a future extended capability
]


def test_masked_capabilities_are_exactly_the_documented_ones() -> None:
    expected = Capability(0)
    for bit in MASKED_BITS:
        expected |= bit
    extended = Capability(0xFFFFFFFF << 32 & ~int(Capability.MARIADB_CLIENT_EXTENDED_METADATA))
    assert expected | extended == MASKED_CAPABILITIES
    for kept in (
        Capability.CLIENT_DEPRECATE_EOF,
        Capability.CLIENT_SESSION_TRACK,
        Capability.CLIENT_PLUGIN_AUTH,
        Capability.CLIENT_MULTI_RESULTS,
        Capability.CLIENT_LOCAL_FILES,
    ):
        assert not kept & MASKED_CAPABILITIES


def _masking_exchange(
    server_caps: Capability, client_caps: Capability, mariadb: bool
) -> tuple[bytes, bytes]:
    tracker = new_tracker()
    make = pk.greeting_mariadb if mariadb else pk.greeting_mysql
    seen_greeting = tracker.server_data(encode_packet(0, make(server_caps)))
    seen_response = tracker.client_data(encode_packet(1, pk.handshake_response(client_caps)))
    tracker.server_data(encode_packet(2, pk.ok()))
    assert tracker.events == [
        Authenticated("app", None, 42, pk.MARIADB_VERSION if mariadb else pk.MYSQL_VERSION)
    ]
    assert not tracker.capabilities & MASKED_CAPABILITIES
    assert not tracker.server_capabilities & MASKED_CAPABILITIES
    return seen_greeting, seen_response


@pytest.mark.parametrize("bit", MASKED_BITS, ids=lambda b: b.name)
@pytest.mark.parametrize("mariadb", [True, False], ids=["mariadb", "mysql"])
def test_masked_capability_is_cleared_in_the_greeting(bit: Capability, mariadb: bool) -> None:
    base = BASE_MARIADB if mariadb else BASE_MYSQL
    greeting, _ = _masking_exchange(base | bit, pk.CLIENT_CAPABILITIES, mariadb)
    make = pk.greeting_mariadb if mariadb else pk.greeting_mysql
    assert greeting == encode_packet(0, make(base))
    assert greeting != encode_packet(0, make(base | bit))


@pytest.mark.parametrize("bit", MASKED_BITS[1:], ids=lambda b: b.name)
@pytest.mark.parametrize("mariadb", [True, False], ids=["mariadb", "mysql"])
def test_masked_capability_is_cleared_both_ways(bit: Capability, mariadb: bool) -> None:
    base = BASE_MARIADB if mariadb else BASE_MYSQL
    client = pk.CLIENT_CAPABILITIES
    greeting, response = _masking_exchange(base | bit, client | bit, mariadb)
    make = pk.greeting_mariadb if mariadb else pk.greeting_mysql
    # Everything else byte-identical: the same packets built without the bit.
    assert greeting == encode_packet(0, make(base))
    assert greeting != encode_packet(0, make(base | bit))
    assert response == encode_packet(1, pk.handshake_response(client))


@pytest.mark.parametrize("bit", MARIADB_EXTENDED, ids=lambda b: str(b.name))
def test_mariadb_extended_capability_is_cleared_both_ways(bit: Capability) -> None:
    # A MariaDB client clears CLIENT_MYSQL (bit 0) to send extended capabilities.
    client = pk.CLIENT_CAPABILITIES & ~Capability.CLIENT_LONG_PASSWORD
    greeting, response = _masking_exchange(BASE_MARIADB | bit, client | bit, True)
    assert greeting == encode_packet(0, pk.greeting_mariadb(BASE_MARIADB))
    extended = 4 + len(pk.MARIADB_VERSION) + 29  # where the extended capabilities are
    kept = int(BASE_MARIADB) >> 32  # extended metadata only, when the server offers it
    assert kept & ~(int(Capability.MARIADB_CLIENT_EXTENDED_METADATA) >> 32) == 0
    assert greeting[extended : extended + 4] == kept.to_bytes(4, "little")
    original = encode_packet(0, pk.greeting_mariadb(BASE_MARIADB | bit))
    assert original[extended : extended + 4] == ((int(bit) >> 32) | kept).to_bytes(4, "little")
    assert response == encode_packet(1, pk.handshake_response(client))
    assert response[4 + 28 : 4 + 32] == b"\x00\x00\x00\x00"


def test_mariadb_extended_metadata_passes_both_ways() -> None:
    # It only adds a field inside column definitions, which the tracker skips.
    bit = Capability.MARIADB_CLIENT_EXTENDED_METADATA
    client = pk.CLIENT_CAPABILITIES & ~Capability.CLIENT_LONG_PASSWORD
    greeting, response = _masking_exchange(BASE_MARIADB | bit, client | bit, True)
    assert greeting == encode_packet(0, pk.greeting_mariadb(BASE_MARIADB | bit))
    assert response == encode_packet(1, pk.handshake_response(client | bit))


def test_unmasked_capabilities_pass_unchanged() -> None:
    caps = BASE_MARIADB | Capability.CLIENT_DEPRECATE_EOF | Capability.CLIENT_SESSION_TRACK
    greeting, response = _masking_exchange(caps, pk.CLIENT_CAPABILITIES, True)
    assert greeting == encode_packet(0, pk.greeting_mariadb(caps))
    assert response == encode_packet(1, pk.handshake_response(pk.CLIENT_CAPABILITIES))


def test_real_mariadb_greeting_masks_ssl_compress_and_extended() -> None:
    greeting, _ = _masking_exchange(pk.MARIADB_SERVER_CAPABILITIES, pk.CLIENT_CAPABILITIES, True)
    assert greeting == encode_packet(0, pk.greeting_mariadb(BASE_MARIADB))
    assert pk.MARIADB_SERVER_CAPABILITIES & Capability.CLIENT_SSL


@pytest.mark.parametrize(("bit", "what"), [(Capability.CLIENT_SSL, "TLS")], ids=["ssl"])
def test_client_asking_for_ssl_or_compression_anyway(bit: Capability, what: str) -> None:
    tracker = new_tracker()
    tracker.server_data(encode_packet(0, pk.greeting_mariadb()))
    with pytest.raises(UnsupportedFeature, match=what):
        tracker.client_data(encode_packet(1, pk.handshake_response(pk.CLIENT_CAPABILITIES | bit)))


def test_ssl_request_is_unsupported() -> None:
    tracker = new_tracker()
    tracker.server_data(encode_packet(0, pk.greeting_mariadb()))
    with pytest.raises(UnsupportedFeature, match="TLS"):
        tracker.client_data(encode_packet(1, pk.ssl_request()))


# --- COM_QUERY ------------------------------------------------------------------------------


@EOF_MODES
def test_query_ok(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    status = AUTOCOMMIT | IN_TRANS
    sent, answer = conv.command(
        pk.com_query("INSERT INTO t VALUES (1), (2)"),
        pk.ok(2, 2**40, status, 3, info=b"Records: 2  Duplicates: 0  Warnings: 3"),
    )
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "INSERT INTO t VALUES (1), (2)",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_affected=2,
                insert_id=2**40,
                warnings=3,
                status=status,
            ),
        ],
    )
    assert result.queries[0].in_transaction
    assert result.tracker.idle


@EOF_MODES
def test_query_err(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    sent, answer = conv.command(
        pk.com_query("SELECT * FROM nope"),
        pk.err(1146, "Table 'shop.nope' doesn't exist", "42S02"),
    )
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "SELECT * FROM nope",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                error_code=1146,
                error_message="Table 'shop.nope' doesn't exist",
                sql_state="42S02",
                status=NO_STATUS,
            ),
        ],
    )
    assert result.queries[0].failed


@EOF_MODES
def test_query_result_set(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    rows: list[list[bytes | None]] = [
        [b"1", b"one"],
        [None, b""],  # a row starting with 0xFB (NULL)
        [b"x" * 300, None],  # starting with 0xFC
        [b"y" * 70000, b"z"],  # starting with 0xFD
        [b"\xfe", b"\xff"],  # values that look like EOF and ERR headers
    ]
    sent, answer = conv.command(
        pk.com_query("SELECT a, b FROM t"),
        *pk.text_result_set(
            ["a", "b"], rows, deprecate_eof=deprecate_eof, status=AUTOCOMMIT | NO_INDEX, warnings=2
        ),
    )
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "SELECT a, b FROM t",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_sent=5,
                warnings=2,
                status=AUTOCOMMIT | NO_INDEX,
                result_sets=1,
            ),
        ],
    )
    assert result.queries[0].no_index_used
    assert not result.queries[0].no_good_index_used


@EOF_MODES
def test_query_many_rows(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    rows = [[str(i).encode(), b"v" * (i % 40)] for i in range(600)]  # sequence ids wrap
    sent, answer = conv.command(
        pk.com_query("SELECT * FROM big"),
        *pk.text_result_set(["id", "v"], rows, deprecate_eof=deprecate_eof),
    )
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "SELECT * FROM big",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_sent=600,
                result_sets=1,
            ),
        ],
        {"whole": whole, "random": SPLITTERS["random3"], "small": SPLITTERS["random2"]},
    )


@EOF_MODES
def test_query_error_in_the_middle_of_rows(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    payloads = pk.text_result_set(["a"], [[b"1"], [b"2"]], deprecate_eof=deprecate_eof)[:-1]
    sent, answer = conv.command(
        pk.com_query("SELECT SLEEP(a) FROM t"),
        *payloads,
        pk.err(1317, "Query execution was interrupted", "70100"),
    )
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "SELECT SLEEP(a) FROM t",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_sent=2,
                result_sets=1,
                error_code=1317,
                error_message="Query execution was interrupted",
                sql_state="70100",
                status=NO_STATUS,
            ),
        ],
    )


@EOF_MODES
def test_query_local_infile(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    mark = len(conv.chunks)
    conv.command(
        pk.com_query("LOAD DATA LOCAL INFILE 'f.csv' INTO TABLE t"),
        pk.local_infile_request("f.csv"),
    )
    conv.client(b"1,a\n2,b\n", b"3,c\n")
    conv.client(b"")
    conv.server(pk.ok(3, 0, AUTOCOMMIT, 1, info=b"Records: 3  Deleted: 0  Skipped: 0"))
    assert [c.data[3] for c in conv.chunks[mark:]] == [0, 1, 2, 4, 5]
    received = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == CLIENT)
    sent = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == SERVER)
    sent2, answer2 = conv.command(pk.com_ping(), pk.ok())
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "LOAD DATA LOCAL INFILE 'f.csv' INTO TABLE t",
                bytes_received=received,
                bytes_sent=sent,
                rows_affected=3,
                warnings=1,
            ),
            query_event(Command.COM_PING, "", bytes_received=len(sent2), bytes_sent=len(answer2)),
        ],
    )


def test_query_local_infile_refused_by_client() -> None:
    conv = pk.login()
    mark = len(conv.chunks)
    conv.command(pk.com_query("LOAD DATA LOCAL INFILE 'gone' INTO TABLE t"), b"\xfbgone")
    conv.client(b"")  # the client could not read the file
    conv.server(pk.err(2, "File 'gone' not found (Errcode: 2)", "HY000"))
    received = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == CLIENT)
    sent = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == SERVER)
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "LOAD DATA LOCAL INFILE 'gone' INTO TABLE t",
                bytes_received=received,
                bytes_sent=sent,
                error_code=2,
                error_message="File 'gone' not found (Errcode: 2)",
                sql_state="HY000",
                status=NO_STATUS,
            ),
        ],
    )


@EOF_MODES
def test_multi_statements(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    text = "SELECT 1; INSERT INTO t VALUES (5); SELECT a, b FROM t"
    sent, answer = conv.command(
        pk.com_query(text),
        *pk.text_result_set(["1"], [[b"1"]], deprecate_eof=deprecate_eof, more_results=True),
        pk.ok(1, 77, AUTOCOMMIT | MORE, 0),
        *pk.text_result_set(
            ["a", "b"], [[b"x", None], [b"y", b"z"]], deprecate_eof=deprecate_eof, warnings=1
        ),
    )
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                text,
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_sent=3,
                rows_affected=1,
                insert_id=77,
                warnings=1,
                result_sets=2,
            ),
        ],
    )


@EOF_MODES
def test_multi_statements_failing_in_the_middle(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    text = "SELECT 1; SELEC 2; SELECT 3"
    sent, answer = conv.command(
        pk.com_query(text),
        *pk.text_result_set(["1"], [[b"1"]], deprecate_eof=deprecate_eof, more_results=True),
        pk.err(1064, "You have an error", "42000"),
    )
    sent2, answer2 = conv.command(pk.com_ping(), pk.ok())
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                text,
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_sent=1,
                result_sets=1,
                error_code=1064,
                error_message="You have an error",
                sql_state="42000",
                status=MORE | AUTOCOMMIT,
            ),
            query_event(Command.COM_PING, "", bytes_received=len(sent2), bytes_sent=len(answer2)),
        ],
    )


@EOF_MODES
def test_call_with_several_result_sets(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    sent, answer = conv.command(
        pk.com_query("CALL report()"),
        *pk.text_result_set(
            ["one"],
            [[b"1"]],
            deprecate_eof=deprecate_eof,
            status=AUTOCOMMIT | NO_GOOD_INDEX,
            more_results=True,
        ),
        *pk.text_result_set(
            ["id", "name"],
            [[b"1", b"a"], [b"2", None], [b"3", b"c"]],
            deprecate_eof=deprecate_eof,
            more_results=True,
        ),
        pk.ok(0, 0, AUTOCOMMIT, 0),  # the CALL's own status
    )
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "CALL report()",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_sent=4,
                result_sets=2,
                status=AUTOCOMMIT | NO_GOOD_INDEX,
            ),
        ],
    )
    assert result.queries[0].no_good_index_used


@pytest.mark.parametrize(
    ("statement", "schema"),
    [
        ("USE shop", "shop"),
        ("use `we``ird`", "we`ird"),
        ("  USE db2 ; ", "db2"),
        ("Use\tmixed", "mixed"),
        ("USEless", None),
        ("SELECT 1; USE hidden", "hidden"),
        ("SELECT 1 -- USE hidden", None),
    ],
)
def test_use_statement_changes_schema(statement: str, schema: str | None) -> None:
    conv = pk.login()
    sent, answer = conv.command(pk.com_query(statement), pk.ok())
    sent2, answer2 = conv.command(pk.com_ping(), pk.ok())
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY, statement, bytes_received=len(sent), bytes_sent=len(answer)
            ),
            query_event(
                Command.COM_PING,
                "",
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                schema=schema,
            ),
        ],
    )
    assert result.tracker.schema == schema


def test_failed_use_keeps_schema() -> None:
    conv = pk.login(database="shop")
    sent, answer = conv.command(pk.com_query("USE nope"), pk.err(1049, "Unknown database 'nope'"))
    result = replay(conv.chunks)
    assert result.tracker.schema == "shop"
    assert result.queries == [
        query_event(
            Command.COM_QUERY,
            "USE nope",
            bytes_received=len(sent),
            bytes_sent=len(answer),
            schema="shop",
            error_code=1049,
            error_message="Unknown database 'nope'",
            sql_state="42000",
            status=NO_STATUS,
        )
    ]


def test_schema_from_session_tracking() -> None:
    caps = pk.CLIENT_CAPABILITIES | Capability.CLIENT_SESSION_TRACK
    conv = pk.login(client_capabilities=caps, database="shop")
    state = AUTOCOMMIT | ServerStatus.SERVER_SESSION_STATE_CHANGED
    sent, answer = conv.command(
        pk.com_query("CALL switch_schema()"),
        pk.ok(status=state, info=pk.session_state_schema("archive")),
    )
    result = check(
        conv,
        [
            Authenticated("app", "shop", 42, pk.MARIADB_VERSION),
            query_event(
                Command.COM_QUERY,
                "CALL switch_schema()",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                schema="shop",
                status=state,
            ),
        ],
    )
    assert result.tracker.schema == "archive"


# --- other text commands ------------------------------------------------------------------


def test_init_db() -> None:
    conv = pk.login()
    sent, answer = conv.command(pk.com_init_db("shop"), pk.ok())
    sent2, answer2 = conv.command(pk.com_init_db("nope"), pk.err(1049, "Unknown database 'nope'"))
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_INIT_DB, "shop", bytes_received=len(sent), bytes_sent=len(answer)
            ),
            query_event(
                Command.COM_INIT_DB,
                "nope",
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                schema="shop",
                error_code=1049,
                error_message="Unknown database 'nope'",
                sql_state="42000",
                status=NO_STATUS,
            ),
        ],
    )
    assert result.tracker.schema == "shop"


def test_ping() -> None:
    conv = pk.login()
    sent, answer = conv.command(pk.com_ping(), pk.ok(status=AUTOCOMMIT | IN_TRANS))
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_PING,
                "",
                bytes_received=5,
                bytes_sent=11,
                status=AUTOCOMMIT | IN_TRANS,
            ),
        ],
    )
    assert (len(sent), len(answer)) == (5, 11)


def test_statistics_answered_with_a_bare_string() -> None:
    conv = pk.login()
    _sent, answer = conv.command(pk.com_statistics(), pk.STATISTICS_TEXT)
    sent2, answer2 = conv.command(pk.com_statistics(), pk.err(1227, "Access denied", "42000"))
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_STATISTICS,
                "",
                bytes_received=5,
                bytes_sent=4 + len(pk.STATISTICS_TEXT),
                status=NO_STATUS,
            ),
            query_event(
                Command.COM_STATISTICS,
                "",
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                error_code=1227,
                error_message="Access denied",
                sql_state="42000",
                status=NO_STATUS,
            ),
        ],
    )
    assert len(answer) == 4 + len(pk.STATISTICS_TEXT)


@EOF_MODES
def test_field_list(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    sent, answer = conv.command(
        pk.com_field_list("t", "na%"),
        *pk.field_list_response(["id", "name"], deprecate_eof=deprecate_eof),
    )
    sent2, answer2 = conv.command(pk.com_field_list("nope"), pk.err(1146, "no table", "42S02"))
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_FIELD_LIST, "t", bytes_received=len(sent), bytes_sent=len(answer)
            ),
            query_event(
                Command.COM_FIELD_LIST,
                "nope",
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                error_code=1146,
                error_message="no table",
                sql_state="42S02",
                status=NO_STATUS,
            ),
        ],
    )


@EOF_MODES
def test_set_option(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    sent, answer = conv.command(
        pk.com_set_option(1), pk.end_of_result(deprecate_eof, AUTOCOMMIT | IN_TRANS, warnings=1)
    )
    sent2, answer2 = conv.command(pk.com_set_option(7), pk.err(1047, "Unknown command", "08S01"))
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_SET_OPTION,
                "",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                warnings=1,
                status=AUTOCOMMIT | IN_TRANS,
            ),
            query_event(
                Command.COM_SET_OPTION,
                "",
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                error_code=1047,
                error_message="Unknown command",
                sql_state="08S01",
                status=NO_STATUS,
            ),
        ],
    )


def test_set_option_ok_with_session_state_under_deprecate_eof() -> None:
    caps = pk.CLIENT_CAPABILITIES | Capability.CLIENT_SESSION_TRACK
    conv = pk.login(client_capabilities=caps, deprecate_eof=True)
    # The OK that replaces EOF may be longer than an EOF when it carries session state.
    state = AUTOCOMMIT | ServerStatus.SERVER_SESSION_STATE_CHANGED
    answer_payload = pk.eof_ok(state, 0, info=pk.session_state_schema("shop"))
    assert len(answer_payload) >= 9
    sent, answer = conv.command(pk.com_set_option(0), answer_payload)
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_SET_OPTION,
                "",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                status=state,
            ),
        ],
    )


def test_process_kill() -> None:
    conv = pk.login()
    sent, answer = conv.command(pk.com_process_kill(1234), pk.ok())
    sent2, answer2 = conv.command(
        pk.com_process_kill(99), pk.err(1094, "Unknown thread id: 99", "HY000")
    )
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_PROCESS_KILL, "1234", bytes_received=len(sent), bytes_sent=len(answer)
            ),
            query_event(
                Command.COM_PROCESS_KILL,
                "99",
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                error_code=1094,
                error_message="Unknown thread id: 99",
                sql_state="HY000",
                status=NO_STATUS,
            ),
        ],
    )


def test_unknown_command() -> None:
    conv = pk.login()
    sent, answer = conv.command(b"\x99\x01\x02", pk.err(1047, "Unknown command", "08S01"))
    sent2, answer2 = conv.command(b"\x60", pk.ok())  # a future command a server accepts
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                0x99,
                "",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                error_code=1047,
                error_message="Unknown command",
                sql_state="08S01",
                status=NO_STATUS,
            ),
            query_event(0x60, "", bytes_received=len(sent2), bytes_sent=len(answer2)),
        ],
    )
    assert result.queries[0].command_name == "COM_UNKNOWN_0x99"


def test_quit() -> None:
    conv = pk.login()
    sent, _ = conv.command(pk.com_quit())
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(Command.COM_QUIT, "", bytes_received=5, bytes_sent=0, status=NO_STATUS),
        ],
    )
    assert len(sent) == 5
    assert result.tracker.phase_name == "CLOSED"
    assert result.tracker.idle
    # The server may say goodbye with an ERR; nothing else, and the client says nothing.
    result.tracker.server_data(encode_packet(1, pk.err(1053, "Server shutdown in progress")))
    with pytest.raises(ProtocolError, match="while no command was running"):
        result.tracker.server_data(encode_packet(1, pk.ok()))
    with pytest.raises(ProtocolError, match="after the connection ended"):
        result.tracker.client_data(encode_packet(0, pk.com_ping()))


@pytest.mark.parametrize(
    ("payload", "response", "query"),
    [
        (b"\x05newdb", [pk.ok(1)], "newdb"),  # COM_CREATE_DB
        (b"\x06olddb", [pk.ok(0)], "olddb"),  # COM_DROP_DB
        (b"\x07\x01", [pk.ok()], ""),  # COM_REFRESH
        (b"\x0d", [pk.eof()], ""),  # COM_DEBUG answers EOF
        (b"\x08\x00", [pk.eof()], ""),  # COM_SHUTDOWN
    ],
)
def test_legacy_commands(payload: bytes, response: list[bytes], query: str) -> None:
    conv = pk.login()
    sent, answer = conv.command(payload, *response)
    result = replay(conv.chunks, bytewise)
    event = result.queries[0]
    assert (event.command, event.query, event.bytes_received, event.bytes_sent) == (
        payload[0],
        query,
        len(sent),
        len(answer),
    )
    assert event.error_code == 0
    assert result.tracker.idle


@EOF_MODES
def test_process_info_result_set(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    sent, answer = conv.command(
        b"\x0a", *pk.text_result_set(["Id", "User"], [[b"1", b"app"]], deprecate_eof=deprecate_eof)
    )
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_PROCESS_INFO,
                "",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_sent=1,
                result_sets=1,
            ),
        ],
    )


def test_binlog_dump_stream() -> None:
    conv = pk.login()
    sent, answer = conv.command(
        b"\x12\x04\x00\x00\x00\x00\x00\x01\x00\x00\x00binlog.000001",
        b"\x00" + b"e" * 40,
        b"\x00" + b"f" * 30,
        pk.eof(),
    )
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_BINLOG_DUMP,
                "",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                status=NO_STATUS,
            ),
        ],
    )


# --- COM_CHANGE_USER and COM_RESET_CONNECTION ------------------------------------------------


def test_change_user() -> None:
    conv = pk.login(database="shop")
    sent, answer = conv.command(pk.com_change_user("bob", b"s" * 20, "archive"), pk.ok())
    sent2, answer2 = conv.command(pk.com_ping(), pk.ok())
    result = check(
        conv,
        [
            Authenticated("app", "shop", 42, pk.MARIADB_VERSION),
            query_event(
                Command.COM_CHANGE_USER,
                "bob",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                schema="shop",
            ),
            Authenticated("bob", "archive", 42, pk.MARIADB_VERSION),
            query_event(
                Command.COM_PING,
                "",
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                user="bob",
                schema="archive",
            ),
        ],
    )
    assert (result.tracker.user, result.tracker.schema) == ("bob", "archive")


def test_change_user_without_database() -> None:
    conv = pk.login(database="shop")
    conv.command(pk.com_change_user("bob"), pk.ok())
    result = check(
        conv,
        [
            Authenticated("app", "shop", 42, pk.MARIADB_VERSION),
            query_event(
                Command.COM_CHANGE_USER,
                "bob",
                bytes_received=len(conv.chunks[-2].data),
                bytes_sent=11,
                schema="shop",
            ),
            Authenticated("bob", None, 42, pk.MARIADB_VERSION),
        ],
    )
    assert result.tracker.schema is None


def test_change_user_with_auth_switch() -> None:
    conv = pk.login()
    mark = len(conv.chunks)
    conv.command(
        pk.com_change_user("bob", b"", "shop", connect_attrs={"_client_name": "t"}),
        pk.auth_switch_request(),
    )
    conv.client(b"\x44" * 20)
    conv.server(pk.ok())
    assert [c.data[3] for c in conv.chunks[mark:]] == [0, 1, 2, 3]
    received = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == CLIENT)
    sent = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == SERVER)
    sent2, answer2 = conv.command(pk.com_query("SELECT 1"), pk.ok())
    check(
        conv,
        [
            LOGGED_IN,
            query_event(Command.COM_CHANGE_USER, "bob", bytes_received=received, bytes_sent=sent),
            Authenticated("bob", "shop", 42, pk.MARIADB_VERSION),
            query_event(
                Command.COM_QUERY,
                "SELECT 1",
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                user="bob",
                schema="shop",
            ),
        ],
    )


def test_change_user_with_extra_auth_data() -> None:
    conv = pk.login(mariadb=False)
    mark = len(conv.chunks)
    conv.command(
        pk.com_change_user("bob", b"\x22" * 32, "", "caching_sha2_password"),
        pk.auth_more_data(b"\x04"),
    )
    conv.client(b"\x02")
    conv.server(pk.auth_more_data(b"-----BEGIN PUBLIC KEY-----"))
    conv.client(b"\x33" * 256)
    conv.server(pk.ok())
    received = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == CLIENT)
    sent = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == SERVER)
    check(
        conv,
        [
            Authenticated("app", None, 42, pk.MYSQL_VERSION),
            query_event(Command.COM_CHANGE_USER, "bob", bytes_received=received, bytes_sent=sent),
            Authenticated("bob", None, 42, pk.MYSQL_VERSION),
        ],
    )


def test_change_user_refused() -> None:
    conv = pk.login(database="shop")
    sent, answer = conv.command(
        pk.com_change_user("bob", b"x" * 20, "archive"),
        pk.err(1045, "Access denied for user 'bob'", "28000"),
    )
    result = check(
        conv,
        [
            Authenticated("app", "shop", 42, pk.MARIADB_VERSION),
            AuthenticationFailed("bob", 1045, "Access denied for user 'bob'"),
            query_event(
                Command.COM_CHANGE_USER,
                "bob",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                schema="shop",
                error_code=1045,
                error_message="Access denied for user 'bob'",
                sql_state="28000",
                status=NO_STATUS,
            ),
        ],
    )
    assert (result.tracker.user, result.tracker.schema) == ("app", "shop")


@pytest.mark.parametrize(
    "forget",
    [pk.com_reset_connection(), pk.com_change_user("app")],
    ids=["reset_connection", "change_user"],
)
def test_reset_forgets_prepared_statements(forget: bytes) -> None:
    conv = pk.login()
    conv.command(
        pk.com_stmt_prepare("SELECT ?"), *pk.prepare_response(1, ["?"], [], deprecate_eof=False)
    )
    sent, _answer = conv.command(forget, pk.ok())
    execute = pk.com_stmt_execute(1, [FieldType.MYSQL_TYPE_LONG], [5])
    sent2, answer2 = conv.command(execute, pk.err(1243, "Unknown prepared statement handler"))
    result = replay(conv.chunks, SPLITTERS["random1"])
    assert result.queries[1].command == forget[0]
    assert result.queries[1].bytes_received == len(sent)
    assert result.queries[2] == query_event(
        Command.COM_STMT_EXECUTE,
        "",
        bytes_received=len(sent2),
        bytes_sent=len(answer2),
        statement_id=1,
        error_code=1243,
        error_message="Unknown prepared statement handler",
        sql_state="42000",
        status=NO_STATUS,
    )
    assert result.tracker.statements == {}


# --- prepared statements ---------------------------------------------------------------------

U = 0x8000
ALL_PARAMS: list[tuple[int, ParamValue]] = [
    (FieldType.MYSQL_TYPE_TINY, -5),
    (FieldType.MYSQL_TYPE_TINY | U, 250),
    (FieldType.MYSQL_TYPE_SHORT, -300),
    (FieldType.MYSQL_TYPE_SHORT | U, 60000),
    (FieldType.MYSQL_TYPE_INT24, 8_000_000),
    (FieldType.MYSQL_TYPE_LONG, -2_000_000_000),
    (FieldType.MYSQL_TYPE_LONG | U, 4_000_000_000),
    (FieldType.MYSQL_TYPE_LONGLONG, -(2**62)),
    (FieldType.MYSQL_TYPE_LONGLONG | U, 2**64 - 1),
    (FieldType.MYSQL_TYPE_YEAR, 1999),
    (FieldType.MYSQL_TYPE_FLOAT, 0.5),
    (FieldType.MYSQL_TYPE_DOUBLE, 3.14159),
    (FieldType.MYSQL_TYPE_NEWDECIMAL, decimal.Decimal("123.4500")),
    (FieldType.MYSQL_TYPE_DECIMAL, decimal.Decimal("-1")),
    (FieldType.MYSQL_TYPE_DATE, datetime.date(2001, 9, 11)),
    (FieldType.MYSQL_TYPE_DATETIME, datetime.datetime(2020, 1, 2, 3, 4, 5)),
    (FieldType.MYSQL_TYPE_DATETIME, datetime.datetime(2020, 1, 2, 3, 4, 5, 600)),
    (FieldType.MYSQL_TYPE_TIMESTAMP, datetime.datetime(1999, 12, 31, 23, 59, 59)),
    (FieldType.MYSQL_TYPE_TIME, datetime.timedelta(hours=838, minutes=59, seconds=59)),
    (FieldType.MYSQL_TYPE_TIME, -datetime.timedelta(minutes=1, microseconds=5)),
    (FieldType.MYSQL_TYPE_VAR_STRING, "naïve"),
    (FieldType.MYSQL_TYPE_STRING, "fixed"),
    (FieldType.MYSQL_TYPE_VARCHAR, ""),
    (FieldType.MYSQL_TYPE_JSON, '{"k": [1, 2]}'),
    (FieldType.MYSQL_TYPE_ENUM, "small"),
    (FieldType.MYSQL_TYPE_SET, "a,b"),
    (FieldType.MYSQL_TYPE_BLOB, b"\x00\x01\xfe\xff"),
    (FieldType.MYSQL_TYPE_TINY_BLOB, b"tiny"),
    (FieldType.MYSQL_TYPE_MEDIUM_BLOB, b"m" * 1000),
    (FieldType.MYSQL_TYPE_LONG_BLOB, b"l" * 70000),
    (FieldType.MYSQL_TYPE_GEOMETRY, b"\x00\x00\x00\x00\x01\x01"),
    (FieldType.MYSQL_TYPE_BIT, b"\x05"),
    (FieldType.MYSQL_TYPE_NULL, None),
    (FieldType.MYSQL_TYPE_LONG, None),  # NULL in the bitmap
]


def _prepare(
    conv: Conversation,
    statement_id: int,
    text: str,
    params: int,
    columns: list[Column] | None,
    deprecate_eof: bool,
) -> tuple[bytes, bytes]:
    return conv.command(
        pk.com_stmt_prepare(text),
        *pk.prepare_response(
            statement_id, ["?"] * params, columns or [], deprecate_eof=deprecate_eof
        ),
    )


@EOF_MODES
def test_prepare(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    text = "SELECT a, b FROM t WHERE id = ? AND x = ?"
    sent, answer = conv.command(
        pk.com_stmt_prepare(text),
        *pk.prepare_response(7, ["?", "?"], ["a", "b"], deprecate_eof=deprecate_eof, warnings=1),
    )
    sent2, answer2 = _prepare(conv, 8, "INSERT INTO t VALUES (?)", 1, None, deprecate_eof)
    sent3, answer3 = _prepare(conv, 9, "SELECT 1", 0, [Column("1")], deprecate_eof)
    sent4, answer4 = _prepare(conv, 10, "DO 1", 0, None, deprecate_eof)
    sent5, answer5 = conv.command(pk.com_stmt_prepare("SELEC"), pk.err(1064, "syntax"))
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_STMT_PREPARE,
                text,
                bytes_received=len(sent),
                bytes_sent=len(answer),
                statement_id=7,
                warnings=1,
                status=NO_STATUS,
            ),
            query_event(
                Command.COM_STMT_PREPARE,
                "INSERT INTO t VALUES (?)",
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                statement_id=8,
                status=NO_STATUS,
            ),
            query_event(
                Command.COM_STMT_PREPARE,
                "SELECT 1",
                bytes_received=len(sent3),
                bytes_sent=len(answer3),
                statement_id=9,
                status=NO_STATUS,
            ),
            query_event(
                Command.COM_STMT_PREPARE,
                "DO 1",
                bytes_received=len(sent4),
                bytes_sent=len(answer4),
                statement_id=10,
                status=NO_STATUS,
            ),
            query_event(
                Command.COM_STMT_PREPARE,
                "SELEC",
                bytes_received=len(sent5),
                bytes_sent=len(answer5),
                error_code=1064,
                error_message="syntax",
                sql_state="42000",
                status=NO_STATUS,
            ),
        ],
    )
    assert sorted(result.tracker.statements) == [7, 8, 9, 10]
    assert result.tracker.statements[7].query == text
    assert result.tracker.statements[7].num_params == 2


@EOF_MODES
def test_execute_decodes_every_parameter_type(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    text = "SELECT " + ", ".join("?" for _ in ALL_PARAMS)
    columns = [Column(f"c{i}", t) for i, (t, _) in enumerate(ALL_PARAMS)]
    _prepare(conv, 3, text, len(ALL_PARAMS), columns, deprecate_eof)
    types = [t for t, _ in ALL_PARAMS]
    values = [v for _, v in ALL_PARAMS]
    sent, answer = conv.command(
        pk.com_stmt_execute(3, types, values),
        *pk.binary_result_set(columns, [values, values], deprecate_eof=deprecate_eof),
    )
    result = check(
        conv,
        [
            LOGGED_IN,
            *replay(conv.chunks[:-2]).events[1:],
            query_event(
                Command.COM_STMT_EXECUTE,
                text,
                bytes_received=len(sent),
                bytes_sent=len(answer),
                statement_id=3,
                params=tuple(values),
                rows_sent=2,
                result_sets=1,
            ),
        ],
        {"whole": whole, "random1": SPLITTERS["random1"], "random3": SPLITTERS["random3"]},
    )
    assert result.queries[-1].params == tuple(values)


@EOF_MODES
def test_execute_reusing_bound_types(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    types = [FieldType.MYSQL_TYPE_LONG, FieldType.MYSQL_TYPE_VAR_STRING]
    _prepare(conv, 4, "INSERT INTO t VALUES (?, ?)", 2, None, deprecate_eof)
    conv.command(pk.com_stmt_execute(4, types, [1, "a"]), pk.ok(1, 1))
    sent, answer = conv.command(
        pk.com_stmt_execute(4, types, [2, None], new_params_bound=False), pk.ok(1, 2)
    )
    result = check(
        conv,
        [
            LOGGED_IN,
            *replay(conv.chunks[:-2]).events[1:],
            query_event(
                Command.COM_STMT_EXECUTE,
                "INSERT INTO t VALUES (?, ?)",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                statement_id=4,
                params=(2, None),
                rows_affected=1,
                insert_id=2,
            ),
        ],
    )
    assert result.queries[-2].params == (1, "a")


def test_execute_error_still_shows_parameters() -> None:
    conv = pk.login()
    _prepare(conv, 4, "INSERT INTO t VALUES (?)", 1, None, False)
    sent, answer = conv.command(
        pk.com_stmt_execute(4, [FieldType.MYSQL_TYPE_LONG], [1]),
        pk.err(1062, "Duplicate entry '1' for key 'PRIMARY'", "23000"),
    )
    assert replay(conv.chunks, bytewise).queries[-1] == query_event(
        Command.COM_STMT_EXECUTE,
        "INSERT INTO t VALUES (?)",
        bytes_received=len(sent),
        bytes_sent=len(answer),
        statement_id=4,
        params=(1,),
        error_code=1062,
        error_message="Duplicate entry '1' for key 'PRIMARY'",
        sql_state="23000",
        status=NO_STATUS,
    )


@EOF_MODES
def test_send_long_data_then_execute(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    text = "INSERT INTO blobs VALUES (?, ?)"
    _prepare(conv, 5, text, 2, None, deprecate_eof)
    long1, _ = conv.command(pk.com_stmt_send_long_data(5, 0, b"first "))
    long2, _ = conv.command(pk.com_stmt_send_long_data(5, 0, b"second"))
    types = [FieldType.MYSQL_TYPE_BLOB, FieldType.MYSQL_TYPE_LONG]
    sent, answer = conv.command(
        pk.com_stmt_execute(5, types, [b"", 9], long_data=frozenset({0})), pk.ok(1, 12)
    )
    # The server forgets long data after an execute: the next one carries its value.
    sent2, answer2 = conv.command(pk.com_stmt_execute(5, types, [b"inline", 10]), pk.ok(1, 13))
    check(
        conv,
        [
            LOGGED_IN,
            *replay(conv.chunks[:-6]).events[1:],
            query_event(
                Command.COM_STMT_SEND_LONG_DATA,
                text,
                bytes_received=len(long1),
                bytes_sent=0,
                statement_id=5,
                status=NO_STATUS,
            ),
            query_event(
                Command.COM_STMT_SEND_LONG_DATA,
                text,
                bytes_received=len(long2),
                bytes_sent=0,
                statement_id=5,
                status=NO_STATUS,
            ),
            query_event(
                Command.COM_STMT_EXECUTE,
                text,
                bytes_received=len(sent),
                bytes_sent=len(answer),
                statement_id=5,
                params=(b"first second", 9),
                rows_affected=1,
                insert_id=12,
            ),
            query_event(
                Command.COM_STMT_EXECUTE,
                text,
                bytes_received=len(sent2),
                bytes_sent=len(answer2),
                statement_id=5,
                params=(b"inline", 10),
                rows_affected=1,
                insert_id=13,
            ),
        ],
    )


def test_stmt_reset_forgets_long_data() -> None:
    conv = pk.login()
    text = "INSERT INTO blobs VALUES (?)"
    _prepare(conv, 6, text, 1, None, False)
    conv.command(pk.com_stmt_send_long_data(6, 0, b"discarded"))
    reset, reset_answer = conv.command(pk.com_stmt_reset(6), pk.ok())
    sent, answer = conv.command(
        pk.com_stmt_execute(6, [FieldType.MYSQL_TYPE_BLOB], [b"kept"]), pk.ok(1)
    )
    result = replay(conv.chunks, SPLITTERS["random2"])
    assert result.queries[-2:] == [
        query_event(
            Command.COM_STMT_RESET,
            text,
            bytes_received=len(reset),
            bytes_sent=len(reset_answer),
            statement_id=6,
        ),
        query_event(
            Command.COM_STMT_EXECUTE,
            text,
            bytes_received=len(sent),
            bytes_sent=len(answer),
            statement_id=6,
            params=(b"kept",),
            rows_affected=1,
        ),
    ]


@EOF_MODES
def test_cursor_and_fetch(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    text = "SELECT id, name FROM t WHERE id > ?"
    columns = [Column("id", FieldType.MYSQL_TYPE_LONG), Column("name")]
    _prepare(conv, 11, text, 1, columns, deprecate_eof)
    sent, answer = conv.command(
        pk.com_stmt_execute(11, [FieldType.MYSQL_TYPE_LONGLONG], [0], flags=1),
        *pk.binary_result_set(columns, [], deprecate_eof=deprecate_eof, cursor=True),
    )
    fetch1, rows1 = conv.command(
        pk.com_stmt_fetch(11, 2),
        *pk.fetch_response(columns, [[1, "a"], [2, None]], deprecate_eof=deprecate_eof),
    )
    fetch2, rows2 = conv.command(
        pk.com_stmt_fetch(11, 2),
        *pk.fetch_response(columns, [[3, "c"]], deprecate_eof=deprecate_eof, last=True),
    )
    fetch3, err3 = conv.command(
        pk.com_stmt_fetch(11, 2), pk.err(1421, "The statement (11) has no open cursor", "HY000")
    )
    close, _ = conv.command(pk.com_stmt_close(11))
    check(
        conv,
        [
            LOGGED_IN,
            *replay(conv.chunks[:-9]).events[1:],
            query_event(
                Command.COM_STMT_EXECUTE,
                text,
                bytes_received=len(sent),
                bytes_sent=len(answer),
                statement_id=11,
                params=(0,),
                result_sets=1,
                status=AUTOCOMMIT | CURSOR,
            ),
            query_event(
                Command.COM_STMT_FETCH,
                text,
                bytes_received=len(fetch1),
                bytes_sent=len(rows1),
                statement_id=11,
                rows_sent=2,
                status=AUTOCOMMIT | CURSOR,
            ),
            query_event(
                Command.COM_STMT_FETCH,
                text,
                bytes_received=len(fetch2),
                bytes_sent=len(rows2),
                statement_id=11,
                rows_sent=1,
                status=AUTOCOMMIT | CURSOR | LAST_ROW,
            ),
            query_event(
                Command.COM_STMT_FETCH,
                text,
                bytes_received=len(fetch3),
                bytes_sent=len(err3),
                statement_id=11,
                error_code=1421,
                error_message="The statement (11) has no open cursor",
                sql_state="HY000",
                status=NO_STATUS,
            ),
            query_event(
                Command.COM_STMT_CLOSE,
                text,
                bytes_received=len(close),
                bytes_sent=0,
                statement_id=11,
                status=NO_STATUS,
            ),
        ],
    )


@EOF_MODES
def test_cursor_ends_the_response_even_with_more_bytes_in_the_chunk(deprecate_eof: bool) -> None:
    """A result whose EOF says a cursor opened ends there (rows come with FETCH): what
    follows in the same chunk is not read as its rows, by the whole-chunk fast path
    (_whole_result_set) or the general one."""
    conv = pk.login(deprecate_eof=deprecate_eof)
    columns = [Column("id", FieldType.MYSQL_TYPE_LONG)]
    _prepare(conv, 11, "SELECT id FROM t WHERE id > ?", 1, columns, deprecate_eof)
    conv.command(
        pk.com_stmt_execute(11, [FieldType.MYSQL_TYPE_LONGLONG], [0], flags=1),
        *pk.binary_result_set(columns, [], deprecate_eof=deprecate_eof, cursor=True),
        pk.eof(),
    )
    fails(conv, "no command was running")


@EOF_MODES
def test_pipelined_result_sets_in_one_chunk(deprecate_eof: bool) -> None:
    """Two commands' result sets arriving in one chunk: each counted for its command."""
    conv = pk.login(deprecate_eof=deprecate_eof)
    first = pk.com_query("SELECT a FROM t")
    second = pk.com_query("SELECT b FROM t")
    conv.raw(CLIENT, encode_packet(0, first) + encode_packet(0, second))
    one = pk.frame(1, pk.text_result_set(["a"], [[b"1"], [b"2"]], deprecate_eof=deprecate_eof))
    two = pk.frame(1, pk.text_result_set(["b"], [[b"3"]], deprecate_eof=deprecate_eof))
    conv.raw(SERVER, one + two)
    result = check(
        conv,
        [
            LOGGED_IN,
            query_event(Command.COM_QUERY, "SELECT a FROM t", bytes_received=len(first) + 4,
                        bytes_sent=len(one), rows_sent=2, result_sets=1),
            query_event(Command.COM_QUERY, "SELECT b FROM t", bytes_received=len(second) + 4,
                        bytes_sent=len(two), rows_sent=1, result_sets=1),
        ],
    )
    assert result.tracker.idle


def test_close_forgets_statement() -> None:
    conv = pk.login()
    _prepare(conv, 12, "SELECT 1", 0, [Column("1")], False)
    conv.command(pk.com_stmt_close(12))
    sent, answer = conv.command(pk.com_stmt_execute(12), pk.err(1243, "Unknown handler"))
    result = replay(conv.chunks)
    assert result.tracker.statements == {}
    assert result.queries[-1].query == ""
    assert result.queries[-1].statement_id == 12
    assert (result.queries[-1].bytes_received, result.queries[-1].bytes_sent) == (
        len(sent),
        len(answer),
    )


def test_execute_last_prepared_statement_mariadb() -> None:
    conv = pk.login()
    _prepare(conv, 13, "SELECT ?", 1, [Column("?")], False)
    sent, answer = conv.command(
        pk.com_stmt_execute(0xFFFFFFFF, [FieldType.MYSQL_TYPE_LONG], [77]),
        *pk.binary_result_set(
            [Column("?", FieldType.MYSQL_TYPE_LONG)], [[77]], deprecate_eof=False
        ),
    )
    assert replay(conv.chunks, bytewise).queries[-1] == query_event(
        Command.COM_STMT_EXECUTE,
        "SELECT ?",
        bytes_received=len(sent),
        bytes_sent=len(answer),
        statement_id=0xFFFFFFFF,
        params=(77,),
        rows_sent=1,
        result_sets=1,
    )


@EOF_MODES
def test_execute_call_with_out_parameters(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    _prepare(conv, 14, "CALL p(?, ?)", 2, None, deprecate_eof)
    columns = [Column("x", FieldType.MYSQL_TYPE_LONG)]
    sent, answer = conv.command(
        pk.com_stmt_execute(14, [FieldType.MYSQL_TYPE_LONG] * 2, [5, None]),
        *pk.binary_result_set(columns, [[5], [6]], deprecate_eof=deprecate_eof, more_results=True),
        *pk.binary_result_set(
            columns,
            [[10]],
            deprecate_eof=deprecate_eof,
            status=AUTOCOMMIT | ServerStatus.SERVER_PS_OUT_PARAMS,
            more_results=True,
        ),
        pk.ok(0, 0, AUTOCOMMIT),
    )
    assert replay(conv.chunks, SPLITTERS["random1"]).queries[-1] == query_event(
        Command.COM_STMT_EXECUTE,
        "CALL p(?, ?)",
        bytes_received=len(sent),
        bytes_sent=len(answer),
        statement_id=14,
        params=(5, None),
        rows_sent=3,
        result_sets=2,
    )


# --- pipelining --------------------------------------------------------------------------------


@EOF_MODES
def test_pipelined_commands(deprecate_eof: bool) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    _prepare(conv, 1, "SELECT 1", 0, [Column("1")], deprecate_eof)
    commands = [
        pk.frame(0, [pk.com_query("SELECT 1")]),
        pk.frame(0, [pk.com_stmt_close(1)]),  # no response
        pk.frame(0, [pk.com_query("SET @a = 1")]),
        pk.frame(0, [pk.com_ping()]),
    ]
    responses = [
        pk.frame(1, pk.text_result_set(["1"], [[b"1"]], deprecate_eof=deprecate_eof)),
        pk.frame(1, [pk.ok(0, 0, AUTOCOMMIT, 1)]),
        pk.frame(1, [pk.ok()]),
    ]
    conv.raw(CLIENT, b"".join(commands))
    conv.raw(SERVER, b"".join(responses))
    check(
        conv,
        [
            LOGGED_IN,
            *replay(conv.chunks[:-2]).events[1:],
            query_event(
                Command.COM_QUERY,
                "SELECT 1",
                bytes_received=len(commands[0]),
                bytes_sent=len(responses[0]),
                rows_sent=1,
                result_sets=1,
            ),
            query_event(
                Command.COM_STMT_CLOSE,
                "SELECT 1",
                bytes_received=len(commands[1]),
                bytes_sent=0,
                statement_id=1,
                status=NO_STATUS,
            ),
            query_event(
                Command.COM_QUERY,
                "SET @a = 1",
                bytes_received=len(commands[2]),
                bytes_sent=len(responses[1]),
                warnings=1,
            ),
            query_event(
                Command.COM_PING,
                "",
                bytes_received=len(commands[3]),
                bytes_sent=len(responses[2]),
            ),
        ],
    )


def test_command_sent_while_response_streams() -> None:
    conv = pk.login()
    response = pk.frame(1, pk.text_result_set(["a"], [[b"1"], [b"2"]], deprecate_eof=False))
    first = pk.frame(0, [pk.com_query("SELECT a FROM t")])
    second = pk.frame(0, [pk.com_ping()])
    conv.raw(CLIENT, first)
    conv.raw(SERVER, response[:30])
    conv.raw(CLIENT, second)
    conv.raw(SERVER, response[30:] + pk.frame(1, [pk.ok()]))
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "SELECT a FROM t",
                bytes_received=len(first),
                bytes_sent=len(response),
                rows_sent=2,
                result_sets=1,
            ),
            query_event(Command.COM_PING, "", bytes_received=len(second), bytes_sent=11),
        ],
    )


# --- timing ----------------------------------------------------------------------------------


def test_first_byte_and_duration_from_the_clock() -> None:
    clock = FakeClock()
    tracker = new_tracker(clock)
    conv = pk.login()
    for chunk in conv.chunks:
        (tracker.client_data if chunk.direction == CLIENT else tracker.server_data)(chunk.data)
    response = pk.frame(1, pk.text_result_set(["a"], [[b"1"], [b"2"]], deprecate_eof=False))
    clock.now = 1_000_000
    tracker.client_data(pk.frame(0, [pk.com_query("SELECT a FROM t")]))
    clock.now = 3_500_000
    tracker.server_data(response[:20])
    clock.now = 7_000_000
    tracker.server_data(response[20:40])
    clock.now = 10_000_000
    tracker.server_data(response[40:])
    clock.now = 12_000_000
    tracker.client_data(pk.frame(0, [pk.com_stmt_close(1)]))
    events = [e for e in tracker.events if isinstance(e, QueryEvent)]
    assert [(e.first_byte_us, e.duration_us) for e in events] == [(2500, 9000), (0, 0)]
    assert len(tracker.events) == 3


def test_no_query_events_when_not_asked() -> None:
    conv = pk.login()
    conv.command(pk.com_query("SELECT 1"), pk.ok())
    tracker = new_tracker()
    tracker.emit_query_events = False
    result = replay(conv.chunks, tracker=tracker)
    assert result.events == [LOGGED_IN]
    assert result.tracker.idle


# --- 16 MiB packets ----------------------------------------------------------------------------

BIG_SPLITTERS: dict[str, Splitter] = {
    "whole": whole,
    "few": about_n_pieces(7, seed=1),
    "many": about_n_pieces(3000, seed=2),
}


@pytest.mark.parametrize("extra", [-1, 0, 100, MAX + 5], ids=["max-1", "max", "max+100", "2max"])
def test_big_query_from_the_client(extra: int) -> None:
    conv = pk.login()
    text = "SELECT '" + "x" * (MAX + extra - 10) + "'"
    sent, answer = conv.command(pk.com_query(text), pk.ok())
    pieces = (len(text) + 1) // MAX + 1
    assert len(sent) == len(text) + 1 + 4 * pieces
    assert answer[3] == pieces  # the response follows the last piece
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                text[: MAX_CAPTURED_COMMAND - 1],
                bytes_received=len(sent),
                bytes_sent=len(answer),
                truncated=True,
            ),
        ],
        BIG_SPLITTERS,
    )


@EOF_MODES
@pytest.mark.parametrize("size", [MAX - 4, MAX + 1, 2 * MAX], ids=["max", "max+5", "2max+9"])
def test_big_row_from_the_server(deprecate_eof: bool, size: int) -> None:
    conv = pk.login(deprecate_eof=deprecate_eof)
    # A value of MAX+1 bytes has a 0xFE length prefix: a row that starts like an EOF.
    rows = [[b"small"], [b"v" * size], [b"after"]]
    sent, answer = conv.command(
        pk.com_query("SELECT big FROM t"),
        *pk.text_result_set(["big"], rows, deprecate_eof=deprecate_eof),
    )
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "SELECT big FROM t",
                bytes_received=len(sent),
                bytes_sent=len(answer),
                rows_sent=3,
                result_sets=1,
            ),
        ],
        BIG_SPLITTERS,
    )


def test_big_local_infile_packet() -> None:
    conv = pk.login()
    mark = len(conv.chunks)
    conv.command(pk.com_query("LOAD DATA LOCAL INFILE 'big' INTO TABLE t"), b"\xfbbig")
    conv.client(b"r" * (MAX + 10), b"tail\n")
    conv.client(b"")
    conv.server(pk.ok(2))
    # command 0, request 1, file 2-3 (two pieces) and 4, empty packet 5, OK 6
    assert conv.chunks[-1].data[3] == 6
    received = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == CLIENT)
    sent = sum(len(c.data) for c in conv.chunks[mark:] if c.direction == SERVER)
    check(
        conv,
        [
            LOGGED_IN,
            query_event(
                Command.COM_QUERY,
                "LOAD DATA LOCAL INFILE 'big' INTO TABLE t",
                bytes_received=received,
                bytes_sent=sent,
                rows_affected=2,
            ),
        ],
        BIG_SPLITTERS,
    )


def test_big_execute_parameter() -> None:
    conv = pk.login()
    _prepare(conv, 2, "INSERT INTO blobs VALUES (?)", 1, None, False)
    blob = b"\x00\xff" * (MAX // 2 + 50)
    sent, _answer = conv.command(
        pk.com_stmt_execute(2, [FieldType.MYSQL_TYPE_LONG_BLOB], [blob]), pk.ok(1)
    )
    result = replay(conv.chunks, about_n_pieces(50))
    event = result.queries[-1]
    assert (event.bytes_received, event.bytes_sent, event.rows_affected) == (len(sent), 11, 1)
    assert event.truncated
    assert event.params is None  # the capture was cut: the parameter cannot be decoded
    assert event.query == "INSERT INTO blobs VALUES (?)"


# --- errors: sequence ids -------------------------------------------------------------------


def test_command_with_wrong_sequence_id() -> None:
    conv = pk.login()
    conv.raw(CLIENT, encode_packet(1, pk.com_ping()))
    fails(conv, "command packet has sequence id 1, expected 0")


def test_response_with_wrong_sequence_id() -> None:
    conv = pk.login()
    conv.command(pk.com_ping())
    conv.raw(SERVER, encode_packet(2, pk.ok()))
    fails(conv, "server packet has sequence id 2, expected 1")


def test_row_with_wrong_sequence_id() -> None:
    conv = pk.login()
    conv.command(pk.com_query("SELECT a"))
    payloads = pk.text_result_set(["a"], [[b"1"], [b"2"], [b"3"]], deprecate_eof=False)
    data = bytearray(pk.frame(1, payloads))
    # Packets: count, definition, EOF, three rows, EOF. The third row repeats the second's id.
    offsets = []
    pos = 0
    while pos < len(data):
        offsets.append(pos)
        pos += 4 + int.from_bytes(data[pos : pos + 3], "little")
    data[offsets[5] + 3] = data[offsets[4] + 3]
    conv.raw(SERVER, bytes(data))
    fails(conv, "server packet has sequence id 5, expected 6")


def test_continuation_with_wrong_sequence_id() -> None:
    conv = pk.login()
    data = bytearray(pk.frame(0, [pk.com_query(b"x" * (MAX + 10))]))
    data[4 + MAX + 3] = 9
    conv.raw(CLIENT, bytes(data))
    fails(conv, "continuation packet has sequence id 9, expected 1", BIG_SPLITTERS)


def test_greeting_with_wrong_sequence_id() -> None:
    conv = Conversation()
    conv.raw(SERVER, encode_packet(1, pk.greeting_mariadb()))
    fails(conv, "greeting has sequence id 1, expected 0")


def test_handshake_response_with_wrong_sequence_id() -> None:
    conv = Conversation()
    conv.server(pk.greeting_mariadb())
    conv.raw(CLIENT, encode_packet(2, pk.handshake_response()))
    fails(conv, "handshake response has sequence id 2, expected 1")


def test_auth_data_with_wrong_sequence_id() -> None:
    conv = Conversation()
    conv.server(pk.greeting_mariadb())
    conv.client(pk.handshake_response())
    conv.server(pk.auth_switch_request())
    conv.raw(CLIENT, encode_packet(4, b"\x00" * 20))
    fails(conv, "auth packet has sequence id 4, expected 3")


def test_file_data_with_wrong_sequence_id() -> None:
    conv = pk.login()
    conv.command(pk.com_query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t"), b"\xfbf")
    conv.raw(CLIENT, encode_packet(3, b"1,2\n"))
    fails(conv, "file data packet has sequence id 3, expected 2")


# --- errors: unexpected packets in each phase ----------------------------------------------------


def _after(command: bytes, *response: bytes, deprecate_eof: bool = False) -> Conversation:
    conv = pk.login(deprecate_eof=deprecate_eof)
    conv.command(command, *response)
    return conv


UNEXPECTED = {
    "result: EOF": (_after(pk.com_query("q"), pk.eof()), "at start of a result"),
    "result: empty packet": (_after(pk.com_query("q"), b""), "at start of a result"),
    "result: column count with trailing bytes": (
        _after(pk.com_query("q"), b"\x02\x00"),
        "invalid column count",
    ),
    "result: bad length prefix": (_after(pk.com_query("q"), b"\xfc\x01"), "expected 2-byte"),
    "columns: OK": (_after(pk.com_query("q"), b"\x02", pk.ok()), "expected a column definition"),
    "columns EOF: a row": (
        _after(pk.com_query("q"), b"\x01", pk.Column("a").definition(), b"\x011"),
        "expected an EOF",
    ),
    "prepare: not PREPARE_OK": (
        _after(pk.com_stmt_prepare("q"), b"\x01\x02"),
        "not a COM_STMT_PREPARE_OK",
    ),
    "prepare: parameter not a definition": (
        _after(
            pk.com_stmt_prepare("q"),
            pk.prepare_response(1, ["?"], [], deprecate_eof=False)[0],
            b"\x05x",
        ),
        "expected a column definition",
    ),
    "prepare: parameter EOF missing": (
        _after(
            pk.com_stmt_prepare("q"),
            *pk.prepare_response(1, ["?"], ["a"], deprecate_eof=False)[:2],
            pk.Column("a").definition(),
        ),
        "expected an EOF",
    ),
    "prepare: column EOF missing": (
        _after(
            pk.com_stmt_prepare("q"),
            *pk.prepare_response(1, [], ["a"], deprecate_eof=False)[:2],
            pk.ok(),
        ),
        "expected an EOF",
    ),
    "simple: bare data": (_after(pk.com_ping(), b"\x01x"), "expected OK, ERR or EOF, got 0x01"),
    "simple: long 0xFE": (_after(pk.com_ping(), b"\xfe" + b"\x00" * 9), "expected OK, ERR or EOF"),
    "field list: OK": (_after(pk.com_field_list("t"), pk.ok()), "in a field list"),
    "binlog: bad event": (_after(b"\x12" + b"\x00" * 10, b"\x05"), "in a binlog stream"),
    "auth: unknown packet": (
        _after(pk.com_change_user("bob"), b"\x02"),
        "unexpected packet 0x02 during authentication",
    ),
    "infile: server talks": (
        _after(pk.com_query("LOAD DATA"), b"\xfbf", pk.ok()),
        "while the client was sending a file",
    ),
    "infile: for a statement": (
        _after(pk.com_stmt_execute(1), b"\xfbf"),
        "LOCAL INFILE request in answer to a non-query",
    ),
    "idle: OK": (_after(pk.com_ping(), pk.ok(), pk.ok()), "while no command was running"),
    "control packet too large": (
        _after(pk.com_query("q"), pk.ok(info=b"i" * (1 << 20))),
        "exceeds the limit",
    ),
}


@pytest.mark.parametrize(("conv", "message"), UNEXPECTED.values(), ids=UNEXPECTED.keys())
def test_unexpected_server_packet(conv: Conversation, message: str) -> None:
    fails(conv, re.escape(message), {"whole": whole, "bytewise": bytewise})


def test_server_err_while_idle_is_tolerated() -> None:
    conv = pk.login()
    goodbye = pk.frame(0, [pk.err(1927, "Connection was killed", "70100")])
    conv.raw(SERVER, goodbye)
    for split in (whole, bytewise):
        result = replay(conv.chunks, split)
        assert result.events == [LOGGED_IN]
        assert result.to_client.endswith(goodbye)
        assert result.tracker.idle


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([(CLIENT, b"\x01\x00\x00\x00\x0e")], "before the server greeting"),
        (
            [(SERVER, encode_packet(0, pk.greeting_mariadb()) + encode_packet(1, pk.ok()))],
            "before the client answered",
        ),
        ([(SERVER, encode_packet(0, b"\x09rest"))], "protocol version 9"),
        ([(SERVER, b"\xff\xff\x7f\x00")], "server greeting too large"),
        (
            [
                (SERVER, encode_packet(0, pk.greeting_mariadb())),
                (CLIENT, b"\x00\x00\x20\x01"),
            ],
            "handshake response too large",
        ),
    ],
    ids=["client first", "greeting with more", "protocol 9", "huge greeting", "huge response"],
)
def test_connection_phase_errors(chunks: list[tuple[str, bytes]], message: str) -> None:
    conv = Conversation()
    for direction, data in chunks:
        conv.raw(CLIENT if direction == CLIENT else SERVER, data)
    fails(conv, message, {"whole": whole, "bytewise": bytewise})


def test_empty_command_packet() -> None:
    conv = pk.login()
    conv.raw(CLIENT, b"\x00\x00\x00\x00")
    fails(conv, "empty command packet")


def test_unfinished_change_user() -> None:
    """Where a client chunk's unfinished COM_CHANGE_USER starts (the guarded relay holds
    it back until whole), for chunks that start at a packet boundary or inside one."""
    tracker = replay(pk.login().chunks).tracker
    change_user = encode_packet(0, pk.com_change_user("bob", b"secret-in-clear"))
    ping = encode_packet(0, pk.com_ping())
    big_query = encode_packet(0, pk.com_query("SELECT '" + "x" * 100 + "'"))
    assert tracker.unfinished_change_user(change_user) == -1  # whole: checked as it is
    assert tracker.unfinished_change_user(change_user[:12]) == 0
    assert tracker.unfinished_change_user(change_user[:3]) == 0  # command byte unseen
    assert tracker.unfinished_change_user(ping + change_user[:12]) == len(ping)
    assert tracker.unfinished_change_user(ping + ping[:4]) == len(ping)  # might be one
    assert tracker.unfinished_change_user(ping + big_query[:30]) == -1  # a query
    # A chunk that starts inside a packet begun in an earlier chunk.
    tracker.client_data(big_query[:30])
    rest = big_query[30:]
    assert tracker.unfinished_change_user(rest) == -1
    assert tracker.unfinished_change_user(rest + change_user[:9]) == len(rest)
    # Not in the command phase: nothing to hold.
    assert new_tracker().unfinished_change_user(change_user[:12]) == -1
