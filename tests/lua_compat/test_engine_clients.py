"""Real clients through the Lua engine against the private MariaDB: LOAD DATA LOCAL,
the mariadb command-line client, asyncmy, pooled connections re-authenticated with
COM_CHANGE_USER, and the observers (QueryEvents) that work side by side with Lua."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mysqlproxy.hooks import AddonManager
from mysqlproxy.protocol.events import QueryEvent
from tests.conftest import MariaDB, run_cli
from tests.lua_compat.conftest import ScriptFactory, connect, run_lua_proxy

INJECT_ALL = """
function read_query(packet)
  if packet:byte() == proxy.COM_QUERY then
    proxy.queries:append(1, packet, { resultset_is_needed = %s })
    return proxy.PROXY_SEND_QUERY
  end
end
function read_query_result(inj)
  proxy.global.status = tostring(inj.resultset.query_status)
end
"""


@pytest.mark.parametrize("needed", ["true", "false"])
def test_load_data_local_through_injections(
    mariadb: MariaDB, script_file: ScriptFactory, tmp_path: Path, needed: str
) -> None:
    data = tmp_path / "rows.csv"
    data.write_text("".join(f"{i},row {i}\n" for i in range(1000)))
    with (
        run_lua_proxy(script_file(INJECT_ALL % needed), [mariadb.address]) as proxy,
        connect(proxy, database="mpt", local_infile=True) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("DROP TABLE IF EXISTS lua_load")
        cur.execute("CREATE TABLE lua_load (id INT, v TEXT)")
        for _ in range(2):
            cur.execute(
                f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE lua_load FIELDS TERMINATED BY ','"
            )
            assert cur.rowcount == 1000
            if needed == "true":
                assert proxy.runtime.eval("proxy.global.status") == b"nil"
        cur.execute("SELECT COUNT(*), MAX(v) FROM lua_load")
        assert cur.fetchone() == (2000, "row 999")


def test_mariadb_cli_through_log_like_script(
    mariadb: MariaDB,
    mariadb_cli: str,
    script_file: ScriptFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log_file = tmp_path / "queries.log"
    source = """
    local fh = assert(io.open(os.getenv("LUA_TEST_LOG"), "a"))
    function read_query(packet)
      if packet:byte() == proxy.COM_QUERY then
        fh:write(string.format("%s %6d -- %s\\n", os.date("%Y-%m-%d %H:%M:%S"),
          proxy.connection.server.thread_id, packet:sub(2)))
        fh:flush()
      end
    end
    """
    monkeypatch.setenv("LUA_TEST_LOG", str(log_file))  # read by the script body
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        result = run_cli(
            mariadb_cli, proxy.bound[0].port, "SELECT 'hello' AS greeting; SELECT 6*7;", check=True
        )
    assert result.stdout.decode().split() == ["greeting", "hello", "6*7", "42"]
    lines = log_file.read_text().splitlines()
    assert any(line.endswith("-- SELECT 'hello' AS greeting") for line in lines)
    assert any(line.endswith("-- SELECT 6*7") for line in lines)


def test_asyncmy_prepared_and_plain(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    asyncmy = pytest.importorskip("asyncmy")
    source = """
    function read_query(packet)
      proxy.global.commands = (proxy.global.commands or 0) + 1
    end
    """

    async def work(port: int) -> list[object]:
        conn = await asyncmy.connect(
            host="127.0.0.1", port=port, user="root", password="", db="mpt"
        )
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT %s + 1", (41,))
                first = await cur.fetchone()
                await cur.execute("SELECT seq FROM seq_1_to_500")
                rows = await cur.fetchall()
            return [first, len(rows)]
        finally:
            conn.close()

    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        assert asyncio.run(work(proxy.bound[0].port)) == [(42,), 500]
        assert proxy.runtime.eval("proxy.global.commands") >= 2


class Recorder:
    def __init__(self) -> None:
        self.events: list[QueryEvent] = []
        self.opened: list[str] = []

    def query_completed(self, event: QueryEvent) -> None:
        self.events.append(event)

    def connection_opened(self, connection: object) -> None:
        self.opened.append(getattr(connection, "user", ""))


def test_observers_see_what_the_server_ran(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    source = """
    function read_query(packet)
      if packet:find("SELECT 'client'") then
        proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT 'injected'",
                             { resultset_is_needed = true })
        return proxy.PROXY_SEND_QUERY
      end
    end
    """
    recorder = Recorder()
    addons = AddonManager()
    addons.add(recorder)
    with (
        run_lua_proxy(script_file(source), [mariadb.address], addons=addons) as proxy,
        connect(proxy) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 'client'")
        assert cur.fetchone() == ("injected",)
        cur.execute("SELECT 1 FROM DUAL")
    queries = [e.query for e in recorder.events]
    assert "SELECT 'injected'" in queries
    assert "SELECT 'client'" not in queries
    assert "SELECT 1 FROM DUAL" in queries
    event = next(e for e in recorder.events if e.query == "SELECT 1 FROM DUAL")
    assert event.rows_sent == 1 and event.user == "root" and event.thread_id > 0
    assert recorder.opened == ["root"]


def test_pooled_connection_is_reauthenticated(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    """ro-pooling style: the first client leaves its authenticated connection in the
    pool; the second gets it in connect_server and logs in with COM_CHANGE_USER."""
    source = """
    function connect_server()
      if proxy.global.backends[1].pool.users["root"] then
        proxy.connection.backend_ndx = 1
        if proxy.connection.server then
          proxy.global.reused = (proxy.global.reused or 0) + 1
          return proxy.PROXY_IGNORE_RESULT
        end
      end
    end
    function read_query(packet)
      if packet:byte() == proxy.COM_QUIT then  -- the connection stays open for the pool
        proxy.response = { type = proxy.MYSQLD_PACKET_OK }
        return proxy.PROXY_SEND_RESULT
      end
    end
    function disconnect_client()
      if proxy.connection.server then proxy.connection.backend_ndx = 0 end
    end
    """
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        with connect(proxy) as conn, conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            (first_id,) = cur.fetchone()
            cur.execute("SET @marker = 1")
        with connect(proxy, database="mpt") as conn, conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID(), @marker, DATABASE()")
            # the same server connection, reset by COM_CHANGE_USER
            assert cur.fetchone() == (first_id, None, "mpt")
        assert proxy.runtime.eval("proxy.global.reused") == 1


def test_server_side_prepared_statements(mariadb: MariaDB, script_file: ScriptFactory) -> None:
    """mysql-connector-python with prepared=True: COM_STMT_PREPARE/EXECUTE/CLOSE (binary
    rows) pass through read_query; an injected COM_STMT_EXECUTE result refuses .rows."""
    connector = pytest.importorskip("mysql.connector")
    source = """
    function read_query(packet)
      local c = packet:byte()
      proxy.global.commands = (proxy.global.commands or "") .. c .. ","
      if c == proxy.COM_STMT_EXECUTE and not proxy.global.injected then
        proxy.global.injected = true
        proxy.queries:append(1, packet, { resultset_is_needed = true })
        return proxy.PROXY_SEND_QUERY
      end
    end
    function read_query_result(inj)
      local res = inj.resultset
      proxy.global.rows_error = select(2, pcall(function() return res.rows end))
      proxy.global.row_count = res.row_count
    end
    """
    with run_lua_proxy(script_file(source), [mariadb.address]) as proxy:
        conn = connector.connect(
            host="127.0.0.1",
            port=proxy.bound[0].port,
            user="root",
            password="",
            database="mpt",
            use_pure=True,
        )
        try:
            cur = conn.cursor(prepared=True)
            cur.execute("SELECT seq, CONCAT('v', seq) FROM seq_1_to_5 WHERE seq > ?", (2,))
            assert cur.fetchall() == [(3, "v3"), (4, "v4"), (5, "v5")]
            cur.execute("SELECT seq FROM seq_1_to_5 WHERE seq = ?", (4,))
            assert cur.fetchall() == [(4,)]
            cur.close()
        finally:
            conn.close()
        commands = proxy.runtime.eval("proxy.global.commands").decode()
        assert "22," in commands and "23," in commands  # PREPARE, EXECUTE
        assert b"isn't available for prepared statements" in proxy.runtime.eval(
            "proxy.global.rows_error"
        )
        assert proxy.runtime.eval("proxy.global.row_count") == 3
