"""The script-visible API objects (reference sections 4-6) as real Lua userdata.

Each object is a ``newproxy(true)`` userdata whose ``__index``/``__newindex``/``__len``
call the Python methods here (``LuaScripts.make_object``): Lua 5.1 ignores ``__len`` on
tables, and scripts assert ``type(x) == "userdata"``. Objects that do not change are
made once and cached; ``inj.resultset`` is a new object on every access, as in the
original.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mysqlproxy.protocol import wire as mwire
from mysqlproxy.proxy.backends import Address

if TYPE_CHECKING:
    from lua_compat.scope import LuaScripts

log = logging.getLogger("lua_compat")

BACKEND_STATE_UNKNOWN, BACKEND_STATE_UP, BACKEND_STATE_DOWN = 0, 1, 2
BACKEND_TYPE_UNKNOWN, BACKEND_TYPE_RW, BACKEND_TYPE_RO = 0, 1, 2

_COM_QUERY = 3
_COM_STMT_EXECUTE = 23
_MORE_RESULTS = 0x08


class LuaApiError(Exception):
    """Raised inside an API object's method: becomes a Lua error in the script."""


def _key(key: Any) -> Any:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key


def _raising(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Python callable for the Lua side: a LuaApiError is returned as
    (nil, message), which the Lua wrapper raises as a Lua error with that message."""

    def call(*args: Any) -> Any:
        try:
            value = fn(*args)
        except LuaApiError as exc:
            return None, str(exc).encode()
        return value

    return call


# --- addresses -------------------------------------------------------------------------


@dataclass(slots=True)
class SocketAddress:
    """An endpoint as scripts see it (reference 5.3)."""

    family: int  # 2 IPv4, 10 IPv6, 1 Unix
    address: str
    port: int | None

    @classmethod
    def from_sockname(cls, name: Any) -> SocketAddress:
        if isinstance(name, tuple) and len(name) >= 2:
            host = str(name[0])
            return cls(10 if ":" in host else 2, host, int(name[1]))
        if isinstance(name, (str, bytes)):
            path = name.decode() if isinstance(name, bytes) else name
            return cls(1, path, None)
        return cls(1, "", None)

    @classmethod
    def from_address(cls, address: Address) -> SocketAddress:
        if address.unix_path is not None:
            return cls(1, address.unix_path, None)
        return cls(10 if ":" in address.host else 2, address.host, address.port)

    @property
    def name(self) -> str:
        if self.family == 1:
            return self.address
        if self.family == 10:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


class ObjectFactory:
    """Builds the userdata of one Lua state."""

    def __init__(self, scripts: LuaScripts) -> None:
        self.scripts = scripts
        self.lua = scripts.lua
        self._make = scripts.make_object

    def make(
        self,
        index: Callable[[Any], Any],
        newindex: Callable[[Any, Any], Any] | None = None,
        length: Callable[[], int] | None = None,
        name: str = "object",
        cache: Any = None,
    ) -> Any:
        """`cache`: a Lua table of keys answered without a call into Python."""
        return self._make(_raising(index), newindex, length, name.encode(), cache)

    def method(self, fn: Callable[..., Any]) -> Any:
        """A Lua function calling `fn`; a LuaApiError in it becomes a Lua error."""
        return self.scripts.make_method(_raising(fn))

    def table(self, mapping: dict[str, Any] | None = None, **kw: Any) -> Any:
        items = dict(mapping or {}, **kw)
        return self.lua.table_from({k.encode(): v for k, v in items.items()})

    def address(self, addr: SocketAddress) -> Any:
        def index(key: Any) -> Any:
            key = _key(key)
            if key == "type":
                return addr.family
            if key == "name":
                return addr.name.encode()
            if key == "address":
                return addr.address.encode()
            if key == "port":
                return addr.port
            return None

        return self.make(index, name="address")


# --- proxy.queries and injections -------------------------------------------------------


@dataclass(slots=True)
class Injection:
    """One queued query (reference 4.2)."""

    id: Any
    query: bytes
    resultset_is_needed: bool
    queued_ns: int = field(default_factory=time.perf_counter_ns)
    first_ns: int = 0
    last_ns: int = 0
    result: ResultData | None = None


class QueryQueue:
    """proxy.queries (reference 4.1)."""

    def __init__(self, factory: ObjectFactory) -> None:
        self.items: deque[Injection] = deque()
        self._factory = factory
        self._methods = {
            "append": factory.method(self._append),
            "prepend": factory.method(self._prepend),
            "reset": factory.method(self._reset),
            "len": factory.method(self._len),  # an extension: 0.8.5 only has #
        }
        self.userdata = factory.make(self._index, None, self.__len__, "proxy.queries")

    def __len__(self) -> int:
        return len(self.items)

    def _make_injection(self, inj_id: Any, packet: Any, opts: Any) -> Injection:
        if isinstance(inj_id, bytes):
            try:
                inj_id = int(inj_id)
            except ValueError as exc:
                raise LuaApiError("bad argument #1 (number expected)") from exc
        if not isinstance(inj_id, (int, float)) or isinstance(inj_id, bool):
            raise LuaApiError("bad argument #1 to 'append' (number expected)")
        if isinstance(packet, (int, float)) and not isinstance(packet, bool):
            packet = str(packet).encode()
        if not isinstance(packet, bytes):
            raise LuaApiError("bad argument #2 to 'append' (string expected)")
        needed = False
        if opts is not None:
            if self._factory.scripts.lua_type(opts) != b"table":
                raise LuaApiError("bad argument #3 to 'append' (table expected)")
            value = opts[b"resultset_is_needed"]
            if value is None:
                needed = False
            elif isinstance(value, bool):
                needed = value
            else:
                raise LuaApiError("bad argument #3: resultset_is_needed must be a boolean")
        number = int(inj_id) if float(inj_id).is_integer() else inj_id
        return Injection(number, packet, needed)

    def _append(self, _self: Any, inj_id: Any = None, packet: Any = None, opts: Any = None) -> None:
        self.items.append(self._make_injection(inj_id, packet, opts))

    def _prepend(
        self, _self: Any, inj_id: Any = None, packet: Any = None, opts: Any = None
    ) -> None:
        self.items.appendleft(self._make_injection(inj_id, packet, opts))

    def _reset(self, _self: Any = None) -> None:
        self.items.clear()

    def _len(self, _self: Any = None) -> int:
        return len(self.items)

    def _index(self, key: Any) -> Any:
        return self._methods.get(_key(key))


# --- results ----------------------------------------------------------------------------


@dataclass(slots=True)
class FieldInfo:
    name: bytes
    org_name: bytes
    table: bytes
    org_table: bytes
    type: int


def parse_field(payload: bytes) -> FieldInfo:
    values = []
    pos = 0
    for _ in range(6):  # catalog, db, table, org_table, name, org_name
        value, pos = mwire.read_lenenc_bytes(payload, pos)
        values.append(value)
    pos += 1 + 2 + 4  # 0x0c, charset, length
    field_type = payload[pos] if pos < len(payload) else 254
    return FieldInfo(values[4], values[5], values[2], values[3], field_type)


class ResultData:
    """A response to an injected query: its summary, and its packets when buffered
    (logical payloads, in order)."""

    def __init__(self, command: int, buffered: bool) -> None:
        self.command = command
        self.buffered = buffered
        self.packets: list[bytes] = []
        self.query_status: int | None = 0
        self.affected_rows = 0
        self.insert_id = 0
        self.warning_count = 0
        self.status = 0
        self.row_count = 0
        self.bytes = 0
        self.is_resultset = False
        self.binary = command == _COM_STMT_EXECUTE
        self._state = "first"
        self._columns_left = 0
        self._first = True
        self.summarise = command in (_COM_QUERY, _COM_STMT_EXECUTE)

    def feed(self, payload: bytes) -> None:
        """One logical packet of the response."""
        if self.buffered:
            self.packets.append(payload)
        first = payload[0] if payload else -1
        if self._first:
            self._first = False
            if first == 0xFF:
                self.query_status = 255
            elif first == 0xFB and self.command == _COM_QUERY:
                self.query_status = None
        if not self.summarise:
            return
        state = self._state
        if state == "first":
            if first == 0x00:
                self._ok(payload)
            elif first == 0xFF:
                self.query_status = 255
                self._state = "done"
            elif first == 0xFB:
                self._state = "done"
            else:
                self.is_resultset = True
                self._columns_left, _ = mwire.read_lenenc_int(payload, 0)
                self._state = "fields" if self._columns_left else "fields_eof"
        elif state == "fields":
            self._columns_left -= 1
            if self._columns_left <= 0:
                self._state = "fields_eof"
        elif state == "fields_eof":
            self._state = "rows"
        elif state == "rows":
            if first == 0xFE and len(payload) < 9:
                if len(payload) >= 5:
                    self.warning_count, self.status = struct.unpack_from("<HH", payload, 1)
                self._state = "first" if self.status & _MORE_RESULTS else "done"
            elif first == 0xFF:
                self.query_status = 255
                self._state = "done"
            else:
                self.row_count += 1
                self.bytes += len(payload) + 4

    def _ok(self, payload: bytes) -> None:
        try:
            affected, pos = mwire.read_lenenc_int(payload, 1)
            insert_id, pos = mwire.read_lenenc_int(payload, pos)
            status, warnings = struct.unpack_from("<HH", payload, pos)
        except (ValueError, IndexError, struct.error):
            self._state = "done"
            return
        self.affected_rows += affected
        if insert_id:
            self.insert_id = insert_id
        self.status = status
        self.warning_count = warnings
        self._state = "first" if status & _MORE_RESULTS else "done"

    # the buffered parts

    def fields(self) -> list[FieldInfo]:
        packets = self.packets
        if not packets or not packets[0] or packets[0][0] in (0x00, 0xFF, 0xFB):
            return []
        n, _ = mwire.read_lenenc_int(packets[0], 0)
        return [parse_field(p) for p in packets[1 : 1 + n]]

    def rows(self) -> list[list[bytes | None]]:
        packets = self.packets
        if not packets or not packets[0] or packets[0][0] in (0x00, 0xFF, 0xFB):
            return []
        n, _ = mwire.read_lenenc_int(packets[0], 0)
        out: list[list[bytes | None]] = []
        for payload in packets[2 + n :]:
            if not payload or payload[0] == 0xFF or (payload[0] == 0xFE and len(payload) < 9):
                break
            row: list[bytes | None] = []
            pos = 0
            for _ in range(n):
                if payload[pos] == 0xFB:
                    row.append(None)
                    pos += 1
                else:
                    value, pos = mwire.read_lenenc_bytes(payload, pos)
                    row.append(value)
            out.append(row)
        return out


def _not_buffered(name: str) -> LuaApiError:
    return LuaApiError(f".resultset.{name} isn't available if 'resultset_is_needed ~= true'")


class ResultObjects:
    """inj, inj.resultset, fields and field userdata."""

    def __init__(self, factory: ObjectFactory) -> None:
        self.f = factory

    def injection(self, inj: Injection) -> Any:
        def index(key: Any) -> Any:
            key = _key(key)
            if key in ("id", "type"):
                return inj.id
            if key == "query":
                return inj.query
            if key == "query_time":
                return max(0, (inj.first_ns - inj.queued_ns) // 1000) if inj.first_ns else 0
            if key == "response_time":
                return max(0, (inj.last_ns - inj.queued_ns) // 1000) if inj.last_ns else 0
            if key == "resultset":
                return self.resultset(inj.result or ResultData(0, False))
            log.debug("inj[%s] not found", key)
            return None

        return self.f.make(index, name="injection")

    def resultset(self, res: ResultData) -> Any:
        def index(key: Any) -> Any:
            key = _key(key)
            if key == "query_status":
                return res.query_status
            if key in ("affected_rows", "insert_id"):
                if res.is_resultset:
                    return None
                return res.affected_rows if key == "affected_rows" else res.insert_id
            if key == "warning_count":
                return res.warning_count
            if key == "row_count":
                return res.row_count
            if key == "bytes":
                return res.bytes
            if key == "flags":
                s = res.status
                return self.f.table(
                    in_trans=bool(s & 1),
                    auto_commit=bool(s & 2),
                    no_good_index_used=bool(s & 16),
                    no_index_used=bool(s & 32),
                )
            if key == "raw":
                if not res.buffered:
                    raise _not_buffered("raw")
                return res.packets[0] if res.packets else None
            if key == "fields":
                if not res.buffered:
                    raise _not_buffered("fields")
                return self.field_list(res.fields())
            if key == "rows":
                if not res.buffered:
                    raise _not_buffered("rows")
                if res.binary and res.is_resultset:
                    raise LuaApiError(".resultset.rows isn't available for prepared statements")
                if not res.is_resultset:
                    return None
                return self._rows_iterator(res.rows())
            return None

        return self.f.make(index, name="resultset")

    def _rows_iterator(self, rows: list[list[bytes | None]]) -> Any:
        lua = self.f.lua
        position = [0]

        def step(*_ignored: Any) -> Any:
            i = position[0]
            if i >= len(rows):
                return None
            position[0] = i + 1
            row = rows[i]
            return lua.table_from({j + 1: v for j, v in enumerate(row) if v is not None})

        return step

    def field_list(self, fields: list[FieldInfo]) -> Any:
        objects: dict[int, Any] = {}

        def index(key: Any) -> Any:
            if isinstance(key, (int, float)) and not isinstance(key, bool):
                i = int(key)
                if i != key or not 1 <= i <= len(fields):
                    return None
                obj = objects.get(i)
                if obj is None:
                    obj = objects[i] = self.field(fields[i - 1])
                return obj
            return None

        return self.f.make(index, None, lambda: len(fields), "fields")

    def field(self, info: FieldInfo) -> Any:
        def index(key: Any) -> Any:
            key = _key(key)
            if key == "name":
                return info.name
            if key == "org_name":
                return info.org_name
            if key == "table":
                return info.table
            if key == "org_table":
                return info.org_table
            if key == "type":
                return info.type
            return None

        return self.f.make(index, name="field")
