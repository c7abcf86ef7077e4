"""Faults in the processes around ``create``: kill -9 of its pg_dump, the PostgreSQL server
stopped mid-dump, kill -9 of a run that holds a lock, and a password in DATABASE_URL that
must never leak into a child's argv or environment, a file, or the output."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.pgcluster import Cluster, create_cluster, destroy_cluster

from faults.harness import (
    Bench,
    Moment,
    Spawned,
    Tally,
    check_invariant,
    inject,
    no_leftovers,
    sample,
    wait_for,
)

pytestmark = pytest.mark.faults


# --- the process tree, from /proc ---------------------------------------------------------


def parents() -> dict[int, tuple[int, str]]:
    """Every process now: pid -> (ppid, comm)."""
    found: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            found[int(entry)] = (ppid, comm)
    return found


def descendants(root: int) -> dict[int, str]:
    """The children, grandchildren... of ``root`` (not ``root`` itself): pid -> comm."""
    table = parents()
    out: dict[int, str] = {}
    for pid, (ppid, comm) in table.items():
        seen, p = set(), ppid
        while p > 1 and p not in seen:
            if p == root:
                out[pid] = comm
                break
            seen.add(p)
            p = table.get(p, (0, ""))[0]
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def child_named(spawned: Spawned, name: str, moment: Moment, timeout: float = 60) -> int | None:
    """The pid of ``spawned``'s child ``name`` at ``moment``, or None if the run ended first.
    Moments: ``probe`` (its ``--version`` run, the first pg_dump a create starts),
    ``delay`` (``value`` seconds after the dumping child, not a probe, appeared)."""
    deadline = time.monotonic() + timeout
    while spawned.proc.poll() is None and time.monotonic() < deadline:
        for pid, comm in descendants(spawned.proc.pid).items():
            if comm != name:
                continue
            probe = "--version" in cmdline(pid)
            if moment.kind == "probe" and probe:
                return pid
            if moment.kind == "delay" and not probe:
                time.sleep(moment.value)
                return pid if spawned.proc.poll() is None else None
        time.sleep(0.001)
    return None


def sooner(moment: Moment, attempt: int) -> Moment:
    """A dump that ended before its moment (a loaded machine, a fast run) is tried again with
    half the delay: still mid-dump, only earlier."""
    return Moment(moment.kind, moment.value * 0.5**attempt)


def moment_id(m: Moment) -> str:
    return "probe" if m.kind == "probe" else f"dump+{m.value:g}s"


def one_line(err: str) -> bool:
    """One line for the user (under --json, the same error follows as one JSON line)."""
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith('{"error"')]
    return len(lines) == 1 and "Traceback" not in err


# --- row 2: kill -9 of pg_dump ------------------------------------------------------------

# the sample's one case (the first) kills the dumping pg_dump; "probe" its --version run
PG_DUMP_MOMENTS = [Moment("delay", 0.1), Moment("probe"), *(Moment("delay", d) for d in (0, 0.35))]
PG_DUMP_CASES = [(f, m) for f in ("plain", "custom") for m in PG_DUMP_MOMENTS]


@pytest.mark.parametrize(
    "case", sample(PG_DUMP_CASES, keep=1, ids=lambda c: f"{c[0]}-{moment_id(c[1])}")
)
def test_kill9_of_pg_dump(
    bench: Bench, pg_source: str, tally: Callable[[str], Tally], case: tuple[str, Moment]
) -> None:
    """Exit 3, one line naming the signal, nothing that looks like a backup, THE INVARIANT."""
    fmt, moment = case
    bench.env["DATABASE_URL"] = pg_source
    seed = f"pg_dump-{fmt}-{moment_id(moment)}"
    rng = random.Random(seed)
    print(f"seed {seed!r}")
    t = tally("kill -9 of pg_dump")
    for attempt in range(6):
        spawned = bench.spawn("create", "--json", "--format", fmt)
        pid = child_named(spawned, "pg_dump", sooner(moment, attempt))
        if pid is not None:
            time.sleep(rng.uniform(0, 0.02))  # jitter, seeded
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        res = spawned.wait()
        if pid is not None and res.code != 0:
            break
        t.add(reached=False, held=True)
    assert pid is not None and res.code != 0, "pg_dump always finished before the moment"
    report = check_invariant(bench)
    ok = res.code == 3 and "killed by SIGKILL" in res.err and one_line(res.err)
    t.add(reached=True, held=report.held and ok)
    assert res.code == 3, (res.code, res.err)
    assert "pg_dump" in res.err and "killed by SIGKILL" in res.err, res.err
    assert one_line(res.err), res.err
    assert report.held, report.problems
    assert len(report.failed) == 1 and report.failed[0]["filename"] is None, report.failed
    no_leftovers(report)


def test_killed_version_probe_names_the_signal(
    bench: Bench, small_pg_source: str, tmp_path: Path
) -> None:
    """Was a defect (found by the probe case above): a ``pg_dump --version`` killed by a
    signal was reported as "cannot parse client version from ''"."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "pg_dump"
    fake.write_text("#!/bin/sh\nkill -KILL $$\n")
    fake.chmod(0o755)
    res = bench.run(
        "create", env={"DATABASE_URL": small_pg_source, "PATH": f"{bindir}:{os.environ['PATH']}"}
    )
    assert res.code == 3, res.err
    assert res.err.strip() == "sbbackup: error: pg_dump --version was killed by SIGKILL", res.err


# --- row 4: the server stopped mid-dump ---------------------------------------------------


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    """A throwaway cluster of this module's own, to stop and start: never the session's."""
    cluster = create_cluster()
    try:
        cluster.psql("CREATE DATABASE stopsrc")
        cluster.psql(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS s "
            "FROM generate_series(1, 300000) g",
            db="stopsrc",
        )
        yield cluster
    finally:
        destroy_cluster(cluster)


def ready(cluster: Cluster) -> None:
    if not cluster.running():
        cluster.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            cluster.psql("SELECT 1")
            return
        except RuntimeError:
            assert time.monotonic() < deadline, "the throwaway cluster did not come back"
            time.sleep(0.1)


STOP_MOMENTS = (Moment("delay", 0.05), Moment("delay", 0.4))
STOP_CASES = [(mode, m) for mode in ("fast", "immediate") for m in STOP_MOMENTS]


@pytest.mark.parametrize(
    "case", sample(STOP_CASES, keep=1, ids=lambda c: f"{c[0]}-{moment_id(c[1])}")
)
def test_server_stopped_mid_dump(
    bench: Bench, own_cluster: Cluster, tally: Callable[[str], Tally], case: tuple[str, Moment]
) -> None:
    """pg_ctl stop (fast: sessions terminated; immediate: the postmaster quits) while create
    streams: exit 3 with one line; once the server is back, THE INVARIANT."""
    mode, moment = case
    ready(own_cluster)
    bench.env["DATABASE_URL"] = own_cluster.url("stopsrc")
    t = tally(f"server stopped mid-dump ({mode})")
    try:
        for attempt in range(6):
            spawned = bench.spawn("create", "--json")
            pid = child_named(spawned, "pg_dump", sooner(moment, attempt))
            if pid is not None:
                own_cluster.pg_ctl("-m", mode, "stop")
            res = spawned.wait()
            if pid is not None and res.code != 0:
                break
            ready(own_cluster)
            t.add(reached=False, held=True)
        assert pid is not None and res.code != 0, "the dump always finished before the stop"
        assert not own_cluster.running() or mode == "immediate"
        down = check_invariant(bench, then_create=False)
        later = bench.run("create", "--json")  # the server is still down
    finally:
        ready(own_cluster)
    report = check_invariant(bench)
    ok = res.code == 3 and one_line(res.err) and later.code == 3 and one_line(later.err)
    t.add(reached=True, held=report.held and down.held and ok)
    assert res.code == 3 and one_line(res.err), (res.code, res.err)
    assert later.code == 3 and one_line(later.err), (later.code, later.err)
    assert down.held, down.problems
    assert report.held, report.problems
    no_leftovers(report)


# --- row 11: kill -9 of a run that holds its lock -----------------------------------------

LOCK_CASES = [
    (cmd, m) for cmd in ("run-schedule", "create") for m in (Moment("partial"), Moment("renamed"))
]


@pytest.mark.parametrize("case", sample(LOCK_CASES, keep=1, ids=lambda c: f"{c[0]}-{c[1]}"))
def test_kill9_while_holding_the_lock(
    bench: Bench, sqlite_source: str, tally: Callable[[str], Tally], case: tuple[str, Moment]
) -> None:
    """Stopped at the moment, the run holds its lock (a second run of it, or a delete of its
    backup, exits 11); killed, it holds nothing: the next run proceeds (exit 0)."""
    cmd, moment = case
    bench.env["DATABASE_URL"] = sqlite_source
    args = ("run-schedule", "daily", "--json") if cmd == "run-schedule" else ("create", "--json")
    t = tally(f"kill -9 of {cmd} holding its lock")
    if moment.kind == "renamed":
        bench.ok(*args)  # _step_to_rename needs a backup's size to know when to step
    for _ in range(5):
        before = set(bench.names())
        spawned = bench.spawn(*args)
        reached = wait_for(moment, spawned, before)
        if reached:
            break
        spawned.wait()
        t.add(reached=False, held=True)
    assert reached, f"{cmd} always finished before {moment}"
    os.kill(spawned.proc.pid, signal.SIGSTOP)
    try:
        new = sorted(n[:-5] for n in set(bench.names()) - before if n.endswith(".json"))
        assert len(new) == 1, new
        # a second run of the schedule; for create, whose lock is its backup ID's, a delete
        busy = bench.run(*args) if cmd == "run-schedule" else bench.run("delete", "--yes", new[0])
    finally:
        inject(spawned, "KILL")
    killed = spawned.wait()
    nxt = bench.run(*args)
    report = check_invariant(bench)
    held = busy.code == 11 and nxt.code == 0 and report.held
    t.add(reached=True, held=held)
    assert killed.code == -signal.SIGKILL, killed
    assert busy.code == 11 and one_line(busy.err), (busy.code, busy.err)
    assert nxt.code == 0, (nxt.code, nxt.err)
    assert report.held, report.problems
    listed = bench.ok("list", "--json").json()
    assert {r["id"]: r["status"] for r in listed}.get(new[0]) in ("abandoned", "failed")
    no_leftovers(report)


# --- row 14: a password in DATABASE_URL ---------------------------------------------------


def exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


@dataclass
class ProcWatch:
    """Reads every descendant's cmdline and environ over and over while a run lives.

    A child between fork and exec is still sbbackup's own image (its exe is sbbackup's
    interpreter, its environ the one sbbackup was given): counted in ``forks``, not judged.
    What it execs (pg_dump, psql, pg_restore) is judged."""

    root: int
    secret: bytes
    samples: int = 0
    forks: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # comm -> times sampled
    leaks: list[str] = field(default_factory=list)

    def sweep(self) -> None:
        own = exe(self.root)
        for pid, comm in descendants(self.root).items():
            before = exe(pid)
            data = {}
            for part in ("cmdline", "environ"):
                with contextlib.suppress(OSError):
                    data[part] = Path(f"/proc/{pid}/{part}").read_bytes()
            if before is None or own in (before, exe(pid)):
                self.forks += 1
                continue
            for part, blob in data.items():
                if self.secret in blob:
                    self.leaks.append(f"{comm} (pid {pid}, {before}) /proc/{pid}/{part}")
            self.seen[comm] = self.seen.get(comm, 0) + 1
        self.samples += 1


def watched(bench: Bench, secret: bytes, *args: str) -> tuple[ProcWatch, int, str, str]:
    spawned = bench.spawn(*args)
    watch = ProcWatch(spawned.proc.pid, secret)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            watch.sweep()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        res = spawned.wait()
    finally:
        stop.set()
        thread.join(10)
    return watch, res.code, res.out, res.err


def files_holding(roots: list[Path], needles: list[bytes]) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*") if root.exists() else ():
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                found += [f"{path}" for n in needles if n in data]
    return found


@pytest.fixture
def secret_role(pg: Cluster, pg_source: str) -> Iterator[tuple[str, str]]:
    """A login role with a password of its own (seeded, printed): (role, password)."""
    seed = "secret-14"
    rng = random.Random(seed)
    secret = "Zx" + "".join(rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(22))
    role = "leak_" + uuid.uuid4().hex[:8]
    print(f"seed {seed!r}: role {role}")
    pg.psql(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{secret}'")
    try:
        yield role, secret
    finally:
        pg.psql(f"DROP ROLE IF EXISTS {role}", check=False)


@pytest.mark.parametrize("fmt", sample(["plain", "custom"], keep=1))
def test_password_in_database_url_never_leaks(
    bench: Bench,
    pg: Cluster,
    secret_role: tuple[str, str],
    tmp_path: Path,
    tally: Callable[[str], Tally],
    fmt: str,
) -> None:
    role, secret = secret_role
    url = f"postgresql://{role}:{secret}@127.0.0.1:{pg.port}"
    bench.env["DATABASE_URL"] = f"{url}/faultsrc"
    bench.env["SBBACKUP_STATE_DIR"] = str(tmp_path / "state")
    needle = secret.encode()
    t = tally("password in DATABASE_URL (children, files, output)")
    outputs: list[str] = []
    watches: list[ProcWatch] = []

    def run(*args: str, code: int = 0) -> str:
        watch, got, out, err = watched(bench, needle, *args)
        watches.append(watch)
        outputs.extend((out, err))
        assert got == code, f"sbbackup {' '.join(args)} exited {got}, not {code}: {err}"
        return out

    rec = json.loads(run("create", "--json", "--format", fmt))
    target = "r_" + uuid.uuid4().hex[:10]
    run("restore", rec["id"], "--target-url", f"{url}/{target}", "--create-target", "--json")
    assert pg.psql("SELECT count(*) FROM t", db=target) == "300000"
    run("verify", "--deep", rec["id"])
    # failures quote the URL they could not reach: still never the password
    bench.env["DATABASE_URL"] = f"{url}/no_such_db"
    run("create", "--json", code=3)
    bench.env["DATABASE_URL"] = f"postgresql://{role}:{secret}@127.0.0.1:1/faultsrc"
    run("create", "--json", code=3)
    run("list", "--json")
    pg.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)", check=False)

    seen: dict[str, int] = {}
    for w in watches:
        for comm, n in w.seen.items():
            seen[comm] = seen.get(comm, 0) + n
    leaks = [leak for w in watches for leak in w.leaks]
    in_files = files_holding([bench.backup_dir, tmp_path / "state", tmp_path / "home"], [needle])
    in_output = [o[:200] for o in outputs if secret in o]
    samples = sum(w.samples for w in watches)
    forks = sum(w.forks for w in watches)
    print(f"{samples} /proc sweeps, children sampled: {seen}, {forks} not yet exec'd")
    t.add(reached=True, held=not (leaks or in_files or in_output))
    assert seen.get("pg_dump", 0) >= 1, f"no pg_dump was ever sampled: {seen}"
    assert seen.get("psql" if fmt == "plain" else "pg_restore", 0) >= 1, seen
    assert not leaks, leaks
    assert not in_files, in_files
    assert not in_output, in_output
