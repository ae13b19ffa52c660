from __future__ import annotations

from mysqlproxy.protocol.constants import Command


def test_select_through_proxy(proxy, mariadb):
    with mariadb.connect(port=proxy.port) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1, 'two'")
        assert cur.fetchall() == ((1, "two"),)
    assert proxy.recorder.wait_for(lambda: any(e.query == "SELECT 1, 'two'" for e in proxy.events))
    event = next(e for e in proxy.events if e.query == "SELECT 1, 'two'")
    assert event.command == Command.COM_QUERY
    assert event.rows_sent == 1
    assert 0 <= event.first_byte_us <= event.duration_us
