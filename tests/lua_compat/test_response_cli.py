"""proxy.response result sets read by the mariadb command-line client, with the real
MariaDB as the backend. MariaDB offers extended column metadata; the result sets a
script builds carry 0.8's column definitions, so the engine must not let the client
ask for it (else libmariadb reports "Received malformed packet")."""

from __future__ import annotations

from tests.conftest import MariaDB, run_cli
from tests.lua_compat.conftest import ScriptFactory, run_lua_proxy

ANSWER_FROM_LUA = """
function read_query(packet)
  if packet:sub(2) == "SELECT * FROM lua_answer" then
    proxy.response = {
      type = proxy.MYSQLD_PACKET_OK,
      resultset = {
        fields = { { name = "id", type = proxy.MYSQL_TYPE_LONG },
                   { name = "word" } },
        rows = { { 1, "one" }, { 2, nil }, { 3, "three" } },
      },
    }
    return proxy.PROXY_SEND_RESULT
  end
end
"""


def test_mariadb_cli_reads_a_result_set_built_by_the_script(
    mariadb: MariaDB, mariadb_cli: str, script_file: ScriptFactory
) -> None:
    with run_lua_proxy(script_file(ANSWER_FROM_LUA), [mariadb.address]) as proxy:
        result = run_cli(
            mariadb_cli, proxy.bound[0].port,
            "SELECT * FROM lua_answer; SELECT 'from the server' AS source;",
            "--column-type-info",
        )
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "id\tword\n1\tone\n2\tNULL\n3\tthree\n" in out
    assert "source\nfrom the server\n" in out
