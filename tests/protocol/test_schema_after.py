"""How the tracker follows the current schema through COM_QUERY text (for clients that
do not ask the server for session-state tracking)."""

from __future__ import annotations

import pytest

from mysqlproxy.protocol.tracker import schema_after


@pytest.mark.parametrize(
    ("sql", "before", "after"),
    [
        (b"USE a", None, "a"),
        (b"use `a``b`;", None, "a`b"),
        (b"  Use\n\tx  ;  ", "z", "x"),
        (b"USE x /* why */", "z", "x"),
        (b"/* why */ USE x", "z", "x"),
        (b"-- why\nUSE x -- because", "z", "x"),
        (b"# why\nuse y", "z", "y"),
        (b"SELECT 1; USE x; SELECT 2", "z", "x"),
        (b"USE x; USE y", "z", "y"),
        (b"SELECT ';USE x'; USE y", "z", "y"),
        (b"SELECT 'it''s; use q'", "z", "z"),
        (b'SELECT "a\\";use x"', "z", "z"),
        (b"SELECT `;use x`", "z", "z"),
        (b"-- use x\nSELECT 1", "z", "z"),
        (b"SELECT 1 --1; USE x", "z", "x"),  # `--` without a space is minus minus
        (b"/* USE x; */ SELECT 1", "z", "z"),
        (b"select user, used from t", "z", "z"),
        (b"USE", "z", "z"),
        (b"USE a b", "z", "z"),
        (b"DROP DATABASE z", "z", None),
        (b"drop schema if exists `z`;", "z", None),
        (b"DROP DATABASE other", "z", "z"),
        (b"USE x; DROP DATABASE x; SELECT 1", "z", None),
        (b"DROP TABLE z", "z", "z"),
        ("USE \u00e9t\u00e9".encode(), None, "\u00e9t\u00e9"),
        # A stored program's body is created, not run.
        (b"CREATE PROCEDURE p() BEGIN DROP DATABASE z; END", "z", "z"),
        (b"USE x; CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO BEGIN DROP DATABASE x; END", "z", "x"),
    ],
)
def test_schema_after(sql, before, after):
    assert schema_after(sql, before) == after
