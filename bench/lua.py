"""What a Lua script costs: throughput through the proxy without a script, and with
log.lua (a script defining only read_query, the classic one).

    .venv/bin/python bench/lua.py [--duration 15] [--rounds 3] [--threads 1]

sysbench oltp_point_select with prepared statements off (every query is a COM_QUERY,
so log.lua writes a line for each), through `mysqlproxy run` without a script and
`mysqlproxy run --lua-script lua_compat/scripts/log.lua`, in rotation; the median of the
rounds counts. Target (issue 5): log.lua keeps >= 0.85 of the no-script throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import observers  # noqa: E402  (bench/observers.py: the same sysbench run)

from mysqlproxy.testing.privatedb import PrivateMariaDB  # noqa: E402
from mysqlproxy.testing.proxyprocess import ProxyProcess  # noqa: E402

LOG_LUA = ROOT / "lua_compat" / "scripts" / "log.lua"


def sysbench(port: int, threads: int, seconds: int, command: str = "run") -> float:
    # prepared statements off: every query a COM_QUERY, which log.lua writes down
    return observers.sysbench(port, threads, seconds, command, "--db-ps-mode=disable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        print("starting a private MariaDB", file=sys.stderr)
        db = stack.enter_context(PrivateMariaDB())
        db.execute("CREATE DATABASE sbtest")
        sysbench(db.port, 1, 0, "prepare")
        logdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        log_file = logdir / "queries.log"
        os.environ["LOG_FILE"] = str(log_file)  # read by log.lua in the proxy process
        common = ["--admin", "off", "--log-level", "warning"]
        setups = {
            "no script (baseline)": stack.enter_context(
                ProxyProcess(db.address, extra_args=common)
            ),
            "log.lua (read_query only)": stack.enter_context(
                ProxyProcess(db.address, extra_args=[*common, "--lua-script", str(LOG_LUA)])
            ),
        }
        for proxy in setups.values():
            sysbench(proxy.port, args.threads, 3)  # warm up
        for round_number in range(args.rounds):
            for name in observers.rotated(list(setups), round_number):
                qps = sysbench(setups[name].port, args.threads, args.duration)
                results.setdefault(name, []).append(qps)
                print(f"  round {round_number + 1}: {name}: {qps:,.0f} q/s", file=sys.stderr)
        logged = sum(1 for _ in log_file.open()) if log_file.exists() else 0
    observers.print_ratios(
        results,
        "no script (baseline)",
        f"sysbench oltp_point_select (prepared statements off), {args.threads} thread(s), "
        f"{args.duration} s x {args.rounds} rounds, median q/s through the proxy",
    )
    print(f"(log.lua wrote {logged:,} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
