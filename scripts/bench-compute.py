#!/usr/bin/env python3
"""Compute benchmarks, each beside a stock PostgreSQL 15 measured in the same run:

- `endpoint start` -> first query answered (vs `pg_ctl start` -> first query),
- pgbench -i -s SCALE load time,
- pgbench select-only and TPC-B TPS (CLIENTS clients, DURATION seconds each),
- page read latency seen from PostgreSQL (track_io_timing: I/O read time / blocks read of a
  cold-cache random index lookup; on the compute every such read is a GetPage round trip).

Usage: scripts/bench-compute.py [--scale 10] [--clients 4] [--duration 30]
Uses target/$BUILD_TYPE (default release if built, else debug) and pg_install/v15; runs
PostgreSQL as the `postgres` OS user when started as root. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = ROOT / "pg_install" / "v15"
STOCK_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
START_SAMPLES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_pg_user():
    if os.getuid() != 0:
        return None
    pw = pwd.getpwnam(PG_USER)

    def demote():
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return demote


def run(argv, env=None, pg_user=False, check=True, timeout=3600) -> str:
    res = subprocess.run(
        [str(a) for a in argv],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        preexec_fn=as_pg_user() if pg_user else None,
        timeout=timeout,
        check=False,
    )
    if check and res.returncode != 0:
        sys.exit(
            f"{' '.join(map(str, argv))} failed ({res.returncode}):\n{res.stderr[-3000:]}"
        )
    return res.stdout


def psql_argv(port: int, user: str, *sql: str) -> list:
    """psql running each of `sql` in one session against database postgres."""
    argv = [
        PG / "bin" / "psql",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        user,
        "-XAtq",
    ]
    for statement in sql:
        argv += ["-c", statement]
    return [*argv, "postgres"]


def wait_query(port: int, user: str, deadline_s: float = 120) -> None:
    until = time.monotonic() + deadline_s
    while True:
        res = subprocess.run(
            psql_argv(port, user, "select 1"),
            capture_output=True,
            check=False,
        )
        if res.returncode == 0:
            return
        if time.monotonic() > until:
            sys.exit(f"no answer on port {port}: {res.stderr.decode()[-500:]}")
        time.sleep(0.005)


def pgbench(port: int, user: str, *args) -> str:
    return run(
        [
            PG / "bin" / "pgbench",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-U",
            user,
            *args,
            "postgres",
        ]
    )


def tps(out: str) -> float:
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    if not m:
        sys.exit(f"no tps in pgbench output:\n{out[-2000:]}")
    return float(m.group(1))


def read_latency_us(port: int, user: str, scale: int) -> tuple[float, int]:
    """Mean µs per block read of a cold random index lookup, and the block count."""
    ids = ",".join(str(1 + (i * 7919) % (scale * 100000)) for i in range(300))
    plan = run(
        psql_argv(
            port,
            user,
            "set track_io_timing = on",
            f"explain (analyze, buffers) select abalance from pgbench_accounts where aid in ({ids})",
        )
    )
    # The top node's lines (before "Planning:") count the whole execution.
    execution = plan.split("Planning:")[0]
    b = re.search(r"Buffers: shared (?:hit=\d+ )?read=(\d+)", execution)
    m = re.search(r"I/O Timings: (?:shared(?:/local)? )?read=([\d.]+)", execution)
    if not b or not m or int(b.group(1)) == 0:
        sys.exit(f"cannot read the block reads and I/O time from:\n{plan}")
    reads = int(b.group(1))
    return float(m.group(1)) * 1000 / reads, reads


class Neon:
    def __init__(self, tmp: Path, bindir: Path):
        self.repo = tmp / "neon"
        self.bin = bindir / "neon_local"
        self.env = {"NEON_REPO_DIR": str(self.repo)}
        self.port = free_port()

    def cli(self, *args) -> str:
        return run([self.bin, *args], env=self.env)

    def setup(self) -> None:
        self.cli(
            "init",
            f"--pageserver-pg-port={free_port()}",
            f"--pageserver-http-port={free_port()}",
        )
        self.cli("start")
        self.cli("tenant", "create", "--set-default")
        self.cli(
            "endpoint",
            "create",
            "main",
            f"--pg-port={self.port}",
            f"--http-port={free_port()}",
        )

    def start_ms(self) -> float:
        t0 = time.monotonic()
        self.cli("endpoint", "start", "main")
        wait_query(self.port, "cloud_admin")
        return (time.monotonic() - t0) * 1000

    def stop(self) -> None:
        self.cli("endpoint", "stop", "main")

    def teardown(self) -> None:
        run([self.bin, "stop"], env=self.env, check=False)


class Stock:
    """A plain PostgreSQL on local disk: Debian's stock build, or our own build without neon
    (same binaries and assertions as the compute: isolates the cost of remote storage)."""

    def __init__(self, tmp: Path, bindir: Path = STOCK_BIN, name: str = "stock"):
        self.dir = tmp / name
        self.bin = bindir
        self.port = free_port()

    def setup(self) -> None:
        self.dir.mkdir()
        if os.getuid() == 0:
            shutil.chown(self.dir, PG_USER, PG_USER)
        run(
            [
                self.bin / "initdb",
                "-D",
                self.dir / "data",
                "-U",
                "cloud_admin",
                "-A",
                "trust",
            ],
            pg_user=True,
        )
        with open(self.dir / "data" / "postgresql.conf", "a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n"
            )

    def start_ms(self) -> float:
        t0 = time.monotonic()
        run(
            [
                self.bin / "pg_ctl",
                "-D",
                self.dir / "data",
                "-l",
                self.dir / "log",
                "start",
            ],
            pg_user=True,
        )
        wait_query(self.port, "cloud_admin")
        return (time.monotonic() - t0) * 1000

    def stop(self) -> None:
        run(
            [self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "stop"],
            pg_user=True,
        )

    def teardown(self) -> None:
        run(
            [self.bin / "pg_ctl", "-D", self.dir / "data", "-m", "immediate", "stop"],
            pg_user=True,
            check=False,
        )


def bench(node, args) -> dict[str, str]:
    res: dict[str, str] = {}
    starts = []
    node.start_ms()
    t0 = time.monotonic()
    pgbench(node.port, "cloud_admin", "-i", "-s", args.scale, "-q")
    res["pgbench -i load, s"] = f"{time.monotonic() - t0:.1f}"
    for _ in range(START_SAMPLES):
        node.stop()
        starts.append(node.start_ms())
    res["start -> first query, ms (median)"] = f"{statistics.median(starts):.0f}"
    lat, blocks = read_latency_us(node.port, "cloud_admin", args.scale)
    res["cold block read, µs (mean)"] = f"{lat:.0f} ({blocks} blocks)"
    common = [
        "-c",
        args.clients,
        "-j",
        min(args.clients, 2),
        "-T",
        args.duration,
        "--no-vacuum",
    ]
    res["select-only TPS"] = (
        f"{tps(pgbench(node.port, 'cloud_admin', '-S', *common)):.0f}"
    )
    res["TPC-B TPS"] = f"{tps(pgbench(node.port, 'cloud_admin', *common)):.0f}"
    node.stop()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--duration", type=int, default=30)
    args = ap.parse_args()
    profile = os.environ.get("BUILD_TYPE") or (
        "release" if (ROOT / "target/release/neon_local").exists() else "debug"
    )
    bindir = ROOT / "target" / profile
    tmp = Path(tempfile.mkdtemp(prefix="bench-compute-"))
    os.chmod(tmp, 0o755)
    nodes = {
        "compute (neon-rs)": Neon(tmp, bindir),
        "our PostgreSQL build, local disk": Stock(tmp, PG / "bin", "ours"),
        "stock PostgreSQL 15 (Debian)": Stock(tmp),
    }
    rows = {}
    try:
        for node in nodes.values():
            node.setup()
        for name, node in nodes.items():
            rows[name] = bench(node, args)
    finally:
        for node in nodes.values():
            node.teardown()
    metrics = list(next(iter(rows.values())))
    print(
        f"\nscale {args.scale}, {args.clients} clients, {args.duration} s per pgbench run, binaries: {profile}\n"
    )
    print("| | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for m in metrics:
        print(f"| {m} | " + " | ".join(r[m] for r in rows.values()) + " |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
