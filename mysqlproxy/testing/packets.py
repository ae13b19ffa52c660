"""A packet factory: exact byte sequences of whole protocol exchanges, for tests.

Three layers, each built on the one before:

- payload builders return one packet payload (`greeting_mariadb()`, `com_query(...)`,
  `ok()`...), built on the encoders of mysqlproxy.protocol.messages;
- response builders return the list of payloads a server sends for one command
  (`text_result_set(...)`, `prepare_response(...)`, `binary_result_set(...)`);
- `Conversation` frames payloads with the sequence ids the protocol requires (packets of
  16 MiB and more split into 0xFFFFFF pieces) and records the chunks each side sends, in
  the causal order a proxy sees them.

    conv = login(deprecate_eof=True)
    sent, answer = conv.command(com_query("SELECT 1"), *text_result_set(["1"], [[b"1"]],
                                                                        deprecate_eof=True))
    for chunk in conv.chunks: ...

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_command_phase.html
https://mariadb.com/kb/en/clientserver-protocol/
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from mysqlproxy.protocol import messages, wire
from mysqlproxy.protocol.constants import (
    LOCAL_INFILE_HEADER,
    Capability,
    Command,
    FieldType,
    ServerStatus,
)
from mysqlproxy.protocol.messages import Greeting, ParamValue
from mysqlproxy.protocol.packets import encode_packet, next_sequence_id

Direction = Literal["client", "server"]
CLIENT: Final = "client"
SERVER: Final = "server"

AUTOCOMMIT: Final = ServerStatus.SERVER_STATUS_AUTOCOMMIT
UTF8MB4_GENERAL_CI: Final = 45
BINARY_CHARSET: Final = 63
SCRAMBLE: Final = b"abcdefghijklmnopqrst"  # 20 bytes, no NUL: a fixed nonce
MARIADB_VERSION: Final = "5.5.5-10.11.6-MariaDB-0+deb12u1"
MYSQL_VERSION: Final = "8.0.36"
NATIVE_PASSWORD: Final = "mysql_native_password"
CACHING_SHA2_PASSWORD: Final = "caching_sha2_password"

_BASE_SERVER_CAPABILITIES = (
    Capability.CLIENT_FOUND_ROWS
    | Capability.CLIENT_LONG_FLAG
    | Capability.CLIENT_CONNECT_WITH_DB
    | Capability.CLIENT_NO_SCHEMA
    | Capability.CLIENT_COMPRESS
    | Capability.CLIENT_ODBC
    | Capability.CLIENT_LOCAL_FILES
    | Capability.CLIENT_IGNORE_SPACE
    | Capability.CLIENT_PROTOCOL_41
    | Capability.CLIENT_INTERACTIVE
    | Capability.CLIENT_SSL
    | Capability.CLIENT_IGNORE_SIGPIPE
    | Capability.CLIENT_TRANSACTIONS
    | Capability.CLIENT_RESERVED
    | Capability.CLIENT_SECURE_CONNECTION
    | Capability.CLIENT_MULTI_STATEMENTS
    | Capability.CLIENT_MULTI_RESULTS
    | Capability.CLIENT_PS_MULTI_RESULTS
    | Capability.CLIENT_PLUGIN_AUTH
    | Capability.CLIENT_CONNECT_ATTRS
    | Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capability.CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
    | Capability.CLIENT_SESSION_TRACK
    | Capability.CLIENT_DEPRECATE_EOF
    | Capability.CLIENT_SSL_VERIFY_SERVER_CERT
    | Capability.CLIENT_REMEMBER_OPTIONS
)

# What MariaDB 10.11 offers: CLIENT_MYSQL (bit 0) cleared, which says the greeting's
# last reserved bytes carry the extended capabilities.
MARIADB_SERVER_CAPABILITIES: Final = (
    _BASE_SERVER_CAPABILITIES
    | Capability.MARIADB_CLIENT_PROGRESS
    | Capability.MARIADB_CLIENT_COM_MULTI
    | Capability.MARIADB_CLIENT_STMT_BULK_OPERATIONS
    | Capability.MARIADB_CLIENT_EXTENDED_METADATA
    | Capability.MARIADB_CLIENT_CACHE_METADATA
)

# What MySQL 8.0 offers.
MYSQL_SERVER_CAPABILITIES: Final = (
    _BASE_SERVER_CAPABILITIES
    | Capability.CLIENT_LONG_PASSWORD
    | Capability.CLIENT_OPTIONAL_RESULTSET_METADATA
    | Capability.CLIENT_ZSTD_COMPRESSION_ALGORITHM
    | Capability.CLIENT_QUERY_ATTRIBUTES
    | Capability.MULTI_FACTOR_AUTHENTICATION
)

# What a typical client asks for (nothing the proxy masks), without DEPRECATE_EOF.
CLIENT_CAPABILITIES: Final = (
    Capability.CLIENT_LONG_PASSWORD
    | Capability.CLIENT_FOUND_ROWS
    | Capability.CLIENT_LONG_FLAG
    | Capability.CLIENT_LOCAL_FILES
    | Capability.CLIENT_PROTOCOL_41
    | Capability.CLIENT_TRANSACTIONS
    | Capability.CLIENT_SECURE_CONNECTION
    | Capability.CLIENT_MULTI_STATEMENTS
    | Capability.CLIENT_MULTI_RESULTS
    | Capability.CLIENT_PS_MULTI_RESULTS
    | Capability.CLIENT_PLUGIN_AUTH
    | Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)


# --- framing ------------------------------------------------------------------------


def frame(first_sequence_id: int, payloads: Iterable[bytes]) -> bytes:
    """Consecutive packets starting at `first_sequence_id`, each split into 0xFFFFFF
    pieces when long enough (each piece takes a sequence id of its own)."""
    out = bytearray()
    seq = first_sequence_id
    for payload in payloads:
        out += encode_packet(seq, payload)
        seq = next_sequence_id(seq, len(payload))
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes one side sent, as a proxy between them receives them."""

    direction: Direction
    data: bytes


@dataclass(slots=True)
class Conversation:
    """A whole exchange being written: frames payloads with the next sequence ids and
    records the chunks in causal order. `command()` starts a new command (sequence id 0).
    """

    chunks: list[Chunk] = field(default_factory=list)
    sequence_id: int = 0

    def _send(self, direction: Direction, payloads: Sequence[bytes]) -> bytes:
        data = frame(self.sequence_id, payloads)
        for payload in payloads:
            self.sequence_id = next_sequence_id(self.sequence_id, len(payload))
        if data:
            self.chunks.append(Chunk(direction, data))
        return data

    def client(self, *payloads: bytes) -> bytes:
        """Client packets, continuing the sequence; returns the bytes sent."""
        return self._send(CLIENT, payloads)

    def server(self, *payloads: bytes) -> bytes:
        """Server packets, continuing the sequence; returns the bytes sent."""
        return self._send(SERVER, payloads)

    def command(self, payload: bytes, *response: bytes) -> tuple[bytes, bytes]:
        """A command (sequence id 0) and the server's response to it, as two chunks.
        Returns (the command's bytes, the response's bytes)."""
        self.sequence_id = 0
        sent = self.client(payload)
        answer = self.server(*response) if response else b""
        return sent, answer

    def raw(self, direction: Direction, data: bytes) -> None:
        """Bytes recorded exactly as given (malformed input)."""
        self.chunks.append(Chunk(direction, data))

    def bytes_from(self, direction: Direction) -> bytes:
        """Everything one side sent, concatenated."""
        return b"".join(c.data for c in self.chunks if c.direction == direction)


# --- connection phase -----------------------------------------------------------------


def greeting(
    capabilities: Capability,
    *,
    server_version: str,
    thread_id: int = 42,
    auth_plugin: str = NATIVE_PASSWORD,
    scramble: bytes = SCRAMBLE,
    status: ServerStatus = AUTOCOMMIT,
    charset: int = UTF8MB4_GENERAL_CI,
) -> bytes:
    """A Protocol::HandshakeV10 payload."""
    return messages.encode_greeting(
        Greeting(
            server_version=server_version,
            thread_id=thread_id,
            auth_data=scramble,
            capabilities=capabilities,
            charset=charset,
            status=status,
            auth_plugin=auth_plugin,
        )
    )


def greeting_mariadb(
    capabilities: Capability = MARIADB_SERVER_CAPABILITIES, thread_id: int = 42
) -> bytes:
    """What MariaDB 10.11 sends: extended capabilities in the reserved bytes."""
    return greeting(capabilities, server_version=MARIADB_VERSION, thread_id=thread_id)


def greeting_mysql(
    capabilities: Capability = MYSQL_SERVER_CAPABILITIES,
    thread_id: int = 42,
    auth_plugin: str = CACHING_SHA2_PASSWORD,
) -> bytes:
    """What MySQL 8.0 sends."""
    return greeting(
        capabilities, server_version=MYSQL_VERSION, thread_id=thread_id, auth_plugin=auth_plugin
    )


def handshake_response(
    capabilities: Capability = CLIENT_CAPABILITIES,
    user: str = "app",
    auth_response: bytes = b"",
    database: str | None = None,
    auth_plugin: str | None = NATIVE_PASSWORD,
    connect_attrs: Mapping[str, str] | None = None,
    charset: int = UTF8MB4_GENERAL_CI,
) -> bytes:
    """A Protocol::HandshakeResponse41 payload. CLIENT_CONNECT_WITH_DB and
    CLIENT_CONNECT_ATTRS are added when a database or attributes are given."""
    if database is not None:
        capabilities |= Capability.CLIENT_CONNECT_WITH_DB
    if connect_attrs is not None:
        capabilities |= Capability.CLIENT_CONNECT_ATTRS
    payload = messages.encode_handshake_response(
        capabilities, user, auth_response, database, auth_plugin, charset
    )
    if connect_attrs is not None:
        payload += wire.lenenc_bytes(_connect_attrs(connect_attrs))
    return payload


def ssl_request(capabilities: Capability = CLIENT_CAPABILITIES | Capability.CLIENT_SSL) -> bytes:
    """The 32-byte SSLRequest a client sends before starting TLS."""
    return (
        wire.uint(int(capabilities) & 0xFFFFFFFF, 4)
        + wire.uint(1 << 24, 4)
        + wire.uint(UTF8MB4_GENERAL_CI, 1)
        + b"\x00" * 19
        + wire.uint(int(capabilities) >> 32, 4)
    )


def _connect_attrs(attrs: Mapping[str, str]) -> bytes:
    return b"".join(
        wire.lenenc_bytes(k.encode()) + wire.lenenc_bytes(v.encode()) for k, v in attrs.items()
    )


def auth_switch_request(plugin: str = NATIVE_PASSWORD, data: bytes = SCRAMBLE) -> bytes:
    """AuthSwitchRequest: 0xFE, plugin name, plugin data (NUL-terminated)."""
    return b"\xfe" + plugin.encode("ascii") + b"\x00" + data + b"\x00"


def auth_more_data(data: bytes) -> bytes:
    """AuthMoreData: 0x01 and plugin specific data (caching_sha2: 0x03 fast auth
    succeeded, 0x04 full authentication needed, or a PEM public key)."""
    return b"\x01" + data


# --- commands ---------------------------------------------------------------------


def com_query(
    sql: str | bytes, attributes: Sequence[tuple[str, ParamValue]] | None = None
) -> bytes:
    """COM_QUERY; `attributes` not None: as a client that negotiated
    CLIENT_QUERY_ATTRIBUTES sends it (an empty list still adds the two counts)."""
    return messages.encode_query(sql, attributes)


def com_init_db(schema: str) -> bytes:
    return bytes((Command.COM_INIT_DB,)) + schema.encode()


def com_ping() -> bytes:
    return bytes((Command.COM_PING,))


def com_quit() -> bytes:
    return bytes((Command.COM_QUIT,))


def com_statistics() -> bytes:
    return bytes((Command.COM_STATISTICS,))


def com_reset_connection() -> bytes:
    return bytes((Command.COM_RESET_CONNECTION,))


def com_process_kill(thread_id: int) -> bytes:
    return bytes((Command.COM_PROCESS_KILL,)) + wire.uint(thread_id, 4)


def com_field_list(table: str, wildcard: str = "") -> bytes:
    return bytes((Command.COM_FIELD_LIST,)) + table.encode() + b"\x00" + wildcard.encode()


def com_set_option(option: int) -> bytes:
    """0 = MYSQL_OPTION_MULTI_STATEMENTS_ON, 1 = ..._OFF."""
    return bytes((Command.COM_SET_OPTION,)) + wire.uint(option, 2)


def com_change_user(
    user: str,
    auth_response: bytes = b"",
    database: str = "",
    auth_plugin: str | None = NATIVE_PASSWORD,
    charset: int = UTF8MB4_GENERAL_CI,
    connect_attrs: Mapping[str, str] | None = None,
) -> bytes:
    """COM_CHANGE_USER as a CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH client sends it."""
    payload = (
        bytes((Command.COM_CHANGE_USER,))
        + user.encode()
        + b"\x00"
        + wire.uint(len(auth_response), 1)
        + auth_response
        + database.encode()
        + b"\x00"
        + wire.uint(charset, 2)
    )
    if auth_plugin is not None:
        payload += auth_plugin.encode() + b"\x00"
    if connect_attrs is not None:
        payload += wire.lenenc_bytes(_connect_attrs(connect_attrs))
    return payload


def com_stmt_prepare(sql: str) -> bytes:
    return bytes((Command.COM_STMT_PREPARE,)) + sql.encode()


def com_stmt_execute(
    statement_id: int,
    param_types: Sequence[int] = (),
    params: Sequence[ParamValue] = (),
    *,
    flags: int = 0,
    new_params_bound: bool = True,
    long_data: frozenset[int] = frozenset(),
    query_attributes: Sequence[tuple[str, ParamValue]] | None = None,
) -> bytes:
    """COM_STMT_EXECUTE; `param_types` are type | (0x8000 if unsigned). With
    `query_attributes` not None, in the CLIENT_QUERY_ATTRIBUTES layout."""
    return messages.encode_execute(
        statement_id, param_types, params, flags, new_params_bound, long_data, query_attributes
    )


def com_stmt_fetch(statement_id: int, rows: int) -> bytes:
    return bytes((Command.COM_STMT_FETCH,)) + wire.uint(statement_id, 4) + wire.uint(rows, 4)


def com_stmt_close(statement_id: int) -> bytes:
    return bytes((Command.COM_STMT_CLOSE,)) + wire.uint(statement_id, 4)


def com_stmt_reset(statement_id: int) -> bytes:
    return bytes((Command.COM_STMT_RESET,)) + wire.uint(statement_id, 4)


def com_stmt_send_long_data(statement_id: int, param_index: int, data: bytes) -> bytes:
    return (
        bytes((Command.COM_STMT_SEND_LONG_DATA,))
        + wire.uint(statement_id, 4)
        + wire.uint(param_index, 2)
        + data
    )


# --- generic responses ------------------------------------------------------------------


def ok(
    affected_rows: int = 0,
    insert_id: int = 0,
    status: ServerStatus = AUTOCOMMIT,
    warnings: int = 0,
    *,
    info: bytes = b"",
    header: int = 0x00,
) -> bytes:
    """OK_Packet. With CLIENT_SESSION_TRACK the info is length-encoded: pass
    `session_state(...)` or `wire.lenenc_bytes(...)` as `info`."""
    return messages.encode_ok(affected_rows, insert_id, status, warnings, info, header)


def eof_ok(status: ServerStatus = AUTOCOMMIT, warnings: int = 0, *, info: bytes = b"") -> bytes:
    """The OK packet with header 0xFE that ends results under CLIENT_DEPRECATE_EOF."""
    return messages.encode_ok(0, 0, status, warnings, info, header=0xFE)


def err(code: int = 1064, message: str = "You have an error", sql_state: str = "42000") -> bytes:
    return messages.encode_err(code, message, sql_state)


def eof(status: ServerStatus = AUTOCOMMIT, warnings: int = 0) -> bytes:
    return messages.encode_eof(status, warnings)


def end_of_result(
    deprecate_eof: bool, status: ServerStatus = AUTOCOMMIT, warnings: int = 0
) -> bytes:
    """What ends rows (or a field list): EOF, or OK with header 0xFE."""
    return eof_ok(status, warnings) if deprecate_eof else eof(status, warnings)


def session_state_schema(schema: str, message: bytes = b"") -> bytes:
    """The info part of an OK packet (CLIENT_SESSION_TRACK, SERVER_SESSION_STATE_CHANGED
    set in the status) that reports a new current schema."""
    entry = wire.lenenc_bytes(schema.encode())
    state = bytes((1,)) + wire.lenenc_bytes(entry)  # SESSION_TRACK_SCHEMA
    return wire.lenenc_bytes(message) + wire.lenenc_bytes(state)


def local_infile_request(filename: str) -> bytes:
    """The server asks the client for a file (LOAD DATA LOCAL INFILE)."""
    return bytes((LOCAL_INFILE_HEADER,)) + filename.encode()


# --- result sets ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """A result set or parameter column: name and binary type (| 0x8000 if unsigned)."""

    name: str
    type_and_flag: int = FieldType.MYSQL_TYPE_VAR_STRING

    def definition(self) -> bytes:
        """Its ColumnDefinition41 payload (table `t` of schema `db`)."""
        field_type = FieldType(self.type_and_flag & 0xFF)
        unsigned = 0x20 if self.type_and_flag & 0x8000 else 0  # UNSIGNED_FLAG
        charset = UTF8MB4_GENERAL_CI if field_type in _TEXT_TYPES else BINARY_CHARSET
        return messages.encode_column_definition(
            self.name, field_type, table="t", schema="db", charset=charset, flags=unsigned
        )


_TEXT_TYPES = frozenset(
    {
        FieldType.MYSQL_TYPE_VARCHAR,
        FieldType.MYSQL_TYPE_VAR_STRING,
        FieldType.MYSQL_TYPE_STRING,
        FieldType.MYSQL_TYPE_ENUM,
        FieldType.MYSQL_TYPE_SET,
        FieldType.MYSQL_TYPE_JSON,
    }
)


ColumnSpec = str | Column


def _column(spec: ColumnSpec) -> Column:
    return Column(spec) if isinstance(spec, str) else spec


def column_definitions(columns: Sequence[ColumnSpec]) -> list[bytes]:
    return [_column(c).definition() for c in columns]


def text_result_set(
    columns: Sequence[ColumnSpec],
    rows: Iterable[Sequence[bytes | None]],
    *,
    deprecate_eof: bool,
    status: ServerStatus = AUTOCOMMIT,
    warnings: int = 0,
    more_results: bool = False,
) -> list[bytes]:
    """A text-protocol result set: column count, definitions, (EOF), rows, EOF or OK.
    `more_results` sets SERVER_MORE_RESULTS_EXISTS on the terminator."""
    if more_results:
        status |= ServerStatus.SERVER_MORE_RESULTS_EXISTS
    payloads = [wire.lenenc_int(len(columns)), *column_definitions(columns)]
    if not deprecate_eof:
        payloads.append(eof(AUTOCOMMIT))
    payloads.extend(messages.encode_text_row(list(row)) for row in rows)
    payloads.append(end_of_result(deprecate_eof, status, warnings))
    return payloads


def binary_result_set(
    columns: Sequence[Column],
    rows: Iterable[Sequence[ParamValue]],
    *,
    deprecate_eof: bool,
    status: ServerStatus = AUTOCOMMIT,
    warnings: int = 0,
    more_results: bool = False,
    cursor: bool = False,
) -> list[bytes]:
    """A binary-protocol result set (the answer to COM_STMT_EXECUTE). With `cursor` the
    server opened a cursor: the metadata ends with SERVER_STATUS_CURSOR_EXISTS and the
    rows come with COM_STMT_FETCH (`rows` must be empty)."""
    if more_results:
        status |= ServerStatus.SERVER_MORE_RESULTS_EXISTS
    payloads = [wire.lenenc_int(len(columns)), *column_definitions(columns)]
    if cursor:
        payloads.append(
            end_of_result(deprecate_eof, status | ServerStatus.SERVER_STATUS_CURSOR_EXISTS)
        )
        if list(rows):
            raise ValueError("a cursor's rows come with COM_STMT_FETCH")
        return payloads
    if not deprecate_eof:
        payloads.append(eof(AUTOCOMMIT))
    types = [c.type_and_flag for c in columns]
    payloads.extend(messages.encode_binary_row(types, row) for row in rows)
    payloads.append(end_of_result(deprecate_eof, status, warnings))
    return payloads


def fetch_response(
    columns: Sequence[Column],
    rows: Iterable[Sequence[ParamValue]],
    *,
    deprecate_eof: bool,
    last: bool = False,
    status: ServerStatus = AUTOCOMMIT,
) -> list[bytes]:
    """The answer to COM_STMT_FETCH: binary rows, then EOF with CURSOR_EXISTS, and
    LAST_ROW_SENT once the cursor is exhausted."""
    status |= ServerStatus.SERVER_STATUS_CURSOR_EXISTS
    if last:
        status |= ServerStatus.SERVER_STATUS_LAST_ROW_SENT
    types = [c.type_and_flag for c in columns]
    payloads = [messages.encode_binary_row(types, row) for row in rows]
    payloads.append(end_of_result(deprecate_eof, status))
    return payloads


def prepare_response(
    statement_id: int,
    params: Sequence[ColumnSpec],
    columns: Sequence[ColumnSpec],
    *,
    deprecate_eof: bool,
    warnings: int = 0,
) -> list[bytes]:
    """COM_STMT_PREPARE_OK, parameter definitions, (EOF), column definitions, (EOF)."""
    first = messages.encode_prepare_ok(statement_id, len(columns), len(params))
    if warnings:
        first = first[:-2] + wire.uint(warnings, 2)
    payloads = [first]
    if params:
        payloads.extend(column_definitions(params))
        if not deprecate_eof:
            payloads.append(eof())
    if columns:
        payloads.extend(column_definitions(columns))
        if not deprecate_eof:
            payloads.append(eof())
    return payloads


def field_list_response(columns: Sequence[ColumnSpec], *, deprecate_eof: bool) -> list[bytes]:
    """The answer to COM_FIELD_LIST: column definitions, then EOF (or OK 0xFE)."""
    return [*column_definitions(columns), end_of_result(deprecate_eof)]


STATISTICS_TEXT: Final = (
    b"Uptime: 3600  Threads: 1  Questions: 42  Slow queries: 0  Opens: 17  "
    b"Open tables: 10  Queries per second avg: 0.011"
)


# --- whole sessions -------------------------------------------------------------------


def login(
    *,
    deprecate_eof: bool = False,
    mariadb: bool = True,
    user: str = "app",
    database: str | None = None,
    client_capabilities: Capability = CLIENT_CAPABILITIES,
    thread_id: int = 42,
) -> Conversation:
    """A conversation after a successful mysql_native_password login: greeting,
    handshake response, OK."""
    conv = Conversation()
    if mariadb:
        conv.server(greeting_mariadb(thread_id=thread_id))
    else:
        conv.server(greeting_mysql(thread_id=thread_id, auth_plugin=NATIVE_PASSWORD))
    caps = client_capabilities
    if deprecate_eof:
        caps |= Capability.CLIENT_DEPRECATE_EOF
    conv.client(handshake_response(caps, user, b"", database))
    conv.server(ok(status=AUTOCOMMIT))
    return conv
