"""What the tracker reports: small immutable records, one per thing that happened."""

from __future__ import annotations

from dataclasses import dataclass

from mysqlproxy.protocol.constants import Command, ServerStatus
from mysqlproxy.protocol.messages import ParamValue, QueryAttributes


@dataclass(frozen=True, slots=True)
class QueryEvent:
    """One completed command and what it cost.

    Times are microseconds measured from the moment the proxy received the whole
    command; `first_byte_us` is when the first byte of the response arrived from the
    server, `duration_us` when the last one did. For multi-statements and stored
    procedures returning several results, counts add up over all results
    (`result_sets` says how many there were); `insert_id` is the last non-zero one and
    `error_*` describe the ERR that ended the response, if any.
    """

    started_at: float  # wall clock, seconds since the epoch
    connection_id: int  # the proxy's own connection number
    thread_id: int  # the server's connection id (CONNECTION_ID())
    client_address: str
    backend_address: str
    user: str
    schema: str | None  # the current schema when the command started
    command: int  # a Command value; unknown command bytes are kept as they came
    query: str  # COM_QUERY text; statement text for COM_STMT_*; argument of others
    statement_id: int | None
    params: tuple[ParamValue, ...] | None  # decoded COM_STMT_EXECUTE parameters
    first_byte_us: int
    duration_us: int
    rows_sent: int
    rows_affected: int
    insert_id: int
    warnings: int
    error_code: int  # 0 when the command succeeded
    error_message: str
    sql_state: str
    bytes_received: int  # from the client, headers included
    bytes_sent: int  # to the client, headers included
    status: ServerStatus  # the flags of the last OK/EOF, with index warnings of all
    result_sets: int
    truncated: bool = False  # the query text was cut at the capture limit
    # (name, value) pairs a MySQL 8.0.23+ client sent with COM_QUERY or, past the
    # statement's own parameters, with COM_STMT_EXECUTE (CLIENT_QUERY_ATTRIBUTES);
    # None when the command carried none.
    query_attributes: QueryAttributes | None = None

    @property
    def command_name(self) -> str:
        return Command.name_of(self.command)

    @property
    def no_index_used(self) -> bool:
        return bool(self.status & ServerStatus.SERVER_QUERY_NO_INDEX_USED)

    @property
    def no_good_index_used(self) -> bool:
        return bool(self.status & ServerStatus.SERVER_QUERY_NO_GOOD_INDEX_USED)

    @property
    def in_transaction(self) -> bool:
        return bool(self.status & ServerStatus.SERVER_STATUS_IN_TRANS)

    @property
    def failed(self) -> bool:
        return self.error_code != 0


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The server accepted the client's credentials (at connect or COM_CHANGE_USER)."""

    user: str
    schema: str | None
    thread_id: int
    server_version: str


@dataclass(frozen=True, slots=True)
class AuthenticationFailed:
    """The server refused the client (wrong password, unknown user, too many
    connections answered in place of a greeting...)."""

    user: str
    error_code: int
    error_message: str


TrackerEvent = QueryEvent | Authenticated | AuthenticationFailed
