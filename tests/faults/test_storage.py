"""The disk fills up, or goes read-only, under ``create``: exit 4 with one line, nothing left
that looks like a backup, and once there is room again THE INVARIANT holds."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from faults.harness import Bench, Tally, check_invariant, no_leftovers, sample

pytestmark = pytest.mark.faults

MiB = 1 << 20


def mount(*args: str) -> None:
    res = subprocess.run(["mount", *args], capture_output=True, text=True)
    if res.returncode != 0:  # no silent skip: the suite needs root and tmpfs
        pytest.fail(f"mount {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")


@contextmanager
def tmpfs(where: Path, size: int) -> Iterator[Path]:
    where.mkdir()
    mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    try:
        yield where
    finally:
        res = subprocess.run(["umount", str(where)], capture_output=True)
        if res.returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def fill(directory: Path, leave: int) -> Path:
    """A filler file taking all the free space of ``directory``'s file system but ``leave``."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    filler = directory / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return filler


@pytest.fixture
def small_backup_size(bench: Bench, small_sqlite_source: str, tmp_path: Path) -> int:
    """How big a backup of the small source is (made elsewhere, then forgotten)."""
    other = Bench(
        tmp_path / "sizing",
        {**bench.env, "DB_BACKUP_PATH": str(tmp_path / "sizing")},
        bench.scratch,
    )
    rec = other.ok("create", "--json", env={"DATABASE_URL": small_sqlite_source}).json()
    return int(rec["size"])


# Room left on the file system, as a fraction of one backup: the write fails in the partial,
# at the commit, in the manifest, or not at all.
ROOMS = [0.0, 0.05, 0.3, 0.6, 0.9, 1.0, 1.02, 1.05, 1.1, 1.3, 2.0]


@pytest.mark.parametrize("room", sample(ROOMS, keep=2, ids=lambda r: f"room{r:g}"))
def test_disk_full_during_create(
    bench: Bench,
    tmp_path: Path,
    small_sqlite_source: str,
    small_backup_size: int,
    tally: Callable[[str], Tally],
    room: float,
) -> None:
    bench.env["DATABASE_URL"] = small_sqlite_source
    t = tally("disk full during create")
    with tmpfs(tmp_path / "small", 64 * MiB) as fs:
        bench.backup_dir = fs / "backups"
        bench.env["DB_BACKUP_PATH"] = str(bench.backup_dir)
        bench.ok("list")  # creates nothing; the first create makes the directory
        first = bench.ok("create", "--json").json()["id"]
        filler = fill(fs, int(small_backup_size * room))
        res = bench.run("create", "--json")
        assert res.code in (0, 4), f"create on a full disk exited {res.code}: {res.err}"
        if res.code == 4:
            assert "Traceback" not in res.err and len(res.err.strip().splitlines()) <= 2
            assert "No space left on device" in res.err, res.err
        full = check_invariant(bench, then_create=False)  # still full: no following create
        assert full.held, full.problems
        assert first in full.completed
        filler.unlink()
        report = check_invariant(bench)
        t.add(reached=res.code == 4, held=report.held and full.held)
        assert report.held, report.problems
        no_leftovers(report)


def test_read_only_backup_directory(
    bench: Bench, tmp_path: Path, small_sqlite_source: str, tally: Callable[[str], Tally]
) -> None:
    bench.env["DATABASE_URL"] = small_sqlite_source
    t = tally("read-only remount")
    with tmpfs(tmp_path / "ro", 64 * MiB) as fs:
        bench.backup_dir = fs / "backups"
        bench.env["DB_BACKUP_PATH"] = str(bench.backup_dir)
        first = bench.ok("create", "--json").json()["id"]
        mount("-o", "remount,ro", str(fs))
        try:
            res = bench.run("create", "--json")
            assert res.code == 4 and "read-only" in res.err, (res.code, res.err)
            bench.ok("verify", "--deep", first)
            ro = check_invariant(bench, then_create=False)
            assert ro.held, ro.problems
        finally:
            mount("-o", "remount,rw", str(fs))
        report = check_invariant(bench)
        t.add(reached=True, held=report.held and ro.held)
        assert report.held, report.problems
        no_leftovers(report)
