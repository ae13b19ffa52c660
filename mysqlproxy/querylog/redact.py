"""Passwords in statements become <redacted> before any sink or buffer sees them.

Covered: CREATE/ALTER USER and GRANT ... IDENTIFIED BY 'pw' (also BY PASSWORD 'hash',
WITH plugin BY 'pw', WITH plugin AS 'hash', MariaDB's VIA/USING), SET PASSWORD ... =
'pw' or PASSWORD('pw'), PASSWORD()/OLD_PASSWORD() anywhere, and replication
credentials (MASTER_PASSWORD, SOURCE_PASSWORD, PASSWORD= in START SLAVE/REPLICA).
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

# A quoted string literal with backslash or doubled-quote escapes.
_STRING = r"""(?:'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")"""
_HEX = r"(?:[xX]'[0-9a-fA-F]*'|0x[0-9a-fA-F]+)"
_LITERAL = rf"(?:_\w+\s*)?(?:{_STRING}|{_HEX})"

_PATTERNS = [
    # IDENTIFIED BY [PASSWORD] 'x' | IDENTIFIED WITH plugin BY|AS 'x' |
    # IDENTIFIED VIA plugin USING|AS 'x'
    re.compile(
        rf"(\bIDENTIFIED\s+(?:(?:WITH|VIA)\s+[`'\"]?\w+[`'\"]?\s+)?(?:BY|AS|USING)"
        rf"(?:\s+PASSWORD)?\s*(?:RANDOM\s+PASSWORD)?\s*){_LITERAL}",
        re.I | re.S,
    ),
    # USING PASSWORD('x') / PASSWORD('x') / OLD_PASSWORD('x') anywhere
    re.compile(rf"(\b(?:OLD_)?PASSWORD\s*\(\s*){_LITERAL}(\s*\))", re.I | re.S),
    # SET PASSWORD [FOR user] = 'x' (a quoted user name may hold an '='). The loop is
    # possessive (a run of quotes splits into strings in exponentially many ways) and
    # bounded (a user name is short; unbounded, many SET PASSWORD without '=' in one
    # statement cost quadratic time on the event loop).
    re.compile(
        rf"(\bSET\s+PASSWORD\b(?:{_STRING}|`[^`]*`|[^='\"`]){{0,512}}+=\s*){_LITERAL}",
        re.I | re.S,
    ),
    # MASTER_PASSWORD = 'x', SOURCE_PASSWORD='x', PASSWORD='x' (START SLAVE ... PASSWORD)
    re.compile(rf"(\b(?:MASTER_|SOURCE_)?PASSWORD\s*=\s*){_LITERAL}", re.I | re.S),
    # MySQL 8: ... IDENTIFIED BY 'new' REPLACE 'current' (after the patterns above)
    re.compile(rf"({re.escape(REDACTED)}\s+REPLACE\s+){_LITERAL}", re.I | re.S),
]

# Cheap pre-check: most queries mention none of these words.
_TRIGGER = re.compile(r"password|identified", re.I)


def mentions_password(query: str) -> bool:
    """Whether the statement could carry a password at all (a cheap test)."""
    return _TRIGGER.search(query) is not None


def redact_passwords(query: str) -> str:
    """The query with password literals replaced by <redacted>."""
    if not _TRIGGER.search(query):
        return query
    for pattern in _PATTERNS:
        query = pattern.sub(_replace, query)
    return query


def _replace(match: re.Match[str]) -> str:
    groups = match.groups()
    suffix = groups[1] if len(groups) > 1 and groups[1] is not None else ""
    return f"{groups[0]}{REDACTED}{suffix}"
