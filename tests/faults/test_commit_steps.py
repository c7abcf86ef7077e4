"""kill -9 of ``create`` at each of its commit steps (row 1 of issue 12's fault table): the
reservation's temp-file fsync, link and directory fsync, the data file's fsync, rename and
directory fsync, the manifest's fsync, rename and directory fsync, and the unlinks between.

A traced create lists the steps: every fsync, rename, link and unlink of a file in the backup
directory, in order, by the main thread. Then, for each step, a fresh create runs under
``strace -e inject=SYSCALL:signal=KILL:when=N``: the kernel delivers SIGKILL as that very
call is entered. After each, THE INVARIANT, and the next create sweeps what was left."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from faults.harness import Bench, Run, Tally, check_invariant, no_leftovers

pytestmark = pytest.mark.faults

SYSCALLS = "fsync,fdatasync,rename,renameat,renameat2,link,linkat,unlink,unlinkat"
LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)$")


@dataclass(frozen=True)
class Step:
    syscall: str
    nth: int  # its nth call of that syscall by the main thread
    what: str  # the file it touched, for the test's id

    def __str__(self) -> str:
        return f"{self.syscall}#{self.nth}:{self.what}"


def strace() -> str:
    found = shutil.which("strace")
    if found is None:  # scripts/install-test-deps.sh installs it: never skip
        pytest.fail("strace is missing: run scripts/install-test-deps.sh")
    return found


def traced_create(bench: Bench, *options: str) -> subprocess.CompletedProcess[str]:
    """``sbbackup create --json`` under ``strace -f -qq`` with ``options``."""
    return subprocess.run(
        [strace(), "-f", "-qq", *options, *bench.argv("create", "--json")],
        env=bench.env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def commit_steps(bench: Bench, tmp_path: Path) -> list[Step]:
    """The commit steps of one create, from a traced run."""
    log = tmp_path / "trace.log"
    proc = traced_create(bench, "-y", "-e", f"trace={SYSCALLS}", "-o", str(log))
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    main = lines[0].split()[0]
    counts: dict[str, int] = {}
    steps = []
    where = str(bench.backup_dir)
    for line in lines:
        m = LINE.match(line)
        if not m or m.group(1) != main:
            continue
        name, args = m.group(2), m.group(3)
        counts[name] = counts.get(name, 0) + 1
        if where in args and ".pyc" not in args:
            touched = re.findall(re.escape(where) + r"/?([^\"<>]*)", args)[-1] or "(dir)"
            kind = re.sub(r"[0-9a-f]{32}", "X", re.sub(r"\d{4}-\d\d-\d\dT[\d-]+Z", "ID", touched))
            steps.append(Step(name, counts[name], kind))
    return steps


@pytest.mark.parametrize(
    "engine",
    ["sqlite", pytest.param("pg", marks=pytest.mark.fault_full)],  # the sample: SQLite
)
def test_kill_at_each_commit_step(
    bench: Bench,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    tally: Callable[[str], Tally],
    engine: str,
) -> None:
    source = "small_sqlite_source" if engine == "sqlite" else "small_pg_source"
    bench.env["DATABASE_URL"] = str(request.getfixturevalue(source))
    t = tally(f"kill -9 at each commit step ({engine})")
    steps = commit_steps(bench, tmp_path)
    kinds = {s.syscall.rstrip("at2") for s in steps}
    assert {"fsync", "rename", "link"} <= kinds, steps  # the steps the issue names
    assert len(steps) >= 9, steps
    print(f"{engine}: {len(steps)} commit steps:", ", ".join(map(str, steps)))
    for step in steps:
        inject = f"inject={step.syscall}:signal=KILL:when={step.nth}"
        proc = traced_create(bench, "-o", "/dev/null", "-e", f"trace={step.syscall}", "-e", inject)
        bench.runs.append(
            Run(("create", "--json", f"killed at {step}"), proc.returncode, proc.stderr)
        )
        reached = proc.returncode in (-9, 137)
        report = check_invariant(bench)
        t.add(reached=reached, held=report.held)
        assert reached, f"{step}: the create was not killed (exit {proc.returncode}): {proc.stderr}"
        assert report.held, (str(step), report.problems)
        no_leftovers(report)
        bench.runs.clear()
