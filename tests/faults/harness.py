"""The fault suite's machinery: sources big enough to be caught mid-dump, a bench that drives
the real CLI and records every run, the moments a fault is injected at, the known defects,
and THE INVARIANT, written once here (``check_invariant``). conftest.py registers the
fixtures and the sample/full selection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark.structures import ParameterSet
from helpers.cli import Result
from helpers.pgcluster import Cluster

from sbbackup.model import BACKUP_ID_RE

FULL_MARK = "fault_full"
HERE = Path(__file__).parent
# Every random choice of the suite comes from ``rng(name)``, seeded by this (printed in the
# pytest header and recorded in the report): ``SBBACKUP_FAULT_SEED=N`` replays a run.
SEED = int(os.environ.get("SBBACKUP_FAULT_SEED", "12"))


def rng(name: str) -> random.Random:
    """The random source of one test or fixture: the same seed and name give the same run."""
    return random.Random(f"{SEED}-{name}")


# --- sample or full -------------------------------------------------------------------------


def sample(
    cases: Sequence[Any],
    keep: int,
    ids: Callable[[Any], str] = str,
    marks: Callable[[Any], Sequence[pytest.MarkDecorator]] = lambda case: (),
) -> list[ParameterSet]:
    """``cases`` as parameters: ``keep`` of them, spread over the list, run in every run; the
    rest only in the full run. ``marks`` adds marks to a case (a known defect's xfail)."""
    last = len(cases) - 1
    chosen = {round(i * last / max(1, keep - 1)) for i in range(keep)} if keep else set()
    return [
        pytest.param(
            c, id=ids(c), marks=(*marks(c), *(() if i in chosen else (pytest.mark.fault_full,)))
        )
        for i, c in enumerate(cases)
    ]


# --- known defects: a strict xfail names the exception its symptom raises -------------------


class Defect(AssertionError):
    """A known defect's symptom, seen. Tests mark it ``known(...)``; any other failure stays
    a failure (``raises=``), and a fix turns the strict xfail into a failure to remove it."""


class OrphanDataFile(Defect):
    """A data file without a manifest survives: kill between the data rename and the manifest
    write leaves it, and nothing (not the next create's sweep, not list) deals with it."""


class LostBackup(Defect):
    """A create that exited 0 whose backup is not listed (or listed with other bytes)."""


class SameIdClash(Defect):
    """Creates started in the same millisecond pick the same ID; all but one exit 4."""


class SweepRace(Defect):
    """A concurrent create's partial sweep takes a live writer's partial between its creation
    and its flock: the writer exits 4 "cannot commit" (the partial was deleted) or exit 1 with
    a BlockingIOError traceback (its flock failed)."""


class DeletedAfterCommit(Defect):
    """A signal after the data file was committed made create delete it and record a failed
    attempt (exit 130): seen as a failed manifest that carries the dump's ``contents``, which
    are set only after the commit. Counted, not xfailed: a signal before the manifest is
    written may discard the data by design; one after it is the defect, and the two leave
    the same files."""


class SignalWithoutMessage(Defect):
    """SIGINT/SIGTERM early in create: a traceback, or death by the signal, not exit 130."""


class RestoreSkipsContentChecksum(Defect):
    """restore reports success although the dump stream's SHA-256 is not the manifest's."""


class TempFileLeft(Defect):
    """A signal inside write_atomic leaves its .tmp file, and nothing removes it later."""


class VerifyNeedsDatabaseUrl(Defect):
    """verify --deep checks a dump with the configured engine, not the manifest's."""


REASONS: dict[type[Defect], str] = {
    OrphanDataFile: "issue 12: kill -9 between data rename and manifest write leaves an orphan "
    "data file that no later command removes or reports (ops/backups.py, storage sweep)",
    LostBackup: "issue 12: concurrent creates in the same millisecond pick the same ID "
    "(ops/backups.py:unique_backup_id) and one exit-0 backup is lost",
    SameIdClash: "issue 12: ops/backups.py:unique_backup_id picks the ID from a listing, so "
    "creates of the same millisecond collide on the partial's O_EXCL and exit 4 (no retry)",
    SweepRace: "issue 12: storage/local.py:sweep_partials can flock a partial between another "
    "writer's O_EXCL create and its flock (LocalWriter.__init__): the writer exits 4 'cannot "
    "commit', or 1 with a BlockingIOError traceback",
    DeletedAfterCommit: "issue 12: a signal just after catalog.save makes ops/backups.py:_write "
    "delete the committed data file and overwrite the completed manifest with a failed one",
    SignalWithoutMessage: "issue 12: SIGINT/SIGTERM before cli/base.py:main installs its "
    "handler (during imports) gives a traceback or death by the signal, not exit 130",
    RestoreSkipsContentChecksum: "issue 12: ops/restore.py:load_backup hands plaintext() no "
    "content digest, so restore never checks contentChecksum (verify --deep does)",
    TempFileLeft: "issue 12: state/files.py:write_atomic removes its temp file on OSError "
    "only: SIGINT/SIGTERM while the manifest is written leaves .ID.json.<hex>.tmp for good",
    VerifyNeedsDatabaseUrl: "issue 12: ops/verify.py checks the dump structure with ctx.engine "
    "(DATABASE_URL, PostgreSQL by default), not the engine the manifest names",
}


def known(defect: type[Defect]) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=defect, reason=REASONS[defect])


# --- sources --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """~25 MB of mostly incompressible rows: create takes long enough to be caught mid-dump."""
    path = tmp_path_factory.mktemp("faultsrc") / "src.db"
    rand = rng("sqlite_source")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, b BLOB)")
    con.executemany(
        "INSERT INTO t (s, b) VALUES (?, ?)",
        ((f"row {i} " * 5, rand.randbytes(64)) for i in range(200_000)),
    )
    con.commit()
    con.close()
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def pg_source(pg: Cluster) -> str:
    pg.psql("CREATE DATABASE faultsrc")
    pg.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS s, "
        "g % 97 AS k FROM generate_series(1, 300000) g",
        db="faultsrc",
    )
    return pg.url("faultsrc")


@pytest.fixture(scope="session")
def small_sqlite_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A few hundred KiB: for faults that need many backups, not a slow one."""
    path = tmp_path_factory.mktemp("faultsrc-small") / "small.db"
    rand = rng("small_sqlite_source")
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, b BLOB)")
    con.executemany(
        "INSERT INTO t (s, b) VALUES (?, ?)",
        ((f"row {i}", rand.randbytes(64)) for i in range(3000)),
    )
    con.commit()
    con.close()
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def small_pg_source(pg: Cluster) -> str:
    pg.psql("CREATE DATABASE faultsmall")
    pg.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS s FROM generate_series(1, 3000) g",
        db="faultsmall",
    )
    return pg.url("faultsmall")


ENGINES = ["sqlite", "pg"]


@pytest.fixture
def source(request: pytest.FixtureRequest) -> str:
    """The database a parametrized test backs up: ``engine`` is "sqlite" or "pg"."""
    engine = request.param if hasattr(request, "param") else "sqlite"
    name = "sqlite_source" if engine == "sqlite" else "pg_source"
    return str(request.getfixturevalue(name))


# --- the bench ------------------------------------------------------------------------------


@dataclass
class Run:
    argv: tuple[str, ...]
    code: int
    err: str


@dataclass
class Bench:
    """The real CLI against one backup directory. Every run is kept, for the traceback rule."""

    backup_dir: Path
    env: dict[str, str]
    scratch: Path
    runs: list[Run] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sbbackup", *args]

    def run(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(
            self.argv(*args),
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        self.runs.append(Run(tuple(args), proc.returncode, proc.stderr))
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kw: Any) -> Result:
        res = self.run(*args, **kw)
        assert res.code == 0, f"sbbackup {' '.join(args)} exited {res.code}: {res.err}"
        return res

    def spawn(self, *args: str, barrier: Path | None = None) -> Spawned:
        """A run in the background. With ``barrier`` (a path) the interpreter imports the CLI,
        says it is ready, waits for ``barrier`` to exist, then runs ``sbbackup.cli.main``: many
        runs can start the command itself within a millisecond (``release``)."""
        n = len(self.procs)
        argv = self.argv(*args)
        if barrier is not None:
            argv = [sys.executable, "-c", BARRIER, str(barrier), *args]
        out, err = self.scratch / f"run{n}.out", self.scratch / f"run{n}.err"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                argv,
                env=self.env,
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: Ctrl-C reaches it and its pg_dump
            )
        self.procs.append(proc)
        return Spawned(self, tuple(args), proc, out, err)

    def reap(self) -> None:
        """Kill what is left of every process group this bench started (orphaned pg_dumps)."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=30)

    def names(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.backup_dir) if e.is_file())
        except FileNotFoundError:
            return []


BARRIER = """
import os, sys, time
from sbbackup.cli import main
import sbbackup.cli.backups, sbbackup.ops.backups, sbbackup.engines.sqlite
go = sys.argv[1]
open(go + ".ready." + str(os.getpid()), "w").close()
deadline = time.monotonic() + 120
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("barrier: never released")
    time.sleep(0.0005)
main(sys.argv[2:])
"""


def release(barrier: Path, waiting: int) -> None:
    """Let ``waiting`` runs started with ``barrier`` go at once, when all of them are ready."""
    deadline = time.monotonic() + 120
    while len(list(barrier.parent.glob(barrier.name + ".ready.*"))) < waiting:
        assert time.monotonic() < deadline, "the runs never reached the barrier"
        time.sleep(0.01)
    barrier.touch()


@dataclass
class Spawned:
    bench: Bench
    args: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def wait(self, timeout: float = 300) -> Result:
        code = self.proc.wait(timeout=timeout)
        err = self.err.read_text(errors="replace")
        self.bench.runs.append(Run(self.args, code, err))
        return Result(code, self.out.read_text(errors="replace"), err)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    env = dict(os.environ)
    env["DB_BACKUP_PATH"] = str(tmp_path / "backups")
    env.pop("SBBACKUP_STATE_DIR", None)
    scratch = tmp_path / "runs"
    scratch.mkdir()
    b = Bench(tmp_path / "backups", env, scratch)
    try:
        yield b
    finally:
        b.reap()


# --- moments --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """When a fault hits a running ``create``: ``partial`` (its .partial file appeared),
    ``bytes`` (the partial reached ``value`` bytes), ``renamed`` (a data file without a
    manifest, i.e. between the data rename and the manifest write), ``delay`` (``value``
    seconds after spawning)."""

    kind: str
    value: float = 0

    def __str__(self) -> str:
        if self.kind == "bytes":
            return f"bytes{int(self.value) >> 10}k"
        return self.kind if self.kind in ("partial", "renamed") else f"{self.kind}{self.value:g}"


def _data_without_manifest(names: list[str], before: set[str], directory: Path) -> bool:
    """A new data file whose manifest does not say completed yet: the window between the
    data rename and the manifest's commit (the manifest is reserved, in progress, first)."""
    for n in names:
        if n in before or n.endswith((".json", ".partial")) or n.startswith("."):
            continue
        backup_id = n.split(".", 1)[0]
        if not BACKUP_ID_RE.fullmatch(backup_id):
            continue
        try:
            status = json.loads((directory / f"{backup_id}.json").read_text()).get("status")
        except (OSError, ValueError):
            return True
        if status != "completed":
            return True
    return False


def wait_for(moment: Moment, spawned: Spawned, before: set[str]) -> bool:
    """Block until ``moment``; False if the create exited first (the moment was not reached)."""
    proc, directory = spawned.proc, spawned.bench.backup_dir
    if moment.kind == "delay":
        # Counted from the moment sbbackup's SIGTERM handler is in place (SigCgt in /proc):
        # the interpreter's own start-up, before any sbbackup code runs, is out of reach of
        # any handler, and a signal there is the kernel's default, not ours to test.
        while not _catches_sigterm(proc.pid):
            if proc.poll() is not None:
                return False
            time.sleep(0.001)
        deadline = time.monotonic() + moment.value
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            time.sleep(0.002)
        return proc.poll() is None
    if moment.kind == "renamed":
        return _step_to_rename(proc, directory, before)
    while proc.poll() is None:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            entries = []
        for e in entries:
            if e.name.endswith(".partial") and (
                moment.kind == "partial" or e.stat().st_size >= moment.value
            ):
                return True
        time.sleep(0.0005)
    return False


def _catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _step_to_rename(proc: subprocess.Popen[bytes], directory: Path, before: set[str]) -> bool:
    """The window between the data rename and the manifest write is a few milliseconds: once
    the partial is nearly as big as the last backup here, the create runs in short steps
    (SIGCONT, a moment, SIGSTOP, look), so the window is hit every time. Returns with the
    create stopped at the moment; ``inject`` continues it after signalling."""
    sizes = [(directory / n).stat().st_size for n in before if not n.endswith(".json")]
    near = max(sizes, default=0) * 0.97
    while proc.poll() is None:
        names = os.listdir(directory) if directory.exists() else []
        if _data_without_manifest(names, before, directory):
            return True
        big = False
        for n in names:
            if n.endswith(".partial"):
                with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                    big = big or (directory / n).stat().st_size >= near
        if big and near:
            os.kill(proc.pid, signal.SIGSTOP)
            names = os.listdir(directory)
            if _data_without_manifest(names, before, directory):
                return True
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.0002)
    return False


# How each signal is sent: Ctrl-C reaches the whole foreground group, `kill` and `kill -9` one PID.
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def inject(spawned: Spawned, sig: str) -> None:
    with contextlib.suppress(ProcessLookupError):
        if sig == "INT":
            os.killpg(spawned.proc.pid, signal.SIGINT)
        else:
            os.kill(spawned.proc.pid, SIGNALS[sig])
        os.kill(spawned.proc.pid, signal.SIGCONT)  # stopped by _step_to_rename


# --- THE INVARIANT --------------------------------------------------------------------------


@dataclass
class Report:
    completed: list[str] = field(default_factory=list)  # completed manifests before the follow-up
    failed: list[dict[str, Any]] = field(default_factory=list)  # failed-attempt manifests
    problems: list[str] = field(default_factory=list)  # invariant violations
    partials: list[str] = field(default_factory=list)  # left after the follow-up create
    orphans: list[str] = field(default_factory=list)  # data files whose ID has no manifest
    temps: list[str] = field(default_factory=list)  # *.tmp left
    listed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def held(self) -> bool:
        return not self.problems


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def scan(bench: Bench, report: Report, damaged: frozenset[str]) -> None:
    """Every completed manifest points at a data file of its size and SHA-256 (a backup the
    test damaged on purpose is judged by the test instead)."""
    names = bench.names()
    for name in names:
        if not (name.endswith(".json") and BACKUP_ID_RE.fullmatch(name[:-5])):
            continue
        if name[:-5] in damaged:
            continue
        try:
            doc = json.loads((bench.backup_dir / name).read_text())
        except (OSError, ValueError) as exc:
            report.problems.append(f"manifest {name} unreadable: {exc}")
            continue
        if doc.get("status") == "failed":
            report.failed.append(doc)
        if doc.get("status") != "completed":
            continue
        report.completed.append(doc["id"])
        data = bench.backup_dir / str(doc.get("filename"))
        if not data.is_file():
            report.problems.append(f"{doc['id']}: completed but its data file is missing")
        elif data.stat().st_size != doc.get("size"):
            report.problems.append(f"{doc['id']}: data file size differs from the manifest")
        elif sha256(data) != doc.get("checksum"):
            report.problems.append(f"{doc['id']}: data file SHA-256 differs from the manifest")


def leftovers(bench: Bench, report: Report) -> None:
    names = bench.names()
    ids = {n[:-5] for n in names if n.endswith(".json")}
    report.partials = [n for n in names if n.endswith(".partial")]
    report.temps = [n for n in names if n.endswith(".tmp")]
    report.orphans = [  # by stem: ``ID-1.sql.zst`` is ID-1's, not ID's
        n
        for n in names
        if not n.endswith((".json", ".partial", ".tmp"))
        and BACKUP_ID_RE.fullmatch(stem := n.split(".", 1)[0])
        and stem not in ids
    ]


def check_invariant(
    bench: Bench, *, then_create: bool = True, damaged: frozenset[str] = frozenset()
) -> Report:
    """THE INVARIANT, after any fault: (1) every completed manifest points at a data file whose
    size and SHA-256 match; (2) ``list --json`` exits 0 and parses, listing each of them as
    completed; (3) ``verify --deep --all`` passes; (4) no run so far printed a traceback;
    (5) a following ``create`` succeeds and its backup verifies. What else is left (partials,
    orphan data files, temp files) is recorded after that create, for ``no_leftovers``."""
    report = Report()
    scan(bench, report, damaged)
    res = bench.run("list", "--json")
    if res.code != 0:
        report.problems.append(f"list --json exited {res.code}: {res.err.strip()[:200]}")
    else:
        try:
            report.listed = {r["id"]: r for r in res.json()}
        except (ValueError, TypeError, KeyError) as exc:
            report.problems.append(f"list --json did not parse: {exc}")
        for backup_id in report.completed:
            status = report.listed.get(backup_id, {}).get("status")
            if status != "completed":
                report.problems.append(f"{backup_id}: completed on disk, listed as {status}")
    if report.completed and not damaged:
        res = bench.run("verify", "--deep", "--all")
        if res.code != 0:
            report.problems.append(f"verify --deep --all exited {res.code}: {res.err[:300]}")
    for backup_id in report.completed if damaged else ():
        res = bench.run("verify", "--deep", backup_id)
        if res.code != 0:
            report.problems.append(f"verify --deep {backup_id} exited {res.code}: {res.err}")
    if then_create:
        res = bench.run("create", "--json")
        if res.code != 0:
            report.problems.append(f"the following create exited {res.code}: {res.err[:300]}")
        else:
            new = res.json()["id"]
            res = bench.run("verify", "--deep", new)
            if res.code != 0:
                report.problems.append(f"the following create's backup fails verify: {res.err}")
    for run in bench.runs:
        if "Traceback" in run.err:
            report.problems.append(f"sbbackup {' '.join(run.argv)} printed a traceback")
    leftovers(bench, report)
    return report


def no_leftovers(report: Report) -> None:
    """After the following create nothing may be left over; orphans and temp files are the
    known defects."""
    assert not report.partials, f"partials left after a following create: {report.partials}"
    if report.orphans:
        raise OrphanDataFile(f"orphan data files: {report.orphans}")
    if report.temps:
        raise TempFileLeft(f"temp files left: {report.temps}")


# --- what the reliability report reads ------------------------------------------------------


@dataclass
class Tally:
    """Per test: how many trials ran, reached their moment, held the invariant, and which
    known defects showed (junit properties; scripts/reliability-report.py reads them)."""

    fault_class: str
    trials: int = 0
    reached: int = 0
    held: int = 0
    defects: dict[str, int] = field(default_factory=dict)

    def add(self, reached: bool, held: bool, defects: Sequence[str] = ()) -> None:
        self.trials += 1
        self.reached += reached
        self.held += held
        for d in defects:
            self.defects[d] = self.defects.get(d, 0) + 1


@pytest.fixture
def tally(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]) -> Any:
    made: list[Tally] = []

    def make(fault_class: str) -> Tally:
        made.append(Tally(fault_class))
        return made[-1]

    yield make
    if made:
        record_property("fault_seed", SEED)  # per test too: xdist drops suite properties
    for t in made:
        record_property("fault_class", t.fault_class)
        record_property("trials", t.trials)
        record_property("reached", t.reached)
        record_property("held", t.held)
        record_property("defects", json.dumps(t.defects, sort_keys=True))
