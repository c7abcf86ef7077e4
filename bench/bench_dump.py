"""Benchmark: `sbbackup create` against bare `pg_dump -Fp > /dev/null` on the same database.

Reports wall-time ratios and peak RSS, all from processes started by this script (the same
process tree). It creates a throwaway cluster and a `pgbench -i -s SCALE` database unless
DATABASE_URL is set. Usage: python bench/bench_dump.py [--scale 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def timed(cmd: list[str], env: dict[str, str], stdout: int | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command and its waited-for children."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        assert proc.stderr is not None
        raise SystemExit(f"{cmd[:3]} failed: {proc.stderr.read().decode()}")
    return wall, usage.ru_maxrss


def best(runs: int, cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    results = [timed(cmd, env) for _ in range(runs)]
    return min(r[0] for r in results), max(r[1] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--encrypt", action="store_true", help="also measure zstd + age")
    args = ap.parse_args()
    cluster = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        from helpers.pgcluster import pgbench_cluster

        cluster = pgbench_cluster(args.scale)
        url = cluster.url("bench")
    try:
        run(url, args)
    finally:
        if cluster is not None:
            from helpers.pgcluster import destroy_cluster

            destroy_cluster(cluster)


def run(url: str, args: argparse.Namespace) -> None:
    from sbbackup.engines.postgresql.conn import PgConn

    conn = PgConn.source(url, {})
    env = dict(os.environ, PGPASSWORD=conn.password or "")
    with tempfile.TemporaryDirectory() as tmp:
        benv = dict(os.environ, DATABASE_URL=url, DB_BACKUP_PATH=tmp)
        base, base_rss = best(args.runs, ["pg_dump", "-Fp", "-d", conn.conninfo()], env)
        print(f"pg_dump -Fp > /dev/null: {base:.2f}s  peak RSS {base_rss / 1024:.0f} MiB")
        sb = [sys.executable, "-m", "sbbackup", "create"]
        variants = [
            ("create (zstd 3, default)", [], {}),
            ("create (zstd 1)", ["--level", "1"], {}),
            ("create (no row counts)", [], {"DB_BACKUP_ROW_COUNTS": "false"}),
            ("create (no compression)", ["--no-compress"], {}),
        ]
        if args.encrypt:
            key = Path(tmp) / "key.txt"
            subprocess.run(
                [sys.executable, "-m", "sbbackup", "keygen", "--output", str(key)],
                env=benv,
                check=True,
                capture_output=True,
            )
            enc_env = {
                "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": str(key),
                "DB_BACKUP_ENCRYPTION_RECIPIENTS": _recipient(key),
            }
            variants.append(("create (zstd 3 + age)", ["--encrypt"], enc_env))
            variants.append(("create (zstd 1 + age)", ["--encrypt", "--level", "1"], enc_env))
        for label, extra, extra_env in variants:
            wall, rss = best(args.runs, [*sb, *extra], {**benv, **extra_env})
            print(
                f"{label:28s} {wall:6.2f}s  ratio {wall / base:4.2f}x  "
                f"peak RSS {rss / 1024:.0f} MiB"
            )
        sizes = sorted(p.stat().st_size for p in Path(tmp).glob("*.zst*"))
        if sizes:
            print(f"stored sizes: {', '.join(f'{s / 2**20:.1f} MiB' for s in sizes)}")
    print(f"(self peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


def _recipient(key: Path) -> str:
    for line in key.read_text().splitlines():
        if line.startswith("# public key: "):
            return line.split(": ", 1)[1]
    raise SystemExit("no public key in the generated identity")


if __name__ == "__main__":
    main()
