from __future__ import annotations

import pytest

from mysqlproxy.units import format_duration, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("250us", 250e-6),
        ("250µs", 250e-6),
        ("100ms", 0.1),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        (" 5M ", 300.0),  # case and surrounding blanks do not matter
        ("1h 30m", 5400.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration_reads_numbers_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_a_bare_number_is_in_the_default_unit() -> None:
    assert parse_duration("90") == 90.0
    assert parse_duration("1.5") == 1.5
    assert parse_duration("100", default_unit="ms") == pytest.approx(0.1)
    assert parse_duration("250", default_unit="us") == pytest.approx(250e-6)
    assert parse_duration("2", default_unit="m") == 120.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "s",
        "5x",
        "5 parsecs",
        "ms100",
        "1h30",  # a unit on the first part only is ambiguous
        "-5s",
        "-5",  # a negative window or threshold is a typo, not a duration
        "nan",
        "inf",
        "infinity",
        "1e3",
        "5m-",
        "1..5s",
    ],
)
def test_parse_duration_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_the_error_message_shows_the_input_and_examples() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("5 fortnights")
    message = str(info.value)
    assert "'5 fortnights'" in message
    assert "90s" in message and "100ms" in message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("0", 0),
        ("512k", 512 * 1024),
        ("512K", 512 * 1024),
        ("100M", 100 * 1024 * 1024),
        ("100MB", 100 * 1024 * 1024),
        ("100MiB", 100 * 1024 * 1024),
        ("1G", 1 << 30),
        ("1.5G", 3 << 29),
        ("2T", 2 << 40),
        ("10 kb", 10 * 1024),
        ("7b", 7),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "10X", "ten", "-1M", "1M2", "1 M B B"])
def test_parse_size_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.25, "250ms"),
        (0.85, "850ms"),
        (0.57, "570ms"),
        (0.9996, "1s"),
        (1.0, "1s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (299, "4m59s"),
        (300, "5m00s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (3720, "1h02m"),
        (5400, "1h30m"),
        (90000, "25h00m"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["90s", "5m", "1h30m", "2s", "250ms"])
def test_format_duration_reads_back_as_the_same_duration(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == pytest.approx(
        parse_duration(text)
    )
