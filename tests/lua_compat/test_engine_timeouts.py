"""mysql-proxy's --proxy-read-timeout and --proxy-write-timeout in the engine
(LuaConnection.network_timeout_check): a connection that waited that long to read, or
to have its writes read, is closed, as mysql-proxy 0.8 closes it."""

from __future__ import annotations

import time

import pymysql
import pymysql.cursors
import pytest

from tests.conftest import MariaDB
from tests.lua_compat.conftest import connect, run_lua_proxy
from tests.lua_compat.test_engine_injections import login_raw
from tests.proxy.test_faults import wait_until


def test_read_timeout_closes_a_client_that_sends_nothing(mariadb: MariaDB) -> None:
    with run_lua_proxy(None, [mariadb.address], read_timeout=0.5) as proxy:
        conn = connect(proxy)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        started = time.monotonic()
        assert wait_until(lambda: not proxy.sessions, 3)
        assert 0.45 <= time.monotonic() - started < 2.0
        with pytest.raises(pymysql.err.OperationalError) as info:
            conn.ping(reconnect=False)
        assert info.value.args[0] in (2006, 2013)


def test_read_timeout_spares_a_client_at_work(mariadb: MariaDB) -> None:
    with (
        run_lua_proxy(None, [mariadb.address], read_timeout=0.5) as proxy,
        connect(proxy) as conn,
        conn.cursor() as cur,
    ):
        for _ in range(8):  # a command every 0.2 s: never 0.5 s without one
            time.sleep(0.2)
            cur.execute("SELECT 2")
            assert cur.fetchall() == ((2,),)


def test_read_timeout_counts_from_the_end_of_a_long_result(mariadb: MariaDB) -> None:
    """A result that streams for longer than the read timeout (the client reading it
    slowly) leaves the client the whole timeout for its next command: the wait for it
    starts when the response has been relayed, not when the client last sent."""
    with (
        run_lua_proxy(None, [mariadb.address], read_timeout=0.5) as proxy,
        connect(proxy, cursorclass=pymysql.cursors.SSCursor, database="mysql") as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT seq, REPEAT('x', 200) FROM seq_1_to_200000")
        started, rows = time.monotonic(), 0
        while batch := cur.fetchmany(10000):
            rows += len(batch)
            time.sleep(0.05)
        assert rows == 200000
        assert time.monotonic() - started > 0.8  # longer than the timeout
        # At once: the proxy finished relaying when the last rows went into the socket
        # buffers, which the client has only just read.
        cur.execute("SELECT 4")
        assert list(cur.fetchall()) == [(4,)]


def test_read_timeout_cuts_a_query_longer_than_it(mariadb: MariaDB) -> None:
    """0.8 waits on the server with the same read timeout: a query that sends nothing
    for longer loses its connection (the default, 8 h, is meant to allow any query)."""
    with run_lua_proxy(None, [mariadb.address], read_timeout=0.5) as proxy:
        conn = connect(proxy)
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
            cur.execute("SELECT SLEEP(3)")
        assert info.value.args[0] == 2013
        assert time.monotonic() - started < 2.5
        assert wait_until(lambda: not proxy.sessions, 3)


def test_write_timeout_closes_a_client_that_stops_reading(mariadb: MariaDB) -> None:
    with run_lua_proxy(None, [mariadb.address], write_timeout=0.5) as proxy:
        sock = login_raw(proxy)
        try:
            # Megabytes of result, of which the client reads a little, then nothing.
            query = b"\x03SELECT seq, REPEAT('x', 1000) FROM mysql.seq_1_to_200000"
            sock.sendall(len(query).to_bytes(3, "little") + b"\x00" + query)
            assert sock.recv(100)
            started = time.monotonic()
            assert wait_until(lambda: not proxy.sessions, 5)
            assert 0.45 <= time.monotonic() - started < 4.0
        finally:
            sock.close()


def test_default_timeouts_leave_a_slow_query_alone(mariadb: MariaDB) -> None:
    with (
        run_lua_proxy(None, [mariadb.address]) as proxy,
        connect(proxy) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT SLEEP(1.2)")
        assert cur.fetchall() == ((0,),)
        time.sleep(1.2)  # idle longer than a sweep interval
        cur.execute("SELECT 3")
        assert cur.fetchall() == ((3,),)
