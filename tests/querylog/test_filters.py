from __future__ import annotations

import random

import pytest

from mysqlproxy.protocol.constants import Command
from mysqlproxy.querylog.filters import (
    DEFAULT_LOGGED_COMMANDS,
    LogFilter,
    compile_regex,
    parse_command,
    parse_network,
)
from mysqlproxy.testing.events import make_query_event as make_event


def test_an_empty_filter_keeps_everything() -> None:
    keep_all = LogFilter()
    assert keep_all.matches(make_event())
    assert keep_all.matches(make_event(command=Command.COM_PING, query="", schema=None))
    assert keep_all.matches(make_event(duration_us=0, client_address="unix"))
    assert keep_all.describe() == ""


def test_threshold_keeps_events_at_or_above_it() -> None:
    slow = LogFilter(slower_than_us=100_000)
    assert not slow.matches(make_event(duration_us=99_999))
    assert slow.matches(make_event(duration_us=100_000))
    assert slow.matches(make_event(duration_us=2_500_000))


def test_users() -> None:
    only = LogFilter(users=frozenset({"app", "batch"}))
    assert only.matches(make_event(user="app"))
    assert only.matches(make_event(user="batch"))
    assert not only.matches(make_event(user="root"))
    assert not only.matches(make_event(user="APP"))  # MySQL user names are case-sensitive


def test_schemas_and_no_schema() -> None:
    only = LogFilter(schemas=frozenset({"shop"}))
    assert only.matches(make_event(schema="shop"))
    assert not only.matches(make_event(schema="crm"))
    assert not only.matches(make_event(schema=None))


@pytest.mark.parametrize(
    ("cidr", "address", "kept"),
    [
        ("10.0.0.0/8", "10.1.2.3:5000", True),
        ("10.0.0.0/8", "11.0.0.1:5000", False),
        ("10.0.0.12", "10.0.0.12:40000", True),  # a single address
        ("10.0.0.12", "10.0.0.13:40000", False),
        ("192.168.1.77/24", "192.168.1.5:1", True),  # host bits are ignored
        ("::1", "[::1]:5000", True),
        ("fd00::/8", "[fd12:3456::1]:5000", True),
        ("fd00::/8", "[fe80::1]:5000", False),
        ("fd00::/8", "10.0.0.1:5000", False),  # v4 client, v6 block
        ("10.0.0.0/8", "[fd12::1]:5000", False),  # v6 client, v4 block
        ("127.0.0.0/8", "unix:/run/mysqlproxy.sock", False),  # Unix clients have no address
        ("127.0.0.0/8", "unix", False),
    ],
)
def test_client_cidr(cidr: str, address: str, kept: bool) -> None:
    only = LogFilter(clients=(parse_network(cidr),))
    assert only.matches(make_event(client_address=address)) is kept


def test_several_client_blocks_are_alternatives() -> None:
    only = LogFilter(clients=(parse_network("10.0.0.0/8"), parse_network("::1")))
    assert only.matches(make_event(client_address="10.9.9.9:1"))
    assert only.matches(make_event(client_address="[::1]:1"))
    assert not only.matches(make_event(client_address="127.0.0.1:1"))


def test_commands() -> None:
    statements = LogFilter(commands=DEFAULT_LOGGED_COMMANDS)
    assert statements.matches(make_event(command=Command.COM_QUERY))
    assert statements.matches(make_event(command=Command.COM_STMT_EXECUTE, params=()))
    assert not statements.matches(make_event(command=Command.COM_PING, query=""))
    assert not statements.matches(make_event(command=Command.COM_STMT_PREPARE))
    pings = LogFilter(commands=frozenset({parse_command("ping")}))
    assert pings.matches(make_event(command=Command.COM_PING, query=""))
    assert not pings.matches(make_event())


def test_match_and_exclude_regexes_are_case_insensitive_and_span_lines() -> None:
    orders = LogFilter(match=compile_regex(r"from\s+orders"))
    assert orders.matches(make_event(query="SELECT *\n  FROM orders"))
    assert not orders.matches(make_event(query="SELECT * FROM customers"))
    not_health = LogFilter(exclude=compile_regex("^select 1$"))
    assert not not_health.matches(make_event(query="SELECT 1"))
    assert not_health.matches(make_event(query="SELECT 10"))
    dotall = LogFilter(match=compile_regex("select.*orders"))
    assert dotall.matches(make_event(query="SELECT *\nFROM orders"))


def test_all_conditions_must_hold() -> None:
    combined = LogFilter(
        slower_than_us=50_000,
        users=frozenset({"app"}),
        schemas=frozenset({"shop"}),
        clients=(parse_network("10.0.0.0/8"),),
        commands=DEFAULT_LOGGED_COMMANDS,
        match=compile_regex("orders"),
        exclude=compile_regex("LIMIT 1$"),
    )
    good = dict(
        duration_us=60_000,
        user="app",
        schema="shop",
        client_address="10.0.0.5:4000",
        command=Command.COM_QUERY,
        query="SELECT * FROM orders",
    )
    assert combined.matches(make_event(**good))
    for field, bad in [
        ("duration_us", 49_999),
        ("user", "root"),
        ("schema", "crm"),
        ("client_address", "192.168.0.1:4000"),
        ("command", Command.COM_PING),
        ("query", "SELECT * FROM customers"),
        ("query", "SELECT * FROM orders LIMIT 1"),
    ]:
        assert not combined.matches(make_event(**{**good, field: bad})), field
    assert combined.describe() == (
        "SLOWER THAN 50000us USER app DB shop CLIENT 10.0.0.0/8 MATCH 'orders' EXCLUDE 'LIMIT 1$'"
    )


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_sampling_keeps_about_the_requested_share(rate: float) -> None:
    sampled = LogFilter(sample=rate, _random=random.Random(20240501))
    event = make_event()
    kept = sum(sampled.matches(event) for _ in range(20_000))
    # Binomial: 20000 draws, the standard deviation is at most ~71 (1.3 % at 0.5).
    assert abs(kept / 20_000 - rate) < 0.015


def test_sampling_applies_only_to_events_the_other_conditions_keep() -> None:
    rng = random.Random(7)
    sampled = LogFilter(slower_than_us=1000, sample=0.5, _random=rng)
    state = rng.getstate()
    assert not sampled.matches(make_event(duration_us=10))
    assert rng.getstate() == state  # no draw for an event that was out anyway


def test_sample_one_keeps_all_and_describe_shows_a_fraction() -> None:
    assert all(LogFilter(sample=1.0).matches(make_event()) for _ in range(100))
    assert LogFilter(sample=0.25).describe() == "SAMPLE 0.25"


@pytest.mark.parametrize("sample", [0.0, -0.1, 1.5, float("nan")])
def test_sample_outside_zero_one_is_refused(sample: float) -> None:
    with pytest.raises(ValueError, match="sample"):
        LogFilter(sample=sample)


def test_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        LogFilter(slower_than_us=-1)


def test_parse_network_errors_name_the_input() -> None:
    assert str(parse_network(" 10.1.2.3/8 ")) == "10.0.0.0/8"
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_network("10.0.0.0/33")
    with pytest.raises(ValueError, match="'web-1'"):
        parse_network("web-1")


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("COM_QUERY", Command.COM_QUERY),
        ("query", Command.COM_QUERY),
        ("stmt_execute", Command.COM_STMT_EXECUTE),
        (" Ping ", Command.COM_PING),
        ("init_db", Command.COM_INIT_DB),
    ],
)
def test_parse_command(text: str, command: Command) -> None:
    assert parse_command(text) == command


def test_parse_command_and_regex_errors() -> None:
    with pytest.raises(ValueError, match="unknown command 'select'"):
        parse_command("select")
    with pytest.raises(ValueError, match="invalid regular expression"):
        compile_regex("(unclosed")


def test_describe_lists_non_default_commands() -> None:
    assert LogFilter(commands=DEFAULT_LOGGED_COMMANDS).describe() == ""
    assert (
        LogFilter(commands=frozenset({int(Command.COM_PING), int(Command.COM_QUERY)})).describe()
        == "COMMAND COM_QUERY,COM_PING"
    )
