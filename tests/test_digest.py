"""Query digests: fingerprints and query ids compatible with percona-toolkit's, the
log-bucketed histogram against exact percentiles, and the bounded rolling DigestTable.

The fingerprint corpus is compared with Debian's tools when they are installed:
`pt-fingerprint --query` for each query, the QueryRewriter inside pt-query-digest (the
program whose Query IDs an operator matches), and pt-query-digest's JSON report of a
slow log written by the proxy's own formatter.
"""

from __future__ import annotations

import calendar
import concurrent.futures
import hashlib
import json
import math
import random
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mysqlproxy import digest
from mysqlproxy.digest import (
    GAMMA,
    OTHER_FINGERPRINT,
    RELATIVE_ERROR,
    DigestRow,
    DigestTable,
    Histogram,
    event_fingerprint,
    exact_percentile,
    fingerprint,
    query_id,
)
from mysqlproxy.protocol.constants import Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.querylog.formats import format_slowlog, format_slowlog_header
from mysqlproxy.testing.events import make_query_event

PT_FINGERPRINT = shutil.which("pt-fingerprint")
PT_QUERY_DIGEST = shutil.which("pt-query-digest")
PERL = shutil.which("perl")
NO_PT_FINGERPRINT = "pt-fingerprint is not installed (Debian: apt-get install percona-toolkit)"
NO_PT_QUERY_DIGEST = "pt-query-digest is not installed (Debian: apt-get install percona-toolkit)"

# --- the corpus ----------------------------------------------------------------------

CORPUS: list[str] = [
    # literals of every kind
    "SELECT * FROM users WHERE id = 42",
    "select name, email from users where email = 'bob@example.com'",
    'SELECT * FROM users WHERE name = "Bob"',
    "SELECT * FROM t WHERE s = 'it\\'s' AND u = 'x'",
    'SELECT * FROM t WHERE s = "say \\"hi\\"" AND n = 1',
    "SELECT * FROM t WHERE s = 'it''s'",
    "SELECT * FROM t WHERE a = 0x1F AND b = X'0fa1' AND c = b'0101'",
    "SELECT * FROM t WHERE a = 0b1011 OR a = 0xdeadbeef",
    "SELECT -1, +2, -3.5, 1.5e10, .5, 2.5e-3 FROM dual",
    "SELECT * FROM t WHERE price > 19.99 AND qty < -3 AND x = -0.5",
    "SELECT * FROM t WHERE x IS NULL OR y = NULL OR z IS NOT null",
    "SELECT * FROM flags WHERE active = TRUE AND deleted = false",
    "UPDATE settings SET enabled = True WHERE truename = 'x'",
    "SELECT * FROM t WHERE d BETWEEN '2024-01-01' AND '2024-12-31 23:59:59'",
    "SELECT * FROM t WHERE col LIKE '%abc%' ESCAPE '!'",
    "SELECT * FROM t WHERE h = 'd41d8cd98f00b204e9800998ecf8427e'",
    # IN lists
    "SELECT * FROM t WHERE id IN (1, 2, 3)",
    "SELECT * FROM t WHERE id IN ('a','b') AND k in(7)",
    "SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4))",
    "SELECT * FROM t WHERE id NOT IN (SELECT id FROM u WHERE x = 1)",
    "SELECT * FROM t WHERE id IN ( 1 ,\n 2 )",
    # INSERT / REPLACE / VALUES
    "INSERT INTO t (a, b) VALUES (1, 'x')",
    "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')",
    "INSERT IGNORE INTO t VALUES (1),(2)",
    "REPLACE INTO t (a) VALUES (1), (2)",
    "insert into t(a,b) values(1,2),(3,4)",
    "INSERT INTO t SET a = 1, b = 'two'",
    "INSERT INTO t (a) SELECT a FROM u WHERE b > 5",
    "INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a) + 1",
    "VALUES (1, 2), (3, 4)",
    # UNION
    "SELECT a FROM t WHERE b = 1 UNION SELECT a FROM t WHERE b = 2",
    "SELECT a FROM t WHERE b = 1 UNION ALL SELECT a FROM t WHERE b = 2 "
    "UNION ALL SELECT a FROM t WHERE b = 3",
    "SELECT a FROM t1 UNION SELECT b FROM t2",
    # LIMIT and ORDER BY
    "SELECT * FROM t LIMIT 10",
    "SELECT * FROM t LIMIT 10, 20",
    "SELECT * FROM t LIMIT 10 OFFSET 20",
    "SELECT * FROM t ORDER BY a ASC, b DESC, c ASC LIMIT 5",
    "SELECT * FROM t ORDER BY a asc",
    "SELECT a FROM t GROUP BY a ORDER BY COUNT(*) DESC",
    "SELECT * FROM t WHERE ts > '2024-05-01' ORDER BY ts DESC LIMIT 100, 50",
    # comments
    "SELECT * FROM t -- trailing comment",
    "SELECT * FROM t # hash comment",
    "SELECT /* inline */ * FROM t WHERE /* more */ a = 1",
    "/* leading comment */ SELECT * FROM t",
    "SELECT * FROM t WHERE a = 1 /* a -- b */ AND c = 2",
    "SELECT * FROM t WHERE a = '-- not a comment'",
    "SELECT a\n-- why\nFROM t\n# and how\nWHERE b = 2",
    "SELECT /*!40001 SQL_NO_CACHE */ * FROM `shop`.`orders`",
    "SELECT /*!40001 SQL_NO_CACHE */ * FROM orders",
    "SELECT /*!50000 STRAIGHT_JOIN */ a FROM t",
    "SELECT /*shop.orders:1/4*/ COUNT(*) FROM shop.orders",
    # identifiers
    "SELECT `id`, `name` FROM `users` WHERE `age` > 30",
    "SELECT * FROM t_20240101 WHERE id = 1",
    "SELECT col1, col2 FROM table3",
    "SELECT * FROM t1 JOIN t2 ON t1.id = t2.t1_id WHERE t2.v IN (1,2) ORDER BY t1.id",
    # multi-line and whitespace
    "SELECT a,\n       b\n  FROM t\n WHERE c = 1\n   AND d = 'multi\nline'",
    "SELECT\ta\tFROM\tt",
    "  SELECT * FROM t  \n",
    "SELECT 1\n\n",
    "SELECT * FROM t WHERE a = 1;",
    # CALL and USE
    "CALL my_proc(1, 'two')",
    "call Other.Proc()",
    "USE shop",
    "use `my-db`",
    "USE shop\n",
    # other statements
    "UPDATE t SET a = 1, b = 'x' WHERE id = 3",
    "DELETE FROM t WHERE created < '2024-01-01 00:00:00'",
    "SELECT COUNT(*) FROM t",
    "SELECT 1",
    "SELECT NOW(), UUID()",
    "SELECT SLEEP(0.1)",
    "SELECT * FROM orders WHERE created_at >= NOW() - INTERVAL 7 DAY FOR UPDATE",
    "SHOW TABLES",
    "SHOW VARIABLES LIKE 'max%'",
    "SET NAMES utf8mb4",
    "SET autocommit=0",
    "BEGIN",
    "COMMIT",
    "LOCK TABLES t WRITE",
    "CREATE TABLE t2 (id INT PRIMARY KEY, v VARCHAR(20))",
    "ALTER TABLE t ADD COLUMN c3 INT DEFAULT 0",
    "CREATE USER 'bob'@'%' IDENTIFIED BY 'secret'",
    # administrator commands, as the slow log names them
    "administrator command: Ping",
    "administrator command: Init DB",
    # unicode
    "SELECT * FROM café WHERE nom = 'crème brûlée'",
    "SELECT * FROM t WHERE name = 'Ünïcødé 😀' AND x = 1",
    "SELECT * FROM ÜBER WHERE Ärger = 1",
    "SELECT * FROM t WHERE id IN (1,\xa02)",
    "SELECT émoji_1 FROM nullé WHERE x = 1",
]

# Hand-checked fingerprints, so the rules are tested even without the tools.
EXPECTED: dict[str, str] = {
    "SELECT * FROM users WHERE id = 42": "select * from users where id = ?",
    'SELECT * FROM users WHERE name = "Bob"': "select * from users where name = ?",
    "SELECT * FROM t WHERE s = 'it\\'s' AND u = 'x'": "select * from t where s = ? and u = ?",
    "SELECT * FROM t WHERE a = 0x1F AND b = X'0fa1' AND c = b'0101'":
        "select * from t where a = ?f and b = x? and c = ?",
    "SELECT -1, +2, -3.5, 1.5e10, .5, 2.5e-3 FROM dual": "select ?, ?, ?, ?, ?, ? from dual",
    "SELECT * FROM t WHERE x IS NULL OR y = NULL OR z IS NOT null":
        "select * from t where x is ? or y = ? or z is not ?",
    "SELECT * FROM flags WHERE active = TRUE AND deleted = false":
        "select * from flags where active = ? and deleted = ?",
    "SELECT * FROM t WHERE id IN (1, 2, 3)": "select * from t where id in(?+)",
    "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')":
        "insert into t (a, b) values(?+)",
    "REPLACE INTO t (a) VALUES (1), (2)": "replace into t (a) values(?+)",
    "SELECT a FROM t WHERE b = 1 UNION ALL SELECT a FROM t WHERE b = 2 "
    "UNION ALL SELECT a FROM t WHERE b = 3":
        "select a from t where b = ? /*repeat union all*/",
    "SELECT * FROM t LIMIT 10, 20": "select * from t limit ?",
    "SELECT * FROM t LIMIT 10 OFFSET 20": "select * from t limit ?",
    "SELECT * FROM t ORDER BY a ASC, b DESC, c ASC LIMIT 5":
        "select * from t order by a, b desc, c limit ?",
    "SELECT * FROM t -- trailing comment": "select * from t ",
    "/* leading comment */ SELECT * FROM t": "select * from t",
    "SELECT * FROM t WHERE a = 1 /* a -- b */ AND c = 2": "select * from t where a = ? and c = ?",
    "SELECT /*!40001 SQL_NO_CACHE */ * FROM `shop`.`orders`": "mysqldump",
    "SELECT /*shop.orders:1/4*/ COUNT(*) FROM shop.orders": "percona-toolkit",
    "SELECT * FROM t_20240101 WHERE id = 1": "select * from t_? where id = ?",
    "SELECT col1, col2 FROM table3": "select col?, col? from table?",
    "SELECT\ta\tFROM\tt": "select a from t",
    "SELECT 1\n\n": "select ? ",
    "CALL my_proc(1, 'two')": "call my_proc",
    "call Other.Proc()": "call other.proc",
    "USE shop": "use ?",
    "administrator command: Init DB": "administrator command: Init DB",
    "SELECT * FROM ÜBER WHERE Ärger = 1": "select * from Über where Ärger = ?",
}


def test_the_corpus_is_varied_enough() -> None:
    assert len(CORPUS) >= 60
    assert len(set(CORPUS)) == len(CORPUS)
    assert set(EXPECTED) <= set(CORPUS)


@pytest.mark.parametrize("query", sorted(EXPECTED))
def test_hand_checked_fingerprints(query: str) -> None:
    assert fingerprint(query) == EXPECTED[query]


def test_query_id_is_the_upper_case_md5_of_the_fingerprint() -> None:
    fp = "select * from users where id = ?"
    assert query_id(fp) == hashlib.md5(fp.encode()).hexdigest().upper()
    assert re.fullmatch(r"[0-9A-F]{32}", query_id(fp))
    assert query_id("select * from café") == hashlib.md5(
        "select * from café".encode()
    ).hexdigest().upper()


def test_queries_of_one_class_share_a_fingerprint() -> None:
    a = fingerprint("SELECT * FROM orders WHERE customer_id = 17 AND state IN ('a', 'b')")
    b = fingerprint("select *  from orders\n where customer_id=99 and state in ('c')")
    assert a == "select * from orders where customer_id = ? and state in(?+)"
    assert b == "select * from orders where customer_id=? and state in(?+)"
    assert fingerprint("SELECT 1") == fingerprint("SELECT 12345")


def test_event_fingerprints_for_prepared_statements_and_commands() -> None:
    prepared = make_query_event(
        command=Command.COM_STMT_EXECUTE,
        query="SELECT * FROM orders WHERE id = ? LIMIT ?",
        params=(1, 2),
        statement_id=1,
    )
    assert event_fingerprint(prepared) == "select * from orders where id = ? limit ?"
    # pt-query-digest keeps the slow log's words for commands without SQL text
    ping = make_query_event(command=Command.COM_PING, query="")
    assert event_fingerprint(ping) == "administrator command: Ping"
    init_db = make_query_event(command=Command.COM_INIT_DB, query="shop")
    assert event_fingerprint(init_db) == "administrator command: Init DB"


# --- the tools ------------------------------------------------------------------------


def _pt_fingerprint(query: str) -> str:
    assert PT_FINGERPRINT is not None
    # pt-fingerprint 3.2.1 exits with 1 after printing (main returns print's value)
    result = subprocess.run([PT_FINGERPRINT, f"--query={query}"], capture_output=True,
                            timeout=30)
    assert result.returncode in (0, 1) and not result.stderr, result
    out = result.stdout.decode("utf-8", "surrogateescape")
    assert out.endswith("\n")
    return out[:-1]  # the tool prints the fingerprint and a newline


def _pt_query_digest_rewriter(queries: list[str]) -> list[str]:
    """Fingerprints from the QueryRewriter inside pt-query-digest itself (the program
    loaded as a module, as it allows), in one process: NUL-separated in and out."""
    assert PERL is not None and PT_QUERY_DIGEST is not None
    # $/ stays "\n": the fingerprint's chomp depends on it
    script = (
        "require $ARGV[0]; my $qr = QueryRewriter->new(QueryParser => QueryParser->new(), "
        "match_embedded_numbers => 0); binmode STDIN; binmode STDOUT; "
        "my $all = do { local $/; <STDIN> }; my @queries = split /\\0/, $all, -1; "
        "pop @queries; print $qr->fingerprint($_), qq{\\0} for @queries;"
    )
    data = b"".join(q.encode("utf-8") + b"\0" for q in queries)
    result = subprocess.run(
        [PERL, "-e", script, PT_QUERY_DIGEST], input=data, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    out = result.stdout.decode("utf-8", "surrogateescape").split("\0")
    assert out[-1] == ""
    return out[:-1]


# pt-fingerprint 3.2.1 lacks one rule that pt-query-digest 3.2.1 has: TRUE and FALSE
# become ?. The digests follow pt-query-digest, whose Query IDs operators match.
_BOOLEAN = re.compile(r"\b(?:true|false)\b", re.I | re.A)


@pytest.mark.skipif(PT_FINGERPRINT is None, reason=NO_PT_FINGERPRINT)
def test_fingerprints_match_pt_fingerprint() -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        theirs = list(pool.map(_pt_fingerprint, CORPUS))
    differences = []
    for query, expected in zip(CORPUS, theirs, strict=True):
        if _BOOLEAN.search(query):
            continue  # see test_fingerprints_match_pt_query_digest
        ours = fingerprint(query)
        if ours != expected:
            differences.append(f"{query!r}: ours {ours!r}, pt-fingerprint {expected!r}")
    assert not differences, "\n".join(differences)


@pytest.mark.skipif(PT_QUERY_DIGEST is None or PERL is None, reason=NO_PT_QUERY_DIGEST)
def test_fingerprints_match_pt_query_digest() -> None:
    theirs = _pt_query_digest_rewriter(CORPUS)
    assert len(theirs) == len(CORPUS)
    differences = [
        f"{query!r}: ours {fingerprint(query)!r}, pt-query-digest {expected!r}"
        for query, expected in zip(CORPUS, theirs, strict=True)
        if fingerprint(query) != expected
    ]
    assert not differences, "\n".join(differences)
    # and the two tools agree except on booleans
    boolean = [q for q in CORPUS if _BOOLEAN.search(q)]
    assert boolean, "the corpus must have TRUE/FALSE"


_FUZZ_TOKENS = [
    "SELECT", "select", "*", "a", "b_2", "t1", "FROM", "WHERE", "=", ",", "(", ")", " ", " ",
    "\n", "\t", "\r\n", "IN", "in", "VALUES", "value", "UNION", "UNION ALL", "ORDER BY",
    "order by", "ASC", "asc", "DESC", "LIMIT", "limit", "OFFSET", "NULL", "null", "TRUE",
    "False", "1", "-2", "+3.5", "0x1F", "X'ab'", "b'01'", "1e5", ".5", "'str'", "'it\\'s'",
    '"dq"', "''", "'", '"', "\\", "`name`", "/* c */", "/*! v */", "*/", "/*", "-- x",
    "#h", "--", "é", "Ä", "😀", "\xa0", "INSERT INTO t VALUES (1),(2)", "CALL p(", "USE db",
    "administrator command: ", ";", "?", "?,?", "\f",
]


@pytest.mark.skipif(PT_QUERY_DIGEST is None or PERL is None, reason=NO_PT_QUERY_DIGEST)
def test_random_token_soup_matches_pt_query_digest() -> None:
    rng = random.Random(4242)
    queries = []
    for _ in range(1000):
        words = [rng.choice(_FUZZ_TOKENS) for _ in range(rng.randint(1, 20))]
        queries.append("".join(w if w.isspace() else w + rng.choice(["", " "]) for w in words))
    # and characters one by one, with blanks and letters that are not ASCII
    chars = list("abfxAFX019 _.,;+-*/#'\"`\\()!?=\n\t\r\f\v")
    chars += list("éÄ\xa0\u2003\u017f\u212a\x85İ")
    for _ in range(1000):
        queries.append("".join(
            rng.choice(_FUZZ_TOKENS) if rng.random() < 0.3 else rng.choice(chars)
            for _ in range(rng.randint(1, 30))
        ))
    theirs = _pt_query_digest_rewriter(queries)
    differences = [
        f"{query!r}: ours {fingerprint(query)!r}, pt-query-digest {expected!r}"
        for query, expected in zip(queries, theirs, strict=True)
        if fingerprint(query) != expected
    ]
    assert not differences, "\n".join(differences[:20])


# --- query ids against pt-query-digest's report of the proxy's slow log ----------------

T0 = calendar.timegm((2024, 5, 1, 10, 0, 0))

# Statements the slow log cannot carry as they are, compared with the tools above only:
# one that starts like the log's own `use db;` meta line is indented, and
# pt-query-digest then reads `use shop` rather than `use ?`; a password is written as
# <redacted>, a bare word the fingerprint keeps.
_SLOWLOG_META = re.compile(r"use |SET (?:last_insert_id|insert_id|timestamp)")
_PASSWORD = re.compile(r"IDENTIFIED|PASSWORD", re.I)


def _corpus_events() -> list[QueryEvent]:
    events = []
    carried = [q for q in CORPUS if not _SLOWLOG_META.match(q) and not _PASSWORD.search(q)]
    for n, query in enumerate(carried):
        for repeat in range(1 + n % 3):  # classes of 1, 2 and 3 queries
            events.append(
                make_query_event(started_at=T0 + len(events), query=query,
                                 duration_us=1000 + 10 * n + repeat)
            )
    # prepared statements and commands without SQL text
    for params in [(1, "a"), (2, None)]:
        events.append(
            make_query_event(started_at=T0 + len(events), command=Command.COM_STMT_EXECUTE,
                             query="SELECT * FROM t WHERE id = ? AND name = ?", params=params,
                             statement_id=1)
        )
    events.append(make_query_event(started_at=T0 + len(events), command=Command.COM_PING,
                                   query="", rows_sent=0))
    events.append(make_query_event(started_at=T0 + len(events), command=Command.COM_INIT_DB,
                                   query="crm", rows_sent=0))
    return events


def _unmangle(text: str) -> str:
    """pt-query-digest's JSON encodes its byte strings as UTF-8 once more."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


@pytest.mark.skipif(PT_QUERY_DIGEST is None, reason=NO_PT_QUERY_DIGEST)
def test_query_ids_match_pt_query_digest_report(tmp_path: Path) -> None:
    assert PT_QUERY_DIGEST is not None
    events = _corpus_events()
    path = tmp_path / "slow.log"
    chunks = [format_slowlog_header("0.1", "127.0.0.1:3307")]
    schema: str | None = None
    for event in events:
        chunks.append(format_slowlog(event, schema))
        schema = event.schema
    path.write_bytes("".join(chunks).encode("utf-8"))
    result = subprocess.run(
        [PT_QUERY_DIGEST, "--no-version-check", "--output", "json", "--limit", "100%",
         str(path)],
        capture_output=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    report: dict[str, Any] = json.loads(result.stdout)
    assert int(report["global"]["query_count"]) == len(events)
    theirs = {c["checksum"]: int(c["query_count"]) for c in report["classes"]}
    names = {c["checksum"]: _unmangle(c["fingerprint"]) for c in report["classes"]}
    ours: Counter[str] = Counter()
    our_names: dict[str, str] = {}
    for event in events:
        fp = event_fingerprint(event)
        ours[query_id(fp)] += 1
        our_names[query_id(fp)] = fp
    for checksum, fp in names.items():
        assert checksum == query_id(fp), fp  # their id is the MD5 of their fingerprint
    only_theirs = sorted(f"{names[c]!r} x{n}" for c, n in theirs.items() if ours.get(c) != n)
    only_ours = sorted(f"{our_names[c]!r} x{n}" for c, n in ours.items() if theirs.get(c) != n)
    assert (only_theirs, only_ours) == ([], [])


def test_event_fingerprint_reads_statements_as_the_slow_log_carries_them() -> None:
    # The slow log ends each statement with one ';' and no trailing blanks, and
    # pt-query-digest reads it without them.
    plain = make_query_event(query="UPDATE t SET a = 1 WHERE id IN (8, 9)")
    terminated = make_query_event(query="UPDATE t SET a = 1 WHERE id IN (8, 9);\n")
    assert event_fingerprint(plain) == event_fingerprint(terminated)
    assert event_fingerprint(plain) == "update t set a = ? where id in(?+)"


# --- the histogram ----------------------------------------------------------------------

PERCENTILES = (50, 95, 99)


def _distributions() -> dict[str, list[float]]:
    rng = random.Random(20261129)
    return {
        "uniform": [rng.uniform(100, 50_000) for _ in range(20_000)],
        "lognormal heavy tail": [rng.lognormvariate(8, 2.0) for _ in range(20_000)],
        "bimodal": [
            rng.gauss(300, 30) if rng.random() < 0.9 else rng.gauss(2_000_000, 100_000)
            for _ in range(20_000)
        ],
        "constant": [1234.0] * 1000,
        "1 µs to 1 h": [10 ** rng.uniform(0, math.log10(3.6e9)) for _ in range(20_000)],
        "whole microseconds 1 µs to 1 h": [
            float(round(10 ** rng.uniform(0, math.log10(3.6e9)))) for _ in range(5_000)
        ],
        "extremes only": [1.0] * 50 + [3.6e9] * 50,
        "one sample": [777.0],
        "two samples": [10.0, 1_000_000.0],
    }


@pytest.mark.parametrize("name", list(_distributions()))
def test_histogram_percentiles_are_within_two_percent(name: str) -> None:
    values = _distributions()[name]
    histogram = Histogram()
    for value in values:
        histogram.add(value)
    assert histogram.count == len(values)
    for p in PERCENTILES:
        exact = exact_percentile(values, p)
        estimate = histogram.percentile(p)
        assert abs(estimate - exact) <= 0.02 * exact, (name, p, estimate, exact)
        assert abs(estimate - exact) <= RELATIVE_ERROR * exact * (1 + 1e-9), (name, p)


def test_histogram_error_bound_is_within_the_issue_budget() -> None:
    assert math.isclose(RELATIVE_ERROR, (GAMMA - 1) / (GAMMA + 1))
    assert RELATIVE_ERROR <= 0.02


def test_every_value_is_reported_within_the_bound() -> None:
    # any single value, anywhere from 1 µs to an hour, including bucket edges
    values = [1.0, 2.0, 3.0, GAMMA, GAMMA**2, GAMMA**100, 999.0, 1000.0, 1001.0, 3.6e9]
    values += [10 ** (k / 7) for k in range(0, 67)]
    for value in values:
        histogram = Histogram()
        histogram.add(value)
        assert histogram.percentile(50) == pytest.approx(value, rel=RELATIVE_ERROR * 1.000001)


def test_histogram_memory_is_bounded_by_the_range() -> None:
    histogram = Histogram()
    value = 1.0
    while value <= 3.6e9:
        histogram.add(value)
        value *= 1.001
    assert len(histogram.buckets) <= math.ceil(math.log(3.6e9) / math.log(GAMMA)) + 1
    assert len(histogram.buckets) < 1200


def test_zeros_and_the_empty_histogram() -> None:
    assert Histogram().percentile(50) == 0.0
    assert exact_percentile([], 50) == 0.0
    histogram = Histogram()
    values = [0.0] * 60 + [500.0] * 40
    for value in values:
        histogram.add(value)
    assert histogram.percentile(50) == 0.0 == exact_percentile(values, 50)
    assert histogram.percentile(95) == pytest.approx(500.0, rel=RELATIVE_ERROR)
    assert histogram.percentile(100) == pytest.approx(500.0, rel=RELATIVE_ERROR)
    assert histogram.percentile(0) == 0.0


def test_exact_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert exact_percentile(values, 50) == 50
    assert exact_percentile(values, 95) == 95
    assert exact_percentile(values, 99) == 99
    assert exact_percentile(values, 100) == 100
    assert exact_percentile([5, 1, 3], 50) == 3
    assert exact_percentile([7], 99) == 7


def test_merge_equals_one_histogram_of_all_values() -> None:
    rng = random.Random(7)
    a = [rng.lognormvariate(6, 1.5) for _ in range(3000)] + [0.0] * 5
    b = [rng.uniform(1, 5_000_000) for _ in range(2000)] + [0.0] * 3
    first, second, together = Histogram(), Histogram(), Histogram()
    for value in a:
        first.add(value)
        together.add(value)
    for value in b:
        second.add(value)
        together.add(value)
    first.merge(second)
    assert first == together
    assert first.count == len(a) + len(b) and first.zeros == 8
    for p in (1, 50, 90, 95, 99, 99.9, 100):
        assert first.percentile(p) == together.percentile(p)
    # merging an empty histogram changes nothing
    before = Histogram(dict(together.buckets), together.zeros, together.count)
    together.merge(Histogram())
    assert together == before


# --- the digest table -------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _event(query: str, duration_us: int = 1000, **changes: Any) -> QueryEvent:
    return make_query_event(query=query, duration_us=duration_us, **changes)


def _rows(table: DigestTable, **kwargs: Any) -> dict[str, DigestRow]:
    return {row.fingerprint: row for row in table.rows(**kwargs)}


def test_counts_totals_mean_max_rows_and_errors_per_class() -> None:
    clock = FakeClock()
    table = DigestTable(clock=clock)
    table.add(_event("SELECT * FROM orders WHERE id = 1", 100, rows_sent=1))
    clock.now += 1
    table.add(_event("SELECT * FROM orders WHERE id = 2", 200, rows_sent=2))
    clock.now += 1
    table.add(_event("SELECT * FROM orders WHERE id = 3", 600, rows_sent=0, error_code=1146))
    table.add(_event("UPDATE orders SET a = 'x' WHERE id IN (1, 2)", 5000, rows_sent=0,
                     rows_affected=2, schema="crm"))
    table.add(_event("UPDATE orders SET a = 'y' WHERE id IN (3)", 3000, rows_sent=0,
                     rows_affected=1, error_code=1213))
    table.add(_event("UPDATE orders SET a = 'z' WHERE id IN (4)", 1000, rows_sent=0,
                     rows_affected=0, error_code=1205))
    rows = _rows(table)
    assert set(rows) == {"select * from orders where id = ?",
                         "update orders set a = ? where id in(?+)"}
    select = rows["select * from orders where id = ?"]
    assert select.count == 3
    assert select.total_us == 900
    assert select.mean_us == pytest.approx(300)
    assert select.max_us == 600
    assert select.rows_per_call == pytest.approx(1.0)
    assert select.errors == 1
    assert select.query_id == query_id(select.fingerprint)
    assert select.example == "SELECT * FROM orders WHERE id = 1"
    assert select.schema == "shop"
    assert select.first_seen == 1_000_000.0 and select.last_seen == 1_000_002.0
    assert select.p50_us == pytest.approx(200, rel=RELATIVE_ERROR)
    assert select.p99_us <= select.max_us
    update = rows["update orders set a = ? where id in(?+)"]
    assert (update.count, update.total_us, update.max_us, update.errors) == (3, 9000, 5000, 2)
    assert update.rows_per_call == pytest.approx(1.0)
    assert update.schema == "crm"  # the first example's
    # the busiest class first by default (total time)
    assert table.rows()[0].fingerprint == update.fingerprint


def test_percentiles_of_a_class_are_within_two_percent() -> None:
    rng = random.Random(3)
    durations = [round(rng.lognormvariate(9, 1.2)) + 1 for _ in range(5000)]
    table = DigestTable(clock=FakeClock())
    for n, duration in enumerate(durations):
        table.add(_event(f"SELECT * FROM t WHERE id = {n}", duration))
    [row] = table.rows()
    for p, got in ((50, row.p50_us), (95, row.p95_us), (99, row.p99_us)):
        exact = exact_percentile(durations, p)
        assert abs(got - exact) <= 0.02 * exact, (p, got, exact)
    assert row.max_us == max(durations)


def test_the_rolling_window_drops_old_events() -> None:
    clock = FakeClock(1_000_000.0)
    table = DigestTable(window=60, slices=6, clock=clock)  # 10 s slices
    table.add(_event("SELECT * FROM a WHERE x = 1", 100))
    clock.now += 30
    table.add(_event("SELECT * FROM a WHERE x = 2", 200))
    table.add(_event("SELECT * FROM b", 300))
    clock.now += 15  # the first event is 45 s old: within the window
    assert _rows(table)["select * from a where x = ?"].count == 2
    clock.now += 20  # 65 s old: gone; the others are 35 s old
    rows = _rows(table)
    assert rows["select * from a where x = ?"].count == 1
    assert rows["select * from a where x = ?"].total_us == 200
    assert rows["select * from a where x = ?"].max_us == 200
    assert rows["select * from b"].count == 1
    clock.now += 40  # everything older than the window
    assert table.rows() == []
    assert table.digests == {}
    table.add(_event("SELECT * FROM b", 50))
    assert _rows(table)["select * from b"].count == 1


def test_an_event_counts_for_the_window_give_or_take_a_slice() -> None:
    for offset in (0.0, 3.3, 9.99):
        clock = FakeClock(1_000_000.0 + offset)
        table = DigestTable(window=60, slices=6, clock=clock)
        added = clock.now
        table.add(_event("SELECT 1"))
        clock.now = added + 60 - 10 - 0.01  # younger than window - slice: still there
        assert len(table.rows()) == 1, offset
        clock.now = added + 60 + 0.01  # older than the window: gone
        assert table.rows() == [], offset


def _distinct_query(n: int) -> str:
    """A statement of its own class (digits in names would all become ?)."""
    name = ""
    while True:
        n, rest = divmod(n, 26)
        name += chr(ord("a") + rest)
        if n == 0:
            break
    return f"SELECT * FROM tab_{name} WHERE id = {n}"


def test_memory_is_bounded_with_an_other_row() -> None:
    table = DigestTable(max_digests=100, clock=FakeClock())
    queries = [_distinct_query(n) for n in range(1000)]
    assert len({fingerprint(q) for q in queries}) == 1000
    for query in queries:
        table.add(_event(query, 10))
        assert len(table.digests) <= 101
    # the first hundred classes keep being counted in their own rows
    table.add(_event(queries[0], 10))
    table.add(_event(queries[999], 10))
    rows = table.rows(sort="count")
    assert len(rows) == 101
    other = [r for r in rows if r.fingerprint == OTHER_FINGERPRINT]
    assert len(other) == 1
    assert other[0].count == 901
    assert other[0].total_us == 9010
    assert sum(r.count for r in rows) == 1002
    first = _rows(table)[fingerprint(queries[0])]
    assert first.count == 2
    assert fingerprint(queries[999]) not in _rows(table)


def test_expired_classes_make_room_for_new_ones() -> None:
    clock = FakeClock()
    table = DigestTable(window=60, max_digests=10, clock=clock)
    for n in range(10):
        table.add(_event(_distinct_query(n)))
    clock.now += 120
    for n in range(10, 20):
        table.add(_event(_distinct_query(n)))
    rows = _rows(table)
    assert len(rows) == 10 and OTHER_FINGERPRINT not in rows
    assert fingerprint(_distinct_query(15)) in rows


def test_examples_do_not_keep_passwords() -> None:
    table = DigestTable(clock=FakeClock())
    table.add(_event("CREATE USER 'bob'@'%' IDENTIFIED BY 'hunter2-secret'"))
    table.add(_event("SET PASSWORD FOR 'bob'@'%' = PASSWORD('other-secret')"))
    rows = table.rows()
    assert [r.fingerprint for r in rows if "create user" in r.fingerprint] == [
        "create user ?@? identified by ?"
    ]
    for row in rows:
        assert "secret" not in row.example and "secret" not in row.fingerprint
        assert "<redacted>" in row.example


def test_reset_forgets_everything() -> None:
    table = DigestTable(clock=FakeClock())
    for n in range(5):
        table.add(_event(_distinct_query(n)))
    table.add(_event("SELECT ?", command=Command.COM_STMT_EXECUTE, params=(1,),
                     statement_id=1))
    table.reset()
    assert table.digests == {}
    assert table.rows() == []
    table.add(_event("SELECT 1"))
    assert [r.count for r in table.rows()] == [1]


@pytest.mark.parametrize("column", list(DigestRow.__dataclass_fields__))
def test_rows_sort_by_each_column(column: str) -> None:
    clock = FakeClock()
    table = DigestTable(clock=clock)
    rng = random.Random(column)
    for n in range(12):
        for _ in range(1 + rng.randrange(4)):
            clock.now += rng.random()
            table.add(_event(_distinct_query(n), 1 + rng.randrange(100_000),
                             rows_sent=rng.randrange(10), error_code=rng.choice([0, 0, 1064]),
                             schema=rng.choice(["a", "b", "c"])))
    descending = [getattr(r, column) for r in table.rows(sort=column)]
    ascending = [getattr(r, column) for r in table.rows(sort=column, descending=False)]
    assert descending == sorted(descending, reverse=True)
    assert ascending == sorted(ascending)
    assert len(descending) == 12


def test_sorting_by_an_unknown_column_is_an_error() -> None:
    table = DigestTable(clock=FakeClock())
    table.add(_event("SELECT 1"))
    with pytest.raises(ValueError, match="cannot sort by 'bogus'"):
        table.rows(sort="bogus")


def test_prepared_statements_are_one_class_whatever_their_parameters() -> None:
    table = DigestTable(clock=FakeClock())
    for n in range(5):
        table.add(_event("SELECT * FROM t WHERE id = ?", command=Command.COM_STMT_EXECUTE,
                         params=(n,), statement_id=1))
    table.add(_event("SELECT * FROM t WHERE id = 9"))
    [row] = table.rows()
    assert row.count == 6
    assert row.fingerprint == "select * from t where id = ?"


def test_module_exports() -> None:
    assert digest.OTHER_FINGERPRINT == "(other)"
