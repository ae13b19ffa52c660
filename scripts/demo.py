"""`make demo`: watch queries pass through the proxy.

Starts a private MariaDB (in a temporary directory, on a free port), `mysqlproxy run
--print-queries` in front of it, and a few clients that talk to the database through
the proxy for about 20 seconds:

    shop       PyMySQL: reads products, looks at categories
    checkout   PyMySQL: places orders in transactions (INSERT, UPDATE, COMMIT)
    reports    PyMySQL: a slow report (SLEEP) every few seconds
    legacy     PyMySQL: queries a table that does not exist (errors pass through too)
    api        mysql-connector-python: server-side prepared statements with parameters

Every command the proxy relays is printed as it completes: time, duration, connection,
user@client, schema, rows or error, query. Each client logs in as its own user with a
password: the proxy needs none, authentication passes through.

Ends by itself (--duration, default 20 s) or on Ctrl-C / SIGTERM, and cleans up: the
clients, the proxy process, the server and its directory. No terminal needed.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymysql  # noqa: E402

from mysqlproxy.testing.privatedb import PrivateDBError, PrivateMariaDB  # noqa: E402
from mysqlproxy.testing.proxyprocess import ProxyProcess, ProxyProcessError  # noqa: E402

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
INSERT INTO demo.products (name, category, price, stock)
SELECT CONCAT(ELT(1 + seq % 6, 'Red', 'Blue', 'Green', 'Small', 'Large', 'Vintage'), ' ',
              ELT(1 + seq % 5, 'teapot', 'lamp', 'chair', 'notebook', 'bicycle'), ' #', seq),
       ELT(1 + seq % 4, 'kitchen', 'office', 'garden', 'sport'),
       ROUND(5 + (seq * 7919 % 20000) / 100, 2),
       seq * 31 % 200
FROM seq_1_to_500;
"""

USERS = ("shop", "checkout", "reports", "legacy", "api")

CUSTOMERS = ("ada", "grace", "linus", "barbara", "ken", "margaret", "dennis", "frances")


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


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

    def start(self) -> None:
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
            time.sleep(0.2)  # staggered, so the connections' log-ins are easy to follow

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
                    cur.execute(
                        "SELECT id, name, price FROM products WHERE id = %s",
                        (random.randint(1, 500),),
                    )
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
        with self._connect("reports") as conn, conn.cursor() as cur:
            while self._pause(2.0, 3.0):
                # The slow query a logging window is for.
                cur.execute(
                    "SELECT SLEEP(0.8) AS slow, COUNT(*) AS orders, COALESCE(SUM(quantity), 0) "
                    "FROM orders"
                )
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
            while self._pause(0.7, 1.4):
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
            by_id.close()
            by_customer.close()
        finally:
            conn.close()


def prepare(db: PrivateMariaDB) -> None:
    users = "".join(
        f"CREATE USER '{u}'@'127.0.0.1' IDENTIFIED BY '{u}-secret';"
        f"GRANT ALL ON demo.* TO '{u}'@'127.0.0.1';"
        for u in USERS
    )
    db.execute(SCHEMA + users, database="mysql")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A private MariaDB, the proxy, a workload.")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds the workload runs (default 20)")
    args = parser.parse_args(argv)
    # SIGTERM (a CI job ending) unwinds like Ctrl-C, so everything is cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    stop = threading.Event()
    workload: Workload | None = None
    try:
        say("starting a private MariaDB in a temporary directory")
        with PrivateMariaDB() as db:
            prepare(db)
            say(f"MariaDB {db.address}: database 'demo' with 500 products")

            def show(line: str) -> None:
                print(line, flush=True)

            with ProxyProcess(
                db.address,
                extra_args=["--print-queries", "--admin", "off", "--log-level", "warning"],
                on_line=show,
            ) as proxy:
                say(f"mysqlproxy {proxy.address} -> {db.address} (pid {proxy.pid})")
                say(
                    f"running the workload for {args.duration:g}s (Ctrl-C stops it); "
                    "try it yourself meanwhile:"
                )
                say(f"    mariadb -h127.0.0.1 -P{proxy.port} -uroot --skip-ssl demo")
                print(flush=True)
                workload = Workload(proxy.port, stop)
                try:
                    workload.start()
                    stop.wait(args.duration)
                finally:
                    # Clients finish their command and log out before the proxy stops.
                    stop.set()
                    workload.join()
                time.sleep(0.3)  # the last COM_QUIT lines
                print(flush=True)
                say("stopping the proxy")
        say("stopped the server and removed its directory")
    except KeyboardInterrupt:
        stop.set()
        print(flush=True)
        say("interrupted; cleaned up")
        return 130
    except (PrivateDBError, ProxyProcessError) as exc:
        say(f"cannot run the demo: {exc}")
        return 1
    finally:
        stop.set()
    if workload is not None:
        for stats in workload.stats.values():
            failure = f", failed: {stats.failure}" if stats.failure else ""
            say(f"  {stats.name:<9} {stats.commands:4d} commands, {stats.errors} errors{failure}")
        if any(stats.failure for stats in workload.stats.values()):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
