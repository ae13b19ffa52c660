"""MySQL and MariaDB protocol constants, under the names MySQL's documentation uses.

References:
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_dt_integers.html
https://mariadb.com/kb/en/connection/#capabilities
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Command(IntEnum):
    """The first byte of a client command packet."""

    COM_SLEEP = 0x00
    COM_QUIT = 0x01
    COM_INIT_DB = 0x02
    COM_QUERY = 0x03
    COM_FIELD_LIST = 0x04
    COM_CREATE_DB = 0x05
    COM_DROP_DB = 0x06
    COM_REFRESH = 0x07
    COM_SHUTDOWN = 0x08
    COM_STATISTICS = 0x09
    COM_PROCESS_INFO = 0x0A
    COM_CONNECT = 0x0B
    COM_PROCESS_KILL = 0x0C
    COM_DEBUG = 0x0D
    COM_PING = 0x0E
    COM_TIME = 0x0F
    COM_DELAYED_INSERT = 0x10
    COM_CHANGE_USER = 0x11
    COM_BINLOG_DUMP = 0x12
    COM_TABLE_DUMP = 0x13
    COM_CONNECT_OUT = 0x14
    COM_REGISTER_SLAVE = 0x15
    COM_STMT_PREPARE = 0x16
    COM_STMT_EXECUTE = 0x17
    COM_STMT_SEND_LONG_DATA = 0x18
    COM_STMT_CLOSE = 0x19
    COM_STMT_RESET = 0x1A
    COM_SET_OPTION = 0x1B
    COM_STMT_FETCH = 0x1C
    COM_DAEMON = 0x1D
    COM_BINLOG_DUMP_GTID = 0x1E
    COM_RESET_CONNECTION = 0x1F
    # MariaDB only; the capability that enables it is masked, see MASKED_CAPABILITIES.
    COM_STMT_BULK_EXECUTE = 0xFA

    @classmethod
    def name_of(cls, value: int) -> str:
        """The command's name, or COM_UNKNOWN_0x.. for bytes no server defines."""
        try:
            return cls(value).name
        except ValueError:
            return f"COM_UNKNOWN_0x{value:02x}"


class Capability(IntFlag):
    """Capability flags of the handshake. Bits 32-63 are MariaDB's extended capabilities,
    carried in otherwise reserved bytes of the greeting and the handshake response."""

    CLIENT_LONG_PASSWORD = 1 << 0  # MariaDB calls this bit CLIENT_MYSQL
    CLIENT_FOUND_ROWS = 1 << 1
    CLIENT_LONG_FLAG = 1 << 2
    CLIENT_CONNECT_WITH_DB = 1 << 3
    CLIENT_NO_SCHEMA = 1 << 4
    CLIENT_COMPRESS = 1 << 5
    CLIENT_ODBC = 1 << 6
    CLIENT_LOCAL_FILES = 1 << 7
    CLIENT_IGNORE_SPACE = 1 << 8
    CLIENT_PROTOCOL_41 = 1 << 9
    CLIENT_INTERACTIVE = 1 << 10
    CLIENT_SSL = 1 << 11
    CLIENT_IGNORE_SIGPIPE = 1 << 12
    CLIENT_TRANSACTIONS = 1 << 13
    CLIENT_RESERVED = 1 << 14
    CLIENT_SECURE_CONNECTION = 1 << 15
    CLIENT_MULTI_STATEMENTS = 1 << 16
    CLIENT_MULTI_RESULTS = 1 << 17
    CLIENT_PS_MULTI_RESULTS = 1 << 18
    CLIENT_PLUGIN_AUTH = 1 << 19
    CLIENT_CONNECT_ATTRS = 1 << 20
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    CLIENT_SESSION_TRACK = 1 << 23
    CLIENT_DEPRECATE_EOF = 1 << 24
    CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25
    CLIENT_ZSTD_COMPRESSION_ALGORITHM = 1 << 26
    CLIENT_QUERY_ATTRIBUTES = 1 << 27
    MULTI_FACTOR_AUTHENTICATION = 1 << 28
    CLIENT_CAPABILITY_EXTENSION = 1 << 29
    CLIENT_SSL_VERIFY_SERVER_CERT = 1 << 30
    CLIENT_REMEMBER_OPTIONS = 1 << 31
    MARIADB_CLIENT_PROGRESS = 1 << 32
    MARIADB_CLIENT_COM_MULTI = 1 << 33
    MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 34
    MARIADB_CLIENT_EXTENDED_METADATA = 1 << 35
    MARIADB_CLIENT_CACHE_METADATA = 1 << 36
    MARIADB_CLIENT_BULK_UNIT_RESULTS = 1 << 37


MARIADB_EXTENDED_CAPABILITIES = Capability(0xFFFFFFFF << 32)

# Capabilities the proxy cannot follow yet. Each changes the framing or the layout of
# packets the tracker must read, so it is cleared from the greeting the client sees
# (and from the client's answer, in case a client sets a bit it was not offered).
MASKED_CAPABILITIES = (
    Capability.CLIENT_SSL  # each leg's own: the proxy offers it when it has a certificate
    # (CLIENT_COMPRESS is let through: the relay decompresses, see protocol/compression.py.)
    | Capability.CLIENT_ZSTD_COMPRESSION_ALGORITHM  # no zstd in Python 3.11; MariaDB lacks it
    | Capability.CLIENT_OPTIONAL_RESULTSET_METADATA  # result sets without column defs
    | Capability.MULTI_FACTOR_AUTHENTICATION  # AuthNextFactor packets
    | Capability.CLIENT_CAPABILITY_EXTENSION
    | Capability.CLIENT_SSL_VERIFY_SERVER_CERT
    # (CLIENT_QUERY_ATTRIBUTES is let through: the tracker reads the COM_QUERY and
    # COM_STMT_EXECUTE layouts it brings, see messages.parse_query.)
    # MariaDB's progress reports, bulk execute, metadata cache and future ones. Extended
    # metadata is let through: it only adds a field inside column definitions, which
    # the tracker skips whole (it reads their first byte).
    # (int arithmetic: IntFlag's ~ would drop bits no member defines yet)
    | Capability(
        int(MARIADB_EXTENDED_CAPABILITIES) & ~int(Capability.MARIADB_CLIENT_EXTENDED_METADATA)
    )
)


class ServerStatus(IntFlag):
    """Status flags of OK and EOF packets."""

    SERVER_STATUS_IN_TRANS = 0x0001
    SERVER_STATUS_AUTOCOMMIT = 0x0002
    SERVER_MORE_RESULTS_EXISTS = 0x0008
    SERVER_QUERY_NO_GOOD_INDEX_USED = 0x0010
    SERVER_QUERY_NO_INDEX_USED = 0x0020
    SERVER_STATUS_CURSOR_EXISTS = 0x0040
    SERVER_STATUS_LAST_ROW_SENT = 0x0080
    SERVER_STATUS_DB_DROPPED = 0x0100
    SERVER_STATUS_NO_BACKSLASH_ESCAPES = 0x0200
    SERVER_STATUS_METADATA_CHANGED = 0x0400
    SERVER_QUERY_WAS_SLOW = 0x0800
    SERVER_PS_OUT_PARAMS = 0x1000
    SERVER_STATUS_IN_TRANS_READONLY = 0x2000
    SERVER_SESSION_STATE_CHANGED = 0x4000


class SessionTrack(IntEnum):
    """Types of session state change entries in OK packets (CLIENT_SESSION_TRACK)."""

    SESSION_TRACK_SYSTEM_VARIABLES = 0
    SESSION_TRACK_SCHEMA = 1
    SESSION_TRACK_STATE_CHANGE = 2
    SESSION_TRACK_GTIDS = 3
    SESSION_TRACK_TRANSACTION_CHARACTERISTICS = 4
    SESSION_TRACK_TRANSACTION_STATE = 5


class FieldType(IntEnum):
    """Column and parameter types (enum_field_types)."""

    MYSQL_TYPE_DECIMAL = 0
    MYSQL_TYPE_TINY = 1
    MYSQL_TYPE_SHORT = 2
    MYSQL_TYPE_LONG = 3
    MYSQL_TYPE_FLOAT = 4
    MYSQL_TYPE_DOUBLE = 5
    MYSQL_TYPE_NULL = 6
    MYSQL_TYPE_TIMESTAMP = 7
    MYSQL_TYPE_LONGLONG = 8
    MYSQL_TYPE_INT24 = 9
    MYSQL_TYPE_DATE = 10
    MYSQL_TYPE_TIME = 11
    MYSQL_TYPE_DATETIME = 12
    MYSQL_TYPE_YEAR = 13
    MYSQL_TYPE_NEWDATE = 14
    MYSQL_TYPE_VARCHAR = 15
    MYSQL_TYPE_BIT = 16
    MYSQL_TYPE_TIMESTAMP2 = 17
    MYSQL_TYPE_DATETIME2 = 18
    MYSQL_TYPE_TIME2 = 19
    MYSQL_TYPE_TYPED_ARRAY = 20
    MYSQL_TYPE_VECTOR = 242
    MYSQL_TYPE_INVALID = 243
    MYSQL_TYPE_BOOL = 244
    MYSQL_TYPE_JSON = 245
    MYSQL_TYPE_NEWDECIMAL = 246
    MYSQL_TYPE_ENUM = 247
    MYSQL_TYPE_SET = 248
    MYSQL_TYPE_TINY_BLOB = 249
    MYSQL_TYPE_MEDIUM_BLOB = 250
    MYSQL_TYPE_LONG_BLOB = 251
    MYSQL_TYPE_BLOB = 252
    MYSQL_TYPE_VAR_STRING = 253
    MYSQL_TYPE_STRING = 254
    MYSQL_TYPE_GEOMETRY = 255


class CursorType(IntFlag):
    """Flags byte of COM_STMT_EXECUTE."""

    CURSOR_TYPE_NO_CURSOR = 0
    CURSOR_TYPE_READ_ONLY = 1
    CURSOR_TYPE_FOR_UPDATE = 2
    CURSOR_TYPE_SCROLLABLE = 4
    PARAMETER_COUNT_AVAILABLE = 8


class ErrorCode(IntEnum):
    """The MySQL error codes the proxy itself sends, in one table."""

    ER_CON_COUNT_ERROR = 1040
    ER_HANDSHAKE_ERROR = 1043
    ER_ACCESS_DENIED_ERROR = 1045
    ER_UNKNOWN_COM_ERROR = 1047
    ER_NET_PACKET_TOO_LARGE = 1153
    ER_NOT_SUPPORTED_YET = 1235
    CR_CONN_HOST_ERROR = 2003
    ER_SECURE_TRANSPORT_REQUIRED = 3159
    ER_CLIENT_INTERACTION_TIMEOUT = 4031  # MySQL 8.0.24+: sent before an idle close


# Packet header markers. 0xFE and 0xFB also start length-encoded integers, so their
# meaning depends on where in a response they appear (see tracker.py).
OK_HEADER = 0x00
EOF_HEADER = 0xFE
ERR_HEADER = 0xFF
LOCAL_INFILE_HEADER = 0xFB
AUTH_SWITCH_HEADER = 0xFE
AUTH_MORE_DATA_HEADER = 0x01

MAX_PACKET_PAYLOAD = 0xFFFFFF  # a payload of this length continues in the next packet
