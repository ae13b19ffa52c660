"""`SELECT * FROM digests` and `RESET digests` on the admin interface of a real proxy
(a `mysqlproxy run` child process) in front of the private MariaDB: statements sent
through the proxy while a window opened WITH DIGESTS is open are aggregated by class."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from tests.conftest import MariaDB
from tests.proxyproc import RunningProxy, running_proxy, wait_until

SELECT_FP = "select v from digest_t where id = ?"
INSERT_FP = "insert into digest_t (id, v) values(?+)"
COUNT_FP = "select count(*) from digest_t where v in(?+)"
COLUMNS = [
    "query_id", "fingerprint", "count", "total_us", "mean_us", "p50_us", "p95_us", "p99_us",
    "max_us", "rows_per_call", "errors", "schema", "first_seen", "last_seen", "example",
]
NUMERIC = {"count", "total_us", "mean_us", "p50_us", "p95_us", "p99_us", "max_us",
           "rows_per_call", "errors", "first_seen", "last_seen"}


@pytest.fixture(scope="module")
def proxyproc(mariadb: MariaDB, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with mariadb.connect(database="mpt") as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS digest_t")
        cur.execute("CREATE TABLE digest_t (id INT PRIMARY KEY, v VARCHAR(20))")
    with running_proxy(mariadb.address, tmp_path_factory.mktemp("digests-admin")) as proxy:
        yield proxy


@pytest.fixture
def proxy(proxyproc: RunningProxy, mariadb: MariaDB) -> Iterator[RunningProxy]:
    proxyproc.admin_query("LOG OFF ALL")
    proxyproc.admin_query("RESET digests")
    with mariadb.connect(database="mpt") as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM digest_t")
        conn.commit()
    yield proxyproc
    proxyproc.admin_query("LOG OFF ALL")
    proxyproc.admin_query("RESET digests")


def digests(proxy: RunningProxy, tail: str = "") -> list[dict[str, Any]]:
    return proxy.admin_query(f"SELECT * FROM digests {tail}")


_BATCHES = itertools.count()


def run_three_classes(proxy: RunningProxy) -> None:
    """6 + 4 + 2 statements of three classes, each with its own literals (4 of the 6
    SELECTs find their row)."""
    base = 10 * next(_BATCHES)
    with proxy.connect(database="mpt", autocommit=True) as conn, conn.cursor() as cur:
        for n in range(base + 1, base + 5):
            cur.execute(f"INSERT INTO digest_t (id, v) VALUES ({n}, 'v{n}')")
        for n in range(base + 1, base + 7):
            cur.execute(f"SELECT v FROM digest_t WHERE id = {n}")
        for n in range(2):
            cur.execute(f"SELECT COUNT(*) FROM digest_t WHERE v IN ('v1', 'x{n}', 'y')")


# What PyMySQL itself sends on connect, once per connection.
SET_NAMES_FP = "set names utf?m?"


def counts(proxy: RunningProxy) -> dict[str, int]:
    """Rows of the digest table by fingerprint, but for PyMySQL's SET NAMES."""
    return {row["fingerprint"]: row["count"] for row in digests(proxy)
            if row["fingerprint"] != SET_NAMES_FP}


def test_three_classes_with_their_counts(proxy: RunningProxy) -> None:
    assert proxy.admin_query("LOG ON FOR 30s TO 'ring:t' WITH DIGESTS") == []
    run_three_classes(proxy)
    expected = {SELECT_FP: 6, INSERT_FP: 4, COUNT_FP: 2}
    assert wait_until(lambda: counts(proxy) == expected, timeout=10), counts(proxy)
    rows = digests(proxy, "ORDER BY count DESC LIMIT 10")
    assert [r["fingerprint"] for r in rows] == [SELECT_FP, INSERT_FP, COUNT_FP, SET_NAMES_FP]
    assert [r["count"] for r in rows] == [6, 4, 2, 1]
    rows = rows[:3]
    assert list(rows[0]) == COLUMNS
    by_fp = {r["fingerprint"]: r for r in rows}
    for fp, row in by_fp.items():
        assert row["query_id"] == hashlib.md5(fp.encode()).hexdigest().upper()
        assert row["errors"] == 0
        assert row["schema"] == "mpt"
        assert 0 < row["p50_us"] <= row["p95_us"] <= row["p99_us"] <= row["max_us"]
        assert row["total_us"] >= row["max_us"] > 0
        assert row["mean_us"] == pytest.approx(row["total_us"] / row["count"], abs=0.1)
        assert row["first_seen"] <= row["last_seen"]
    assert by_fp[SELECT_FP]["example"].startswith("SELECT v FROM digest_t WHERE id = ")
    assert by_fp[SELECT_FP]["rows_per_call"] == pytest.approx(4 / 6, abs=0.01)  # 4 of 6 exist
    assert by_fp[INSERT_FP]["rows_per_call"] == 1.0  # one row affected each
    assert by_fp[COUNT_FP]["rows_per_call"] == 1.0
    assert len(digests(proxy, "ORDER BY count DESC LIMIT 2")) == 2


def test_errors_are_counted_per_class(proxy: RunningProxy) -> None:
    proxy.admin_query("LOG ON FOR 30s TO 'ring:t' WITH DIGESTS")
    with proxy.connect(database="mpt", autocommit=True) as conn, conn.cursor() as cur:
        for n in range(3):
            with pytest.raises(pymysql.err.ProgrammingError):
                cur.execute(f"SELECT * FROM no_such_table WHERE id = {n}")
        cur.execute("SELECT * FROM digest_t WHERE id = 1")
    fp = "select * from no_such_table where id = ?"
    assert wait_until(lambda: counts(proxy).get(fp) == 3, timeout=10), counts(proxy)
    rows = {r["fingerprint"]: r for r in digests(proxy, "ORDER BY errors DESC")}
    assert rows[fp]["errors"] == 3
    assert rows["select * from digest_t where id = ?"]["errors"] == 0
    assert next(iter(rows)) == fp


@pytest.mark.parametrize("column", COLUMNS)
def test_order_by_each_column(proxy: RunningProxy, column: str) -> None:
    proxy.admin_query("LOG ON FOR 30s TO 'ring:t' WITH DIGESTS")
    run_three_classes(proxy)
    assert wait_until(lambda: sum(counts(proxy).values()) == 12, timeout=10)

    def key(value: Any) -> Any:
        return float(value) if column in NUMERIC else value

    descending = [r[column] for r in digests(proxy, f"ORDER BY {column} DESC")]
    ascending = [r[column] for r in digests(proxy, f"order by {column.upper()} asc")]
    default = [r[column] for r in digests(proxy, f"ORDER BY {column}")]
    assert len(descending) == 4  # and PyMySQL's SET NAMES
    assert descending == sorted(descending, key=key, reverse=True)
    assert ascending == sorted(ascending, key=key)
    assert default == ascending


def test_a_bad_column_is_a_clear_error(proxy: RunningProxy) -> None:
    with proxy.admin() as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.err.OperationalError) as caught:
            cur.execute("SELECT * FROM digests ORDER BY bogus DESC")
        code, message = caught.value.args
        assert code == 1054
        assert message.startswith("cannot order by 'bogus'; columns: query_id, fingerprint")
        assert "total_us" in message
        with pytest.raises(pymysql.err.MySQLError) as caught:
            cur.execute("SELECT * FROM digests ORDER BY count DESC LIMIT many")
        assert "LIMIT expects a whole number, got 'many'" in caught.value.args[1]
        cur.execute("SELECT * FROM digests")  # the session goes on
        assert cur.fetchall() == ()


def test_reset_empties_the_table(proxy: RunningProxy) -> None:
    proxy.admin_query("LOG ON FOR 30s TO 'ring:t' WITH DIGESTS")
    run_three_classes(proxy)
    assert wait_until(lambda: len(counts(proxy)) == 3, timeout=10)
    with proxy.admin() as conn, conn.cursor() as cur:
        assert cur.execute("RESET digests") == 4
        cur.execute("SELECT * FROM digests")
        assert cur.fetchall() == ()
    # collection goes on while the window is open
    run_three_classes(proxy)
    assert wait_until(lambda: sum(counts(proxy).values()) == 12, timeout=10)


def test_nothing_is_collected_without_a_window_asking_for_digests(proxy: RunningProxy) -> None:
    run_three_classes(proxy)  # no window at all
    proxy.admin_query("LOG ON FOR 30s TO 'ring:nd'")  # a window without digests
    run_three_classes(proxy)
    # 12 statements and PyMySQL's SET NAMES
    assert wait_until(lambda: proxy.window("ring:nd")["events_matched"] == 13, timeout=10)
    assert digests(proxy) == []
    # with digests, then closed: the rows stay, nothing more is added
    proxy.admin_query("LOG ON FOR 30s TO 'ring:d' WITH DIGESTS")
    run_three_classes(proxy)
    assert wait_until(lambda: sum(counts(proxy).values()) == 12, timeout=10)
    proxy.admin_query("LOG OFF TO 'ring:d'")
    run_three_classes(proxy)
    assert wait_until(lambda: proxy.window("ring:nd")["events_matched"] == 39, timeout=10)
    assert sum(counts(proxy).values()) == 12


def test_examples_never_show_passwords(proxy: RunningProxy, mariadb: MariaDB) -> None:
    proxy.admin_query("LOG ON FOR 30s TO 'ring:t' WITH DIGESTS")
    with proxy.connect(autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS 'digest_u'@'localhost' "
                    "IDENTIFIED BY 'pw-secret-41'")
        cur.execute("DROP USER 'digest_u'@'localhost'")
    assert wait_until(lambda: len(counts(proxy)) == 2, timeout=10)
    for row in digests(proxy):
        assert "pw-secret-41" not in str(row)
    [create] = [r for r in digests(proxy) if r["fingerprint"].startswith("create user")]
    assert "<redacted>" in create["example"]
