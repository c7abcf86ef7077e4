"""Twenty ``sbbackup create`` at once, round after round: every create that exited 0 is listed
afterwards with the bytes it reported, and verifies; the others exit with a documented code
and one line; THE INVARIANT holds after each round."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.cli import Result

from faults.harness import (
    Bench,
    LostBackup,
    SameIdClash,
    SweepRace,
    Tally,
    check_invariant,
    no_leftovers,
    release,
)
from sbbackup.errors import ExitCode

pytestmark = pytest.mark.faults

WIDTH = 20
DOCUMENTED = {int(c) for c in ExitCode} - {int(ExitCode.UNEXPECTED)}


@dataclass
class Round:
    results: list[Result]
    lost: list[str] = field(default_factory=list)  # exit 0, yet not listed with its bytes
    cannot_commit: list[str] = field(default_factory=list)  # the sweep race: exit 4 or 1
    clashes: list[str] = field(default_factory=list)  # exit 4: the partial "File exists"
    other: list[str] = field(default_factory=list)  # any other failure


def one_round(bench: Bench, barrier: Path | None = None) -> Round:
    spawned = [bench.spawn("create", "--json", barrier=barrier) for _ in range(WIDTH)]
    if barrier is not None:
        release(barrier, WIDTH)
    rnd = Round([s.wait() for s in spawned])
    listed = {r["id"]: r for r in bench.ok("list", "--json").json()}
    for res in rnd.results:
        if res.code == 0:
            rec: dict[str, Any] = res.json()
            seen = listed.get(rec["id"], {})
            if seen.get("status") != "completed" or seen.get("checksum") != rec["checksum"]:
                rnd.lost.append(rec["id"])
        elif res.code == 4 and "cannot commit" in res.err:
            rnd.cannot_commit.append(res.err.strip()[:200])
            continue
        elif res.code == 1 and "fcntl.flock" in res.err and "BlockingIOError" in res.err:
            rnd.cannot_commit.append("exit 1: BlockingIOError in LocalWriter's flock")
            continue
        elif res.code == 4 and ".partial: File exists" in res.err:
            rnd.clashes.append(res.err.strip()[:200])
        else:
            rnd.other.append(f"exit {res.code}: {res.err.strip()[:300]}")
        assert res.code in DOCUMENTED and "Traceback" not in res.err, f"exit {res.code}:\n{res.err}"
    return rnd


def defects_of(rnd: Round) -> list[str]:
    seen = {LostBackup: rnd.lost, SweepRace: rnd.cannot_commit, SameIdClash: rnd.clashes}
    return [d.__name__ for d, found in seen.items() if found]


@pytest.mark.parametrize(
    "rounds",
    [pytest.param(1, id="1-round"), pytest.param(20, id="20-rounds", marks=pytest.mark.fault_full)],
)
def test_concurrent_creates(
    bench: Bench, small_sqlite_source: str, tally: Callable[[str], Tally], rounds: int
) -> None:
    """Zero lost, zero failed: every create exits 0 and its backup is listed with its bytes
    (the same-millisecond clash and the sweep race were defects, fixed by ID reservation)."""
    bench.env["DATABASE_URL"] = small_sqlite_source
    t = tally(f"{WIDTH} concurrent creates")
    for _ in range(rounds):
        rnd = one_round(bench)
        report = check_invariant(bench, then_create=False)
        hard = report.problems
        t.add(reached=True, held=not hard and not rnd.other, defects=defects_of(rnd))
        assert not rnd.other, rnd.other
        assert not hard, hard
        assert not (rnd.lost or rnd.cannot_commit or rnd.clashes), defects_of(rnd)
        bench.runs.clear()
        assert not report.partials and not report.temps, (report.partials, report.temps)
    report = check_invariant(bench)
    assert report.held, report.problems
    no_leftovers(report)


def rounds_until(bench: Bench, seen: Callable[[Round], list[str]], tries: int) -> list[str]:
    for _ in range(tries):
        found = seen(one_round(bench))
        if found:
            return found
    return []


def test_creates_of_the_same_millisecond_all_succeed(
    bench: Bench, small_sqlite_source: str, tmp_path: Path, tally: Callable[[str], Tally]
) -> None:
    """Twenty creates released at once (see Bench.spawn's barrier): each gets its own ID."""
    bench.env["DATABASE_URL"] = small_sqlite_source
    t = tally(f"{WIDTH} creates released in the same millisecond")
    for n in range(3):
        rnd = one_round(bench, tmp_path / f"go{n}")
        report = check_invariant(bench, then_create=False)
        hard = report.problems
        t.add(reached=True, held=not hard, defects=defects_of(rnd))
        assert not hard, hard
        bench.runs.clear()
        if rnd.lost:
            raise LostBackup(f"exit-0 creates not listed with their bytes: {rnd.lost}")
        if rnd.clashes:
            raise SameIdClash(f"{len(rnd.clashes)} of {WIDTH} failed: {rnd.clashes[0]}")


@pytest.mark.parametrize(
    "tries",
    [
        pytest.param(2, id="2-rounds"),
        pytest.param(10, id="10-rounds", marks=pytest.mark.fault_full),
    ],
)
def test_concurrent_creates_never_sweep_a_live_partial(
    bench: Bench, small_sqlite_source: str, tries: int
) -> None:
    bench.env["DATABASE_URL"] = small_sqlite_source
    errors = rounds_until(bench, lambda r: r.cannot_commit, tries=tries)
    if errors:
        raise SweepRace(f"creates failed to commit: {errors}")
