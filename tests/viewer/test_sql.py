"""Pretty-printing for the detail screen, one-line queries for the list, and which
statements EXPLAIN is run on."""

from __future__ import annotations

import pytest
from rich.syntax import Syntax

from mysqlproxy.viewer.explain import DatabaseDSN, explainable_text
from mysqlproxy.viewer.sql import highlighted, one_line, pretty


def test_short_statements_stay_on_one_line() -> None:
    assert pretty("select   sleep(0.2)") == "SELECT sleep(0.2)"
    assert pretty("select * from t where a in (1,2)") == "SELECT * FROM t WHERE a IN (1,2)"


def test_clauses_lists_joins_and_conditions() -> None:
    query = ("select o.id, o.total, c.name from orders o join customers c on c.id = "
             "o.customer_id where o.created_at > '2024-01-01' and o.status in ('paid', "
             "'shipped') or (o.total > 100 and c.vip = 1) order by o.created_at desc limit 50")
    assert pretty(query) == "\n".join([
        "SELECT",
        "    o.id,",
        "    o.total,",
        "    c.name",
        "FROM orders o",
        "    JOIN customers c ON c.id = o.customer_id",
        "WHERE o.created_at > '2024-01-01'",
        "    AND o.status IN ('paid', 'shipped')",
        "    OR (o.total > 100 AND c.vip = 1)",
        "ORDER BY o.created_at DESC",
        "LIMIT 50",
    ])


def test_subqueries_are_indented() -> None:
    query = ("select * from t where id in (select customer_id from orders where total > 10 "
             "group by customer_id having count(*) > 3) and x between 1 and 2")
    assert pretty(query) == "\n".join([
        "SELECT *",
        "FROM t",
        "WHERE id IN (",
        "    SELECT customer_id",
        "    FROM orders",
        "    WHERE total > 10",
        "    GROUP BY customer_id",
        "    HAVING count(*) > 3",
        ")",
        "    AND x BETWEEN 1 AND 2",
    ])


def test_strings_names_and_comments_are_kept_as_written() -> None:
    query = ("/* prepared */ UPDATE `order table` SET note = 'select  from, where', "
             "updated_at = NOW() WHERE id = 42 -- done\n")
    assert pretty(query) == "\n".join([
        "/* prepared */",
        "UPDATE `order table`",
        "SET",
        "    note = 'select  from, where',",
        "    updated_at = NOW()",
        "WHERE id = 42 -- done",
    ])


def test_insert_on_duplicate_key() -> None:
    query = ("INSERT INTO log (a, b, c) VALUES (1, 2, 3), (4, 5, 6) ON DUPLICATE KEY UPDATE "
             "b = VALUES(b)")
    assert pretty(query) == "\n".join([
        "INSERT INTO log (a, b, c)",
        "VALUES (1, 2, 3), (4, 5, 6)",
        "ON DUPLICATE KEY UPDATE b = VALUES(b)",
    ])


def test_unterminated_text_does_not_break_it() -> None:
    text = pretty("SELECT a, b FROM t WHERE note = 'never closed and a very long tail of text")
    assert text.endswith("'never closed and a very long tail of text")


def test_one_line() -> None:
    assert one_line("SELECT\n  a,\n\tb  FROM t") == "SELECT a, b FROM t"
    assert one_line("SELECT 1234567890", 10) == "SELECT 12…"


def test_highlighting_is_rich_syntax() -> None:
    syntax = highlighted("select 1")
    assert isinstance(syntax, Syntax) and syntax.code == "SELECT 1"


@pytest.mark.parametrize("query, explained", [
    ("SELECT 1", "SELECT 1"),
    ("  select * from t", "select * from t"),
    ("/* prepared */ SELECT * FROM t WHERE id = 3", "SELECT * FROM t WHERE id = 3"),
    ("/* hint */ (SELECT 1) UNION (SELECT 2)", "/* hint */ (SELECT 1) UNION (SELECT 2)"),
    ("WITH x AS (SELECT 1) SELECT * FROM x", "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("WITH x AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM x)", None),
    ("UPDATE t SET a = 1", None),
    ("INSERT INTO t SELECT * FROM u", None),
    ("/* prepare */ SELECT 1", "/* prepare */ SELECT 1"),
    ("", None),
])
def test_what_is_explained(query: str, explained: str | None) -> None:
    assert explainable_text(query) == explained


def test_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = DatabaseDSN.parse("mysql://ops:p%40ss@db.internal:3307/shop")
    assert (dsn.user, dsn.password, dsn.host, dsn.port, dsn.database) == (
        "ops", "p@ss", "db.internal", 3307, "shop")
    assert str(dsn) == "ops@db.internal:3307"
    monkeypatch.setenv("MYSQLPROXY_DB_PASSWORD", "from-env")
    assert DatabaseDSN.parse("mysql://ops@db").password == "from-env"
    assert DatabaseDSN.parse("mysql://ops@db").port == 3306
    assert DatabaseDSN.parse("mysql://root@/?unix_socket=/run/m.sock").unix_socket == "/run/m.sock"
    with pytest.raises(ValueError, match="expected mysql://"):
        DatabaseDSN.parse("postgres://x@y")
    with pytest.raises(ValueError, match="port"):
        DatabaseDSN.parse("mysql://x@y:abc")
