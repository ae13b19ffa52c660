"""One connection's protocol state machine: which command is running, where its
response ends, and what it cost.

Theory of operation
===================

The proxy relays bytes in the chunks they arrive in. Both directions pass through a
`ConnectionTracker` first: `client_data(chunk)` and `server_data(chunk)` return the
bytes to forward (the same object, except for the two handshake packets whose
capability flags are masked) and append what happened to `events`.

Each direction has a framer that finds packet boundaries from the 4-byte headers. For
each packet the tracker decides, from the phase and the packet's first payload byte,
how much of the payload it needs: all of it for the few control packets it parses
(greeting, handshake response, OK, ERR, EOF, column count, PREPARE_OK), a bounded
prefix of client commands (the query text), and nothing but the first byte for rows
and column definitions, which are never copied. Rows are scanned by a tight loop over
the chunk (`_scan_rows`).

Phases of the server side (what the next server packet may be):

    CONNECT          greeting (0x0a) or ERR                   -> AUTH (client answers)
    AUTH             OK -> IDLE, ERR -> CLOSED, 0xFE auth switch, 0x01 more auth data
    IDLE             nothing (an ERR before the server closes is tolerated)
    RESULT           OK (more results?) | ERR | 0xFB LOCAL INFILE | column count
    COLUMNS          n column definitions                     -> COLUMNS_EOF or ROWS
    COLUMNS_EOF      EOF (no CLIENT_DEPRECATE_EOF); cursor opened -> done, else ROWS
    ROWS             rows until EOF/OK(0xFE) (more results? -> RESULT) or ERR
    PREPARE          PREPARE_OK -> PARAMS -> PARAMS_EOF -> PREP_COLUMNS -> PREP_COLUMNS_EOF
    SIMPLE           exactly one OK, ERR or EOF
    SINGLE           exactly one packet of any content (COM_STATISTICS)
    FIELD_LIST       column definitions until EOF/OK(0xFE) or ERR
    STREAM           binlog events (0x00...) until EOF or ERR
    INFILE           the server waits while the client sends the file, then RESULT
                     (an ERR now: the server gave up on the transfer -> IDLE)
    CLOSED           after COM_QUIT or a refused login: nothing more is expected

The client side is simpler: HANDSHAKE (the handshake response), AUTH (auth data,
relayed unread), COMMAND (each packet starts a command), INFILE (file contents up to an
empty packet), CLOSED. When the proxy offers CLIENT_SSL (`offered_capabilities`), a
32-byte SSLRequest at sequence id 1 moves the client side to TLS: the bytes that follow
are a TLS handshake, which the I/O layer terminates, not MySQL packets (any that came
in the same chunk are kept in `tls_early_data` for it). It calls `tls_established()`,
and the handshake response follows, over TLS, at sequence id 2. Nothing is forwarded
for the SSLRequest: whether the backend leg uses TLS is decided separately
(`backend_tls`), and the handshake response's CLIENT_SSL flag is rewritten to match it.

Commands may be pipelined: a command that arrives while an earlier one is still being
answered waits in a queue, and responses are matched to commands in order.

Every packet's sequence id is checked. Anything no transition accepts raises
ProtocolError: the connection is closed rather than relayed out of step. (Under
CLIENT_COMPRESS, once authenticated, the plain sequence ids inside the compressed frames
follow no rule the peers check, so neither does the tracker, except that a command's is
0; see protocol/compression.py. The relay feeds it the decompressed stream.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from mysqlproxy.protocol import messages, wire
from mysqlproxy.protocol.constants import (
    ERR_HEADER,
    LOCAL_INFILE_HEADER,
    MASKED_CAPABILITIES,
    MAX_PACKET_PAYLOAD,
    OK_HEADER,
    Capability,
    Command,
    ServerStatus,
)
from mysqlproxy.protocol.errors import (
    PacketTooLarge,
    ProtocolError,
    TruncatedPacket,
    UnsupportedFeature,
)
from mysqlproxy.protocol.events import (
    Authenticated,
    AuthenticationFailed,
    QueryEvent,
    TrackerEvent,
)
from mysqlproxy.protocol.messages import ParamValue, QueryAttributes

# How much of a client command the tracker keeps for its event. The command itself is
# always forwarded whole; only the copy is bounded (a 1 GiB INSERT must not be copied).
MAX_CAPTURED_COMMAND = 1 << 20
# Per parameter sent with COM_STMT_SEND_LONG_DATA, for the same reason.
MAX_CAPTURED_LONG_DATA = 1 << 16
# Control packets (OK, ERR, greeting...) are parsed whole; none is legitimately large.
MAX_CONTROL_PACKET = 1 << 20

# Server phases (plain ints: they are compared on every packet).
S_CONNECT, S_AUTH, S_IDLE, S_RESULT, S_COLUMNS, S_COLUMNS_EOF, S_ROWS = range(7)
S_PREPARE, S_PARAMS, S_PARAMS_EOF, S_PREP_COLUMNS, S_PREP_COLUMNS_EOF = range(7, 12)
S_SIMPLE, S_SINGLE, S_FIELD_LIST, S_STREAM, S_INFILE, S_CLOSED = range(12, 18)
SERVER_PHASE_NAMES = (
    "CONNECT",
    "AUTH",
    "IDLE",
    "RESULT",
    "COLUMNS",
    "COLUMNS_EOF",
    "ROWS",
    "PREPARE",
    "PARAMS",
    "PARAMS_EOF",
    "PREP_COLUMNS",
    "PREP_COLUMNS_EOF",
    "SIMPLE",
    "SINGLE",
    "FIELD_LIST",
    "STREAM",
    "INFILE",
    "CLOSED",
)

# Client phases. TLS sorts before HANDSHAKE so that one comparison routes both to the
# handshake code: `client_data` tests `phase <= C_HANDSHAKE` on every chunk.
C_TLS, C_HANDSHAKE, C_AUTH, C_COMMAND, C_INFILE, C_CLOSED = range(-1, 5)

# Where each command's response starts. Commands missing here have no response.
_RESPONSE_PHASE: dict[int, int] = {
    Command.COM_QUERY: S_RESULT,
    Command.COM_PROCESS_INFO: S_RESULT,
    Command.COM_STMT_EXECUTE: S_RESULT,
    Command.COM_STMT_BULK_EXECUTE: S_RESULT,
    Command.COM_STMT_FETCH: S_ROWS,
    Command.COM_STMT_PREPARE: S_PREPARE,
    Command.COM_FIELD_LIST: S_FIELD_LIST,
    Command.COM_STATISTICS: S_SINGLE,
    Command.COM_CHANGE_USER: S_AUTH,
    Command.COM_BINLOG_DUMP: S_STREAM,
    Command.COM_BINLOG_DUMP_GTID: S_STREAM,
}
_NO_RESPONSE = frozenset(
    {Command.COM_QUIT, Command.COM_STMT_CLOSE, Command.COM_STMT_SEND_LONG_DATA}
)
_COLUMN_DEFINITION_FIRST_BYTE = 0x03  # every column definition starts with lenenc "def"
_EOF_MAX_PAYLOAD = 9  # a 0xFE packet shorter than this is EOF, not a length prefix
_INDEX_FLAGS = int(
    ServerStatus.SERVER_QUERY_NO_INDEX_USED | ServerStatus.SERVER_QUERY_NO_GOOD_INDEX_USED
)
_MORE_RESULTS = int(ServerStatus.SERVER_MORE_RESULTS_EXISTS)
_CURSOR_EXISTS = int(ServerStatus.SERVER_STATUS_CURSOR_EXISTS)
# The schema changes with `USE db` and `DROP DATABASE <current>` in COM_QUERY text. The
# server reports it in OK packets only to clients that asked for session tracking, so
# for the others the text is read: split into statements (multi-statements) with the
# comments taken out. Only commands mentioning either word, and not too long, are read.
MAX_SCHEMA_SCAN = 16 * 1024
_SCHEMA_WORDS = re.compile(rb"\b(?:use|drop)\b", re.I)
_SQL_TOKEN = re.compile(
    rb"'(?:[^'\\]|\\.|'')*'?"
    rb'|"(?:[^"\\]|\\.|"")*"?'
    rb"|`(?:[^`]|``)*`?"
    rb"|/\*.*?(?:\*/|\Z)"
    rb"|(?:#|--(?=\s|\Z))[^\n]*"
    rb"|[^'\"`/#;-]+"
    rb"|.",
    re.S,
)
_IDENTIFIER = rb"(?:`((?:[^`]|``)+)`|([^\s`]+))"
_USE_STATEMENT = re.compile(rb"\s*use\s+" + _IDENTIFIER + rb"\s*", re.I)
_DROP_SCHEMA = re.compile(
    rb"\s*drop\s+(?:database|schema)\s+(?:if\s+exists\s+)?" + _IDENTIFIER + rb"\s*", re.I
)
# Stored program bodies hold `;` too: from such a statement on, the split means nothing.
_COMPOUND_STATEMENT = re.compile(rb"\s*(?:create|begin\s+not\s+atomic)\b", re.I)
_HEADER = struct.Struct("<I")

# Plain ints for the per-packet code: IntEnum/IntFlag operations cost ~30x an int's.
_COM_QUERY = int(Command.COM_QUERY)
_COM_STMT_EXECUTE = int(Command.COM_STMT_EXECUTE)
_COM_INIT_DB = int(Command.COM_INIT_DB)
_COM_RESET_CONNECTION = int(Command.COM_RESET_CONNECTION)
_COM_CHANGE_USER = int(Command.COM_CHANGE_USER)
_COM_STMT_RESET = int(Command.COM_STMT_RESET)
_COM_STMT_SEND_LONG_DATA = int(Command.COM_STMT_SEND_LONG_DATA)
_COM_QUIT = int(Command.COM_QUIT)
_COM_STMT_CLOSE = int(Command.COM_STMT_CLOSE)
# Statement commands that only name their statement (no types or data to remember).
_NAMING_COMMANDS = frozenset(
    int(c) for c in (Command.COM_STMT_FETCH, Command.COM_STMT_CLOSE, Command.COM_STMT_RESET)
)
_STATEMENT_COMMANDS = frozenset(
    int(c)
    for c in (
        Command.COM_STMT_EXECUTE,
        Command.COM_STMT_SEND_LONG_DATA,
        Command.COM_STMT_FETCH,
        Command.COM_STMT_CLOSE,
        Command.COM_STMT_RESET,
    )
)
_DEPRECATE_EOF = int(Capability.CLIENT_DEPRECATE_EOF)
_COMPRESS = int(Capability.CLIENT_COMPRESS)
_QUERY_ATTRIBUTES = int(Capability.CLIENT_QUERY_ATTRIBUTES)
_SESSION_STATE_CHANGED = int(ServerStatus.SERVER_SESSION_STATE_CHANGED)
_STATUS_FLAGS: dict[int, ServerStatus] = {}  # ServerStatus values by int, built lazily


def _status_flags(value: int) -> ServerStatus:
    flags = _STATUS_FLAGS.get(value)
    if flags is None:
        flags = _STATUS_FLAGS[value] = ServerStatus(value)
    return flags


_QUERY_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(QueryEvent))
_QUERY_EVENT_SETTERS = tuple(QueryEvent.__dict__[name].__set__ for name in _QUERY_EVENT_FIELDS)


def _new_query_event(values: tuple[object, ...]) -> QueryEvent:
    """QueryEvent(*values) at half the cost: a frozen dataclass's __init__ goes through
    object.__setattr__ for each of its 25 fields, once per command; the slots'
    descriptors are set directly here. Same object, same immutability afterwards."""
    event = object.__new__(QueryEvent)
    for setter, value in zip(_QUERY_EVENT_SETTERS, values, strict=True):
        setter(event, value)
    return event


def _lenenc_at(buf: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer (the common one-byte case inline)."""
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    return wire.read_lenenc_int(buf, pos)


def _identifier(match: re.Match[bytes]) -> str:
    quoted, bare = match.group(1), match.group(2)
    name = quoted.replace(b"``", b"`") if quoted is not None else bare
    return name.decode("utf-8", "replace")


def schema_after(sql: bytes, schema: str | None) -> str | None:
    """The current schema once `sql` (one statement or several separated by `;`) has
    run without error, given the schema before it."""
    statements: list[bytes] = []
    current = bytearray()
    for token in _SQL_TOKEN.finditer(sql):
        text = token.group()
        if text == b";":
            statements.append(bytes(current))
            current.clear()
        elif text[:2] == b"/*" or text[:1] == b"#" or text[:2] == b"--":
            current += b" "  # a comment separates tokens like a space
        else:
            current += text
    statements.append(bytes(current))
    for statement in statements:
        if _COMPOUND_STATEMENT.match(statement):
            break
        use = _USE_STATEMENT.fullmatch(statement)
        if use is not None:
            schema = _identifier(use)
            continue
        drop = _DROP_SCHEMA.fullmatch(statement)
        if drop is not None and _identifier(drop) == schema:
            schema = None
    return schema


@dataclass(slots=True)
class _Statement:
    """A prepared statement as the tracker remembers it."""

    query: str
    num_params: int
    param_types: tuple[int, ...] | None = None
    long_data: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class _Command:
    """A command in flight (mutable while its response streams)."""

    code: int
    payload: bytes  # at most MAX_CAPTURED_COMMAND bytes of it
    total_length: int
    sequence_id: int  # of the command's last packet
    started_ns: int
    started_at: float
    schema: str | None
    user: str
    bytes_received: int
    first_byte_ns: int = 0
    bytes_sent: int = 0
    rows_sent: int = 0
    rows_affected: int = 0
    insert_id: int = 0
    warnings: int = 0
    error_code: int = 0
    error_message: str = ""
    sql_state: str = ""
    status: int = 0
    index_flags: int = 0
    result_sets: int = 0
    statement: _Statement | None = None
    new_schema: str | None = None  # set on success of USE / COM_INIT_DB
    change_user: messages.ChangeUser | None = None
    # Where the text of COM_QUERY (and the argument of other commands) starts in the
    # payload: after the query attributes under CLIENT_QUERY_ATTRIBUTES.
    text_start: int = 1
    attributes: QueryAttributes | None = None  # COM_QUERY's, when it carried some


class _Framer:
    """Packet boundaries in one direction, across chunks.

    `capture(length, first_byte)` tells, once a packet's header and first payload byte
    are known, how many payload bytes to keep; the rest is passed over. `on_packet`
    receives (sequence id, total payload length, kept bytes, first byte, end position
    in the chunk) when the logical packet, with all its 0xFFFFFF pieces, has passed.
    The first byte is -1 for an empty packet.
    """

    __slots__ = (
        "_capture",
        "_on_packet",
        "check_continuations",
        "expected_seq",
        "first",
        "in_packet",
        "kept",
        "limit",
        "max_payload",
        "partial",
        "piece_continues",
        "seq",
        "silent",
        "skip",
        "total",
    )

    def __init__(
        self,
        capture: Callable[[int, int], int],
        on_packet: Callable[[int, int, bytes, int, int], None],
    ) -> None:
        self._capture = capture
        self._on_packet = on_packet
        self.partial = bytearray()  # an incomplete header (under 5 bytes) of the next piece
        self.skip = 0  # payload bytes of the current piece still to come
        self.kept = bytearray()  # captured payload of the current logical packet
        self.limit = 0  # how many payload bytes to capture
        self.in_packet = False  # between the pieces of a logical packet
        self.piece_continues = False  # the current piece is 0xFFFFFF long
        self.silent = False  # the packet was already accounted for (see skip_rest)
        self.seq = 0  # sequence id of the logical packet's first piece
        self.total = 0  # payload length so far
        self.first = -1
        self.expected_seq = 0  # of the next piece of a multi-piece packet
        self.max_payload = 0  # largest logical payload accepted (0: no limit)
        # Off under compression: libmariadb numbers the pieces inside frames 0, 0, ...
        self.check_continuations = True

    @property
    def at_boundary(self) -> bool:
        return not (self.skip or self.partial or self.in_packet)

    def skip_rest(self, remaining: int) -> None:
        """The caller has accounted for a packet whose last `remaining` bytes are still
        to come: pass over them without a callback."""
        self.skip = remaining
        self.in_packet = True
        self.piece_continues = False
        self.silent = True
        self.limit = 0

    def feed(self, data: bytes, pos: int, end: int) -> int:
        """Consume data[pos:end] up to the end of one logical packet; returns the new
        position (end, or just after the packet that completed)."""
        while pos < end:
            if self.skip:
                take = min(self.skip, end - pos)
                room = self.limit - len(self.kept)
                if room > 0:
                    self.kept += data[pos : pos + min(take, room)]
                self.skip -= take
                pos += take
                if not self.skip and self._piece_done(pos):
                    return pos
                continue
            partial = self.partial
            if partial or end - pos < 5:
                need = 4 if len(partial) < 4 else 5
                take = min(need - len(partial), end - pos)
                partial += data[pos : pos + take]
                pos += take
                if len(partial) < 4:
                    continue
                length = partial[0] | partial[1] << 8 | partial[2] << 16
                if length and len(partial) < 5:
                    continue
                seq = partial[3]
                first = partial[4] if length else -1
                partial.clear()
                refused = self._start_piece(length, seq, first)
                if length:
                    if len(self.kept) < self.limit:
                        self.kept.append(first)
                    self.skip = length - 1
                if refused:
                    self._refuse(data, pos, end)
                if not self.skip and self._piece_done(pos):
                    return pos
                continue
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            refused = self._start_piece(length, data[pos + 3], data[pos + 4] if length else -1)
            pos += 4
            self.skip = length
            if refused:
                self._refuse(data, pos, end)
            if not length and self._piece_done(pos):
                return pos
        return pos

    def _start_piece(self, length: int, seq: int, first: int) -> bool:
        """A piece's header has been read. True when it takes the packet past
        max_payload (the caller raises once the header is consumed: see _refuse)."""
        if self.in_packet:
            if seq != self.expected_seq and self.check_continuations:
                raise ProtocolError(
                    f"continuation packet has sequence id {seq}, expected {self.expected_seq}"
                )
        else:
            self.in_packet = True
            self.seq = seq
            self.total = 0
            self.first = first
            self.kept = bytearray()
            self.limit = self._capture(length, first)
        self.total += length
        self.expected_seq = (seq + 1) & 0xFF
        self.piece_continues = length == MAX_PACKET_PAYLOAD
        # (A refused packet is silent: its later pieces are not refused again.)
        return 0 < self.max_payload < self.total and not self.silent

    def _refuse(self, data: bytes, pos: int, end: int) -> NoReturn:
        """Refuse the packet whose header just ended at `pos`, as the server's own
        max_allowed_packet check does: on the header, so none of the payload is passed
        on. The rest of the packet is passed over silently, in this chunk now and in
        later ones with ConnectionTracker.skip_refused."""
        exc = PacketTooLarge(self.total, self.max_payload, self.expected_seq)
        self.silent = True
        self.limit = 0
        if not self.skip:
            self._piece_done(pos)  # a last piece of one byte, read with its header
        else:
            # What follows may be malformed: the refusal stands, `ended` stays false.
            with contextlib.suppress(ProtocolError):
                self.feed(data, pos, end)
        exc.ended = not self.in_packet
        raise exc

    def _piece_done(self, pos: int) -> bool:
        """A piece ended at `pos`; True when that ended the logical packet."""
        if self.piece_continues:
            return False
        self.in_packet = False
        if self.silent:
            self.silent = False
        else:
            self._on_packet(self.seq, self.total, bytes(self.kept), self.first, pos)
        return True


class ConnectionTracker:
    """Follows one client connection. See the module docstring."""

    def __init__(
        self,
        connection_id: int = 0,
        client_address: str = "",
        backend_address: str = "",
        *,
        masked_capabilities: Capability = MASKED_CAPABILITIES,
        offered_capabilities: Capability | None = None,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        wall_clock: Callable[[], float] = time.time,
        emit_query_events: bool = True,
    ) -> None:
        self.connection_id = connection_id
        self.client_address = client_address
        self.backend_address = backend_address
        self.masked_capabilities = masked_capabilities
        self.offered_capabilities = offered_capabilities or Capability(0)
        self._clock_ns = clock_ns
        self._wall_clock = wall_clock
        # With no observer of queries, events are not built at all (the hot path with
        # logging off pays for the framing only).
        self.emit_query_events = emit_query_events
        self.events: list[TrackerEvent] = []

        self.server_phase = S_CONNECT
        self.client_phase = C_HANDSHAKE
        self.greeting: messages.Greeting | None = None
        self.server_capabilities = Capability(0)  # as offered to the client (masked)
        self.capabilities = Capability(0)  # negotiated
        self._deprecate_eof = False  # CLIENT_DEPRECATE_EOF negotiated (read per result)
        # CLIENT_COMPRESS framing is on (from the OK ending authentication): the bytes fed
        # in are the decompressed stream, whose plain sequence ids go unchecked.
        self.compressed = False
        self._query_attributes = False  # CLIENT_QUERY_ATTRIBUTES negotiated
        self.user = ""
        self.schema: str | None = None
        self.thread_id = 0
        self.authenticated = False
        self.client_tls = False  # the client sent an SSLRequest (its leg is TLS from then)
        self.tls_early_data = b""  # bytes behind the SSLRequest: the TLS handshake's start
        # Whether the backend leg uses TLS: the handshake response's CLIENT_SSL flag is
        # made to say so. Set by the I/O layer before the handshake response arrives.
        self.backend_tls = False
        self.commands_completed = 0  # counted even when no events are built
        self.statements: dict[int, _Statement] = {}
        self._last_prepared_id: int | None = None

        self._queue: deque[_Command] = deque()  # commands sent, response not complete
        self._server_seq = 0
        self._client_seq = 0
        self._columns_left = 0
        self._params_left = 0
        self._chunk_pos = 0  # in the current server chunk, the first byte not yet counted
        self._packet_end = 0  # in the current server chunk, the end of the packet at hand
        self._in_server_data = False
        self._handshake_buffer = bytearray()
        self._original_server_capabilities = Capability(0)
        self._prepared_statement_id: int | None = None
        self._server = _Framer(self._server_capture, self._server_packet)
        self._client = _Framer(self._client_capture, self._client_packet)

    # --- public API ---------------------------------------------------------------

    @property
    def current_command(self) -> int | None:
        """The command whose response is awaited, if any."""
        return self._queue[0].code if self._queue else None

    @property
    def command_started_ns(self) -> int | None:
        return self._queue[0].started_ns if self._queue else None

    @property
    def idle(self) -> bool:
        """No command is in flight and both directions are at a packet boundary."""
        return (
            not self._queue
            and self.server_phase in (S_IDLE, S_CLOSED)
            and self._client.at_boundary
            and self._server.at_boundary
        )

    @property
    def waiting_for_client(self) -> bool:
        """The server has answered everything asked of it: no command in flight, or the
        greeting not yet answered. (The client may be part way through a packet.)"""
        phase = self.server_phase
        if phase == S_AUTH:
            return self.client_phase == C_HANDSHAKE
        return not self._queue and phase in (S_IDLE, S_CLOSED)

    @property
    def max_packet_size(self) -> int:
        """The largest client packet payload (all 0xFFFFFF pieces together) accepted
        after the handshake response; 0 for no limit. A larger one raises PacketTooLarge
        as its header arrives. (The handshake response has its own, MAX_CONTROL_PACKET.)"""
        return self._client.max_payload

    @max_packet_size.setter
    def max_packet_size(self, size: int) -> None:
        self._client.max_payload = size

    @property
    def phase_name(self) -> str:
        return SERVER_PHASE_NAMES[self.server_phase]

    def client_data(self, data: bytes) -> bytes:
        """Bytes from the client. Returns the bytes to send to the server."""
        phase = self.client_phase
        if phase <= C_HANDSHAKE:
            return self._client_handshake_data(data)
        n = len(data)
        framer = self._client
        if (
            phase == C_COMMAND
            and n >= 5
            and not (framer.skip or framer.partial or framer.in_packet)
            and (data[0] | data[1] << 8 | data[2] << 16) + 4 == n
            and n - 4 < MAX_PACKET_PAYLOAD
            and (not framer.max_payload or n - 4 <= framer.max_payload)
        ):
            # The common case: the chunk is exactly one command packet.
            if data[3] != 0:
                raise ProtocolError(f"command packet has sequence id {data[3]}, expected 0")
            payload = data[4 : 4 + MAX_CAPTURED_COMMAND]
            self._start_command(payload, n - 4, 0, n)
            return data
        pos = 0
        feed = framer.feed
        try:
            while pos < n:
                pos = feed(data, pos, n)
        except PacketTooLarge as exc:
            exc.forward = data[:pos]
            exc.behind_commands = bool(self._queue) and self.client_phase == C_COMMAND
            raise
        return data

    def unfinished_change_user(self, data: bytes) -> int:
        """Where in `data`, a client chunk of the command phase not yet fed, a command
        packet starts that the chunk does not hold whole and that is a COM_CHANGE_USER,
        or may be one (its command byte not in the chunk yet); -1 when there is none,
        or when the chunk starts inside a packet's 16 MiB pieces or header. A relay
        that must check a COM_CHANGE_USER's authentication before relaying any of it
        holds those bytes back until the packet is whole."""
        framer = self._client
        if self.client_phase != C_COMMAND or framer.partial or framer.piece_continues:
            return -1
        pos = framer.skip  # the rest of a packet that started in an earlier chunk
        n = len(data)
        while pos < n:
            if n - pos < 5:
                return pos
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            end = pos + 4 + length
            if end > n or length >= MAX_PACKET_PAYLOAD:
                return pos if data[pos + 4] == _COM_CHANGE_USER else -1
            pos = end
        return -1

    def skip_refused(self, data: bytes) -> bool:
        """After a PacketTooLarge whose packet had not ended (`ended` false): pass over
        what `data` holds of the rest of it. True once it has ended; the bytes after it
        are not read. (Under compression the refusal must wait for the client's last
        frame of the packet: see protocol/compression.py.)"""
        framer = self._client
        if framer.in_packet:
            framer.feed(data, 0, len(data))
        return not framer.in_packet

    def server_data(self, data: bytes) -> bytes:
        """Bytes from the server. Returns the bytes to send to the client."""
        if self.server_phase == S_CONNECT:
            return self._server_greeting_data(data)
        n = len(data)
        queue = self._queue
        if queue and not queue[0].first_byte_ns:
            queue[0].first_byte_ns = self._clock_ns()
        self._chunk_pos = 0
        self._in_server_data = True
        pos = 0
        framer = self._server
        capture = self._server_capture
        on_packet = self._server_packet
        try:
            while pos < n:
                if not (framer.skip or framer.partial or framer.in_packet):
                    phase = self.server_phase
                    if phase == S_RESULT:
                        end = self._whole_result_set(data, pos, n)
                        if end:
                            pos = end
                            continue
                    elif phase == S_ROWS:
                        pos = self._scan_rows(data, pos, n)
                        if pos >= n:
                            break
                    if n - pos >= 5:
                        # A whole packet in this chunk: no framer bookkeeping.
                        length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
                        end = pos + 4 + length
                        if end <= n and length < MAX_PACKET_PAYLOAD:
                            first = data[pos + 4] if length else -1
                            if (
                                phase == S_COLUMNS
                                and first == _COLUMN_DEFINITION_FIRST_BYTE
                                and data[pos + 3] == self._server_seq
                                and self._columns_left > 1
                            ):
                                # A column definition, not the last: skipped unread.
                                self._server_seq = (self._server_seq + 1) & 0xFF
                                self._columns_left -= 1
                                pos = end
                                continue
                            limit = capture(length, first)
                            kept = data[pos + 4 : pos + 4 + limit] if limit else b""
                            on_packet(data[pos + 3], length, kept, first, end)
                            pos = end
                            continue
                pos = framer.feed(data, pos, n)
        finally:
            self._in_server_data = False
        if queue:
            queue[0].bytes_sent += n - self._chunk_pos
        return data

    # --- server side --------------------------------------------------------------

    def _whole_result_set(self, data: bytes, pos: int, n: int) -> int:
        """The commonest response, a result set starting at `pos` (phase RESULT, at a
        packet boundary), read in one pass without the per-packet calls: its column
        count, definitions and EOF, then its rows (_scan_rows) and terminator as far as
        this chunk holds them. Returns where it stopped, or 0 (nothing changed) when
        the result's head is not a plain one lying whole in the chunk: then the general
        path reads the same bytes and decides."""
        seq = self._server_seq
        header = _HEADER.unpack_from
        if n - pos < 5:
            return 0
        word: int = header(data, pos)[0]
        count = data[pos + 4]
        # One byte of column count (1..250): not OK, ERR, LOCAL INFILE or a longer count.
        if word != (seq << 24 | 1) or not 0 < count < 0xFB:
            return 0
        p = pos + 5
        seq = (seq + 1) & 0xFF
        for _ in range(count):
            if n - p < 5:
                return 0
            word = header(data, p)[0]
            length = word & 0xFFFFFF
            if (
                word >> 24 != seq
                or length >= MAX_PACKET_PAYLOAD
                or data[p + 4] != _COLUMN_DEFINITION_FIRST_BYTE
            ):
                return 0
            p += 4 + length
            seq = (seq + 1) & 0xFF
        if not self._deprecate_eof:
            # The EOF after the columns; one saying a cursor opened is left to the
            # general path (no rows follow it).
            if n - p < 5:
                return 0
            word = header(data, p)[0]
            length = word & 0xFFFFFF
            if (
                word >> 24 != seq
                or data[p + 4] != 0xFE
                or length >= _EOF_MAX_PAYLOAD
                or p + 4 + length > n
                or (length >= 4 and data[p + 7] & _CURSOR_EXISTS)
            ):
                return 0
            p += 4 + length
            seq = (seq + 1) & 0xFF
        # The result set has begun; what follows are its rows.
        cmd = self._queue[0]
        cmd.result_sets += 1
        self._server_seq = seq
        self.server_phase = S_ROWS
        if p > n:  # the last column definition goes on in the next chunk
            self._server.skip_rest(p - n)
            return n
        p = self._scan_rows(data, p, n)
        # The terminator, when it lies whole in this chunk; anything else (an ERR, a
        # 16 MiB row, the chunk's end) is the general path's, from ROWS.
        if n - p >= 5:
            word = header(data, p)[0]
            length = word & 0xFFFFFF
            end = p + 4 + length
            if (
                word >> 24 == self._server_seq
                and data[p + 4] == 0xFE
                and end <= n
                and length <= MAX_CONTROL_PACKET
            ):
                self._server_seq = (self._server_seq + 1) & 0xFF
                self._packet_end = end
                self._result_end(cmd, data[p + 4 : end])
                return end
        return p

    def _scan_rows(self, data: bytes, pos: int, n: int) -> int:
        """The hot loop: count rows packet by packet without copying them. Stops at
        anything that is not a plain row starting in this chunk (a terminator, ERR, a
        16 MiB piece, a sequence error, an incomplete header) and leaves it to the
        general path."""
        seq = self._server_seq
        rows = 0
        header = _HEADER.unpack_from
        while n - pos >= 5:
            word = header(data, pos)[0]
            length = word & 0xFFFFFF
            first = data[pos + 4]
            if (
                word >> 24 != seq
                or length >= MAX_PACKET_PAYLOAD
                or first == ERR_HEADER
                or first == 0xFE
            ):
                break
            rows += 1
            seq = (seq + 1) & 0xFF
            pos += 4 + length
            if pos > n:
                self._server.skip_rest(pos - n)
                pos = n
                break
        self._server_seq = seq
        if rows:
            self._queue[0].rows_sent += rows
        return pos

    def _server_capture(self, length: int, first: int) -> int:
        """How many payload bytes of a server packet to keep."""
        phase = self.server_phase
        if phase in (S_ROWS, S_STREAM):
            if first == ERR_HEADER or (first == 0xFE and length < MAX_PACKET_PAYLOAD):
                return self._control_limit(length)
            return 0
        if phase in (S_COLUMNS, S_PARAMS, S_PREP_COLUMNS, S_SINGLE):
            if first == ERR_HEADER:
                return self._control_limit(length)
            return 0
        if phase == S_FIELD_LIST:
            if first == _COLUMN_DEFINITION_FIRST_BYTE:
                return 0
            return self._control_limit(length)
        return self._control_limit(length)

    @staticmethod
    def _control_limit(length: int) -> int:
        if length > MAX_CONTROL_PACKET:
            raise ProtocolError(f"control packet of {length} bytes exceeds the limit")
        return length

    def _check_server_seq(self, seq: int) -> None:
        if seq != self._server_seq and not self.compressed:
            raise ProtocolError(
                f"server packet has sequence id {seq}, expected {self._server_seq} "
                f"(phase {self.phase_name})"
            )

    def _server_packet(self, seq: int, length: int, payload: bytes, first: int, end: int) -> None:
        """One complete logical packet from the server, ending at `end` in the chunk
        (payload cut to what _server_capture asked for)."""
        self._packet_end = end
        phase = self.server_phase
        if phase in (S_IDLE, S_CLOSED):
            if first == ERR_HEADER:
                # A server may say why before it closes (shutdown, killed, timeout).
                return
            raise ProtocolError(
                f"server sent a packet (first byte {first}) while no command was running"
            )
        if phase == S_INFILE:
            if first != ERR_HEADER:
                raise ProtocolError("server sent a packet while the client was sending a file")
            # The server gave up on the transfer (a file packet out of order, or over its
            # max_allowed_packet) and answered at once: the command failed. Its sequence
            # id counts the packets it read, maybe fewer than were sent: not checked.
            # MariaDB then reads commands again (or hangs up); so does the tracker, and
            # file data that still comes has a sequence id no command may have.
            self.client_phase = C_COMMAND
            self._fail(self._queue[0], payload)
            return
        self._check_server_seq(seq)
        self._server_seq = (seq + (length // MAX_PACKET_PAYLOAD) + 1) & 0xFF
        if phase == S_AUTH:
            if self.client_phase == C_HANDSHAKE:
                # Fed whole, the greeting's chunk refuses trailing bytes; the same bytes
                # arriving in a later chunk must be refused too.
                raise ProtocolError("server sent data before the client answered its greeting")
            self._auth_packet(seq, payload, first)
            return
        cmd = self._queue[0]
        if first == ERR_HEADER and phase != S_SINGLE:
            self._fail(cmd, payload)
            return
        if phase == S_ROWS:
            if first == 0xFE and length < MAX_PACKET_PAYLOAD:
                self._result_end(cmd, payload)
            else:
                cmd.rows_sent += 1
        elif phase == S_RESULT:
            self._result_start(cmd, payload, first)
        elif phase == S_COLUMNS:
            self._column_definition(first)
            self._columns_left -= 1
            if not self._columns_left:
                self.server_phase = S_ROWS if self._deprecate_eof else S_COLUMNS_EOF
        elif phase == S_COLUMNS_EOF:
            self._expect_eof(payload)
            # A cursor opened: no rows follow (they come with COM_STMT_FETCH).
            if (
                cmd.code == _COM_STMT_EXECUTE
                and len(payload) == 5
                and payload[3] & _CURSOR_EXISTS
            ):
                self._result_end(cmd, payload)
            else:
                self.server_phase = S_ROWS
        elif phase == S_PREPARE:
            self._prepare_ok(cmd, payload)
        elif phase == S_PARAMS:
            self._column_definition(first)
            self._params_left -= 1
            if not self._params_left:
                if self._deprecate_eof:
                    self._after_prepare_params(cmd)
                else:
                    self.server_phase = S_PARAMS_EOF
        elif phase == S_PARAMS_EOF:
            self._expect_eof(payload)
            self._after_prepare_params(cmd)
        elif phase == S_PREP_COLUMNS:
            self._column_definition(first)
            self._columns_left -= 1
            if not self._columns_left:
                if self._deprecate_eof:
                    self._complete(cmd)
                else:
                    self.server_phase = S_PREP_COLUMNS_EOF
        elif phase == S_PREP_COLUMNS_EOF:
            self._expect_eof(payload)
            self._complete(cmd)
        elif phase == S_SIMPLE:
            self._simple_response(cmd, payload, first)
        elif phase == S_SINGLE:
            if first == ERR_HEADER:
                self._fail(cmd, payload)
            else:
                self._complete(cmd)
        elif phase == S_FIELD_LIST:
            if first == _COLUMN_DEFINITION_FIRST_BYTE:
                return
            if first != 0xFE:
                raise ProtocolError(f"unexpected packet 0x{first:02x} in a field list")
            self._apply_terminator(cmd, payload)
            self._complete(cmd)
        elif phase == S_STREAM:
            if first == 0xFE and length < MAX_PACKET_PAYLOAD:
                self._complete(cmd)
            elif first != OK_HEADER:
                raise ProtocolError(f"unexpected packet 0x{first:02x} in a binlog stream")
        else:  # pragma: no cover - every phase is handled above
            raise ProtocolError(f"no transition from phase {self.phase_name}")

    def _column_definition(self, first: int) -> None:
        if first != _COLUMN_DEFINITION_FIRST_BYTE:
            raise ProtocolError(
                f"expected a column definition, got a packet starting 0x{first:02x} "
                f"(phase {self.phase_name})"
            )

    def _expect_eof(self, payload: bytes) -> None:
        if not payload or payload[0] != 0xFE or len(payload) >= _EOF_MAX_PAYLOAD:
            raise ProtocolError(f"expected an EOF packet (phase {self.phase_name})")

    def _result_start(self, cmd: _Command, payload: bytes, first: int) -> None:
        if first == OK_HEADER:
            self._result_end(cmd, payload)
        elif first == LOCAL_INFILE_HEADER:
            if cmd.code != Command.COM_QUERY:
                raise ProtocolError("LOCAL INFILE request in answer to a non-query command")
            self.server_phase = S_INFILE
            self.client_phase = C_INFILE
            self._client_seq = self._server_seq
        elif first == 0xFE or first < 0:
            raise ProtocolError(f"unexpected packet 0x{first & 0xFF:02x} at start of a result")
        else:
            count, end = wire.read_lenenc_int(payload, 0)
            if not count or end != len(payload):
                raise ProtocolError("invalid column count packet")
            cmd.result_sets += 1
            self._columns_left = count
            self.server_phase = S_COLUMNS

    def _apply_terminator(self, cmd: _Command, payload: bytes) -> int:
        """An OK, or EOF, or OK with 0xFE header: record it; returns the status. Read
        with int operations (this runs for every command); messages.parse_ok is used
        only when session state (maybe a new schema) is attached."""
        if self._deprecate_eof or payload[0] == OK_HEADER:
            try:
                affected, pos = _lenenc_at(payload, 1)
                insert_id, pos = _lenenc_at(payload, pos)
                status = payload[pos] | payload[pos + 1] << 8
                warnings = payload[pos + 2] | payload[pos + 3] << 8
            except IndexError:
                raise TruncatedPacket("OK packet ends early") from None
            cmd.rows_affected += affected
            if insert_id:
                cmd.insert_id = insert_id
            cmd.warnings += warnings
            if status & _SESSION_STATE_CHANGED:
                ok = messages.parse_ok(payload, self.capabilities)
                if ok.schema is not None:
                    cmd.new_schema = ok.schema
        elif len(payload) >= 5:
            cmd.warnings += payload[1] | payload[2] << 8
            status = payload[3] | payload[4] << 8
        else:
            status = 0  # a pre-4.1 server's bare EOF
        cmd.status = status
        cmd.index_flags |= status & _INDEX_FLAGS
        return status

    def _result_end(self, cmd: _Command, payload: bytes) -> None:
        status = self._apply_terminator(cmd, payload)
        if status & _MORE_RESULTS:
            self.server_phase = S_RESULT
        else:
            self._complete(cmd)

    def _simple_response(self, cmd: _Command, payload: bytes, first: int) -> None:
        if first == OK_HEADER or (
            first == 0xFE
            and (self._deprecate_eof or len(payload) < _EOF_MAX_PAYLOAD)
        ):
            # Under CLIENT_DEPRECATE_EOF the 0xFE answer (COM_SET_OPTION, COM_DEBUG) is an
            # OK packet: its own layout, and longer than an EOF when it has session state.
            self._apply_terminator(cmd, payload)
        else:
            raise ProtocolError(f"expected OK, ERR or EOF, got 0x{first & 0xFF:02x}")
        self._complete(cmd)

    def _prepare_ok(self, cmd: _Command, payload: bytes) -> None:
        ok = messages.parse_prepare_ok(payload)
        cmd.warnings += ok.warnings
        statement = _Statement(self._command_text(cmd)[0], ok.num_params)
        self.statements[ok.statement_id] = statement
        self._last_prepared_id = ok.statement_id
        cmd.statement = statement
        cmd.insert_id = 0
        self._params_left = ok.num_params
        self._columns_left = ok.num_columns
        self._prepared_statement_id = ok.statement_id
        if self._params_left:
            self.server_phase = S_PARAMS
        else:
            self._after_prepare_params(cmd)

    def _after_prepare_params(self, cmd: _Command) -> None:
        if self._columns_left:
            self.server_phase = S_PREP_COLUMNS
        else:
            self._complete(cmd)

    def _fail(self, cmd: _Command, payload: bytes) -> None:
        err = messages.parse_err(payload)
        cmd.error_code = err.code
        cmd.error_message = err.message
        cmd.sql_state = err.sql_state
        if cmd.code == Command.COM_CHANGE_USER:
            self.events.append(
                AuthenticationFailed(
                    cmd.change_user.username if cmd.change_user else self.user,
                    err.code,
                    err.message,
                )
            )
        self._complete(cmd)

    # --- connection phase ---------------------------------------------------------

    def _server_greeting_data(self, data: bytes) -> bytes:
        buf = self._take_handshake_packet(data, "server greeting")
        if buf is None:
            return b""
        if len(buf) > 4 + (buf[0] | buf[1] << 8 | buf[2] << 16):
            raise ProtocolError("server sent data before the client answered its greeting")
        seq, payload = buf[3], bytes(buf[4:])
        if seq != 0:
            raise ProtocolError(f"greeting has sequence id {seq}, expected 0")
        if payload[:1] == b"\xff":
            err = messages.parse_err(payload)
            self.events.append(AuthenticationFailed("", err.code, err.message))
            self.server_phase = S_CLOSED
            self.client_phase = C_CLOSED
            return bytes(buf)
        original = messages.parse_greeting(payload)
        greeting, masked = messages.mask_greeting(
            payload, self.masked_capabilities, self.offered_capabilities
        )
        self.greeting = original
        self.thread_id = original.thread_id
        self.server_capabilities = greeting.capabilities
        self._original_server_capabilities = original.capabilities
        self.server_phase = S_AUTH
        self._server_seq = 1
        self._client_seq = 1
        return bytes(buf[:4]) + masked

    def tls_established(self) -> None:
        """The I/O layer finished the TLS handshake the SSLRequest announced: what the
        client sends from now on (decrypted) is its handshake response."""
        if self.client_phase != C_TLS:
            raise ProtocolError("TLS established without an SSLRequest")
        self.client_phase = C_HANDSHAKE
        self.tls_early_data = b""

    def _client_handshake_data(self, data: bytes) -> bytes:
        if self.server_phase == S_CONNECT:
            raise ProtocolError("client sent data before the server greeting")
        if self.client_phase == C_TLS:
            raise ProtocolError("client data passed to the tracker during its TLS handshake")
        buf = self._take_handshake_packet(data, "handshake response")
        if buf is None:
            return b""
        length = buf[0] | buf[1] << 8 | buf[2] << 16
        rest = bytes(buf[4 + length :])
        seq, payload = buf[3], bytes(buf[4 : 4 + length])
        if seq != self._client_seq:
            raise ProtocolError(
                f"handshake response has sequence id {seq}, expected {self._client_seq}"
            )
        response = messages.parse_handshake_response(payload, self._original_server_capabilities)
        if response.is_ssl_request or response.capabilities & Capability.CLIENT_SSL:
            if not self.server_capabilities & Capability.CLIENT_SSL:
                raise UnsupportedFeature(
                    "the client asked for TLS, which this proxy does not offer"
                )
            if response.is_ssl_request:
                if self.client_tls:
                    raise ProtocolError("a second SSLRequest")
                self.client_tls = True
                self.client_phase = C_TLS
                self._client_seq = (seq + 1) & 0xFF
                self.tls_early_data = rest
                return b""
            if not self.client_tls:
                raise ProtocolError("handshake response with CLIENT_SSL but no SSLRequest")
        if int(response.capabilities) & ~int(self.server_capabilities) & _COMPRESS:
            # Masked (the Lua engine masks it) or not offered by the server: the frames
            # that would follow could be read by no one on this connection.
            raise UnsupportedFeature("the client asked for compression, which was not offered")
        rewritten = messages.with_ssl_flag(
            messages.mask_handshake_response(payload, self.masked_capabilities),
            self.backend_tls,
        )
        self.capabilities = Capability(int(response.capabilities) & int(self.server_capabilities))
        self._deprecate_eof = bool(int(self.capabilities) & _DEPRECATE_EOF)
        self._query_attributes = bool(int(self.capabilities) & _QUERY_ATTRIBUTES)
        self.user = response.username
        self.schema = response.database
        self.client_phase = C_AUTH
        self._server_seq = (seq + 1) & 0xFF
        self._client_seq = (seq + 1) & 0xFF
        out = bytes(buf[:4]) + rewritten
        if rest:
            self.client_data(rest)
            out += rest
        return out

    def _take_handshake_packet(self, data: bytes, what: str) -> bytearray | None:
        """Buffer a handshake packet until it is whole (it may be rewritten, so it is
        held back rather than streamed). Returns the buffered bytes once whole."""
        buf = self._handshake_buffer
        buf += data
        if len(buf) < 4:
            return None
        length = buf[0] | buf[1] << 8 | buf[2] << 16
        if length > MAX_CONTROL_PACKET:
            raise ProtocolError(f"{what} too large")
        if len(buf) < 4 + length:
            return None
        self._handshake_buffer = bytearray()
        return buf

    def _auth_packet(self, seq: int, payload: bytes, first: int) -> None:
        self._client_seq = self._server_seq
        if first == OK_HEADER:
            if self._queue:  # COM_CHANGE_USER succeeded
                cmd = self._queue[0]
                change = cmd.change_user
                if change is not None:
                    self.user = change.username
                    self.schema = change.database
                self.statements.clear()
                self._apply_terminator(cmd, payload)
                self._complete(cmd)
            else:
                self.authenticated = True
                self.compressed = bool(int(self.capabilities) & _COMPRESS)
                self._client.check_continuations = self._server.check_continuations = (
                    not self.compressed
                )
                ok = messages.parse_ok(payload, self.capabilities)
                if ok.schema is not None:
                    self.schema = ok.schema
                self.server_phase = S_IDLE
                self.client_phase = C_COMMAND
            self.events.append(
                Authenticated(
                    self.user,
                    self.schema,
                    self.thread_id,
                    self.greeting.server_version if self.greeting else "",
                )
            )
        elif first == ERR_HEADER:
            if self._queue:
                self._fail(self._queue[0], payload)
                return
            err = messages.parse_err(payload)
            self.events.append(AuthenticationFailed(self.user, err.code, err.message))
            self.server_phase = S_CLOSED
            self.client_phase = C_CLOSED
        elif first in (0xFE, 0x01):
            pass  # auth switch request / more auth data: the client may answer
        else:
            raise ProtocolError(f"unexpected packet 0x{first & 0xFF:02x} during authentication")

    # --- client side --------------------------------------------------------------

    def _client_capture(self, length: int, first: int) -> int:
        if self.client_phase == C_COMMAND:
            # Checked as the header arrives, not when the packet ends: out-of-step bytes
            # (garbage, most likely) must not reach the server before the connection is
            # closed. The framer has already set the new packet's sequence id.
            if self._client.seq != 0:
                raise ProtocolError(
                    f"command packet has sequence id {self._client.seq}, expected 0"
                )
            return MAX_CAPTURED_COMMAND
        return 0

    def _client_packet(self, seq: int, length: int, payload: bytes, first: int, end: int) -> None:
        phase = self.client_phase
        wire_bytes = length + 4 * (length // MAX_PACKET_PAYLOAD + 1)
        if phase == C_COMMAND:
            if seq != 0:
                raise ProtocolError(f"command packet has sequence id {seq}, expected 0")
            self._start_command(payload, length, seq, wire_bytes)
        elif phase == C_AUTH:
            if seq != self._client_seq and not self.compressed:
                raise ProtocolError(
                    f"auth packet has sequence id {seq}, expected {self._client_seq}"
                )
            self._client_seq = self._server_seq = (seq + 1) & 0xFF
            if self._queue:  # answering COM_CHANGE_USER's auth switch: the command's bytes
                self._queue[0].bytes_received += wire_bytes
        elif phase == C_INFILE:
            if seq != self._client_seq and not self.compressed:
                raise ProtocolError(
                    f"file data packet has sequence id {seq}, expected {self._client_seq}"
                )
            self._client_seq = (seq + length // MAX_PACKET_PAYLOAD + 1) & 0xFF
            if self._queue:
                self._queue[0].bytes_received += wire_bytes
            if length == 0:
                self.client_phase = C_COMMAND
                self.server_phase = S_RESULT
                self._server_seq = self._client_seq
        else:
            raise ProtocolError("client sent data after the connection ended")

    def _start_command(self, payload: bytes, length: int, seq: int, wire_bytes: int) -> None:
        if not payload:
            raise ProtocolError("empty command packet")
        code = payload[0]
        # Positional: keywords double the cost of this once-per-command call.
        cmd = _Command(
            code,  # code
            payload,  # payload
            length,  # total_length
            seq,  # sequence_id
            self._clock_ns(),  # started_ns
            self._wall_clock(),  # started_at
            self.schema,  # schema
            self.user,  # user
            wire_bytes,  # bytes_received
        )
        if code in _STATEMENT_COMMANDS:  # FETCH, CLOSE, RESET: for the statement text
            self._bind_statement(cmd)
        elif code == _COM_CHANGE_USER:
            try:
                cmd.change_user = messages.parse_change_user(payload, self.capabilities)
            except ProtocolError:
                cmd.change_user = None  # the server will refuse it
        elif self._query_attributes and code == _COM_QUERY:
            if len(payload) > 2 and payload[1] == 0 and payload[2] < 0xFB:
                cmd.text_start = 3  # no attributes: parameter_count 0, parameter_set_count
            else:
                self._read_query_attributes(cmd)
        queue_was_empty = not self._queue
        self._queue.append(cmd)
        if queue_was_empty:
            self._begin_response(cmd)

    def _read_query_attributes(self, cmd: _Command) -> None:
        try:
            request = messages.parse_query(cmd.payload, True)
        except ProtocolError:
            # Malformed (the server refuses it with an ERR) or cut at the capture limit:
            # no text can be told apart from the attributes.
            cmd.text_start = len(cmd.payload)
            return
        cmd.text_start = request.sql_offset
        cmd.attributes = request.attributes or None

    def _bind_statement(self, cmd: _Command) -> None:
        """Remember the parameter types and long data a statement command carries; the
        server keeps them for later executes, so must we."""
        payload = cmd.payload
        if len(payload) < 5:
            return
        statement_id = messages.statement_id_of(payload)
        if statement_id == 0xFFFFFFFF and self._last_prepared_id is not None:
            statement_id = self._last_prepared_id  # MariaDB: "the last prepared"
        statement = self.statements.get(statement_id)
        if statement is None:
            return
        cmd.statement = statement
        if cmd.code in _NAMING_COMMANDS:
            return
        if cmd.code == _COM_STMT_SEND_LONG_DATA:
            _, param, data = messages.parse_long_data(payload)
            previous = statement.long_data.get(param, b"")
            if len(previous) < MAX_CAPTURED_LONG_DATA:
                statement.long_data[param] = (previous + data)[:MAX_CAPTURED_LONG_DATA]
            return
        n = statement.num_params
        if self._query_attributes:
            # A parameter count, and a name after each type: read up to the values, which
            # only an event needs (_params decodes them then).
            try:
                sent = messages.parse_execute_types(payload, n, True)
            except ProtocolError:
                if cmd.total_length > len(payload):
                    # Cut at the capture limit inside the types (long attribute names):
                    # the types now in force are unknown, and old ones would misread.
                    statement.param_types = None
                return  # else malformed: the server refuses it and keeps its types
            if sent is not None:
                statement.param_types = sent
            return
        bound_at = 10 + (n + 7) // 8
        if n and len(payload) >= bound_at + 1 + 2 * n and payload[bound_at] == 1:
            statement.param_types = struct.unpack_from(f"<{n}H", payload, bound_at + 1)

    def _begin_response(self, cmd: _Command) -> None:
        """Make `cmd` the command whose response the server side follows."""
        code = cmd.code
        if code in _NO_RESPONSE:
            if code == _COM_QUIT:
                self.server_phase = S_CLOSED
                self.client_phase = C_CLOSED
            elif code == _COM_STMT_CLOSE and len(cmd.payload) >= 5:
                self.statements.pop(messages.statement_id_of(cmd.payload), None)
            cmd.first_byte_ns = cmd.started_ns
            self._complete(cmd)
            return
        self.server_phase = _RESPONSE_PHASE.get(code, S_SIMPLE)
        self._server_seq = (cmd.sequence_id + cmd.total_length // MAX_PACKET_PAYLOAD + 1) & 0xFF
        if code == _COM_CHANGE_USER:
            self.client_phase = C_AUTH
            self._client_seq = self._server_seq
        elif code == _COM_STMT_RESET and cmd.statement is not None:
            cmd.statement.long_data.clear()

    def _complete(self, cmd: _Command) -> None:
        """The response to the head command is complete."""
        now = self._clock_ns()
        queue = self._queue
        queue.popleft()
        self.commands_completed += 1
        if self._in_server_data:
            cmd.bytes_sent += self._packet_end - self._chunk_pos
            self._chunk_pos = self._packet_end
        if not cmd.error_code:
            self._apply_session_effects(cmd)
        if self.emit_query_events:
            self.events.append(self._event(cmd, now))
        if cmd.code == _COM_STMT_EXECUTE and cmd.statement is not None:
            # The server forgets long data once a statement executes (after the event
            # above, which shows it as the parameter's value).
            cmd.statement.long_data.clear()
        if self.server_phase != S_CLOSED:
            self.server_phase = S_IDLE
            if self.client_phase == C_AUTH:
                self.client_phase = C_COMMAND
        if queue:
            self._begin_response(queue[0])

    def _apply_session_effects(self, cmd: _Command) -> None:
        code = cmd.code
        if code == _COM_INIT_DB:
            self.schema = cmd.payload[1:].decode("utf-8", "replace")
        elif code == _COM_QUERY:
            if cmd.new_schema is None and len(cmd.payload) <= MAX_SCHEMA_SCAN:
                # (Searched from pos 1 without a copy when there are no attributes: the
                # command byte is no word character. An attribute's value may be, and
                # would hide a word boundary from \b.)
                start = cmd.text_start
                if _SCHEMA_WORDS.search(cmd.payload, 1) if start == 1 else (
                    _SCHEMA_WORDS.search(cmd.payload[start:])
                ):
                    self.schema = schema_after(cmd.payload[start:], self.schema)
        elif code == _COM_RESET_CONNECTION:
            self.statements.clear()
        if cmd.new_schema is not None:
            self.schema = cmd.new_schema or None

    # --- events -------------------------------------------------------------------

    def _command_text(self, cmd: _Command) -> tuple[str, bool]:
        """The text to log for a command, and whether it was cut at the capture limit."""
        code = cmd.code
        truncated = cmd.total_length > len(cmd.payload)
        if code in (
            Command.COM_QUERY,
            Command.COM_STMT_PREPARE,
            Command.COM_INIT_DB,
            Command.COM_FIELD_LIST,
            Command.COM_CREATE_DB,
            Command.COM_DROP_DB,
        ):
            raw = cmd.payload[cmd.text_start :]
            if code == Command.COM_FIELD_LIST:
                raw = raw.split(b"\x00", 1)[0]
            return raw.decode("utf-8", "backslashreplace"), truncated
        if cmd.statement and code != Command.COM_STMT_PREPARE:  # the other COM_STMT_*
            return cmd.statement.query, truncated
        if code == Command.COM_PROCESS_KILL and len(cmd.payload) >= 5:
            return str(int.from_bytes(cmd.payload[1:5], "little")), False
        if code == Command.COM_CHANGE_USER and cmd.change_user is not None:
            return cmd.change_user.username, False
        return "", truncated

    def _params(
        self, cmd: _Command
    ) -> tuple[tuple[ParamValue, ...] | None, QueryAttributes | None]:
        """COM_STMT_EXECUTE's parameters and query attributes; COM_QUERY's attributes."""
        statement = cmd.statement
        if cmd.code != Command.COM_STMT_EXECUTE or statement is None:
            return None, cmd.attributes
        try:
            request = messages.parse_execute(
                cmd.payload,
                statement.num_params,
                statement.param_types,
                statement.long_data,
                self._query_attributes,
            )
        except ProtocolError:
            return None, None  # truncated capture or a packet the server refused
        return request.params, request.attributes or None

    def _event(self, cmd: _Command, now: int) -> QueryEvent:
        text, truncated = self._command_text(cmd)
        first = cmd.first_byte_ns or now
        statement_id = None
        if cmd.code in _STATEMENT_COMMANDS and len(cmd.payload) >= 5:
            statement_id = messages.statement_id_of(cmd.payload)
        elif cmd.code == Command.COM_STMT_PREPARE and not cmd.error_code:
            statement_id = self._prepared_statement_id
        first_byte_us = (first - cmd.started_ns) // 1000
        duration_us = (now - cmd.started_ns) // 1000
        params, attributes = self._params(cmd)
        # Positional, in QueryEvent's field order, through the fast constructor.
        return _new_query_event(
            (
                cmd.started_at,
                self.connection_id,
                self.thread_id,
                self.client_address,
                self.backend_address,
                cmd.user,
                cmd.schema,
                cmd.code,
                text,
                statement_id,
                params,
                first_byte_us if first_byte_us > 0 else 0,
                duration_us if duration_us > 0 else 0,
                cmd.rows_sent,
                cmd.rows_affected,
                cmd.insert_id,
                cmd.warnings,
                cmd.error_code,
                cmd.error_message,
                cmd.sql_state,
                cmd.bytes_received,
                cmd.bytes_sent,
                _status_flags(cmd.status | cmd.index_flags),
                cmd.result_sets,
                truncated,
                attributes,
            )
        )
