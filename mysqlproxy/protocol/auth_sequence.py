"""Sequence ids of the authentication phase when only one leg uses TLS.

On a TLS leg the client's SSLRequest takes sequence id 1, so its handshake response is
packet 2 and every later packet of the authentication phase is one higher than on a
plain leg. When the proxy terminates TLS toward the client but talks plain to the
server (or the other way round), the two legs disagree by one until the phase ends.
`AuthSequenceShift` renumbers the packets in between: client packets on their way to
the server, server packets on their way to the client. The phase ends with the
server's OK or ERR (the only auth-phase packets starting with 0x00 or 0xFF: auth
switch is 0xFE, more data 0x01); commands then restart at sequence id 0 on both legs,
so from that packet on bytes pass unchanged.

https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html

The session feeds client bytes to `to_server` after the tracker has seen them and
server bytes to `to_client` before the tracker sees them, so the tracker follows the
client's numbering throughout.
"""

from __future__ import annotations

from mysqlproxy.protocol import wire
from mysqlproxy.protocol.auth import CACHING_SHA2_PASSWORD, SHA256_PASSWORD
from mysqlproxy.protocol.constants import ERR_HEADER, MAX_PACKET_PAYLOAD, OK_HEADER, Capability
from mysqlproxy.protocol.messages import parse_change_user

_ENDS_AUTHENTICATION = frozenset({OK_HEADER, ERR_HEADER})


class _Renumberer:
    """Packet headers in one direction, across chunks; each piece's sequence id is
    shifted. Payload bytes are passed over unread, except a packet's first byte when
    the end of authentication is watched for."""

    __slots__ = ("ending", "header", "next_continues", "shift", "skip", "want_first")

    def __init__(self, shift: int) -> None:
        self.shift = shift
        self.header = bytearray()  # an incomplete header
        self.skip = 0  # payload bytes of the current piece still to come
        self.want_first = False  # the current packet's first payload byte is still to come
        self.next_continues = False  # the current piece is 0xFFFFFF long: more follow
        self.ending = False  # the current packet is the OK or ERR ending authentication

    def feed(self, data: bytes, watch_end: bool) -> tuple[bytes, int]:
        """Renumber data. Returns the bytes out and, with watch_end, the position just
        after the packet that ends authentication (-1 if none did); the bytes after it
        are not in the output."""
        out = bytearray()
        pos, n = 0, len(data)
        while pos < n:
            if self.skip:
                if self.want_first:
                    self.want_first = False
                    self.ending = watch_end and data[pos] in _ENDS_AUTHENTICATION
                take = min(self.skip, n - pos)
                out += data[pos : pos + take]
                pos += take
                self.skip -= take
                if not self.skip and self.ending and not self.next_continues:
                    return bytes(out), pos
                continue
            take = min(4 - len(self.header), n - pos)
            self.header += data[pos : pos + take]
            pos += take
            if len(self.header) < 4:
                continue
            header, self.header = self.header, bytearray()
            length = header[0] | header[1] << 8 | header[2] << 16
            header[3] = (header[3] + self.shift) & 0xFF
            out += header
            continues = self.next_continues  # this piece continues a 0xFFFFFF one
            self.next_continues = length == MAX_PACKET_PAYLOAD
            self.skip = length
            self.want_first = length > 0 and not continues
        return bytes(out), -1


class AuthSequenceShift:
    """Renumbers the authentication phase between a client leg and a server leg whose
    numbering differs by `offset` (server's id minus client's). See the module
    docstring."""

    __slots__ = ("_down", "_up", "done", "offset")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.done = False  # the OK or ERR ending authentication has passed
        self._up = _Renumberer(offset)
        self._down = _Renumberer(-offset)

    def to_server(self, data: bytes) -> bytes:
        """Client bytes (as the tracker returned them) for the server."""
        if self.done:
            return data
        return self._up.feed(data, watch_end=False)[0]

    def to_client(self, data: bytes) -> bytes:
        """Server bytes, renumbered for the client (give these to the tracker)."""
        if self.done:
            return data
        out, end = self._down.feed(data, watch_end=True)
        if end < 0:
            return out
        self.done = True
        return out + data[end:]


# --- cleartext passwords ------------------------------------------------------------------
#
# A client on TLS believes its connection is secure, so some authentication methods send
# the password in clear: caching_sha2_password's full authentication (after AuthMoreData
# 0x04), sha256_password, mysql_clear_password, and MariaDB's dialog (PAM). When the
# backend leg is plain, the proxy must not relay such a password: `CleartextWatch` finds,
# in the server's packets of one authentication, the one that would make the client send
# it, so that the session can refuse before the client answers. mysql_native_password,
# client_ed25519 and caching_sha2_password's fast path (AuthMoreData 0x03) send no
# password, only scrambles.
# https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html

# Client plugins that send the password in clear over a connection they think secure.
CLEARTEXT_PLUGINS = frozenset({"mysql_clear_password", SHA256_PASSWORD, "dialog"})
_AUTH_MORE_DATA = 0x01
_AUTH_SWITCH = 0xFE
_PERFORM_FULL_AUTHENTICATION = 0x04
# Enough of a server auth packet to read an auth switch's plugin name.
_MAX_INSPECTED = 256


def sends_cleartext(plugin: str | None, auth_response: bytes) -> bool:
    """Whether a client's auth data (handshake response, COM_CHANGE_USER, or an answer to
    an auth switch) under `plugin` is a password in clear. An empty password and
    sha256_password's public key request (0x01) are not."""
    if plugin not in CLEARTEXT_PLUGINS:
        return False
    secret = auth_response.rstrip(b"\x00")
    return bool(secret) and not (plugin == SHA256_PASSWORD and secret == b"\x01")


def change_user_auth(payload: bytes, secure_connection: bool) -> tuple[bytes, str | None]:
    """COM_CHANGE_USER's auth data and plugin name (None when it names none)."""
    _, pos = wire.read_nul_bytes(payload, 1)
    caps = Capability.CLIENT_PLUGIN_AUTH
    if secure_connection:
        caps |= Capability.CLIENT_SECURE_CONNECTION
        length, pos = wire.read_uint(payload, pos, 1)
        data, _ = wire.read_fixed_bytes(payload, pos, length)
    else:
        data, _ = wire.read_nul_or_eof_bytes(payload, pos)
    return bytes(data), parse_change_user(payload, caps).auth_plugin


class CleartextWatch:
    """The server's packets of one authentication (after the client's first auth data),
    in the client's numbering: `feed` returns the sequence id and a description of the
    first packet that would make a TLS client send its password in clear, or None.
    `done` once the OK or ERR ending authentication has passed. `plugin` is the method
    in force (None: unknown, treated as possibly caching_sha2_password)."""

    __slots__ = ("_first", "_header", "_seq", "_skip", "done", "plugin")

    def __init__(self, plugin: str | None) -> None:
        self.plugin = plugin
        self.done = False
        self._header = bytearray()
        self._first = bytearray()  # the current packet's first bytes
        self._skip = 0  # payload bytes of the current packet still to come
        self._seq = 0

    def feed(self, data: bytes) -> tuple[int, str] | None:
        pos, n = 0, len(data)
        while pos < n and not self.done:
            if not self._skip:
                take = min(4 - len(self._header), n - pos)
                self._header += data[pos : pos + take]
                pos += take
                if len(self._header) < 4:
                    continue
                header, self._header = self._header, bytearray()
                self._skip = header[0] | header[1] << 8 | header[2] << 16
                self._seq = header[3]
                self._first = bytearray()
                if self._skip:
                    continue
            else:
                take = min(self._skip, n - pos)
                room = _MAX_INSPECTED - len(self._first)
                if room > 0:
                    self._first += data[pos : pos + min(take, room)]
                pos += take
                self._skip -= take
                if self._skip:
                    continue
            found = self._packet(bytes(self._first))
            if found is not None:
                return self._seq, found
        return None

    def _packet(self, payload: bytes) -> str | None:
        """One whole server packet (its first bytes)."""
        if not payload or payload[0] in _ENDS_AUTHENTICATION:
            self.done = True
            return None
        if payload[0] == _AUTH_SWITCH:
            plugin = payload[1:].split(b"\x00", 1)[0].decode("ascii", "replace")
            self.plugin = plugin
            if plugin in CLEARTEXT_PLUGINS:
                return f"the server switched authentication to {plugin}"
        elif (
            payload[0] == _AUTH_MORE_DATA
            and payload[1:] == bytes((_PERFORM_FULL_AUTHENTICATION,))
            and self.plugin in (None, CACHING_SHA2_PASSWORD)
        ):
            return "the server asked for caching_sha2_password full authentication"
        return None
