"""`make demo`: the proxy, a workload, and the live viewer, in one command.

Starts a private MariaDB (in a temporary directory, on a free port), `mysqlproxy run`
in front of it with its admin interface on a free loopback port and a generated
password, and a few clients that talk to the database through the proxy:

    shop       PyMySQL: reads products, looks at categories, records page visits
    checkout   PyMySQL: places orders in transactions (INSERT, UPDATE, COMMIT)
    reports    PyMySQL: slow reports every few seconds (SLEEP, and scans of an
               unindexed 250,000-row table)
    legacy     PyMySQL: queries a table that does not exist (errors pass through too)
    api        mysql-connector-python: server-side prepared statements with parameters,
               one of them a slow scan

Each client logs in as its own user with a password: the proxy needs none,
authentication passes through.

In a terminal, the demo ends in the live viewer (`mysqlproxy top`) while the clients
go on: slow queries as they complete, digests, the proxy's state. EXPLAIN works (the
viewer gets a side connection to the server), and `l` writes a file window into the
demo's temporary directory. `q` quits the viewer and the demo. The proxy's
--print-queries lines go to a file meanwhile, so they stay off the viewer's screen.

Without a terminal (CI, a pipe), every command the proxy relays is printed as it
completes (time, duration, connection, user@client, schema, rows or error, query) for
about 20 seconds (--duration).

Either way, the demo opens a logging window WITH DIGESTS on the admin interface at the
start, and ends with a summary read from it: commands relayed, slow ones, errors, and
the five query classes that took the most time. Ctrl-C (or SIGTERM, SIGHUP) ends it
early; everything is cleaned up: the clients, the proxy, the server, the temporary
directories.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymysql  # noqa: E402

from mysqlproxy import units  # noqa: E402
from mysqlproxy.proxy.backends import Address  # noqa: E402
from mysqlproxy.testing.privatedb import (  # noqa: E402
    PrivateDBError,
    PrivateMariaDB,
    free_port,
)
from mysqlproxy.testing.proxyprocess import ProxyProcess, ProxyProcessError  # noqa: E402

PASSWORD_ENV = "MYSQLPROXY_ADMIN_PASSWORD"
ADMIN_USER = "admin"
SUMMARY_WINDOW = "ring:demo-summary"

SCHEMA = """
CREATE DATABASE demo;
CREATE TABLE demo.products (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(80) NOT NULL,
    category VARCHAR(40) NOT NULL,
    price DECIMAL(8, 2) NOT NULL,
    stock INT NOT NULL,
    KEY (category)
);
CREATE TABLE demo.orders (
    id INT AUTO_INCREMENT PRIMARY KEY,
    product_id INT NOT NULL,
    quantity INT NOT NULL,
    customer VARCHAR(80) NOT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
-- No index on path: the reports that search it scan the whole table (see EXPLAIN).
CREATE TABLE demo.visits (
    id INT AUTO_INCREMENT PRIMARY KEY,
    product_id INT NOT NULL,
    path VARCHAR(120) NOT NULL,
    visited_at DATETIME NOT NULL
);
INSERT INTO demo.products (name, category, price, stock)
SELECT CONCAT(ELT(1 + seq % 6, 'Red', 'Blue', 'Green', 'Small', 'Large', 'Vintage'), ' ',
              ELT(1 + seq % 5, 'teapot', 'lamp', 'chair', 'notebook', 'bicycle'), ' #', seq),
       ELT(1 + seq % 4, 'kitchen', 'office', 'garden', 'sport'),
       ROUND(5 + (seq * 7919 % 20000) / 100, 2),
       seq * 31 % 200
FROM seq_1_to_500;
INSERT INTO demo.visits (product_id, path, visited_at)
SELECT 1 + seq * 7 % 500,
       CONCAT('/products/', 1 + seq * 7 % 500, ELT(1 + seq % 3, '', '/reviews', '/buy')),
       NOW() - INTERVAL (seq * 13 % 86400) SECOND
FROM seq_1_to_250000;
"""

USERS = ("shop", "checkout", "reports", "legacy", "api")

CUSTOMERS = ("ada", "grace", "linus", "barbara", "ken", "margaret", "dennis", "frances")

# The reports client runs these in turn: two sleep on purpose, two are real scans.
REPORTS: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("SELECT SLEEP(0.8) AS slow, COUNT(*) AS orders, COALESCE(SUM(quantity), 0) FROM orders",
     ()),
    ("SELECT product_id, COUNT(*) AS views FROM visits WHERE path LIKE %s "
     "GROUP BY product_id ORDER BY views DESC LIMIT 10", ("%/reviews",)),
    ("SELECT SLEEP(0.3) AS wait, COALESCE(SUM(o.quantity * p.price), 0) AS revenue "
     "FROM orders o JOIN products p ON p.id = o.product_id", ()),
    ("SELECT HOUR(visited_at) AS hour, COUNT(*) AS views, COUNT(DISTINCT product_id) "
     "AS products FROM visits GROUP BY hour ORDER BY hour", ()),
    ("SELECT product_id, COUNT(*) AS views FROM visits WHERE path LIKE %s "
     "GROUP BY product_id ORDER BY views DESC LIMIT 10", ("%/buy",)),
)


class Output:
    """Where the demo's lines go: stdout, or a file while the viewer owns the screen.
    A reader that went away (`make demo | head`, a closed terminal) does not stop the
    demo from cleaning up: the rest of its output is dropped."""

    def __init__(self) -> None:
        self.file: TextIO | None = None
        self.lock = threading.Lock()  # the proxy's lines come from a reader thread
        self.gone = False

    def say(self, message: str) -> None:
        line = f"demo: {message}"
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()
        else:
            self.print(line)

    def print(self, line: str = "") -> None:
        with self.lock:
            if self.gone:
                return
            try:
                print(line, flush=True)
            except OSError:  # EPIPE, or EIO from a terminal that closed
                self.gone = True
                # Python would fail again flushing stdout at exit: send it nowhere.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)


OUT = Output()
say = OUT.say


@dataclass
class ClientStats:
    name: str
    commands: int = 0
    errors: int = 0
    failure: str | None = None


class Workload:
    """The demo's clients, each on its own thread with its own connection."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        self.port = port
        self.stop = stop
        self.stats: dict[str, ClientStats] = {}
        self.threads: list[threading.Thread] = []

    def start(self, stagger: float = 0.0) -> None:
        clients: dict[str, Callable[[ClientStats], None]] = {
            "shop": self.shop,
            "checkout": self.checkout,
            "reports": self.reports,
            "legacy": self.legacy,
            "api": self.api,
        }
        for name, body in clients.items():
            stats = self.stats[name] = ClientStats(name)
            thread = threading.Thread(
                target=self._run, args=(body, stats), name=f"client-{name}", daemon=True
            )
            self.threads.append(thread)
            thread.start()
            # Staggered when the log-ins are printed, so they are easy to follow.
            if self.stop.wait(stagger):
                return

    def join(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, body: Callable[[ClientStats], None], stats: ClientStats) -> None:
        try:
            body(stats)
        except Exception as exc:
            if not self.stop.is_set():  # errors while shutting down are expected
                stats.failure = f"{type(exc).__name__}: {exc}"
                say(f"client {stats.name} stopped: {stats.failure}")

    def _pause(self, low: float, high: float) -> bool:
        """Sleep a while; False when it is time to stop."""
        return not self.stop.wait(random.uniform(low, high))

    def _connect(self, user: str) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password=f"{user}-secret",
            database="demo",
            autocommit=True,
        )

    # --- the clients ------------------------------------------------------------------

    def shop(self, stats: ClientStats) -> None:
        with self._connect("shop") as conn, conn.cursor() as cur:
            while self._pause(0.3, 0.9):
                choice = random.random()
                if choice < 0.5:
                    product = random.randint(1, 500)
                    cur.execute(
                        "SELECT id, name, price FROM products WHERE id = %s", (product,)
                    )
                    cur.fetchall()
                    cur.execute(
                        "INSERT INTO visits (product_id, path, visited_at) "
                        "VALUES (%s, %s, NOW())",
                        (product, f"/products/{product}"),
                    )
                    stats.commands += 1
                elif choice < 0.8:
                    cur.execute(
                        "SELECT id, name, price FROM products WHERE category = %s "
                        "AND stock > 0 ORDER BY price LIMIT 5",
                        (random.choice(["kitchen", "office", "garden", "sport"]),),
                    )
                else:
                    cur.execute(
                        "SELECT category, COUNT(*), MIN(price), MAX(price) FROM products "
                        "GROUP BY category"
                    )
                cur.fetchall()
                stats.commands += 1

    def checkout(self, stats: ClientStats) -> None:
        with self._connect("checkout") as conn, conn.cursor() as cur:
            while self._pause(0.8, 1.6):
                product = random.randint(1, 500)
                quantity = random.randint(1, 3)
                conn.begin()
                cur.execute(
                    "INSERT INTO orders (product_id, quantity, customer) VALUES (%s, %s, %s)",
                    (product, quantity, random.choice(CUSTOMERS)),
                )
                cur.execute(
                    "UPDATE products SET stock = GREATEST(stock - %s, 0) WHERE id = %s",
                    (quantity, product),
                )
                conn.commit()
                stats.commands += 4

    def reports(self, stats: ClientStats) -> None:
        # The slow queries a logging window and the viewer are for.
        with self._connect("reports") as conn, conn.cursor() as cur:
            turn = 0
            while self._pause(1.5, 2.5):
                query, params = REPORTS[turn % len(REPORTS)]
                turn += 1
                cur.execute(query, params or None)
                cur.fetchall()
                stats.commands += 1

    def legacy(self, stats: ClientStats) -> None:
        with self._connect("legacy") as conn, conn.cursor() as cur:
            while self._pause(2.5, 4.0):
                try:
                    cur.execute("SELECT * FROM customers_old WHERE id = 1")
                except pymysql.MySQLError:
                    stats.errors += 1  # ERR 1146, as the client would see directly
                stats.commands += 1
                cur.execute("SELECT COUNT(*) FROM orders")
                cur.fetchall()
                stats.commands += 1

    def api(self, stats: ClientStats) -> None:
        import mysql.connector

        conn = mysql.connector.connect(
            host="127.0.0.1",
            port=self.port,
            user="api",
            password="api-secret",
            database="demo",
            autocommit=True,
        )
        try:
            # One cursor per statement: each is prepared once (COM_STMT_PREPARE), then
            # executed with binary parameters (COM_STMT_EXECUTE) again and again.
            by_id = conn.cursor(prepared=True)
            by_customer = conn.cursor(prepared=True)
            top_pages = conn.cursor(prepared=True)
            turn = 0
            while self._pause(0.7, 1.4):
                turn += 1
                if turn % 4 == 0:
                    # Slow: visits.path has no index, every call scans the table.
                    top_pages.execute(
                        "SELECT path, COUNT(*) AS views FROM visits WHERE path LIKE ? "
                        "GROUP BY path ORDER BY views DESC LIMIT 5",
                        (f"/products/{random.randint(1, 9)}%",),
                    )
                    top_pages.fetchall()
                    stats.commands += 1
                by_id.execute(
                    "SELECT name, price, stock FROM products WHERE id = ?",
                    (random.randint(1, 500),),
                )
                by_id.fetchall()
                by_customer.execute(
                    "SELECT COUNT(*), SUM(quantity) FROM orders WHERE customer = ?",
                    (random.choice(CUSTOMERS),),
                )
                by_customer.fetchall()
                stats.commands += 2
            for cursor in (by_id, by_customer, top_pages):
                cursor.close()
        finally:
            conn.close()


def prepare(db: PrivateMariaDB) -> None:
    users = "".join(
        f"CREATE USER '{u}'@'127.0.0.1' IDENTIFIED BY '{u}-secret';"
        f"GRANT ALL ON demo.* TO '{u}'@'127.0.0.1';"
        for u in USERS
    )
    db.execute(SCHEMA + users, database="mysql")


# --- the proxy and its admin interface -------------------------------------------------


@contextlib.contextmanager
def running_proxy(
    db: PrivateMariaDB,
    tmp: Path,
    interactive: bool,
) -> Iterator[tuple[ProxyProcess, Address]]:
    """`mysqlproxy run` with --print-queries and its admin interface on a free loopback
    port. Its output goes to stdout, or, in a terminal, to files in `tmp` (the viewer
    owns the screen)."""
    with contextlib.ExitStack() as stack:
        on_line: Callable[[str], None]
        stderr: IO[bytes] | None = None
        if interactive:
            queries = stack.enter_context(
                (tmp / "queries.log").open("w", encoding="utf-8", buffering=1)
            )

            def on_line(line: str) -> None:
                queries.write(line + "\n")

            stderr = stack.enter_context((tmp / "proxy.log").open("wb"))
        else:

            on_line = OUT.print

        failure: ProxyProcessError | None = None
        # ProxyProcess reads only the client port from the proxy's first line, so the
        # admin port is chosen here; should it be taken meanwhile, try another.
        for _ in range(3):
            admin = Address("127.0.0.1", free_port())
            proxy = ProxyProcess(
                db.address,
                extra_args=[
                    "--print-queries",
                    "--admin", str(admin),
                    "--log-level", "warning",
                    "--log-target", str(tmp / "slow.log"),
                ],
                on_line=on_line,
                stderr=stderr,
            )
            try:
                proxy.start()
            except ProxyProcessError as exc:
                failure = exc
                continue
            stack.callback(proxy.stop)
            yield proxy, admin
            return
        assert failure is not None
        raise failure


class Admin:
    """The demo's connection to the admin interface: it opens the summary window at the
    start and reads the summary at the end."""

    def __init__(self, address: Address, password: str) -> None:
        self.connection = pymysql.connect(
            host=address.host,
            port=address.port,
            user=ADMIN_USER,
            password=password,
            connect_timeout=5,
            read_timeout=10,
            autocommit=None,  # the admin interface has no autocommit to set
            cursorclass=pymysql.cursors.DictCursor,
        )

    def close(self) -> None:
        with contextlib.suppress(pymysql.MySQLError):
            self.connection.close()

    def rows(self, statement: str) -> list[dict[str, Any]]:
        with self.connection.cursor() as cursor:
            cursor.execute(statement)
            return list(cursor.fetchall())

    def open_window(self, threshold_us: int) -> None:
        # Every statement is aggregated into the digests while a window WITH DIGESTS is
        # open; this one keeps the slow ones in the ring, where the summary counts them.
        # A day: longer than anyone watches a demo; the proxy goes away with the demo.
        self.rows(f"LOG ON FOR 1d TO '{SUMMARY_WINDOW}' SLOWER THAN {threshold_us}us "
                  "WITH DIGESTS")

    def summary(self) -> Summary:
        proxy = {str(row["name"]): row["value"] for row in self.rows("SELECT * FROM proxy")}
        slow = 0
        for row in self.rows("SELECT * FROM status"):
            if row["target"] == SUMMARY_WINDOW:
                slow = int(row["events_matched"])
        digests = self.rows("SELECT * FROM digests ORDER BY total_us DESC LIMIT 100000")
        return Summary(
            commands=int(proxy.get("queries_total", 0)),
            slow=slow,
            errors=sum(int(row["errors"]) for row in digests),
            top=digests[:5],
        )


@dataclass
class Summary:
    commands: int
    slow: int
    errors: int
    top: list[dict[str, Any]] = field(default_factory=list)


def format_us(us: float) -> str:
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    return units.format_duration(us / 1e6) if us >= 60e6 else f"{us / 1e6:.2f}s"


def print_summary(summary: Summary, seconds: float, threshold_us: int) -> None:
    threshold = format_us(threshold_us).replace(".0ms", "ms")
    say(
        f"in {units.format_duration(seconds)} the proxy relayed {summary.commands:,} "
        f"commands: {summary.slow:,} statements slower than {threshold}, "
        f"{summary.errors:,} errors"
    )
    if not summary.top:
        return
    say("the 5 query classes that took the most time "
        "(SELECT * FROM digests ORDER BY total_us DESC LIMIT 5):")
    width = shutil.get_terminal_size((120, 24)).columns
    say(f"  {'count':>6} {'total':>8} {'p50':>8} {'p95':>8} {'errors':>6}  fingerprint")
    for row in summary.top:
        fingerprint = " ".join(str(row["fingerprint"]).split())
        room = max(40, width - 50)
        if len(fingerprint) > room:
            fingerprint = fingerprint[: room - 3] + "..."
        say(
            f"  {int(row['count']):6d} {format_us(float(row['total_us'])):>8} "
            f"{format_us(float(row['p50_us'])):>8} {format_us(float(row['p95_us'])):>8} "
            f"{int(row['errors']):6d}  {fingerprint}"
        )


# --- the viewer --------------------------------------------------------------------------


def run_viewer(admin: Address, password: str, threshold_us: int, db: PrivateMariaDB,
               tmp: Path) -> int | None:
    """`mysqlproxy top` in this process until the user quits. Returns the signal that
    ended it (SIGTERM, SIGHUP, a SIGINT sent from elsewhere), or None for `q`."""
    from mysqlproxy.viewer.app import TopApp, run_until_quit
    from mysqlproxy.viewer.data import AdminSource
    from mysqlproxy.viewer.explain import DatabaseDSN, Explainer

    source = AdminSource(admin, ADMIN_USER, password, threshold_us=threshold_us,
                         purpose="demo-viewer", digests=True, proxy_state=True)
    explainer = Explainer(DatabaseDSN(host=db.address.host, port=db.address.port,
                                      user="root", password="", database="demo"))
    app = TopApp(source, explainer=explainer, default_log_path=str(tmp / "slow.log"))
    try:
        return run_until_quit(app)
    finally:
        source.close()
        explainer.close()


def mysqlproxy_command() -> str:
    """How to run `mysqlproxy` from here: the venv's, when it is not on PATH."""
    script = Path(sys.executable).parent / "mysqlproxy"
    if script.exists() and shutil.which("mysqlproxy") != str(script):
        with contextlib.suppress(ValueError):
            return os.path.relpath(script)
    return "mysqlproxy"


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A private MariaDB, the proxy, a workload, and the live viewer.")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="without the viewer: seconds the workload runs (default 20)")
    parser.add_argument("--slower-than", default="50ms",
                        help="what counts as slow, in the viewer and the summary (default 50ms)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--viewer", dest="viewer", action="store_true", default=None,
                      help="end in the live viewer (default: when run in a terminal)")
    mode.add_argument("--no-viewer", dest="viewer", action="store_false",
                      help="print the queries and a summary instead")
    args = parser.parse_args(argv)
    try:
        threshold_us = round(units.parse_duration(args.slower_than, "ms") * 1e6)
    except ValueError as exc:
        parser.error(f"--slower-than: {exc}")
    interactive = args.viewer
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
    elif interactive and not (sys.stdin.isatty() and sys.stdout.isatty()):
        parser.error("--viewer needs a terminal")

    # SIGTERM (a CI job ending) and SIGHUP (the terminal went away) unwind like Ctrl-C,
    # so everything is cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)

    password = secrets.token_urlsafe(12)
    os.environ[PASSWORD_ENV] = password  # what `mysqlproxy top/tail/log` read, too
    stop = threading.Event()
    workload: Workload | None = None
    summary: Summary | None = None
    interrupted = False
    started = time.monotonic()
    seconds = 0.0
    tmp = Path(tempfile.mkdtemp(prefix="mysqlproxy-demo-"))
    try:
        say("starting a private MariaDB in a temporary directory")
        with PrivateMariaDB() as db:
            prepare(db)
            say(f"MariaDB {db.address}: database 'demo' with 500 products, 250,000 visits")
            with running_proxy(db, tmp, interactive) as (proxy, admin_address):
                say(f"mysqlproxy {proxy.address} -> {db.address} (pid {proxy.pid}), "
                    f"admin interface on {admin_address}")
                admin = Admin(admin_address, password)
                try:
                    admin.open_window(threshold_us)
                    workload = Workload(proxy.port, stop)
                    started = time.monotonic()
                    try:
                        if interactive:
                            say("opening the live viewer (q quits, ? shows the keys)")
                            workload.start()
                            OUT.file = (tmp / "demo.log").open("w", encoding="utf-8")
                            if run_viewer(admin_address, password, threshold_us, db, tmp):
                                interrupted = True
                        else:
                            say(f"running the workload for {args.duration:g}s (Ctrl-C "
                                "stops it); meanwhile, in another terminal:")
                            say(f"    mariadb -h127.0.0.1 -P{proxy.port} -uroot --skip-ssl demo")
                            say(f"    {PASSWORD_ENV}={password} {mysqlproxy_command()} top "
                                f"--admin {admin_address}")
                            OUT.print()
                            workload.start(stagger=0.2)
                            stop.wait(args.duration)
                    except KeyboardInterrupt:
                        interrupted = True
                        OUT.print()
                        say("interrupted; stopping the clients")
                    finally:
                        # Clients finish their command and log out before the proxy stops.
                        stop.set()
                        workload.join()
                        if OUT.file is not None:
                            OUT.file.close()
                            OUT.file = None
                    seconds = time.monotonic() - started
                    time.sleep(0.3)  # the last COM_QUIT lines
                    try:
                        summary = admin.summary()
                    except pymysql.MySQLError as exc:
                        say(f"could not read the summary from the admin interface: {exc}")
                finally:
                    admin.close()
                if not interactive:
                    OUT.print()
                say("stopping the proxy")
        say("stopped the server and removed its directory")
    except KeyboardInterrupt:
        interrupted = True
        OUT.print()
        say("interrupted; cleaned up")
    except (PrivateDBError, ProxyProcessError, pymysql.MySQLError) as exc:
        say(f"cannot run the demo: {exc}")
        return 1
    finally:
        stop.set()
        if OUT.file is not None:
            OUT.file.close()
            OUT.file = None
        shutil.rmtree(tmp, ignore_errors=True)
    if summary is not None:
        print_summary(summary, seconds, threshold_us)
    if workload is not None:
        for stats in workload.stats.values():
            failure = f", failed: {stats.failure}" if stats.failure else ""
            say(f"  {stats.name:<9} {stats.commands:5d} commands, {stats.errors} errors{failure}")
        if any(stats.failure for stats in workload.stats.values()):
            return 1
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
