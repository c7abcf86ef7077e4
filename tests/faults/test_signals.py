"""kill -9, SIGTERM and SIGINT of ``sbbackup create`` at many moments, against SQLite and the
test PostgreSQL cluster; after each, THE INVARIANT (conftest.check_invariant)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from faults.harness import (
    ENGINES,
    Bench,
    DeletedAfterCommit,
    Moment,
    OrphanDataFile,
    Report,
    SignalWithoutMessage,
    Tally,
    TempFileLeft,
    check_invariant,
    inject,
    no_leftovers,
    rng,
    sample,
    wait_for,
)

pytestmark = pytest.mark.faults

MOMENTS = [
    Moment("partial"),
    Moment("bytes", 64 << 10),
    Moment("bytes", 1 << 20),
    Moment("bytes", 4 << 20),
    Moment("bytes", 8 << 20),
    Moment("renamed"),
    *(Moment("delay", d) for d in (0.05, 0.2, 0.35, 0.5)),  # a create takes ~0.7 s
]
CASES = [(e, s, m) for e in ENGINES for s in ("KILL", "TERM", "INT") for m in MOMENTS]
ATTEMPTS = 8  # a moment the create ran past is tried again, up to this many times


def case_id(case: tuple[str, str, Moment]) -> str:
    return f"{case[0]}-{case[1]}-{case[2]}"


def signal_defects(sig: str, code: int, err: str) -> list[str]:
    """Known defects a signalled create itself showed."""
    if sig == "KILL":
        return []
    if code < 0 or "Traceback" in err:
        return [SignalWithoutMessage.__name__]
    return []


def trial(bench: Bench, sig: str, moment: Moment) -> tuple[bool, int, str]:
    """Spawn a create, inject ``sig`` at ``moment``; (reached, exit code, stderr)."""
    before = set(bench.names())
    spawned = bench.spawn("create", "--json")
    reached = wait_for(moment, spawned, before)
    if reached:
        inject(spawned, sig)
    res = spawned.wait()
    bench.reap()  # pg_dump orphaned by kill -9
    return reached, res.code, res.err


def judge(sig: str, code: int, err: str, report: Report) -> list[str]:
    """The invariant must hold, whatever the signal; a signalled create exits 130 (or 0 if it
    had finished) with one line, never a traceback; known defects are named, not excused."""
    defects = signal_defects(sig, code, err)
    if sig != "KILL":
        assert code in (0, 130) or defects, f"create exited {code} on SIG{sig}: {err[-300:]}"
    if any(d.get("contents") for d in report.failed):
        defects.append(DeletedAfterCommit.__name__)
    if report.orphans:
        defects.append(OrphanDataFile.__name__)
    if report.temps:
        defects.append(TempFileLeft.__name__)
    return defects


@pytest.mark.parametrize("source", ENGINES, indirect=True)
def test_baseline_create_is_slow_enough_to_catch(bench: Bench, source: str) -> None:
    """The moments below need a create that writes megabytes over tenths of a second."""
    bench.env["DATABASE_URL"] = source
    rec = bench.ok("create", "--json").json()
    assert rec["size"] > 8 << 20, "the source is too small for the byte moments"
    report = check_invariant(bench)
    assert report.held, report.problems
    no_leftovers(report)


@pytest.mark.parametrize("case", sample(CASES, keep=4, ids=case_id))
def test_signal_during_create(
    bench: Bench, request: pytest.FixtureRequest, tally: Callable[[str], Tally], case: tuple
) -> None:
    engine, sig, moment = case
    bench.env["DATABASE_URL"] = str(request.getfixturevalue(f"{engine}_source"))
    t = tally(f"SIG{sig} during create ({engine})")
    for _ in range(ATTEMPTS):
        reached, code, err = trial(bench, sig, moment)
        if reached:
            break
        t.add(reached=False, held=True)
    assert reached, f"create always finished before the moment {moment} ({ATTEMPTS} tries)"
    report = check_invariant(bench)
    defects = judge(sig, code, err, report)
    hard = [p for p in report.problems if not (defects and "traceback" in p)]
    t.add(reached=True, held=not hard, defects=defects)
    assert not hard, hard
    assert not report.partials, report.partials


@pytest.mark.parametrize(
    "engine,budget",
    [
        pytest.param("sqlite", 2.0, id="sqlite-sample"),
        pytest.param("sqlite", 60.0, id="sqlite-full", marks=pytest.mark.fault_full),
        pytest.param("pg", 60.0, id="pg-full", marks=pytest.mark.fault_full),
    ],
)
def test_signals_at_random_delays(
    bench: Bench,
    request: pytest.FixtureRequest,
    tally: Callable[[str], Tally],
    engine: str,
    budget: float,
) -> None:
    """Random signal and delay (seeded) until the budget is spent; a run that caught no create
    mid-flight tested nothing, and fails."""
    bench.env["DATABASE_URL"] = str(request.getfixturevalue(f"{engine}_source"))
    rand = rng(f"random-delays-{engine}-{budget}")
    t = tally(f"random signal at random delay ({engine})")
    stop = time.monotonic() + budget
    hard: list[str] = []
    while time.monotonic() < stop and not hard:
        sig = rand.choice(["KILL", "TERM", "INT"])
        reached, code, err = trial(bench, sig, Moment("delay", rand.uniform(0.0, 0.9)))
        report = check_invariant(bench, then_create=rand.random() < 0.3)
        defects = judge(sig, code, err, report) if reached else []
        hard = [p for p in report.problems if not (defects and "traceback" in p)]
        bench.runs.clear()  # a traceback is judged once, in the trial that printed it
        t.add(reached=reached, held=not hard, defects=defects)
    assert t.reached > 0, f"no create was caught mid-flight in {t.trials} trials"
    assert not hard, hard


# --- defects found by this suite, fixed: each would fail again if it came back ------------


@pytest.mark.parametrize(
    "trials",
    [
        pytest.param(3, id="3-trials"),
        pytest.param(40, id="40-trials", marks=pytest.mark.fault_full),
    ],
)
def test_kill_between_data_rename_and_manifest_leaves_no_orphan(
    bench: Bench, sqlite_source: str, tally: Callable[[str], Tally], trials: int
) -> None:
    """Was a defect (an orphan data file nothing removed); now the manifest reserved first
    says in_progress, the backup lists as abandoned, and the sweep cleans it up."""
    bench.env["DATABASE_URL"] = sqlite_source
    t = tally("kill -9 between data rename and manifest (orphan)")
    for _ in range(trials):
        reached, code, err = trial(bench, "KILL", Moment("renamed"))
        report = check_invariant(bench)
        t.add(reached, report.held, [OrphanDataFile.__name__] if report.orphans else [])
        assert report.held, report.problems
        no_leftovers(report)  # raises OrphanDataFile once the window was hit


@pytest.mark.parametrize("sig", ["TERM"])  # SIGINT's traceback window is too narrow to hit
def test_signal_in_the_first_moments_exits_130_with_one_line(
    bench: Bench, sqlite_source: str, tally: Callable[[str], Tally], sig: str
) -> None:
    bench.env["DATABASE_URL"] = sqlite_source
    t = tally(f"SIG{sig} in the first 30-300 ms")
    for delay in (0.03, 0.06, 0.1, 0.15, 0.2, 0.3) * 2:  # the interpreter has started
        reached, code, err = trial(bench, sig, Moment("delay", delay))
        t.add(reached, True, signal_defects(sig, code, err))
        if signal_defects(sig, code, err):
            raise SignalWithoutMessage(f"SIG{sig} at {delay}s: exit {code}: {err[-300:]}")
        assert code in (0, 130), (code, err)
