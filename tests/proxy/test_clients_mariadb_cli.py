"""The mariadb command-line client behaves the same through the proxy as directly.

Each test runs one script twice, against the server and through the proxy, and
compares everything the client printed (stdout, stderr, exit status); it also checks
the output is the one expected, so a comparison of two equally broken runs fails too.
The client (libmariadb) never asks for CLIENT_DEPRECATE_EOF: it covers the
EOF-terminated path (asyncmy covers the other, see test_clients_asyncmy.py).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import zlib
from pathlib import Path

from mysqlproxy.hooks import ConnectionInfo
from mysqlproxy.protocol.constants import Capability, Command
from mysqlproxy.protocol.events import QueryEvent
from mysqlproxy.testing.proxythread import ProxyThread
from tests.conftest import MariaDB, run_cli

MIB = 1 << 20


class NegotiatedCapabilities:
    """An addon noting the capabilities each connection negotiated (read from the
    session's tracker on the proxy's loop, when the login succeeds)."""

    def __init__(self, proxy: ProxyThread) -> None:
        self.proxy = proxy
        self.by_connection: dict[int, Capability] = {}

    def connection_opened(self, connection: ConnectionInfo) -> None:
        for session in self.proxy.server.sessions:
            if session.connection_id == connection.connection_id and session.tracker:
                self.by_connection[connection.connection_id] = session.tracker.capabilities


def both(
    cli: str, mariadb: MariaDB, proxy: ProxyThread, sql: str, *extra: str
) -> subprocess.CompletedProcess[bytes]:
    """Run `sql` directly and through the proxy; the two runs must print the same."""
    direct = run_cli(cli, mariadb.port, sql, *extra)
    proxied = run_cli(cli, proxy.port, sql, *extra)
    assert proxied.stderr == direct.stderr
    assert proxied.stdout == direct.stdout
    assert proxied.returncode == direct.returncode
    assert_closed_cleanly(proxy)
    return proxied


def assert_closed_cleanly(proxy: ProxyThread) -> None:
    """Every connection the proxy saw ended normally (a tracker that lost step closes
    its connection with a reason)."""
    opened = len(proxy.recorder.opened)
    assert proxy.recorder.wait_for(lambda: len(proxy.recorder.closed) >= opened)
    assert [reason for _, reason in proxy.recorder.closed] == [None] * opened


def events(proxy: ProxyThread, command: int = Command.COM_QUERY) -> list[QueryEvent]:
    return [e for e in list(proxy.events) if e.command == command]


def event_for(proxy: ProxyThread, query: str) -> QueryEvent:
    matching = [e for e in events(proxy) if e.query == query]
    assert len(matching) == 1, (query, [e.query for e in events(proxy)])
    return matching[0]


def test_cli_negotiates_eof_packets(mariadb_cli: str, proxy: ProxyThread) -> None:
    capabilities = NegotiatedCapabilities(proxy)
    proxy.call(proxy.server.addons.add, capabilities)
    run_cli(mariadb_cli, proxy.port, "SELECT 1;\n", check=True)
    assert proxy.recorder.wait_for(lambda: capabilities.by_connection)
    (negotiated,) = capabilities.by_connection.values()
    assert not negotiated & Capability.CLIENT_DEPRECATE_EOF
    assert negotiated & Capability.CLIENT_MULTI_STATEMENTS
    assert negotiated & Capability.CLIENT_LOCAL_FILES


def test_multi_statements(mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread) -> None:
    # With another delimiter the client sends the three statements as one COM_QUERY.
    multi = (
        "SELECT 1 AS a; SELECT 'two' AS b, NULL AS c UNION ALL SELECT 'three', 3; "
        "INSERT INTO cli_multi VALUES (1), (2); SELECT COUNT(*) AS n FROM cli_multi"
    )
    sql = (
        "DROP TABLE IF EXISTS cli_multi;\n"
        "CREATE TABLE cli_multi (id INT PRIMARY KEY);\n"
        f"DELIMITER //\n{multi}//\nDELIMITER ;\n"
        "SELECT 'after' AS still;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql)
    assert out.returncode == 0
    assert out.stdout == b"a\n1\nb\tc\ntwo\tNULL\nthree\t3\nn\n2\nstill\nafter\n"
    event = event_for(proxy, multi)
    assert (event.result_sets, event.rows_sent, event.rows_affected) == (3, 4, 2)
    assert event.error_code == 0


def test_stored_procedure_with_several_result_sets(
    mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread
) -> None:
    sql = (
        "DROP PROCEDURE IF EXISTS cli_proc;\n"
        "DELIMITER //\n"
        "CREATE PROCEDURE cli_proc(IN n INT)\n"
        "BEGIN\n"
        "  SELECT n AS arg;\n"
        "  SELECT seq, seq * n AS times FROM seq_1_to_3;\n"
        "  SELECT 'done' AS status, NULL AS nothing;\n"
        "END//\n"
        "DELIMITER ;\n"
        "CALL cli_proc(7);\n"
        "SELECT 'session still fine' AS after;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql)
    assert out.returncode == 0
    assert out.stdout == (
        b"arg\n7\nseq\ttimes\n1\t7\n2\t14\n3\t21\nstatus\tnothing\ndone\tNULL\n"
        b"after\nsession still fine\n"
    )
    event = event_for(proxy, "CALL cli_proc(7)")
    assert (event.result_sets, event.rows_sent, event.error_code) == (3, 5, 0)


def test_load_data_local_infile(
    mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread, tmp_path: Path
) -> None:
    # About 6 MiB: over a thousand file packets, so their sequence ids wrap past 255.
    lines = [f"{i},row {i} {'x' * (i % 230)}" for i in range(1, 50_001)]
    data = Path(tmp_path / "rows.csv")
    data.write_text("\n".join(lines) + "\n")
    sql = (
        "DROP TABLE IF EXISTS cli_infile;\n"
        "CREATE TABLE cli_infile (id INT PRIMARY KEY, txt VARCHAR(250));\n"
        f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE cli_infile FIELDS TERMINATED BY ',';\n"
        "SELECT COUNT(*), SUM(id), SUM(CRC32(txt)) FROM cli_infile;\n"
        # A file the client cannot open: it sends an empty file and reports the error.
        f"LOAD DATA LOCAL INFILE '{tmp_path}/missing.csv' INTO TABLE cli_infile;\n"
        "SELECT 'alive after a missing file' AS after;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql, "--local-infile=1", "--force")
    crc_sum = sum(zlib.crc32(line.split(",", 1)[1].encode()) for line in lines)
    assert out.stdout == (
        b"COUNT(*)\tSUM(id)\tSUM(CRC32(txt))\n"
        + f"50000\t{50_000 * 50_001 // 2}\t{crc_sum}\n".encode()
        + b"after\nalive after a missing file\n"
    )
    assert out.stderr.endswith(
        f"ERROR 2 (HY000) at line 5: File '{tmp_path}/missing.csv' not found (Errcode: 2)\n"
        .encode()
    )
    load = next(e for e in events(proxy) if e.query.startswith("LOAD DATA") and "rows" in e.query)
    assert (load.rows_affected, load.error_code) == (50_000, 0)
    assert load.bytes_received > data.stat().st_size


def test_values_over_16_mib_both_ways(
    mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread
) -> None:
    value = os.urandom(17 * MIB // 2).hex()  # 17 MiB of text that needs no escaping
    digest = hashlib.md5(value.encode()).hexdigest()
    sql = (
        "DROP TABLE IF EXISTS cli_big;\n"
        "CREATE TABLE cli_big (id INT PRIMARY KEY, v LONGTEXT);\n"
        f"INSERT INTO cli_big VALUES (1, '{value}');\n"
        "SELECT LENGTH(v), MD5(v) FROM cli_big;\n"
        "SELECT v FROM cli_big;\n"
        "SELECT 'small' AS after;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql, "--max-allowed-packet=64M")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (
        f"LENGTH(v)\tMD5(v)\n{len(value)}\t{digest}\nv\n".encode()
        + value.encode()
        + b"\nafter\nsmall\n"
    )
    insert = next(e for e in events(proxy) if e.query.startswith("INSERT INTO cli_big"))
    assert insert.bytes_received > 17 * MIB and insert.rows_affected == 1
    assert insert.truncated  # the captured copy is bounded; the command was not
    select = event_for(proxy, "SELECT v FROM cli_big")
    assert select.rows_sent == 1 and select.bytes_sent > 17 * MIB


def test_errors_leave_the_session_usable(
    mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread
) -> None:
    sql = (
        "DROP TABLE IF EXISTS cli_err;\n"
        "CREATE TABLE cli_err (id INT PRIMARY KEY);\n"
        "INSERT INTO cli_err VALUES (1);\n"
        "SELECT * FROM cli_no_such_table;\n"
        "SELECT 'after 1' AS a;\n"
        "INSERT INTO cli_err VALUES (1);\n"
        "SELECT 'after 2' AS a;\n"
        "SELEC 3;\n"
        "SELECT 'after 3' AS a;\n"
        "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom failure', MYSQL_ERRNO = 3999;\n"
        "SELECT id AS still_there FROM cli_err;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql, "--force")
    assert out.stdout == b"a\nafter 1\na\nafter 2\na\nafter 3\nstill_there\n1\n"
    errors = [line for line in out.stderr.decode().splitlines() if line.startswith("ERROR")]
    assert errors[0] == (
        "ERROR 1146 (42S02) at line 4: Table 'mpt.cli_no_such_table' doesn't exist"
    )
    assert errors[1] == "ERROR 1062 (23000) at line 6: Duplicate entry '1' for key 'PRIMARY'"
    assert errors[2].startswith("ERROR 1064 (42000) at line 8: You have an error in your SQL")
    assert errors[3] == "ERROR 3999 (45000) at line 10: custom failure"
    failed = [(e.error_code, e.sql_state) for e in events(proxy) if e.error_code]
    assert failed == [(1146, "42S02"), (1062, "23000"), (1064, "42000"), (3999, "45000")]

    # Without --force the client stops at the first error, the same way.
    stopped = both(mariadb_cli, mariadb, proxy, "SELECT 1 AS a;\nSELEC 2;\nSELECT 3;\n")
    assert (stopped.returncode, stopped.stdout) == (1, b"a\n1\n")


def test_use(mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread) -> None:
    sql = (
        "CREATE DATABASE IF NOT EXISTS mpt_cli_other;\n"
        "USE mpt_cli_other;\n"
        "SELECT DATABASE() AS db;\n"
        "USE mpt\n"
        "SELECT DATABASE() AS db;\n"
        # A line starting with USE is the client's own command: SQL USE goes inside.
        "DELIMITER //\n"
        "SELECT 0 AS x; USE mpt_cli_other; SELECT DATABASE() AS db//\n"
        "DELIMITER ;\n"
        "SELECT DATABASE() AS db;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql)
    assert out.stdout == b"db\nmpt_cli_other\ndb\nmpt\nx\n0\ndb\nmpt_cli_other\ndb\nmpt_cli_other\n"
    # The client turns a `USE` line into COM_INIT_DB; the tracker follows both forms.
    init_db = [e.query for e in events(proxy, Command.COM_INIT_DB)]
    assert init_db[-2:] == ["mpt_cli_other", "mpt"]
    schemas = [e.schema for e in events(proxy) if e.query == "SELECT DATABASE() AS db"]
    assert schemas == ["mpt_cli_other", "mpt", "mpt_cli_other"]


def test_show_warnings(mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread) -> None:
    sql = (
        "SELECT CAST('12abc' AS SIGNED) AS n;\n"
        "SHOW WARNINGS;\n"
        "SELECT 1 / 0 AS q;\n"
        "SHOW WARNINGS;\n"
        "SELECT COUNT(*) AS clean FROM seq_1_to_3;\n"
        "SHOW WARNINGS;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql)
    assert out.stdout == (
        b"n\n12\n"
        b"Level\tCode\tMessage\nWarning\t1292\tTruncated incorrect INTEGER value: '12abc'\n"
        b"q\nNULL\n"
        b"Level\tCode\tMessage\nWarning\t1365\tDivision by 0\n"
        b"clean\n3\n"
    )
    assert event_for(proxy, "SELECT CAST('12abc' AS SIGNED) AS n").warnings == 1
    assert event_for(proxy, "SELECT 1 / 0 AS q").warnings == 1
    # --show-warnings: the client asks by itself after each statement.
    shown = both(mariadb_cli, mariadb, proxy, "SELECT 1 / 0 AS q;\n", "--show-warnings")
    assert shown.stdout.startswith(b"q\nNULL\n")
    assert b"Division by 0" in shown.stdout + shown.stderr


def test_sql_prepare_execute(mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread) -> None:
    sql = (
        "PREPARE stmt FROM 'SELECT ? + 1 AS n, ? AS t, seq FROM seq_1_to_2';\n"
        "SET @a = 41, @b = 'text';\n"
        "EXECUTE stmt USING @a, @b;\n"
        "SET @a = -2;\n"
        "EXECUTE stmt USING @a, NULL;\n"
        "DEALLOCATE PREPARE stmt;\n"
        "EXECUTE stmt USING @a, @b;\n"
        "SELECT 'after' AS still;\n"
    )
    out = both(mariadb_cli, mariadb, proxy, sql, "--force")
    assert out.stdout == (
        b"n\tt\tseq\n42\ttext\t1\n42\ttext\t2\nn\tt\tseq\n-1\tNULL\t1\n-1\tNULL\t2\n"
        b"still\nafter\n"
    )
    assert out.stderr.decode().endswith(
        "ERROR 1243 (HY000) at line 7: Unknown prepared statement handler (stmt) given to EXECUTE\n"
    )
    executes = [e for e in events(proxy) if e.query.startswith("EXECUTE stmt")]
    assert [(e.rows_sent, e.error_code) for e in executes] == [(2, 0), (2, 0), (0, 1243)]


def test_column_metadata(mariadb_cli: str, mariadb: MariaDB, proxy: ProxyThread) -> None:
    """--column-type-info prints every field of each column definition."""
    sql = (
        "DROP TABLE IF EXISTS cli_meta;\n"
        "CREATE TABLE cli_meta (id BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT, "
        "d DECIMAL(12, 4) NOT NULL, t DATETIME(3), b BLOB, e ENUM('a', 'b'), "
        "v VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin, j JSON);\n"
        "INSERT INTO cli_meta (d, t, b, e, v, j) VALUES "
        "(1.5, '2024-01-02 03:04:05.678', x'00ff', 'b', 'vé', '[1]');\n"
        "SELECT id, d, t, b, e, v, j, d * 2 AS expr FROM cli_meta AS alias;\n"
    )
    direct = run_cli(mariadb_cli, mariadb.port, sql, "--column-type-info", "--table")
    out = run_cli(mariadb_cli, proxy.port, sql, "--column-type-info", "--table")
    # MariaDB's extended metadata (MARIADB_CLIENT_EXTENDED_METADATA, let through by
    # the proxy) names the JSON format of a column.
    assert b"Type:       BLOB (format=json)\n" in direct.stdout
    assert out.stdout == direct.stdout
    assert (out.stderr, out.returncode) == (direct.stderr, direct.returncode) == (b"", 0)
    assert_closed_cleanly(proxy)
    text = out.stdout.decode("utf-8", "replace")
    assert "Field   1:  `id`" in text and "Org_table:  `cli_meta`" in text
    assert "Table:      `alias`" in text and "Type:       NEWDECIMAL" in text
    assert text.count("Field ") == 8
    assert b"|  1 | 1.5000 | 2024-01-02 03:04:05.678 |" in out.stdout
    assert b"| [1]  | 3.0000 |\n" in out.stdout
