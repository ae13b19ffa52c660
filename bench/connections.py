"""Memory per connection: thousands of idle clients held through the proxy.

    python bench/connections.py                  # 5,000 clients
    python bench/connections.py --clients 8000

Starts the fake MySQL server (cheap greeting and OK, its own process) and `mysqlproxy
run` in front of it as it runs in production (its own process, uvloop), opens the
clients (each logs in and then sits idle), pings every one, and prints the proxy's
resident memory before and after, divided by the number of clients. A warm-up round of
200 clients, opened and closed first, keeps one-time costs (lazy imports, the first
buffers) out of the figure. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mysqlproxy.testing.manyclients import (  # noqa: E402
    FakeServerProcess,
    FileLimitTooLow,
    files_needed,
    hold,
    ping_all,
    raise_file_limit,
    rss_bytes,
)
from mysqlproxy.testing.proxyprocess import ProxyProcess  # noqa: E402

KIB = 1024
MIB = 1024 * 1024
WARM_UP = 200


async def measure(clients: int, proxy: ProxyProcess) -> dict[str, float]:
    assert proxy.address is not None
    warm = await hold(proxy.address, WARM_UP)
    await ping_all(warm.clients)
    for client in warm.clients:
        client.close()
    await asyncio.sleep(1.0)
    before = rss_bytes(proxy.pid)

    held = await hold(
        proxy.address, clients, progress=lambda n: print(f"  {n} connected", flush=True)
    )
    if held.failures:
        raise SystemExit(f"{len(held.failures)} clients failed, first: {held.failures[0]}")
    await asyncio.sleep(1.0)
    idle = rss_bytes(proxy.pid)
    started = time.monotonic()
    failures = await ping_all(held.clients)
    ping_seconds = time.monotonic() - started
    if failures:
        raise SystemExit(f"{len(failures)} pings failed, first: {failures[0]}")
    after = rss_bytes(proxy.pid)
    for client in held.clients:
        client.close()
    return {
        "clients": clients,
        "connect_seconds": held.seconds,
        "ping_seconds": ping_seconds,
        "rss_before": before,
        "rss_idle": idle,
        "rss_after_ping": after,
        "per_connection": (after - before) / clients,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    args = parser.parse_args()
    try:
        raise_file_limit(files_needed(args.clients))
    except FileLimitTooLow as exc:
        raise SystemExit(f"connections.py: {exc}") from None

    import uvloop

    with (
        FakeServerProcess() as fake,
        ProxyProcess(fake.address, extra_args=["--admin", "off", "--log-level", "warning"])
        as proxy,
    ):
        print(f"{args.clients} idle clients through the proxy (pid {proxy.pid}) to the "
              f"fake server at {fake.address}")
        result = uvloop.run(measure(args.clients, proxy))
    print(f"connected in {result['connect_seconds']:.1f}s "
          f"({args.clients / result['connect_seconds']:.0f}/s), "
          f"all pinged in {result['ping_seconds']:.2f}s")
    print(f"proxy RSS: {result['rss_before'] / MIB:.1f} MiB before, "
          f"{result['rss_idle'] / MIB:.1f} MiB with {args.clients} idle, "
          f"{result['rss_after_ping'] / MIB:.1f} MiB after a ping on each")
    print(f"memory per connection: {result['per_connection'] / KIB:.1f} KiB "
          "(client leg, backend leg, session and tracker)")


if __name__ == "__main__":
    main()
