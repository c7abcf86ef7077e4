"""umask 000 (a careless cron, a container's default): ``create`` into a backup path whose
parents do not exist yet makes every file 0600 and every directory 0700, the parents it made
included, whatever command wrote them (create, encrypted create, run-schedule, verify, prune,
delete, a failed attempt, an interrupted one)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from faults.harness import Bench, Moment, Tally, check_invariant, sample, wait_for
from sbbackup.crypto import age

pytestmark = pytest.mark.faults


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The umask every sbbackup started inside inherits (this process's: runs are serial)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(top: Path) -> dict[str, str]:
    """Every path under ``top`` (``top`` included), with its permission bits."""
    found = {str(top): oct(stat.S_IMODE(top.lstat().st_mode))}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(root) / name
            found[str(path)] = oct(stat.S_IMODE(path.lstat().st_mode))
    return found


def wrong_modes(top: Path) -> list[str]:
    bad = []
    for path, mode in modes(top).items():
        p = Path(path)
        want = "0o700" if p.is_dir() and not p.is_symlink() else "0o600"
        if p.is_symlink():
            bad.append(f"{path}: a symlink")
        elif mode != want:
            bad.append(f"{path}: {mode}, not {want}")
    return bad


CASES = ["sqlite", "pg"]


@pytest.mark.parametrize("engine", sample(CASES, keep=1))
def test_umask_000_into_missing_parents(
    bench: Bench,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tally: Callable[[str], Tally],
    engine: str,
) -> None:
    rng = random.Random(f"umask-{engine}")
    depth = rng.randint(2, 4)
    top = tmp_path / "deep"
    backups = top.joinpath(*(f"p{i}" for i in range(depth))) / "backups"
    print(f"seed umask-{engine}: {depth} missing parents")
    assert not top.exists()
    bench.backup_dir = backups
    bench.env["DB_BACKUP_PATH"] = str(backups)
    source = "small_sqlite_source" if engine == "sqlite" else "small_pg_source"
    bench.env["DATABASE_URL"] = str(request.getfixturevalue(source))
    me = age.generate_identity()
    ident = tmp_path / "identity.txt"
    ident.write_text(me.secret_str + "\n")
    ident.chmod(0o600)
    bench.env["DB_BACKUP_ENCRYPTION_RECIPIENTS"] = me.recipient().public_key_str
    bench.env["DB_BACKUP_ENCRYPTION_IDENTITY_FILE"] = str(ident)
    t = tally("umask 000, missing parents: modes")
    with umask(0):
        first = bench.ok("create", "--json").json()
        bench.ok("create", "--encrypt", "--json")
        if engine == "pg":
            bench.ok("create", "--format", "custom", "--json")
        bench.ok("run-schedule", "daily", "--json")
        bench.ok("run-schedule", "weekly", "--json")  # encrypted, by the default schedule
        failed = bench.run("create", env={"DATABASE_URL": "postgresql://x@127.0.0.1:1/x"})
        assert failed.code == 3, failed.err
        spawned = bench.spawn("create")  # killed while it writes: a partial, a lock file
        if wait_for(Moment("partial"), spawned, set(bench.names())):
            os.kill(spawned.proc.pid, signal.SIGKILL)
        spawned.wait()
        bench.ok("verify", "--deep", "--all")
        bench.ok("prune", "--json")  # sweeps the killed writer's leftovers
        bench.ok("delete", "--yes", first["id"])
        report = check_invariant(bench)  # its follow-up create too, under umask 000
    bad = wrong_modes(top)
    seen = modes(top)
    print(f"{len(seen)} paths checked under {top}")
    t.add(reached=True, held=not bad and report.held)
    assert report.held, report.problems
    assert not bad, bad
    files = [p for p in seen if Path(p).is_file()]
    assert len(files) >= 10, seen  # manifests, data files, the audit log, locks
    assert any(p.endswith(".age") for p in files), files
