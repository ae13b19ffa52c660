"""Durations, thresholds and sizes as operators type them: 90s, 5m, 1h30m, 250us,
100ms, 2s, 100M."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|µs|ms|s|m|h|d)")
# Not float(): it would take "-5", "nan", "inf" and "1e3" as durations.
_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SECONDS_PER_UNIT = {
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.I)
_BYTES_PER_UNIT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_duration(text: str, default_unit: str = "s") -> float:
    """Seconds in '90s', '5m', '1h30m', '250us', '100ms', '1.5s'. A bare number is in
    `default_unit`. Raises ValueError with a message fit for an operator."""
    cleaned = text.strip().lower().replace(" ", "")
    if not cleaned:
        raise ValueError("empty duration")
    if _BARE_NUMBER.fullmatch(cleaned):
        return float(cleaned) * _SECONDS_PER_UNIT[default_unit]
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]
        pos = match.end()
    if pos != len(cleaned) or pos == 0:
        raise ValueError(
            f"invalid duration {text!r}: use a number with a unit, like 90s, 5m, 1h30m, "
            "250us or 100ms"
        )
    return total


def parse_size(text: str) -> int:
    """Bytes in '100M', '1G', '512k', '1048576'."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number with an optional k, M or G")
    return int(float(match.group(1)) * _BYTES_PER_UNIT[match.group(2).lower()])


def format_duration(seconds: float) -> str:
    """A short human form: 4m59s, 1h02m, 850ms."""
    if seconds < 1:
        milliseconds = round(seconds * 1000)
        if milliseconds < 1000:  # 0.9996 s rounds up to a whole second, not "1000ms"
            return f"{milliseconds}ms"
        seconds = 1.0
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
