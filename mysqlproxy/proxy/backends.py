"""Addresses (TCP host:port or unix:/path) and the backend the proxy forwards to."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mysqlproxy.proxy.tls import BackendTls


class AddressError(ValueError):
    """An address that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP endpoint or a Unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: str | None = None

    @classmethod
    def parse(cls, text: str, default_host: str = "127.0.0.1") -> Address:
        """Accepts host:port, [v6]:port, :port (all interfaces) and unix:/path."""
        text = text.strip()
        if text.startswith("unix:"):
            path = text[5:]
            if not path:
                raise AddressError(f"{text!r}: unix: needs a socket path")
            return cls(unix_path=path)
        if text.startswith("/"):
            return cls(unix_path=text)
        if text.startswith("["):
            host, sep, port_text = text[1:].partition("]:")
            if not sep:
                raise AddressError(f"{text!r}: expected [ipv6]:port")
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise AddressError(f"{text!r}: expected host:port or unix:/path")
            if ":" in host:
                raise AddressError(f"{text!r}: write IPv6 addresses as [addr]:port")
            if not host:
                host = "0.0.0.0"
        # Plain ASCII digits only: int() would also take "3_306", "+3306", " 3306" and
        # non-Latin digits, none of which a port number is written as.
        if not (port_text.isascii() and port_text.isdigit()):
            raise AddressError(f"{text!r}: port {port_text!r} is not a number")
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise AddressError(f"{text!r}: port {port} is out of range")
        if not host:
            host = default_host
        if any(c.isspace() for c in host):
            raise AddressError(f"{text!r}: invalid host")
        return cls(host=host, port=port)

    @property
    def is_unix(self) -> bool:
        return self.unix_path is not None

    @property
    def is_loopback(self) -> bool:
        if self.is_unix:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class Backend:
    """The server the proxy forwards to. Mutable: the control plane may swap it."""

    address: Address
    connect_timeout: float = 5.0
    tls: BackendTls = field(default_factory=BackendTls)  # when and how the leg uses TLS
