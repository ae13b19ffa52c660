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

from mysqlproxy.protocol.constants import ERR_HEADER, MAX_PACKET_PAYLOAD, OK_HEADER

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
