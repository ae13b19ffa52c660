"""What observing costs: throughput through the proxy with nothing listening, with a
logging window writing every query, with the viewer's digests, and with metrics.

    .venv/bin/python bench/observers.py [--duration 15] [--rounds 2] [--threads 1]

sysbench oltp_point_select (server-side prepared statements) through one proxy; the
configurations are switched at runtime through the admin interface (metrics need a
restart with --metrics) and run in rotation, the median of the rounds counts. Ratios
are against the proxy with no window open. Targets: a window logging every query
keeps >= 0.90 of logging off (issue 3).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pymysql  # noqa: E402

from mysqlproxy.testing.privatedb import PrivateMariaDB, find_program, free_port  # noqa: E402
from mysqlproxy.testing.proxyprocess import ProxyProcess  # noqa: E402

PASSWORD = "bench"
TABLE_SIZE = 100_000


def sysbench(
    port: int, threads: int, seconds: int, command: str = "run", *options: str
) -> float:
    """oltp_point_select on sbtest; queries per second (`options`: more sysbench flags)."""
    argv = [
        find_program("sysbench", package="sysbench"),
        "oltp_point_select",
        "--mysql-host=127.0.0.1",
        f"--mysql-port={port}",
        "--mysql-user=root",
        "--mysql-password=",
        "--mysql-db=sbtest",
        *options,
        "--tables=1",
        f"--table-size={TABLE_SIZE}",
        f"--threads={threads}",
        f"--time={seconds}",
        command,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    if command != "run":
        return 0.0
    for line in result.stdout.splitlines():
        if "queries:" in line and "per sec" in line:
            return float(line.split("(")[1].split()[0])
    raise RuntimeError(f"no throughput in sysbench output:\n{result.stdout[-1500:]}")


def rotated(names: list[str], round_number: int) -> list[str]:
    """The configurations in this round's order: a different one first each round, so
    a change in background load does not always hit the same configuration."""
    shift = round_number % len(names)
    return names[shift:] + names[:shift]


def print_ratios(results: dict[str, list[float]], baseline: str, title: str) -> None:
    """The median q/s of each configuration and its ratio to the baseline's."""
    base = statistics.median(results[baseline])
    width = max(len(name) for name in results) + 2
    print(f"\n{title}")
    print(f"{'configuration':{width}s} {'q/s':>9s} {'ratio':>6s}")
    for name, values in results.items():
        qps = statistics.median(values)
        print(f"{name:{width}s} {qps:9,.0f} {qps / base:6.2f}")


def admin(port: int, statement: str) -> None:
    with pymysql.connect(host="127.0.0.1", port=port, user="admin", password=PASSWORD) as conn:
        conn.cursor().execute(statement)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["MYSQLPROXY_ADMIN_PASSWORD"] = PASSWORD
    results: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        print("starting a private MariaDB", file=sys.stderr)
        db = stack.enter_context(PrivateMariaDB())
        db.execute("CREATE DATABASE sbtest")
        sysbench(db.port, 1, 0, "prepare")
        logdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        admin_port = free_port()
        plain = stack.enter_context(
            ProxyProcess(db.address, extra_args=["--admin", f"127.0.0.1:{admin_port}",
                                                 "--log-level", "warning"])
        )
        metrics = stack.enter_context(
            ProxyProcess(db.address, extra_args=["--admin", "off", "--metrics",
                                                 "127.0.0.1:0", "--log-level", "warning"])
        )
        log_file = logdir / "slow.log"
        setups = {
            "no window (baseline)": (plain.port, "LOG OFF ALL"),
            "window logging every query (slowlog file)": (
                plain.port, f"LOG ON FOR 1h TO '{log_file}' FORMAT slowlog"),
            "viewer window: digests, ring for > 50ms": (
                plain.port, "LOG ON FOR 1h TO 'ring:bench' SLOWER THAN 50ms WITH DIGESTS"),
            "metrics endpoint on (--metrics)": (metrics.port, None),
        }
        sysbench(plain.port, args.threads, 3)  # warm up
        for round_number in range(args.rounds):
            for name in rotated(list(setups), round_number):
                port, statement = setups[name]
                admin(admin_port, "LOG OFF ALL")
                if statement and statement != "LOG OFF ALL":
                    admin(admin_port, statement)
                qps = sysbench(port, args.threads, args.duration)
                results.setdefault(name, []).append(qps)
                print(f"  round {round_number + 1}: {name}: {qps:,.0f} q/s", file=sys.stderr)
        admin(admin_port, "LOG OFF ALL")
        logged = sum(1 for line in log_file.open() if line.startswith("# Time:"))
    print_ratios(
        results,
        "no window (baseline)",
        f"sysbench oltp_point_select, {args.threads} thread(s), {args.duration} s x "
        f"{args.rounds} rounds, median q/s through the proxy",
    )
    print(f"(the slow log received {logged:,} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
