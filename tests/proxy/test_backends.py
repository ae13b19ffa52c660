"""Address.parse: every form --listen and --backend accept, and the ones they refuse."""

from __future__ import annotations

import pytest

from mysqlproxy.proxy.backends import Address, AddressError, Backend


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:3306", Address("127.0.0.1", 3306)),
        ("db.internal:3307", Address("db.internal", 3307)),
        ("localhost:0", Address("localhost", 0)),
        ("  10.0.0.1:4040\n", Address("10.0.0.1", 4040)),
        (":4040", Address("0.0.0.0", 4040)),  # all interfaces, as mysql-proxy wrote it
        ("0.0.0.0:65535", Address("0.0.0.0", 65535)),
        ("[::1]:3306", Address("::1", 3306)),
        ("[fe80::1%eth0]:3306", Address("fe80::1%eth0", 3306)),
        ("[::]:4040", Address("::", 4040)),
        ("unix:/run/mysqld/mysqld.sock", Address(unix_path="/run/mysqld/mysqld.sock")),
        ("unix:relative.sock", Address(unix_path="relative.sock")),
        ("/tmp/mysql.sock", Address(unix_path="/tmp/mysql.sock")),
    ],
)
def test_parse(text: str, expected: Address) -> None:
    assert Address.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected host:port or unix:/path"),
        ("db.internal", "expected host:port or unix:/path"),
        ("3306", "expected host:port or unix:/path"),
        ("unix:", "unix: needs a socket path"),
        ("host:", "port '' is not a number"),
        ("host:mysql", "port 'mysql' is not a number"),
        ("host:3306x", "is not a number"),
        ("host:3_306", "is not a number"),  # int() would take it
        ("host:+3306", "is not a number"),
        ("host: 3306", "is not a number"),
        ("host:٣٣٠٦", "is not a number"),  # Arabic-Indic digits: int() takes those too
        ("host:65536", "port 65536 is out of range"),
        ("host:-1", "is not a number"),
        ("host:99999999999999999999", "out of range"),
        ("::1:3306", "write IPv6 addresses as [addr]:port"),
        ("[::1]", "expected [ipv6]:port"),
        ("[::1]3306", "expected [ipv6]:port"),
        ("[::1", "expected [ipv6]:port"),
        ("my host:3306", "invalid host"),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=None) as info:
        Address.parse(text)
    assert message in str(info.value)
    assert repr(text.strip()) in str(info.value) or text.strip() == ""


def test_address_error_is_a_value_error() -> None:
    # click and argparse report ValueErrors as bad parameters.
    assert issubclass(AddressError, ValueError)


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:3306", "db.internal:1", "[::1]:3306", "[fe80::1%eth0]:4040", "unix:/x/y.sock"],
)
def test_str_round_trips(text: str) -> None:
    address = Address.parse(text)
    assert str(address) == text
    assert Address.parse(str(address)) == address


def test_bare_path_prints_as_unix() -> None:
    assert str(Address.parse("/tmp/mysql.sock")) == "unix:/tmp/mysql.sock"


@pytest.mark.parametrize(
    ("text", "loopback"),
    [
        ("127.0.0.1:1", True),
        ("127.8.9.10:1", True),
        ("localhost:1", True),
        ("[::1]:1", True),
        ("unix:/tmp/x.sock", True),
        ("0.0.0.0:1", False),
        (":1", False),
        ("10.1.2.3:1", False),
        ("db.internal:1", False),
        ("[::]:1", False),
    ],
)
def test_is_loopback(text: str, loopback: bool) -> None:
    assert Address.parse(text).is_loopback is loopback


def test_is_unix() -> None:
    assert Address.parse("unix:/a").is_unix
    assert not Address.parse("a:1").is_unix


def test_addresses_are_values() -> None:
    assert Address.parse("h:1") == Address.parse(" h:1 ")
    assert len({Address.parse("h:1"), Address("h", 1)}) == 1
    with pytest.raises(AttributeError):
        Address.parse("h:1").port = 2  # type: ignore[misc]


def test_backend_defaults() -> None:
    backend = Backend(Address.parse("127.0.0.1:3306"))
    assert backend.connect_timeout == 5.0
    backend.address = Address.parse("unix:/run/mysqld/mysqld.sock")  # swappable at runtime
    assert backend.address.is_unix
