"""The relay benchmark: the same workloads directly and through the proxy, in one run.

    python bench/run.py              # the full run (about 4 minutes)
    python bench/run.py --quick      # a smoke run (about 1 minute)
    python bench/run.py --socat      # also through socat: the cost of the hop alone

Starts a private MariaDB (mysqlproxy.testing.privatedb) and `mysqlproxy run` as a
separate process in front of it (uvloop, no addons: the relay as it runs with logging
off), then measures, directly and through the proxy:

- sysbench oltp_point_select at 1 and 8 threads, with server-side prepared statements
  (--db-ps-mode=auto) and without (disable): queries per second;
- a 1,000,000-row SELECT read by the mariadb client (--quick, to /dev/null): seconds,
  best of 3.

Prints each figure, the ratio proxy/direct and the target from the issue, the proxy's
CPU use and how busy the rest of the machine was, and writes everything to
bench/results/<time>.json. The sides take turns in a rotating order, so a change in
background load does not always hit the same one. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mysqlproxy.testing.privatedb import (  # noqa: E402
    PrivateMariaDB,
    find_program,
    free_port,
    spawn_owned,
)
from mysqlproxy.testing.proxyprocess import ProxyProcess  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"

# Targets from the issue (a 2-core machine where client, proxy and server share the
# cores). For scale: mysql-proxy 0.8.5 (C) reached 0.68 and 0.33 for point selects.
POINT_SELECT_TARGETS = {1: 0.75, 8: 0.40}
BIG_SELECT_TARGET = 1.15


@dataclass
class Figure:
    """One benchmark figure, measured directly, through the proxy and optionally through
    a reference relay (socat: the cost of the extra hop alone)."""

    name: str
    unit: str
    higher_is_better: bool
    target: float | None  # the ratio proxy/direct to reach (min or max, see above)
    runs: dict[str, list[float]] = field(default_factory=dict)  # via -> one value per run
    proxy_cpu: list[float] = field(default_factory=list)  # share of one core, per run
    reference_cpu: dict[str, list[float]] = field(default_factory=dict)  # the same, by via
    # Per run: the share of the machine's CPU time used by processes other than the
    # benchmark's own (server, relays, clients): how noisy the measurement was.
    foreign_cpu: list[float] = field(default_factory=list)
    details: list[dict[str, object]] = field(default_factory=list)
    summary: str = "median"  # how runs combine: median, or best for timings

    def value(self, via: str) -> float:
        runs = self.runs.get(via)
        if not runs:
            return float("nan")
        if self.summary == "best":
            return max(runs) if self.higher_is_better else min(runs)
        return statistics.median(runs)

    def ratio(self, via: str = "proxy") -> float:
        direct = self.value("direct")
        return self.value(via) / direct if direct else float("nan")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        ratio = self.ratio()
        return ratio >= self.target if self.higher_is_better else ratio <= self.target

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data.update(
            values={via: self.value(via) for via in self.runs},
            ratios={via: self.ratio(via) for via in self.runs if via != "direct"},
            target_met=self.met,
        )
        return data


# --- the workloads --------------------------------------------------------------------


class Bench:
    """One benchmark run: set-up, the figures, the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sysbench = find_program("sysbench", package="sysbench")
        self.db: PrivateMariaDB | None = None
        self.proxy: ProxyProcess | None = None
        self.ports: list[tuple[str, int]] = []  # (via, port), rotated for each run
        self.relay_pids: list[int] = []  # the proxy and socat: the benchmark's own CPU
        self.reference_pids: dict[str, int] = {}  # via -> pid of socat, the bare relay
        self.figures: list[Figure] = []
        self.profiles: list[str] = []
        self.stamp = time.strftime("%Y%m%d-%H%M%S")

    def say(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # set-up

    def prepare(self, db: PrivateMariaDB) -> None:
        args = self.args
        self.say(f"preparing sysbench table ({args.table_size:,} rows)")
        db.execute("CREATE DATABASE sbtest; CREATE DATABASE bench")
        self._sysbench(db.port, ["--tables=1", f"--table-size={args.table_size}", "prepare"])
        self.say(f"preparing the {args.rows:,}-row table")
        # A few typical columns; about 60 bytes a row in the text protocol.
        db.execute(
            f"""
            CREATE TABLE bench.big (
                id INT NOT NULL PRIMARY KEY,
                k INT NOT NULL,
                name VARCHAR(64) NOT NULL,
                amount DECIMAL(12, 2) NOT NULL,
                created DATETIME NOT NULL
            ) ENGINE=InnoDB
            SELECT seq AS id,
                   seq * 7919 % 100000 AS k,
                   CONCAT('row-', seq, '-', LEFT(MD5(seq), 20)) AS name,
                   (seq % 100000) / 100 AS amount,
                   '2024-01-01' + INTERVAL seq SECOND AS created
            FROM seq_1_to_{args.rows};
            ANALYZE TABLE bench.big;
            """,
            database="bench",
        )

    def start_socat(self, stack: contextlib.ExitStack, backend_port: int) -> int:
        """socat as a reference relay: bytes through, no protocol work, in C."""
        port = free_port()
        argv = [
            find_program("socat", package="socat"),
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay",
            f"TCP:127.0.0.1:{backend_port},nodelay",
        ]
        return self._start_reference(stack, "socat", argv, port)

    def start_bare_relay(self, stack: contextlib.ExitStack, backend_port: int) -> int:
        """bench/bare_relay.py: bytes through, no protocol work, in Python on uvloop."""
        port = free_port()
        argv = [self.args.proxy_python, str(ROOT / "bench" / "bare_relay.py"), str(port),
                str(backend_port)]
        return self._start_reference(stack, "bare", argv, port)

    def _start_reference(
        self, stack: contextlib.ExitStack, via: str, argv: list[str], port: int
    ) -> int:
        process = spawn_owned(argv, stderr=subprocess.DEVNULL)
        self.relay_pids.append(process.pid)
        self.reference_pids[via] = process.pid
        stack.callback(process.wait, 10)
        stack.callback(process.terminate)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return port
            time.sleep(0.05)
        raise RuntimeError(f"the reference relay {via} did not start listening")

    def _sysbench(self, port: int, extra: list[str]) -> str:
        argv = [
            self.sysbench,
            "oltp_point_select",
            "--mysql-host=127.0.0.1",
            f"--mysql-port={port}",
            "--mysql-user=root",
            "--mysql-password=",
            "--mysql-db=sbtest",
            "--tables=1",
            f"--table-size={self.args.table_size}",
            *extra,
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"sysbench failed ({' '.join(argv)}):\n{result.stdout[-2000:]}{result.stderr}"
            )
        return result.stdout

    # measuring

    def targets(self) -> list[tuple[str, int]]:
        """Where to run next, (via, port) each; the order rotates from call to call so
        that no side always runs first (or always right after the same other side)."""
        ports = self.ports
        ports.append(ports.pop(0))
        return list(ports)

    @contextlib.contextmanager
    def measure(self, figure: Figure, via: str) -> Iterator[dict[str, float]]:
        """Around one run: the proxy's CPU use (share of one core) when the run goes
        through it, and how much CPU the rest of the machine used meanwhile."""
        assert self.db is not None and self.db.process is not None
        usage: dict[str, float] = {}
        ours = [self.db.process.pid, *self.relay_pids]
        machine0, ours0, wall0 = machine_cpu(), sum(map(process_cpu, ours)), time.monotonic()
        children0 = children_cpu()
        proxy0 = self.proxy.cpu_seconds() if via == "proxy" and self.proxy else 0.0
        reference = self.reference_pids.get(via)
        reference0 = process_cpu(reference) if reference else 0.0
        profiler = self._start_profiler(figure) if via == "proxy" else None
        try:
            yield usage
        finally:
            self._stop_profiler(profiler)
            wall = time.monotonic() - wall0
            busy, total = (b - a for a, b in zip(machine0, machine_cpu(), strict=True))
            own = sum(map(process_cpu, ours)) - ours0 + children_cpu() - children0
            usage["foreign_cpu"] = round(max(0.0, busy - own) / total, 3) if total else 0.0
            figure.foreign_cpu.append(usage["foreign_cpu"])
            if via == "proxy" and self.proxy is not None:
                usage["proxy_cpu"] = round((self.proxy.cpu_seconds() - proxy0) / wall, 3)
                figure.proxy_cpu.append(usage["proxy_cpu"])
            if reference:
                usage["relay_cpu"] = round((process_cpu(reference) - reference0) / wall, 3)
                figure.reference_cpu.setdefault(via, []).append(usage["relay_cpu"])

    def _start_profiler(self, figure: Figure) -> subprocess.Popen[bytes] | None:
        if not self.args.profile or self.proxy is None:
            return None
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", figure.name.lower()).strip("-")
        out = RESULTS_DIR / f"profile-{self.stamp}-{slug}-{len(figure.proxy_cpu)}.txt"
        self.profiles.append(str(out))
        return subprocess.Popen(
            [self.args.py_spy, "record", "--pid", str(self.proxy.pid), "--format", "raw",
             "--rate", "250", "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def _stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                profiler.wait(30)
            except subprocess.TimeoutExpired:
                profiler.kill()

    def point_select(self, threads: int, ps_mode: str) -> None:
        args = self.args
        figure = Figure(
            name=f"point select, {threads} thread{'s' if threads > 1 else ''}, "
            f"prepared statements {'on' if ps_mode == 'auto' else 'off'}",
            unit="q/s",
            higher_is_better=True,
            target=POINT_SELECT_TARGETS.get(threads),
        )
        self.figures.append(figure)
        for round_number in range(args.rounds):
            for via, port in self.targets():
                self.say(f"  {figure.name}: {via} (round {round_number + 1}/{args.rounds})")
                with self.measure(figure, via) as usage:
                    out = self._sysbench(
                        port,
                        [
                            f"--threads={threads}",
                            f"--db-ps-mode={ps_mode}",
                            f"--time={args.warmup + args.duration}",
                            # Counters reset after the warm-up: the final report
                            # covers the measured seconds only.
                            f"--report-checkpoints={args.warmup}",
                            "run",
                        ],
                    )
                report = parse_sysbench(out)
                figure.runs.setdefault(via, []).append(report["qps"])
                figure.details.append(
                    {"via": via, "round": round_number + 1, **usage, **report}
                )
                if report["errors"] or report["reconnects"]:
                    self.say(f"    sysbench reported errors: {report}")

    def big_select(self) -> None:
        args = self.args
        assert self.db is not None
        figure = Figure(
            name=f"{args.rows:,}-row SELECT, mariadb client to /dev/null",
            unit="s",
            higher_is_better=False,
            target=BIG_SELECT_TARGET,
            summary="best",
        )
        self.figures.append(figure)
        query = "SELECT id, k, name, amount, created FROM bench.big"
        for repetition in range(args.repeat):
            for via, port in self.targets():
                self.say(f"  {figure.name}: {via} ({repetition + 1}/{args.repeat})")
                argv = self.db.client_command(port, "--batch", "--quick", "-e", query)
                with self.measure(figure, via) as usage:
                    started = time.perf_counter()
                    result = subprocess.run(
                        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
                    )
                    elapsed = time.perf_counter() - started
                if result.returncode != 0:
                    raise RuntimeError(f"mariadb client failed: {result.stderr.decode()}")
                figure.runs.setdefault(via, []).append(round(elapsed, 4))
                figure.details.append(
                    {"via": via, "round": repetition + 1, **usage, "seconds": elapsed}
                )

    def warm_up(self) -> None:
        """Load the tables into the buffer pool and the relays' code into the CPU caches
        before anything counts."""
        assert self.db is not None
        self.say("warming up")
        for _, port in self.ports:
            self._sysbench(port, ["--threads=2", f"--time={max(1, self.args.warmup)}", "run"])
        self.db.execute("SELECT COUNT(*), SUM(k) FROM bench.big", database="bench")

    def run(self) -> int:
        args = self.args
        started = time.time()
        load_before = os.getloadavg()
        with contextlib.ExitStack() as stack:
            self.say("starting a private MariaDB")
            self.db = stack.enter_context(PrivateMariaDB())
            self.prepare(self.db)
            backend = self.db.unix_address if args.backend_socket else self.db.address
            assert self.db.directory is not None
            proxy_log = stack.enter_context(open(self.db.directory / "proxy.log", "wb"))
            self.proxy = stack.enter_context(
                ProxyProcess(
                    backend,
                    python=args.proxy_python,
                    # No admin interface: nothing to configure, and no clash with a
                    # proxy already on its default port.
                    extra_args=["--admin", "off", "--log-level", "warning", *args.proxy_arg],
                    stderr=proxy_log,
                )
            )
            if args.proxy_nice:
                os.setpriority(os.PRIO_PROCESS, self.proxy.pid, args.proxy_nice)
            self.say(f"proxy on {self.proxy.address} -> {backend} (pid {self.proxy.pid})")
            self.ports = [("direct", self.db.port), ("proxy", self.proxy.port)]
            self.relay_pids = [self.proxy.pid]
            if args.socat:
                self.ports.append(("socat", self.start_socat(stack, self.db.port)))
            if args.bare:
                self.ports.append(("bare", self.start_bare_relay(stack, self.db.port)))
            self.warm_up()
            for threads in args.threads:
                for ps_mode in ("auto", "disable"):
                    self.point_select(threads, ps_mode)
            self.big_select()
        report = {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
            "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
            "machine": machine_info(load_before),
            "options": {k: v for k, v in vars(args).items() if k != "py_spy"},
            "figures": [f.as_json() for f in self.figures],
            "profiles": self.profiles,
        }
        print(format_table(self.figures, args))
        out = Path(args.output) if args.output else RESULTS_DIR / f"{self.stamp}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        load = " ".join(f"{x:.2f}" for x in load_before)
        print(f"load average before the run: {load}; results in {out}")
        if self.profiles:
            print("py-spy profiles (collapsed stacks): " + ", ".join(self.profiles))
        return 0


# --- CPU accounting (Linux /proc) -------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat", "rb") as stat:
        fields = [int(x) for x in stat.readline().split()[1:9]]
    total = sum(fields)
    return (total - fields[3] - fields[4]) / _TICK, total / _TICK


def process_cpu(pid: int) -> float:
    """CPU seconds of a process, its reaped children, and its children still running
    (socat forks one per connection)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as children:
            for child in children.read().split():
                with contextlib.suppress(OSError), open(f"/proc/{int(child)}/stat", "rb") as f:
                    ticks += sum(int(x) for x in f.read().rsplit(b")", 1)[1].split()[11:13])
    except OSError:
        return 0.0
    return ticks / _TICK


def children_cpu() -> float:
    """CPU seconds of this process and its finished children (sysbench, the client)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + done.ru_utime + done.ru_stime


# --- parsing and reporting -------------------------------------------------------------

_SYSBENCH_FIELDS = {
    "qps": re.compile(r"^\s*queries:\s+\d+\s+\(([\d.]+) per sec\.\)", re.M),
    "errors": re.compile(r"^\s*ignored errors:\s+(\d+)", re.M),
    "reconnects": re.compile(r"^\s*reconnects:\s+(\d+)", re.M),
    "latency_avg_ms": re.compile(r"^\s*avg:\s+([\d.]+)", re.M),
    "latency_p95_ms": re.compile(r"^\s*95th percentile:\s+([\d.]+)", re.M),
}


def parse_sysbench(output: str) -> dict[str, float]:
    """The figures of sysbench's last report (after the warm-up checkpoint)."""
    report: dict[str, float] = {}
    for key, pattern in _SYSBENCH_FIELDS.items():
        found = pattern.findall(output)
        if not found:
            raise RuntimeError(f"sysbench output has no {key}:\n{output[-2000:]}")
        report[key] = float(found[-1])
    return report


def format_table(figures: list[Figure], args: argparse.Namespace) -> str:
    references = [via for via in ("socat", "bare") if any(via in f.runs for f in figures)]
    header = (
        f"{'benchmark':<54} {'direct':>11} {'proxy':>11} {'proxy/direct':>12}  "
        f"{'target':<14}"
    )
    for via in references:
        header += f" {via + '/direct':>12}"
    lines = ["", header + f" {'proxy CPU':>15} {'others':>7}"]
    for f in figures:
        proxy = f.value("proxy")
        fmt = "{:,.0f} " if f.unit == "q/s" else "{:.2f} "
        target = ""
        if f.target is not None:
            target = f"{'>=' if f.higher_is_better else '<='} {f.target:.2f}"
            target += "" if f.met else " MISSED"
        cpu = ""
        if f.proxy_cpu:
            share = statistics.median(f.proxy_cpu)
            cpu = f"{share * 100:.0f}%"
            if f.unit == "q/s" and proxy:
                cpu += f" {share / proxy * 1e6:.0f} us/q"
        line = (
            f"{f.name:<54} {fmt.format(f.value('direct')) + f.unit:>11}"
            f" {fmt.format(proxy) + f.unit:>11} {f.ratio():>12.2f}  {target:<14}"
        )
        for via in references:
            line += f" {f.ratio(via):>12.2f}"
        foreign = f"{max(f.foreign_cpu) * 100:.0f}%" if f.foreign_cpu else ""
        lines.append(line + f" {cpu:>15} {foreign:>7}")
    for f in figures:
        if f.unit != "q/s" or not f.reference_cpu:
            continue
        per_query = [f"proxy {statistics.median(f.proxy_cpu) / f.value('proxy') * 1e6:.0f}"]
        for via, shares in f.reference_cpu.items():
            per_query.append(f"{via} {statistics.median(shares) / f.value(via) * 1e6:.0f}")
        lines.append(f"  CPU per query, {f.name}: {', '.join(per_query)} us")
    lines.append(
        f"\npoint selects: median of {args.rounds} run(s) of {args.duration}s after "
        f"{args.warmup}s warm-up; big SELECT: best of {args.repeat}; proxy CPU: share of "
        "one core used by the proxy process during proxied runs, and its CPU time per query;\n"
        "others: the largest share of the machine's CPU that other processes used during "
        "one of the figure's runs (background noise)"
    )
    return "\n".join(lines)


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine_info(load_before: tuple[float, float, float]) -> dict[str, object]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        uvloop_version: str | None = version("uvloop")
    except PackageNotFoundError:
        uvloop_version = None
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "uvloop": uvloop_version,
        "mariadbd": _version([find_program("mariadbd", "mysqld"), "--version"]),
        "sysbench": _version([find_program("sysbench"), "--version"]),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


# --- command line ---------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the proxy against a direct connection (see bench/README.md)."
    )
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3 s per figure, 200,000 rows, 1 repetition")
    parser.add_argument("--duration", type=int, help="seconds per sysbench run (default 20)")
    parser.add_argument("--warmup", type=int,
                        help="seconds of each sysbench run not counted (default 3)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="sysbench runs per figure and side; the median counts (default 1)")
    parser.add_argument("--rows", type=int,
                        help="rows in the big SELECT (default 1,000,000)")
    parser.add_argument("--repeat", type=int,
                        help="big SELECT repetitions per side; the best counts (default 3)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8],
                        help="sysbench thread counts (default 1 8)")
    parser.add_argument("--table-size", type=int, default=100_000,
                        help="rows in the sysbench table (default 100,000)")
    parser.add_argument("--backend-socket", action="store_true",
                        help="the proxy reaches the server over its Unix socket, not TCP")
    parser.add_argument("--socat", action="store_true",
                        help="also measure socat, a relay that does no protocol work, as a "
                        "reference for the cost of the extra hop")
    parser.add_argument("--bare", action="store_true",
                        help="also measure bench/bare_relay.py, a Python relay on uvloop "
                        "that does no protocol work: what Python and asyncio cost alone")
    parser.add_argument("--proxy-nice", type=int, default=0,
                        help="scheduling niceness for the proxy process (negative: more CPU "
                        "share; needs root)")
    parser.add_argument("--proxy-python", default=sys.executable,
                        help="the Python that runs the proxy and the bare relay, with "
                        "mysqlproxy and uvloop installed (default: this one)")
    parser.add_argument("--proxy-arg", action="append", default=[],
                        help="an extra argument for `mysqlproxy run` (repeatable)")
    parser.add_argument("--profile", action="store_true",
                        help="record each proxied run with py-spy (collapsed stacks in "
                        "bench/results/)")
    parser.add_argument("--output", help="where to write the JSON results")
    args = parser.parse_args(argv)
    quick = args.quick
    args.duration = args.duration or (3 if quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    args.rows = args.rows or (200_000 if quick else 1_000_000)
    args.repeat = args.repeat or (1 if quick else 3)
    args.py_spy = None
    if args.profile:
        args.py_spy = shutil.which("py-spy") or shutil.which(
            "py-spy", path=str(Path(sys.executable).parent)
        )
        if args.py_spy is None:
            parser.error("--profile needs py-spy: pip install py-spy")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the server and proxy are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return Bench(args).run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # PrivateDBError, ProxyProcessError, a failed client
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
