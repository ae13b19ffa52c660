"""Seeded data for the viewer's tests: a few slow queries, digests and windows, the
same every run (times are fixed; tests run with TZ=UTC)."""

from __future__ import annotations

from mysqlproxy.viewer.data import Digest, Poll, ProxyState, SlowQuery, WindowState

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
WINDOW = "ring:viewer-test"

QUERIES = [
    # (user, client, schema, query, duration_us, rows, error)
    ("app", "10.0.0.5:51234", "shop",
     "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id "
     "WHERE o.created_at > '2024-01-01' AND o.status IN ('paid', 'shipped') "
     "ORDER BY o.created_at DESC LIMIT 50", 82_000, 50, 0),
    ("app", "10.0.0.6:40001", "shop", "SELECT SLEEP(0.2)", 200_412, 1, 0),
    ("report", "10.0.0.9:33333", "analytics",
     "SELECT customer_id, SUM(total) FROM orders GROUP BY customer_id HAVING SUM(total) > 1000",
     1_530_000, 1234, 0),
    ("app", "10.0.0.5:51240", "shop",
     "UPDATE inventory SET stock = stock - 1 WHERE sku = 'A-1'", 64_000, 1, 0),
    ("batch", "10.0.0.7:45000", "shop", "SELECT * FROM huge_table WHERE note LIKE '%x%'",
     12_400_000, 0, 1317),
    ("app", "10.0.0.6:40010", "shop", "SELECT SLEEP(0.5)", 500_977, 1, 0),
]


def slow_queries(start_id: int = 1) -> list[SlowQuery]:
    events = []
    for n, (user, client, schema, query, duration, rows, error) in enumerate(QUERIES):
        events.append(SlowQuery(
            id=start_id + n, started_at=T0 + n * 1.25, connection_id=10 + n,
            thread_id=100 + n, client=client, user=user, schema=schema,
            command="COM_QUERY", query=query, duration_us=duration,
            first_byte_us=duration - 100, rows_sent=rows if not query.startswith("UPDATE") else 0,
            rows_affected=rows if query.startswith("UPDATE") else 0, error_code=error,
            error_message="Query execution was interrupted" if error else "",
            sql_state="70100" if error else "", bytes_received=len(query) + 4,
            bytes_sent=120 + rows * 30, backend="127.0.0.1:3306",
        ))
    return events


DIGESTS = [
    Digest("3A4F6C9D1B2E7F80", "select sleep(?)", 40, 14_000_000, 350_000.0, 300_000.0,
           500_000.0, 500_000.0, 500_977, 1.0, 0, "shop", T0, T0 + 7, "SELECT SLEEP(0.5)"),
    Digest("0B1C2D3E4F506172", "select o.id, o.total, c.name from orders o join customers c "
           "on c.id = o.customer_id where o.created_at > ? and o.status in(?+) order by "
           "o.created_at desc limit ?", 1200, 98_400_000, 82_000.0, 79_000.0, 120_000.0,
           150_000.0, 180_000, 50.0, 0, "shop", T0, T0 + 7, QUERIES[0][3]),
    Digest("99AA88BB77CC66DD", "select customer_id, sum(total) from orders group by "
           "customer_id having sum(total) > ?", 3, 4_590_000, 1_530_000.0, 1_500_000.0,
           1_600_000.0, 1_600_000.0, 1_600_000, 1234.0, 0, "analytics", T0, T0 + 7,
           QUERIES[2][3]),
    Digest("1122334455667788", "update inventory set stock = stock - ? where sku = ?", 5000,
           320_000_000, 64_000.0, 60_000.0, 90_000.0, 110_000.0, 130_000, 1.0, 2, "shop",
           T0, T0 + 7, QUERIES[3][3]),
]

PROXY = ProxyState(
    version="0.1.0", listening="127.0.0.1:4040", backend="127.0.0.1:3306", connections=12,
    queries_total=123_456, qps=1234.4,
    windows=(
        WindowState(WINDOW, "ring", "open", 29.0),
        WindowState("/var/log/mysqlproxy-slow.log", "slowlog", "open", 252.0,
                    "SLOWER THAN 100000us", 17, 0),
    ),
)


def seeded_poll() -> Poll:
    return Poll(events=slow_queries(), dropped=0, digests=list(DIGESTS), proxy=PROXY)
