"""QueryEvents of text-protocol commands, checked number by number against what the
client received and what the server says about the same statement."""

from __future__ import annotations

import time

import pymysql
import pytest
from pymysql.constants import CLIENT, COMMAND, SERVER_STATUS

from mysqlproxy.protocol.constants import Command, ServerStatus
from tests.conftest import run_cli
from tests.proxy.event_support import (
    ByteCounter,
    connection_id_of,
    query_event,
    wait_events,
)

TABLE = "mpt.qe_rows"


@pytest.fixture
def table(mariadb):
    """An empty table with an auto-increment key and a unique key (set up directly,
    not through the proxy)."""
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cur.execute(
            f"CREATE TABLE {TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL UNIQUE,"
            " v VARCHAR(5), n INT)"
        )
    yield TABLE


def via_proxy(mariadb, proxy, **kwargs):
    """A PyMySQL connection through the proxy, to database mpt unless told otherwise."""
    kwargs.setdefault("database", "mpt")
    return mariadb.connect(port=proxy.port, **kwargs)


def diagnostics(cur):
    """The server's own account of the last statement's first condition."""
    cur.execute(
        "GET DIAGNOSTICS CONDITION 1 @qe_state = RETURNED_SQLSTATE, "
        "@qe_errno = MYSQL_ERRNO, @qe_text = MESSAGE_TEXT"
    )
    cur.execute("SELECT @qe_errno, @qe_state, @qe_text")
    return cur.fetchone()


# --- rows and bytes ------------------------------------------------------------------


def test_rows_and_bytes_match_what_the_client_received(proxy, mariadb):
    with via_proxy(mariadb, proxy) as conn:
        counter = ByteCounter(conn)
        sizes = [0, 1, 10, 1000, 50_000]
        previous_bytes = 0
        for size in sizes:
            sql = f"SELECT seq, REPEAT('x', 20), seq * 2 FROM seq_1_to_50000 WHERE seq <= {size}"
            counter.reset()
            with conn.cursor() as cur:
                cur.execute(sql)
                received = cur.fetchall()
            assert len(received) == size
            event = query_event(proxy, sql)
            assert event.rows_sent == size
            assert event.result_sets == 1
            assert event.error_code == 0
            # Exactly the bytes PyMySQL read from its socket and wrote to it.
            assert event.bytes_sent == counter.received
            assert event.bytes_received == counter.sent == 4 + 1 + len(sql.encode())
            assert event.bytes_sent > previous_bytes
            previous_bytes = event.bytes_sent
        # 50,000 rows of ~35 bytes: well over any socket buffer, so many chunks.
        assert previous_bytes > 1_500_000


def test_rows_streamed_to_an_unbuffered_cursor(proxy, mariadb):
    sql = "SELECT seq FROM seq_1_to_50000"
    with via_proxy(mariadb, proxy, cursorclass=pymysql.cursors.SSCursor) as conn:
        counter = ByteCounter(conn)
        with conn.cursor() as cur:
            cur.execute(sql)
            count = sum(1 for _ in cur)
    assert count == 50_000
    event = query_event(proxy, sql)
    assert event.rows_sent == count
    # The client has read all of the response (and written the query and, when it
    # closed, COM_QUIT: 5 bytes).
    assert event.bytes_sent == counter.received
    assert event.bytes_received == counter.sent - 5


def test_packets_over_16_mib_in_both_directions(proxy, mariadb):
    big = 17 * 1024 * 1024
    with via_proxy(mariadb, proxy, max_allowed_packet=64 * 1024 * 1024) as conn:
        counter = ByteCounter(conn)
        with conn.cursor() as cur:
            sql = f"SELECT REPEAT('a', {big}) AS big"
            cur.execute(sql)
            ((value,),) = cur.fetchall()
            assert len(value) == big
            event = query_event(proxy, sql)
            assert event.rows_sent == 1
            assert event.bytes_sent == counter.received
            assert event.bytes_received == counter.sent

            counter.reset()
            literal = "b" * big
            sql = f"SELECT LENGTH('{literal}') AS n"
            cur.execute(sql)
            assert cur.fetchall() == ((big,),)
            (event,) = wait_events(proxy, lambda e: e.query.startswith("SELECT LENGTH('bbbb"))
            assert event.rows_sent == 1
            # Two packets: 16 MiB - 1 bytes of payload and the rest.
            assert event.bytes_received == counter.sent == len(sql) + 1 + 2 * 4
            assert event.bytes_sent == counter.received
    assert event.truncated
    assert len(event.query) < len(sql)


# --- OK packets ----------------------------------------------------------------------


def _check_ok_fields(proxy, cur, sql):
    """Run sql; the event's counts must be the OK packet's, as the client decoded it,
    and the server's @@warning_count."""
    cur.execute(sql)
    rowcount, lastrowid = cur.rowcount, cur.lastrowid
    client_warnings = cur.connection._result.warning_count
    cur.execute("SELECT @@warning_count, LAST_INSERT_ID()")
    server_warnings, _ = cur.fetchone()
    event = query_event(proxy, sql)
    assert event.rows_affected == rowcount, sql
    assert event.insert_id == lastrowid, sql
    assert event.warnings == client_warnings == server_warnings, sql
    assert event.rows_sent == 0 and event.result_sets == 0 and not event.failed, sql
    return event


def test_ok_packet_fields(proxy, mariadb, table):
    with via_proxy(mariadb, proxy) as conn, conn.cursor() as cur:
        statements = [
            f"INSERT INTO {table} (k, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
            f"INSERT INTO {table} (k, v) VALUES (4, 'd')",
            f"INSERT INTO {table} (id, k, v) VALUES (1000, 5, 'e')",
            f"UPDATE {table} SET v = 'z' WHERE k <= 2",
            f"UPDATE {table} SET v = 'z' WHERE k <= 2 /* nothing changes */",
            f"INSERT INTO {table} (k, v) VALUES (1, 'q') ON DUPLICATE KEY UPDATE v = VALUES(v)",
            f"INSERT INTO {table} (k, v) VALUES (9, 'n') ON DUPLICATE KEY UPDATE v = VALUES(v)",
            f"REPLACE INTO {table} (id, k, v) VALUES (1000, 5, 'r')",
            f"DELETE FROM {table} WHERE k >= 3",
            f"DELETE FROM {table} WHERE k > 100",
        ]
        events = [_check_ok_fields(proxy, cur, sql) for sql in statements]
        # The checks above compare with the client; these make sure they were not
        # trivially equal zeros.
        assert [e.rows_affected for e in events] == [3, 1, 1, 2, 0, 2, 1, 2, 4, 0]
        assert events[0].insert_id == 1 and events[2].insert_id == 1000

        cur.execute("SET SESSION sql_mode = ''")
        warned = [
            f"INSERT INTO {table} (k, v) VALUES (20, 'toolong'), (21, 'waytoolong')",
            f"UPDATE {table} SET v = 'again too long', n = 'x' WHERE k = 20",
            f"INSERT INTO {table} (k, v, n) VALUES (22, 'ok', 'NaN')",
        ]
        events = [_check_ok_fields(proxy, cur, sql) for sql in warned]
        assert [e.warnings for e in events] == [2, 2, 1]


def test_found_rows_flag_changes_what_the_ok_packet_counts(proxy, mariadb, table):
    with via_proxy(mariadb, proxy, client_flag=CLIENT.FOUND_ROWS) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} (k, v) VALUES (1, 'a'), (2, 'a')")
        event = _check_ok_fields(proxy, cur, f"UPDATE {table} SET v = 'a'")
    assert event.rows_affected == 2  # matched, not changed


def test_warnings_of_a_result_set(proxy, mariadb):
    sql = "SELECT 1/0, 2/0, CAST('x1' AS INT)"
    with via_proxy(mariadb, proxy) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
        client_warnings = conn._result.warning_count
        cur.execute("SHOW WARNINGS")
        shown = cur.fetchall()
    event = query_event(proxy, sql)
    assert event.rows_sent == len(rows) == 1
    assert event.warnings == client_warnings == len(shown) == 3


# --- errors --------------------------------------------------------------------------


def test_errors_match_the_servers_diagnostics(proxy, mariadb, table):
    failing = [
        "SELEC 1",
        "SELECT * FROM mpt.qe_no_such_table",
        f"INSERT INTO {table} (k) VALUES (1), (1)",
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'caf\u00e9 \u2713 failed', MYSQL_ERRNO = 1644",
        "SELECT no_such_column FROM mpt.qe_rows",
    ]
    with via_proxy(mariadb, proxy) as conn, conn.cursor() as cur:
        for sql in failing:
            with pytest.raises(pymysql.MySQLError) as raised:
                cur.execute(sql)
            code, message = raised.value.args
            server_code, server_state, server_text = diagnostics(cur)
            event = query_event(proxy, sql)
            assert event.failed
            assert event.error_code == code == server_code, sql
            assert event.error_message == message == server_text, sql
            assert event.sql_state == raised.value.sqlstate == server_state, sql
            assert event.rows_sent == 0 and event.rows_affected == 0
            # The session goes on.
            after = f"SELECT 'after {sql[:10]}'"
            cur.execute(after)
            assert cur.fetchall() == ((f"after {sql[:10]}",),)
            assert not query_event(proxy, after).failed
    codes = [query_event(proxy, sql).error_code for sql in failing]
    assert codes == [1064, 1146, 1062, 1644, 1054]


def test_error_after_a_first_result(proxy, mariadb):
    sql = "SELECT seq FROM seq_1_to_3; SELECT * FROM mpt.qe_no_such_table; SELECT 2"
    conn = via_proxy(mariadb, proxy, client_flag=CLIENT.MULTI_STATEMENTS)
    with conn, conn.cursor() as cur:
        cur.execute(sql)
        first = cur.fetchall()
        with pytest.raises(pymysql.MySQLError) as raised:
            cur.nextset()
        code, message = raised.value.args
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)
    event = query_event(proxy, sql)
    assert (event.error_code, event.error_message) == (code, message)
    assert event.sql_state == raised.value.sqlstate == "42S02"
    assert event.rows_sent == len(first) == 3
    assert event.result_sets == 1


def test_error_in_the_middle_of_rows(proxy, mariadb):
    """max_statement_time interrupts a streaming result: rows, then an ERR."""
    sql = (
        "SET STATEMENT max_statement_time = 0.1 FOR "
        "SELECT seq FROM seq_1_to_1000000000 WHERE SLEEP(0.00005) = 0"
    )
    conn = via_proxy(mariadb, proxy, cursorclass=pymysql.cursors.SSCursor)
    with conn, conn.cursor() as cur:
        cur.execute(sql)
        count = 0
        with pytest.raises(pymysql.MySQLError) as raised:
            for _ in cur:
                count += 1
        code, message = raised.value.args
        cur.execute("SELECT 1")
        assert list(cur.fetchall()) == [(1,)]
    event = query_event(proxy, sql)
    assert event.error_code == code == 1969
    assert event.error_message == message
    assert event.rows_sent == count > 0


# --- timing --------------------------------------------------------------------------


def test_duration_covers_the_servers_work(proxy, mariadb):
    sql = "SELECT SLEEP(0.2)"
    with via_proxy(mariadb, proxy) as conn, conn.cursor() as cur:
        wall_before = time.time()
        begun = time.perf_counter()
        cur.execute(sql)
        assert cur.fetchall() == ((0,),)
        elapsed_us = (time.perf_counter() - begun) * 1e6
        wall_after = time.time()
    event = query_event(proxy, sql)
    assert wall_before <= event.started_at <= wall_after - 0.2
    assert 200_000 <= event.duration_us <= elapsed_us
    assert 0 <= event.first_byte_us <= event.duration_us
    # SLEEP answers only at the end: the first byte comes after the wait too.
    assert event.first_byte_us >= 200_000


def test_first_byte_comes_before_the_last(proxy, mariadb):
    """A procedure's first result is sent before the rest is computed."""
    with mariadb.connect(database="mpt") as direct, direct.cursor() as cur:
        cur.execute("DROP PROCEDURE IF EXISTS qe_slow_tail")
        cur.execute("CREATE PROCEDURE qe_slow_tail() BEGIN SELECT 1; DO SLEEP(0.3); SELECT 2; END")
    sql = "CALL mpt.qe_slow_tail()"
    with via_proxy(mariadb, proxy) as conn, conn.cursor() as cur:
        begun = time.perf_counter()
        cur.execute(sql)
        first_us = (time.perf_counter() - begun) * 1e6
        cur.nextset()
        cur.nextset()
        elapsed_us = (time.perf_counter() - begun) * 1e6
    event = query_event(proxy, sql)
    assert event.first_byte_us <= first_us < 300_000
    assert 300_000 <= event.duration_us <= elapsed_us
    assert event.rows_sent == 2 and event.result_sets == 2


# --- multi-results -------------------------------------------------------------------


def _read_all_results(cur):
    """Rows of each result set and affected rows of each OK, as the client saw them."""
    result_sets, affected = [], 0
    while True:
        if cur.description is not None:
            result_sets.append(len(cur.fetchall()))
        else:
            affected += cur.rowcount
        if not cur.nextset():
            return result_sets, affected


def test_multi_statement_is_one_event(proxy, mariadb, table):
    sql = (
        "SELECT seq FROM seq_1_to_7; "
        f"INSERT INTO {table} (k) VALUES (1), (2); "
        "SELECT seq, 'x' FROM seq_1_to_1000; "
        "SELECT 1 FROM DUAL WHERE 0; "
        f"UPDATE {table} SET n = 5"
    )
    conn = via_proxy(mariadb, proxy, client_flag=CLIENT.MULTI_STATEMENTS)
    with conn, conn.cursor() as cur:
        cur.execute(sql)
        result_sets, affected = _read_all_results(cur)
    assert result_sets == [7, 1000, 0]
    (event,) = wait_events(proxy, lambda e: e.command == Command.COM_QUERY and e.query == sql)
    assert event.result_sets == len(result_sets)
    assert event.rows_sent == sum(result_sets)
    assert event.rows_affected == affected == 4
    assert not event.status & ServerStatus.SERVER_MORE_RESULTS_EXISTS


@pytest.fixture
def three_results_procedure(mariadb):
    with mariadb.connect(database="mpt") as direct, direct.cursor() as cur:
        cur.execute("DROP PROCEDURE IF EXISTS qe_three")
        cur.execute(
            "CREATE PROCEDURE qe_three() BEGIN "
            "SELECT 1; SELECT seq FROM seq_1_to_10; SELECT 'a', 'b' FROM seq_1_to_3; END"
        )
    return "CALL mpt.qe_three()"


def test_stored_procedure_results_are_one_event(proxy, mariadb, three_results_procedure):
    sql = three_results_procedure
    with via_proxy(mariadb, proxy) as conn, conn.cursor() as cur:
        cur.execute(sql)
        result_sets, _ = _read_all_results(cur)
    assert result_sets == [1, 10, 3]
    event = query_event(proxy, sql)
    assert event.result_sets == len(result_sets)
    assert event.rows_sent == sum(result_sets)


def test_multi_results_through_the_mariadb_client(proxy, mariadb_cli, three_results_procedure):
    """The mariadb client (libmariadb) with its own capability set."""
    sql = "SELECT seq FROM seq_1_to_4; SELECT seq FROM seq_1_to_20000; CALL mpt.qe_three();"
    result = run_cli(mariadb_cli, proxy.port, sql, "-N", check=True)
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 4 + 20000 + 14
    multi = query_event(proxy, "SELECT seq FROM seq_1_to_4")
    big = query_event(proxy, "SELECT seq FROM seq_1_to_20000")
    call = query_event(proxy, "CALL mpt.qe_three()")
    assert (multi.rows_sent, big.rows_sent, call.rows_sent) == (4, 20000, 14)
    assert call.result_sets == 3


# --- who and where -------------------------------------------------------------------


def test_connection_identity(proxy, mariadb):
    seen = []
    for _ in range(3):
        with via_proxy(mariadb, proxy) as conn, conn.cursor() as cur:
            sql = f"SELECT CONNECTION_ID(), USER(), @@port /* {len(seen)} */"
            cur.execute(sql)
            thread_id, user, server_port = cur.fetchone()
            local_host, local_port = conn._sock.getsockname()[:2]
            cur.execute("SELECT 2")
            event = query_event(proxy, sql)
            assert event.thread_id == thread_id
            assert event.user == user.split("@")[0] == mariadb.user
            assert event.client_address == f"{local_host}:{local_port}"
            assert event.backend_address == f"{mariadb.host}:{server_port}"
            # Every event of the connection carries the same identity.
            other = query_event(proxy, "SELECT 2", event.connection_id)
            assert (other.thread_id, other.client_address) == (thread_id, event.client_address)
            seen.append((event.connection_id, thread_id))
    assert len({c for c, _ in seen}) == 3
    assert len({t for _, t in seen}) == 3


def test_connections_at_once_keep_their_own_identity(proxy, mariadb):
    conns = [via_proxy(mariadb, proxy) for _ in range(3)]
    try:
        ids = [connection_id_of(proxy, conn) for conn in conns]
        assert len(set(ids)) == 3
        for index, conn in enumerate(reversed(conns)):
            with conn.cursor() as cur:
                sql = f"SELECT CONNECTION_ID(), {index}"
                cur.execute(sql)
                thread_id, _ = cur.fetchone()
            event = query_event(proxy, sql)
            assert event.thread_id == thread_id
            assert event.connection_id == ids[len(conns) - 1 - index]
    finally:
        for conn in conns:
            conn.close()


# --- commands other than COM_QUERY ---------------------------------------------------


def test_ping_statistics_and_quit(proxy, mariadb):
    conn = via_proxy(mariadb, proxy)
    connection = connection_id_of(proxy, conn)
    counter = ByteCounter(conn)

    def only(command):
        return wait_events(
            proxy, lambda e: e.command == command and e.connection_id == connection
        )[0]

    conn.ping(reconnect=False)
    ping = only(Command.COM_PING)
    assert ping.bytes_received == counter.sent == 5
    assert ping.bytes_sent == counter.received == 11  # an OK packet of 7 bytes
    assert not ping.failed and ping.rows_sent == 0

    counter.reset()
    conn._execute_command(COMMAND.COM_STATISTICS, b"")
    text = conn._read_packet().read_all().decode()
    assert text.startswith("Uptime: ")
    statistics = only(Command.COM_STATISTICS)
    assert statistics.bytes_received == counter.sent == 5
    assert statistics.bytes_sent == counter.received == 4 + len(text)
    assert not statistics.failed

    counter.reset()
    conn.close()
    quit_event = only(Command.COM_QUIT)
    assert quit_event.bytes_received == counter.sent == 5
    assert quit_event.bytes_sent == 0
    assert quit_event.command_name == "COM_QUIT"
    # One event per command, no more: PyMySQL's two set-up queries, the marker query,
    # ping, statistics, quit.
    names = [e.command_name for e in proxy.events if e.connection_id == connection]
    assert names == ["COM_QUERY"] * 3 + ["COM_PING", "COM_STATISTICS", "COM_QUIT"]


def test_set_option_kill_and_local_infile(proxy, mariadb, table, tmp_path):
    victim = via_proxy(mariadb, proxy)
    victim_thread = victim.thread_id()
    conn = via_proxy(mariadb, proxy, local_infile=True)
    connection = connection_id_of(proxy, conn)
    counter = ByteCounter(conn)

    def only(command):
        return wait_events(
            proxy, lambda e: e.command == command and e.connection_id == connection
        )[0]

    # COM_SET_OPTION(MYSQL_OPTION_MULTI_STATEMENTS_ON), answered with an EOF packet.
    conn._execute_command(COMMAND.COM_SET_OPTION, b"\x00\x00")
    answer = conn._read_packet()
    assert answer.is_eof_packet() or answer.is_ok_packet()
    option = only(Command.COM_SET_OPTION)
    assert not option.failed
    assert option.bytes_received == counter.sent == 4 + 3
    assert option.bytes_sent == counter.received
    with conn.cursor() as cur:
        cur.execute("SELECT 1; SELECT 2")  # multi-statements now work
        cur.nextset()

        # COM_PROCESS_KILL: the argument is the thread to kill.
        conn._execute_command(COMMAND.COM_PROCESS_KILL, victim_thread.to_bytes(4, "little"))
        assert conn._read_packet().is_ok_packet()
        kill = only(Command.COM_PROCESS_KILL)
        assert kill.query == str(victim_thread) and not kill.failed

        # LOAD DATA LOCAL INFILE: the file's bytes count as received from the client.
        data = tmp_path / "rows.tsv"
        data.write_text("".join(f"{k}\tv{k}\n" for k in range(1, 1001)) + "1001\ttoo long\n")
        sql = f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE {table} (k, v)"
        counter.reset()
        cur.execute(sql)
        rowcount = cur.rowcount
        client_warnings = conn._result.warning_count
        sent = counter.sent
        cur.execute("SELECT COUNT(*) FROM " + table)
        assert cur.fetchone() == (rowcount,) == (1001,)
    event = query_event(proxy, sql)
    assert event.rows_affected == rowcount
    assert event.warnings == client_warnings == 1
    assert event.bytes_received == sent > data.stat().st_size
    assert not event.failed
    conn.close()
    victim.close()


# --- server status flags -------------------------------------------------------------


def test_index_flags_follow_the_query_plan(proxy, mariadb, table):
    with via_proxy(mariadb, proxy) as conn, conn.cursor() as cur:
        counter = ByteCounter(conn)
        cur.execute(f"INSERT INTO {table} (k, n) SELECT seq, seq FROM seq_1_to_50")
        cases = {
            f"SELECT * FROM {table} WHERE n = 7": True,  # no index on n: full scan
            f"SELECT * FROM {table} WHERE k = 7": False,  # the unique key
            f"SELECT * FROM {table} WHERE id = 7": False,  # the primary key
        }
        for sql, full_scan in cases.items():
            cur.execute(f"EXPLAIN {sql}")
            names = [d[0] for d in cur.description]
            plan = dict(zip(names, cur.fetchone(), strict=True))
            assert (plan["type"] == "ALL") is full_scan
            cur.execute(sql)
            assert len(cur.fetchall()) == 1
            event = query_event(proxy, sql)
            assert event.no_index_used is full_scan
            assert event.status == counter.last_status  # of the EOF the client read


def test_in_transaction_flag(proxy, mariadb, table):
    with via_proxy(mariadb, proxy) as conn, conn.cursor() as cur:
        counter = ByteCounter(conn)
        steps = [
            "SELECT 'before'",
            "BEGIN",
            f"INSERT INTO {table} (k) VALUES (1)",
            "SELECT 'inside'",
            "COMMIT",
            "SELECT 'after'",
        ]
        for sql in steps:
            cur.execute(sql)
            cur.fetchall()
            status = counter.last_status
            client_flag = bool(status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)
            cur.execute("SELECT @@in_transaction")
            (server_flag,) = cur.fetchone()
            event = query_event(proxy, sql)
            assert event.in_transaction is client_flag is bool(server_flag), sql
            assert event.status == status, sql
    flags = [query_event(proxy, sql).in_transaction for sql in steps]
    assert flags == [False, True, True, True, False, False]


# --- CLIENT_DEPRECATE_EOF ------------------------------------------------------------


async def test_results_without_eof_packets(proxy, mariadb, three_results_procedure, table):
    """asyncmy negotiates CLIENT_DEPRECATE_EOF: results end with an OK packet (0xFE),
    which carries the warnings and status flags the client reads."""
    import asyncmy

    conn = await asyncmy.connect(
        host="127.0.0.1", port=proxy.port, user=mariadb.user, password=mariadb.password,
        database="mpt", client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True,
    )
    seen = {}
    try:
        async with conn.cursor() as cur:
            for size in (0, 5, 50_000):
                sql = f"SELECT seq FROM seq_1_to_50000 WHERE seq <= {size}"
                await cur.execute(sql)
                seen[sql] = (len(await cur.fetchall()), conn.server_status)
            sql = "SELECT 1/0, seq FROM seq_1_to_3"
            await cur.execute(sql)
            rows = len(await cur.fetchall())
            seen[sql] = (rows, conn.server_status)
            await cur.execute("SHOW WARNINGS")
            warnings = len(await cur.fetchall())
            await cur.execute(f"INSERT INTO {table} (k, n) SELECT seq, seq FROM seq_1_to_20")
            sql = f"SELECT * FROM {table} WHERE n = 3"
            await cur.execute(sql)
            seen[sql] = (len(await cur.fetchall()), conn.server_status)

            sql = f"SELECT seq FROM seq_1_to_3; {three_results_procedure}; SELECT 'x'"
            await cur.execute(sql)
            result_sets = []
            while True:
                result_sets.append(len(await cur.fetchall()))
                if not await cur.nextset():
                    break
    finally:
        conn.close()

    for text, (rows, status) in seen.items():
        event = query_event(proxy, text)
        assert event.rows_sent == rows, text
        assert event.status == status, text
    assert query_event(proxy, "SELECT 1/0, seq FROM seq_1_to_3").warnings == warnings == 3
    assert query_event(proxy, f"SELECT * FROM {table} WHERE n = 3").no_index_used
    # The CALL's own closing OK is not a result set; asyncmy shows it as an empty one.
    assert result_sets == [3, 1, 10, 3, 0, 1]
    event = query_event(proxy, sql)
    assert event.result_sets == 5
    assert event.rows_sent == sum(result_sets) == 18
