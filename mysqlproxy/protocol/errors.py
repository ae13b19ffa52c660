"""The project's one protocol error family."""

from __future__ import annotations


class ProtocolError(Exception):
    """Input that no transition of the protocol accepts. The connection it came from is
    closed; the proxy goes on."""


class TruncatedPacket(ProtocolError):
    """A packet's payload ended before a field it must contain."""


class UnsupportedFeature(ProtocolError):
    """A peer asked for something the proxy deliberately does not handle (yet)."""


class PacketTooLarge(ProtocolError):
    """A client packet announced more payload than the configured maximum.

    Raised as soon as the header that crosses the limit arrives, before any byte of that
    packet's payload is passed on. `sequence_id` is the one the ERR packet answering it
    must carry (the offending piece's plus one, as the server's own reply would).
    `forward` holds the bytes of the chunk that came before the oversized packet
    (complete packets, which the server may still be sent), and `behind_commands` is true
    when commands sent before it still await their responses. `ended` is true when the
    chunk held the rest of the packet too; if not, ConnectionTracker.skip_refused passes
    over the rest as it comes."""

    def __init__(self, size: int, limit: int, sequence_id: int) -> None:
        super().__init__(f"packet of {size} bytes exceeds the maximum of {limit}")
        self.size = size
        self.limit = limit
        self.sequence_id = sequence_id
        self.forward = b""
        self.behind_commands = False
        self.ended = False
