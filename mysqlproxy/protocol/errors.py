"""The project's one protocol error family."""

from __future__ import annotations


class ProtocolError(Exception):
    """Input that no transition of the protocol accepts. The connection it came from is
    closed; the proxy goes on."""


class TruncatedPacket(ProtocolError):
    """A packet's payload ended before a field it must contain."""


class UnsupportedFeature(ProtocolError):
    """A peer asked for something the proxy deliberately does not handle (yet)."""
