"""Benchmark: `sbbackup list` over a catalog of N backups (default 10,000).

Writes N small manifests and data files into a temporary backup path, then times
`sbbackup list --json` and `sbbackup list` (human table, to a pipe) as whole processes.
Listing reads manifests and stats data files; it never opens a data file.
Usage: python bench/bench_list.py [--count 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sbbackup.catalog import BackupRecord, iso, new_backup_id  # noqa: E402


def populate(root: Path, count: int) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    for i in range(count):
        when = start + timedelta(hours=i)
        bid = new_backup_id(when)
        data = root / f"{bid}.sql.zst"
        data.write_bytes(b"x" * 64)
        rec = BackupRecord(
            id=bid,
            filename=data.name,
            size=64,
            createdAt=iso(when) or "",
            checksum="0" * 64,
            status="completed" if i % 10 else "failed",
            duration=1000,
            scheduleId=("daily", "weekly", None)[i % 3],
            compression={"algorithm": "zstd", "level": 3, "frameChecksum": True},
        )
        (root / f"{bid}.json").write_text(json.dumps(rec.to_json()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "backups"
        root.mkdir(mode=0o700)
        populate(root, args.count)
        env = dict(os.environ, DB_BACKUP_PATH=str(root), DATABASE_URL="sqlite:///unused.db")
        for label, extra in (("list --json", ["--json"]), ("list (table)", [])):
            walls = []
            for _ in range(args.runs):
                t = time.perf_counter()
                out = subprocess.run(
                    [sys.executable, "-m", "sbbackup", "list", *extra],
                    env=env,
                    capture_output=True,
                    check=True,
                ).stdout
                walls.append(time.perf_counter() - t)
            print(f"{label:14s} {args.count} backups: best {min(walls):.2f}s ({len(out)} bytes)")


if __name__ == "__main__":
    main()
