"""Benchmark: the small commands cron and scripts call often, as whole processes.

Times `sbbackup --help`, `sbbackup list --json` and `sbbackup list` (the human table, to a
pipe) over a backup path holding N backups (default 10,000): each a manifest shaped like the
ones `create` writes (database, compression, contents with a dozen tables, writer) and a data
file of the size the manifest records. One backup in ten is `failed` (no data file).

Every variant is a whole child process started the way a user starts it (the console script
beside --python, i.e. `.venv/bin/sbbackup`; give --python twice to compare two checkouts),
run in rounds: each round runs every variant once, the order reversed every other round, so
drift and cache state hit all alike. Medians
(and the best) of wall time and of CPU time (user+sys of the child, from wait4): on a shared
machine CPU time is the steadier figure. The targets of issue 14 are printed beside them:
`--help` under 150 ms, `list --json` of 10,000 under 1 s.

Usage: .venv/bin/python bench/bench_cli.py [--count 10000] [--runs 7] \
           [--python OTHER/.venv/bin/python --python .venv/bin/python]   # to compare
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

TARGETS = {"--help": 0.150, "list --json": 1.0}


def manifest(bid: str, when: datetime, i: int) -> dict[str, object]:
    """A manifest as `create` writes it (sqlite engine, plain format, zstd)."""
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    failed = i % 10 == 0
    size = 4096 + i % 977
    return {
        "checksum": None if failed else f"{i:064x}",
        "checksumAlgorithm": "sha256",
        "completedAt": stamp,
        "compression": {"algorithm": "zstd", "frameChecksum": True, "level": 3},
        "contentChecksum": None if failed else f"{i * 7:064x}",
        "contents": None
        if failed
        else {
            "objects": {"indexes": 4, "triggers": 1, "views": 2, "virtualTables": 0},
            "tables": {f"table_{t:02d}": 1000 * t + i for t in range(12)},
        },
        "createdAt": stamp,
        "database": {
            "engine": "sqlite",
            "name": "app.db",
            "serverVersion": "3.40.1",
            "url": "sqlite:////srv/app.db",
        },
        "duration": 1000 + i % 5000,
        "encryption": None,
        "error": "pg_dump exited with 1" if failed else None,
        "filename": None if failed else f"{bid}.sql.zst",
        "format": "plain",
        "id": bid,
        "pgDumpVersion": None,
        "scheduleId": ("daily", "weekly", None)[i % 3],
        "schemaVersion": 1,
        "size": 0 if failed else size,
        "status": "failed" if failed else "completed",
        "toolVersion": "0.1.0",
        "uncompressedSize": 0 if failed else size * 9,
        "writer": {"host": "db1", "pid": 1000 + i},
    }


def populate(root: Path, count: int) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    for i in range(count):
        when = start + timedelta(hours=i)
        bid = f"streambuddy_backup_{when:%Y-%m-%dT%H-%M-%S}-{when.microsecond // 1000:03d}Z"
        rec = manifest(bid, when, i)
        if rec["filename"]:
            (root / str(rec["filename"])).write_bytes(b"x" * int(str(rec["size"])))
        (root / f"{bid}.json").write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user+sys) and stdout bytes of one whole process."""
    with tempfile.TemporaryFile() as out:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read() if proc.stderr else b""
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err.decode()}")
        return wall, usage.ru_utime + usage.ru_stime, out.tell()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument(
        "--python",
        action="append",
        help="The venv python of a checkout to time (repeat to compare; default this one).",
    )
    args = ap.parse_args()
    exes = [str(Path(p).parent / "sbbackup") for p in args.python or [sys.executable]]
    commands = {"--help": ["--help"], "list --json": ["list", "--json"], "list (table)": ["list"]}
    variants = {(exe, name): [exe, *argv] for exe in exes for name, argv in commands.items()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "backups"
        root.mkdir(mode=0o700)
        populate(root, args.count)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DB_BACKUP_", "SBBACKUP_", "PG", "DATABASE_URL"))
        }
        env.update(DB_BACKUP_PATH=str(root), DATABASE_URL=f"sqlite:///{tmp}/unused.db")
        results: dict[tuple[str, str], list[tuple[float, float, int]]] = {k: [] for k in variants}
        for key in variants:  # warm the page cache and the bytecode once, untimed
            run_once(variants[key], env)
        for r in range(args.runs):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for key in order:
                results[key].append(run_once(variants[key], env))
    print(f"{args.count} backups, {args.runs} runs each, interleaved (medians; best)")
    for (exe, name), runs in results.items():
        if name == "--help":
            print(exe)
        walls = [w for w, _, _ in runs]
        cpus = [c for _, c, _ in runs]
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            med = statistics.median(walls)
            ok = "under" if med < target else "OVER"
            verdict = f"  target {target * 1000:.0f} ms: {ok}"
        print(
            f"{name:13s} wall {statistics.median(walls) * 1000:7.0f} ms "
            f"(best {min(walls) * 1000:5.0f})  cpu {statistics.median(cpus) * 1000:7.0f} ms "
            f"(best {min(cpus) * 1000:5.0f})  stdout {runs[0][2]} bytes{verdict}"
        )


if __name__ == "__main__":
    main()
