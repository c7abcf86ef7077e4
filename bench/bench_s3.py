"""Benchmark: `sbbackup create` of a >= 500 MB plain dump to S3 (SeaweedFS on 127.0.0.1)
against the same create to a local directory: peak RSS (wait4) and wall time of each, runs
interleaved (local, S3, local, S3...), medians reported; and `list --json` of the resulting
catalog. It creates a throwaway cluster and a table of md5 text (about 80 bytes a row).
Usage: python bench/bench_s3.py [--rows 6500000] [--runs 2] [--level 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.pgcluster import create_cluster, destroy_cluster  # noqa: E402
from helpers.s3server import start_seaweedfs  # noqa: E402


def run_wait4(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stderr is not None
        raise SystemExit(f"{cmd[:3]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=6_500_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--level", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-bench-s3-", dir="/tmp"))
    pg = create_cluster()
    server = start_seaweedfs(work / "s3")
    try:
        pg.psql("CREATE DATABASE bench")
        pg.psql(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v "
            f"FROM generate_series(1, {args.rows}) g",
            db="bench",
        )
        dump_env = {**os.environ, **pg.env()}
        wall, _ = run_wait4(
            ["pg_dump", "-Fp", "-d", pg.url("bench"), "-f", str(work / "plain.sql")], dump_env
        )
        dump_size = (work / "plain.sql").stat().st_size
        (work / "plain.sql").unlink()
        bucket = server.new_bucket()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DB_BACKUP"))}
        base.update(server.env())
        base.update(
            DATABASE_URL=pg.url("bench"),
            DB_BACKUP_COMPRESSION_LEVEL=str(args.level),
            SBBACKUP_STATE_DIR=str(work / "state"),
        )
        targets = {"local": str(work / "local"), "s3": f"s3://{bucket}/bench"}
        results: dict[str, list[tuple[float, int]]] = {k: [] for k in targets}
        sb = [sys.executable, "-m", "sbbackup"]
        for _ in range(args.runs):
            for name, path in targets.items():
                results[name].append(run_wait4([*sb, "create"], {**base, "DB_BACKUP_PATH": path}))
        list_wall, _ = run_wait4([*sb, "list", "--json"], {**base, "DB_BACKUP_PATH": targets["s3"]})
        print(f"plain dump: {dump_size / 1e6:.0f} MB ({args.rows} rows), pg_dump -Fp {wall:.1f} s")
        print(f"zstd level {args.level}, {args.runs} runs each, interleaved; medians")
        print("| target | wall s | MB/s of dump | peak RSS MiB |")
        print("| --- | --- | --- | --- |")
        med = {}
        for name, rows in results.items():
            w = statistics.median(r[0] for r in rows)
            rss = max(r[1] for r in rows) / 1024
            med[name] = w
            print(f"| {name} | {w:.2f} | {dump_size / 1e6 / w:.0f} | {rss:.0f} |")
        print(f"S3 upload throughput vs local disk: {med['local'] / med['s3']:.2f}x")
        print(f"list --json on S3 ({args.runs} backups): {list_wall:.2f} s")
    finally:
        server.stop()
        destroy_cluster(pg)


if __name__ == "__main__":
    main()
