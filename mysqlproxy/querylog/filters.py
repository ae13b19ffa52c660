"""Which events a logging window keeps."""

from __future__ import annotations

import ipaddress
import random
import re
from dataclasses import dataclass, field

from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# What a logging window keeps unless told otherwise: statements, not pings and quits.
DEFAULT_LOGGED_COMMANDS = frozenset({int(Command.COM_QUERY), int(Command.COM_STMT_EXECUTE)})


def parse_network(text: str) -> Network:
    """A CIDR block or a single address."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"invalid client address or CIDR block {text!r}") from None


def parse_command(text: str) -> int:
    """COM_QUERY, query, stmt_execute... -> the command byte."""
    name = text.strip().upper()
    if not name.startswith("COM_"):
        name = "COM_" + name
    try:
        return int(Command[name])
    except KeyError:
        raise ValueError(f"unknown command {text!r}") from None


def compile_regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text, re.I | re.S)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {text!r}: {exc}") from None


def _client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host, _, _ = address.rpartition(":")
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a Unix socket client


@dataclass(frozen=True)
class LogFilter:
    """All conditions must hold; an empty condition holds for every event."""

    slower_than_us: int = 0
    users: frozenset[str] = frozenset()
    schemas: frozenset[str] = frozenset()
    clients: tuple[Network, ...] = ()
    commands: frozenset[int] = frozenset()
    match: re.Pattern[str] | None = None
    exclude: re.Pattern[str] | None = None
    sample: float = 1.0
    _random: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.sample <= 1.0:
            raise ValueError(f"sample must be in (0, 1], got {self.sample}")
        if self.slower_than_us < 0:
            raise ValueError("the threshold cannot be negative")

    def matches(self, event: QueryEvent) -> bool:
        if event.duration_us < self.slower_than_us:
            return False
        if self.users and event.user not in self.users:
            return False
        if self.schemas and event.schema not in self.schemas:
            return False
        if self.commands and event.command not in self.commands:
            return False
        if self.clients:
            ip = _client_ip(event.client_address)
            if ip is None or not any(ip in net for net in self.clients):
                return False
        if self.match is not None and not self.match.search(event.query):
            return False
        if self.exclude is not None and self.exclude.search(event.query):
            return False
        return self.sample >= 1.0 or self._random.random() < self.sample

    def describe(self) -> str:
        """The filter in the admin language's words (empty when it keeps everything)."""
        parts = []
        if self.slower_than_us:
            parts.append(f"SLOWER THAN {self.slower_than_us}us")
        if self.users:
            parts.append("USER " + ",".join(sorted(self.users)))
        if self.schemas:
            parts.append("DB " + ",".join(sorted(self.schemas)))
        if self.clients:
            parts.append("CLIENT " + ",".join(str(n) for n in self.clients))
        if self.commands and self.commands != DEFAULT_LOGGED_COMMANDS:
            parts.append("COMMAND " + ",".join(Command.name_of(c) for c in sorted(self.commands)))
        if self.match is not None:
            parts.append(f"MATCH '{self.match.pattern}'")
        if self.exclude is not None:
            parts.append(f"EXCLUDE '{self.exclude.pattern}'")
        if self.sample < 1.0:
            parts.append(f"SAMPLE {self.sample:g}")
        return " ".join(parts)
