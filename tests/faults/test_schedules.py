"""Schedules under fault: two ``run-schedule`` of one schedule at once (exactly one backs up,
the other exits 11), and retention after a run of failures, evaluated now and 60 and 400 days
later (``--now``): every good backup retention should keep is kept, never the last good copy
deleted."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers.cli import Result
from helpers.manifests import backdate

from faults.harness import FULL_MARK, Bench, Tally, check_invariant, no_leftovers, release, sample
from sbbackup.crypto import age
from sbbackup.model import parse_iso

pytestmark = pytest.mark.faults
FULL = getattr(pytest.mark, FULL_MARK)


def one_line(err: str) -> bool:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith('{"error"')]
    return len(lines) == 1 and "Traceback" not in err


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def on_disk(bench: Bench) -> list[str]:
    """The completed backups' IDs, read from their manifests here (no CLI run: cheap)."""
    found = []
    for path in sorted(bench.backup_dir.glob("*.json")):
        doc = json.loads(path.read_text())
        if doc.get("status") == "completed":
            found.append(doc["id"])
    return found


# --- row 10: two run-schedule of one schedule at once -------------------------------------


def when_of(rec: dict[str, Any]) -> datetime:
    parsed = parse_iso(rec["createdAt"])
    assert parsed is not None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window(rec: dict[str, Any]) -> tuple[datetime, datetime]:
    """When a backup was being written: [completedAt - duration, completedAt], real time."""
    end = when_of({"createdAt": rec["completedAt"]})
    return end - timedelta(milliseconds=int(rec["duration"]) + 1), end


def pair(bench: Bench, go: Path, at: tuple[str, str], lag: float) -> list[Result]:
    runs = [
        bench.spawn("run-schedule", "daily", "--json", *at, barrier=go.with_suffix(f".{k}"))
        for k in (1, 2)
    ]
    release(go.with_suffix(".1"), 1)
    if lag:
        time.sleep(lag)
    release(go.with_suffix(".2"), 1)
    return [r.wait() for r in runs]


@pytest.mark.parametrize(
    "trials",
    [pytest.param(5, id="5-trials"), pytest.param(100, id="100-trials", marks=FULL)],
)
def test_two_concurrent_run_schedules(
    bench: Bench,
    small_sqlite_source: str,
    tmp_path: Path,
    tally: Callable[[str], Tally],
    trials: int,
) -> None:
    """Two ``run-schedule daily`` released from barriers in the same millisecond, or the
    second a little later (seeded): exactly one backup, the other exits 11 with one line.
    Each trial runs 8 days after the last (``--now``), so the winner's own retention removes
    the previous trial's backup. Two exits 0 are a defect if the two backups were written
    at the same time; if not, the second started after the first was done (a loaded
    machine): that try did not reach the race, and the trial is tried again. THE
    INVARIANT at the end."""
    bench.env["DATABASE_URL"] = small_sqlite_source
    seed = f"run-schedule-pair-{trials}"
    rng = random.Random(seed)
    print(f"seed {seed!r}")
    t = tally("two concurrent run-schedule")
    base = datetime.now(UTC).replace(microsecond=0)
    late = step = 0
    for n in range(trials):
        lag = rng.choice([0.0, 0.0, rng.uniform(0, 0.02)])
        late += bool(lag)
        for attempt in range(5):
            step += 1  # 8 days on: the winner's retention removes every earlier backup
            at = ("--now", stamp(base + timedelta(days=8 * step)))
            previous = on_disk(bench)
            results = pair(bench, tmp_path / f"go{n}-{attempt}", at, lag)
            codes = sorted(r.code for r in results)
            if codes != [0, 0]:
                break
            a, b = (window(r.json()["backup"]) for r in results)
            if a[0] < b[1] and b[0] < a[1]:
                t.add(reached=True, held=False)
                raise AssertionError(f"two backups of one schedule written at once: {a}, {b}")
            t.add(reached=False, held=True)  # one after the other: not the race
        listed = on_disk(bench)
        t.add(reached=True, held=codes == [0, 11] and len(listed) == 1)
        assert codes == [0, 11], (n, lag, [(r.code, r.err) for r in results])
        loser = next(r for r in results if r.code == 11)
        assert one_line(loser.err) and "schedule daily" in loser.err, loser.err
        won = next(r for r in results if r.code == 0).json()
        assert listed == [won["backup"]["id"]], (n, listed)
        assert sorted(won["removed"]) == sorted(previous), (won["removed"], previous)
    print(f"{trials} trials ({late} with the second run late), {t.trials - trials} tries redone")
    report = check_invariant(bench)
    assert report.held, report.problems
    no_leftovers(report)


# --- row 12: failing runs, then retention now, 60 and 400 days later ----------------------

RETENTION = {None: (30, 1), "test": (1, 1), "daily": (7, 1), "weekly": (30, 1), "monthly": (365, 1)}
# What a run-schedule prunes besides its own schedule: the manual and the drill backups.
UNSCHEDULED: tuple[str | None, ...] = (None, "test")


def must_keep(listed: list[dict[str, Any]], now: datetime) -> set[str]:
    """What retention must keep of the completed backups, by the documented rules (computed
    here, not by the code under test): per schedule, the newest ``minKeep`` completed ones
    and every completed one younger than ``retentionDays``."""
    keep: set[str] = set()
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for r in listed:
        if r["status"] == "completed":
            groups.setdefault(r.get("scheduleId"), []).append(r)
    for sid, recs in groups.items():
        days, min_keep = RETENTION[sid]
        recs.sort(key=lambda r: (when_of(r), r["id"]), reverse=True)
        keep |= {r["id"] for r in recs[:min_keep]}
        keep |= {r["id"] for r in recs if when_of(r) > now - timedelta(days=days)}
    return keep


def completed(bench: Bench) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in bench.ok("list", "--json").json() if r["status"] == "completed"}


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    me = age.generate_identity()
    ident = tmp_path / "identity.txt"
    ident.write_text(me.secret_str + "\n")
    ident.chmod(0o600)
    return {
        "DB_BACKUP_ENCRYPTION_RECIPIENTS": me.recipient().public_key_str,
        "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": str(ident),
    }


BAD_PG = "postgresql://nobody@127.0.0.1:1/nothing"  # nothing listens on port 1


def failing_run(bench: Bench, kind: str, now: datetime) -> tuple[int, str]:
    """One failing run: a schedule or manual backup of a database that is not there, or an
    encrypted schedule with no recipient. Returns (exit code, stderr)."""
    at = ("--now", stamp(now))
    if kind == "bad-url-schedule":
        res = bench.run("run-schedule", "daily", *at, env={"DATABASE_URL": BAD_PG})
        want = 3
    elif kind == "bad-url-manual":
        res = bench.run("create", env={"DATABASE_URL": BAD_PG})
        want = 3
    elif kind == "missing-sqlite":
        res = bench.run(
            "run-schedule", "daily", *at, env={"DATABASE_URL": "sqlite:////nonexistent/db.db"}
        )
        want = 3
    else:  # missing-recipient: weekly encrypts, and no recipient is configured
        res = bench.run("run-schedule", "weekly", *at)
        want = 2
    assert res.code == want and one_line(res.err), (kind, res.code, res.err)
    return res.code, res.err


def applied(
    bench: Bench,
    before: dict[str, dict[str, Any]],
    now: datetime,
    scope: Collection[str | None] | None,
) -> dict[str, dict[str, Any]]:
    """After retention at ``now`` over ``scope`` (schedule IDs, None among them for manual
    backups; or None: all): exactly the
    completed backups the rules let go are gone, every other one is still there, and no
    group lost its last good copy. Returns the completed backups now."""
    after = completed(bench)
    inside = [r for r in before.values() if scope is None or r.get("scheduleId") in scope]
    expected_gone = {r["id"] for r in inside} - must_keep(inside, now)
    gone = set(before) - set(after)
    assert gone == expected_gone, (
        f"at {stamp(now)} ({'all' if scope is None else sorted(map(str, scope))}): "
        f"removed {sorted(gone)}, "
        f"retention lets go of {sorted(expected_gone)}"
    )
    assert set(after) - set(before) == set(), "retention added a backup?"
    groups = {r.get("scheduleId") for r in before.values()}
    left = {r.get("scheduleId") for r in after.values()}
    assert groups <= left, f"a group lost its last good copy: {groups - left}"
    return after


def scheduled(
    bench: Bench, state: dict[str, dict[str, Any]], sid: str, now: datetime, **kw: Any
) -> dict[str, dict[str, Any]]:
    """A good ``run-schedule`` at ``now``: its retention (its own schedule's, the manual and
    the drill backups') is checked like a prune's."""
    res = bench.ok("run-schedule", sid, "--json", "--now", stamp(now), **kw).json()
    before = {**state, res["backup"]["id"]: res["backup"]}
    after = applied(bench, before, now, (sid, *UNSCHEDULED))
    assert sorted(res["removed"]) == sorted(set(before) - set(after)), res["removed"]
    return after


GOOD = [("daily", 20), ("weekly", 40), ("daily", 9), ("weekly", 10), ("daily", 3)]
GOOD += [("monthly", 100), ("daily", 1)]
KINDS = ["bad-url-schedule", "bad-url-manual", "missing-sqlite", "missing-recipient"]


@pytest.mark.parametrize("seed", sample(list(range(3)), keep=1, ids=lambda n: f"seed{n}"))
def test_retention_after_failing_runs(
    bench: Bench,
    small_sqlite_source: str,
    keys: dict[str, str],
    tally: Callable[[str], Tally],
    seed: int,
) -> None:
    rng = random.Random(f"retention-{seed}")
    kinds = [rng.choice(KINDS) for _ in range(5)]
    print(f"seed retention-{seed}: failures {kinds}")
    bench.env["DATABASE_URL"] = small_sqlite_source
    bench.env["DB_BACKUP_ENCRYPTION_IDENTITY_FILE"] = keys["DB_BACKUP_ENCRYPTION_IDENTITY_FILE"]
    recipients = {"DB_BACKUP_ENCRYPTION_RECIPIENTS": keys["DB_BACKUP_ENCRYPTION_RECIPIENTS"]}
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    t = tally("retention after failing runs (now, +60 d, +400 d)")
    for days in (45, 5):  # manual backups, moved back in time
        new = bench.ok("create", "--json").json()["id"]
        backdate(bench.backup_dir, new, base - timedelta(days=days, minutes=rng.randrange(60)))
    state = completed(bench)
    for sid, days in GOOD:  # each run applies its (and the manual) retention, checked too
        now = base - timedelta(days=days, minutes=rng.randrange(60))
        state = scheduled(bench, state, sid, now, env=recipients)
    for i, kind in enumerate(kinds):
        failing_run(bench, kind, base + timedelta(hours=i + 1))
    assert completed(bench) == state, "a failing run changed the completed backups"
    removed: dict[int, list[str]] = {}
    for offset in (0, 60, 400):
        now = base + timedelta(days=offset, hours=6)
        plan = bench.ok("prune", "--dry-run", "--json", "--now", stamp(now)).json()
        keep = must_keep(list(state.values()), now)
        actions = {d["id"]: d["action"] for d in plan["decisions"]}
        wrong = {i: a for i, a in actions.items() if i in state and (a == "keep") != (i in keep)}
        assert not wrong, f"+{offset} d: the plan disagrees with the rules on {wrong}"
        failing_run(bench, "bad-url-schedule", now)  # a failed run never prunes
        res = bench.ok("prune", "--json", "--now", stamp(now)).json()
        after = applied(bench, state, now, None)  # the dry run and the failure removed nothing
        removed[offset] = sorted(set(state) - set(after))
        assert set(removed[offset]) <= set(res["removed"]), res
        state = scheduled(bench, after, "daily", now)
    print(f"completed backups removed by prune: {removed}")
    # 400 days on, every group holds exactly its newest good copy (daily: the last run's)
    final = completed(bench)
    assert sorted(r.get("scheduleId") or "" for r in final.values()) == [
        "",
        "daily",
        "monthly",
        "weekly",
    ], final
    report = check_invariant(bench)
    t.add(reached=True, held=report.held)
    assert report.held, report.problems
    no_leftovers(report)
