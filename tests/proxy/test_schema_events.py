"""The current schema (and user) a QueryEvent carries, compared with the server's
DATABASE() and USER() at that moment: after connecting with and without a database,
COM_INIT_DB, USE, COM_CHANGE_USER and COM_RESET_CONNECTION."""

from __future__ import annotations

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

from mysqlproxy.protocol.constants import Command
from tests.conftest import run_cli
from tests.proxy.event_support import query_event, wait_events

OTHER = "qe_other"
TICKED = "qe`tick"  # a name that needs quoting, with a quote inside
USER, PASSWORD = "qe_user", "qe pw"


@pytest.fixture(scope="module")
def schemas(mariadb):
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {OTHER}")
        cur.execute("CREATE DATABASE IF NOT EXISTS `qe``tick`")
        cur.execute(f"CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'")
        cur.execute(f"GRANT ALL ON *.* TO '{USER}'@'%'")
    return OTHER


class SchemaProbe:
    """Asks the server for DATABASE() and USER() and finds the probe's event."""

    def __init__(self, proxy, cursor):
        self.proxy = proxy
        self.cursor = cursor
        self.count = 0

    def check(self):
        """The event of the probe query must name the schema and user the server
        reports for the same moment. Returns that schema."""
        self.count += 1
        sql = f"SELECT DATABASE(), USER() /* probe {id(self)} {self.count} */"
        self.cursor.execute(sql)
        schema, user = self.cursor.fetchone()
        event = query_event(self.proxy, sql)
        assert event.schema == schema
        assert event.user == user.split("@")[0]
        return schema


def test_connect_with_and_without_database(proxy, mariadb, schemas):
    with mariadb.connect(port=proxy.port, database=OTHER) as conn, conn.cursor() as cur:
        assert SchemaProbe(proxy, cur).check() == OTHER
    with mariadb.connect(port=proxy.port) as conn, conn.cursor() as cur:
        assert SchemaProbe(proxy, cur).check() is None


def test_com_init_db(proxy, mariadb, schemas):
    with mariadb.connect(port=proxy.port, database="mpt") as conn, conn.cursor() as cur:
        probe = SchemaProbe(proxy, cur)
        conn.select_db(OTHER)
        assert probe.check() == OTHER
        (init,) = wait_events(proxy, lambda e: e.command == Command.COM_INIT_DB)
        assert init.query == OTHER
        assert init.schema == "mpt"  # the schema when the command started
        assert not init.failed

        with pytest.raises(pymysql.MySQLError) as raised:
            conn.select_db("qe_no_such_db")
        assert probe.check() == OTHER  # unchanged by a refused COM_INIT_DB
        (failed,) = wait_events(
            proxy, lambda e: e.command == Command.COM_INIT_DB and e.query == "qe_no_such_db"
        )
        assert failed.error_code == raised.value.args[0] == 1049

        conn.select_db(TICKED)
        assert probe.check() == TICKED


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (f"USE {OTHER}", OTHER),
        (f"use `{OTHER}`;", OTHER),
        ("  Use\n`qe``tick` ; ", TICKED),
        (f"USE {OTHER} /* a comment */", OTHER),
        (f"/* a comment */ USE {OTHER}", OTHER),
    ],
)
def test_use_statement(proxy, mariadb, schemas, statement, expected):
    with mariadb.connect(port=proxy.port, database="mpt") as conn, conn.cursor() as cur:
        probe = SchemaProbe(proxy, cur)
        cur.execute(statement)
        assert probe.check() == expected
        assert query_event(proxy, statement).schema == "mpt"


def test_use_that_fails_keeps_the_schema(proxy, mariadb, schemas):
    with mariadb.connect(port=proxy.port, database="mpt") as conn, conn.cursor() as cur:
        probe = SchemaProbe(proxy, cur)
        with pytest.raises(pymysql.MySQLError):
            cur.execute("USE qe_no_such_db")
        assert probe.check() == "mpt"


def test_use_inside_a_multi_statement(proxy, mariadb, schemas):
    with mariadb.connect(
        port=proxy.port, database="mpt", client_flag=CLIENT.MULTI_STATEMENTS
    ) as conn, conn.cursor() as cur:
        probe = SchemaProbe(proxy, cur)
        cur.execute(f"SELECT 1; USE {OTHER}; SELECT 2")
        while cur.nextset():
            pass
        assert probe.check() == OTHER


def test_dropping_the_current_schema(proxy, mariadb, schemas):
    with mariadb.connect(port=proxy.port) as conn, conn.cursor() as cur:
        probe = SchemaProbe(proxy, cur)
        cur.execute("CREATE DATABASE IF NOT EXISTS qe_dropped")
        cur.execute("USE qe_dropped")
        assert probe.check() == "qe_dropped"
        cur.execute("DROP DATABASE qe_dropped")
        assert probe.check() is None


def test_use_through_the_mariadb_client(proxy, mariadb_cli, schemas):
    """The mariadb client turns `use` into COM_INIT_DB, and asks for session-state
    tracking: the server names the new schema in its OK packets."""
    sql = (
        "SELECT DATABASE() AS a;\n"
        f"use {OTHER}\n"
        "SELECT DATABASE() AS b;\n"
        "CREATE DATABASE qe_cli_dropped;\n"
        "use qe_cli_dropped\n"
        "DROP DATABASE qe_cli_dropped;\n"
        "SELECT DATABASE() AS c;\n"
    )
    result = run_cli(mariadb_cli, proxy.port, sql, "-N", check=True)
    assert result.stdout.decode().split() == ["mpt", OTHER, "NULL"]
    a = query_event(proxy, "SELECT DATABASE() AS a")
    b = query_event(proxy, "SELECT DATABASE() AS b")
    c = query_event(proxy, "SELECT DATABASE() AS c")
    assert (a.schema, b.schema, c.schema) == ("mpt", OTHER, None)
    assert wait_events(proxy, lambda e: e.command == Command.COM_INIT_DB and e.query == OTHER)


@pytest.fixture
def connector(proxy, mariadb):
    conn = mysql.connector.connect(
        host="127.0.0.1", port=proxy.port, user=mariadb.user, password=mariadb.password,
        database="mpt", use_pure=True,
    )
    yield conn
    conn.close()


def test_change_user(proxy, connector, mariadb, schemas):
    cur = connector.cursor()
    probe = SchemaProbe(proxy, cur)
    assert probe.check() == "mpt"

    connector.cmd_change_user(username=USER, password=PASSWORD, database=OTHER)
    assert probe.check() == OTHER  # and the user is qe_user
    (change,) = wait_events(proxy, lambda e: e.command == Command.COM_CHANGE_USER)
    assert not change.failed
    assert change.query == USER
    assert (change.user, change.schema) == (mariadb.user, "mpt")  # when it started

    connector.cmd_change_user(username=mariadb.user, password=mariadb.password)
    assert probe.check() is None
    cur.close()


def test_failed_change_user_leaves_identity(proxy, connector, mariadb, schemas):
    cur = connector.cursor()
    probe = SchemaProbe(proxy, cur)
    with pytest.raises(mysql.connector.Error) as raised:
        connector.cmd_change_user(username=USER, password="wrong", database=OTHER)
    (change,) = wait_events(proxy, lambda e: e.command == Command.COM_CHANGE_USER)
    assert change.error_code == raised.value.errno == 1045
    # MariaDB keeps the session as it was; so must the events.
    assert probe.check() == "mpt"
    cur.close()


def test_reset_connection_keeps_the_schema(proxy, connector, schemas):
    cur = connector.cursor()
    probe = SchemaProbe(proxy, cur)
    connector.cmd_init_db(OTHER)
    assert probe.check() == OTHER
    connector.cmd_reset_connection()
    assert probe.check() == OTHER
    (reset,) = wait_events(proxy, lambda e: e.command == Command.COM_RESET_CONNECTION)
    assert not reset.failed
    cur.close()
