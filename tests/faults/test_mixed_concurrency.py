"""Twenty ``create`` at once in mixed shapes (plain or custom, zstd on or off, age on or off,
seeded), while ``prune`` removes backups moved past retention and ``delete ID`` removes others:
zero lost (every exit-0 create is listed with its checksum), zero failed, every delete and
prune exits 0 or 11, and THE INVARIANT holds after each round."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers.manifests import backdate

from faults.harness import FULL_MARK, Bench, Spawned, Tally, check_invariant, no_leftovers
from sbbackup.crypto import age

pytestmark = pytest.mark.faults
FULL = getattr(pytest.mark, FULL_MARK)

WIDTH = 20
SEED_BATCH = 10  # backups made before the first round, for it to prune and delete
SPARED = 4  # the newest backups no round touches: the rest go, so the count stays bounded


def shape(rng: random.Random) -> list[str]:
    return [
        "--format",
        rng.choice(["plain", "custom"]),
        rng.choice(["--compress", "--no-compress"]),
        rng.choice(["--encrypt", "--no-encrypt"]),
    ]


@dataclass
class Round:
    creates: list[tuple[list[str], Spawned]] = field(default_factory=list)
    prunes: list[Spawned] = field(default_factory=list)
    deletes: dict[str, Spawned] = field(default_factory=dict)
    aged: set[str] = field(default_factory=set)


def completed(bench: Bench) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in bench.ok("list", "--json").json() if r["status"] == "completed"}


def prepare(bench: Bench, rng: random.Random, when: datetime) -> tuple[set[str], list[str]]:
    """With nothing running: of the completed backups but the ``SPARED`` newest (so the
    prune's last good copy is never one of them), move three in five 100 days back (manual
    retention is 30 days) for the prune, and name the others to delete."""
    have = sorted(completed(bench))
    assert len(have) > SPARED + 1, have
    victims = have[:-SPARED]
    rng.shuffle(victims)
    cut = (len(victims) * 3 + 4) // 5
    aged = {
        backdate(bench.backup_dir, backup_id, when - timedelta(days=100, seconds=n))
        for n, backup_id in enumerate(victims[:cut])
    }
    return aged, victims[cut:]


def one_round(bench: Bench, rng: random.Random, when: datetime) -> Round:
    rnd = Round()
    rnd.aged, doomed = prepare(bench, rng, when)
    jobs: list[tuple[str, Any]] = [("create", shape(rng)) for _ in range(WIDTH)]
    jobs += [("prune", None), ("prune", None)] + [("delete", i) for i in doomed]
    rng.shuffle(jobs)
    for kind, arg in jobs:
        if kind == "create":
            rnd.creates.append((arg, bench.spawn("create", "--json", *arg)))
        elif kind == "prune":
            rnd.prunes.append(bench.spawn("prune", "--json"))
        else:
            rnd.deletes[arg] = bench.spawn("delete", "--yes", "--json", arg)
    return rnd


def judge(bench: Bench, rnd: Round) -> tuple[list[str], list[str], list[str]]:
    """(lost, failed, wrong): creates that exited 0 but are not listed with their checksum,
    creates that did not exit 0, deletes/prunes that exited other than 0 or 11 or left what
    they said they removed."""
    lost, failed, wrong = [], [], []
    made = {}
    for args, s in rnd.creates:
        res = s.wait()
        if res.code != 0:
            failed.append(f"create {' '.join(args)}: exit {res.code}: {res.err.strip()[:300]}")
        else:
            made[res.json()["id"]] = res.json()
    removed: set[str] = set()
    for s in rnd.prunes:
        res = s.wait()
        if res.code == 0:
            removed |= set(res.json()["removed"])
        elif res.code != 11:
            wrong.append(f"prune: exit {res.code}: {res.err.strip()[:300]}")
    deleted = set()
    for backup_id, s in rnd.deletes.items():
        res = s.wait()
        if res.code == 0:
            deleted.add(backup_id)
        elif res.code != 11:
            wrong.append(f"delete {backup_id}: exit {res.code}: {res.err.strip()[:300]}")
    listed = completed(bench)
    for backup_id, rec in made.items():
        if listed.get(backup_id, {}).get("checksum") != rec["checksum"]:
            lost.append(backup_id)
    wrong += [f"{i}: deleted, still listed" for i in deleted if i in listed]
    wrong += [f"{i}: pruned, still listed" for i in removed if i in listed]
    if not rnd.prunes or all(s.proc.returncode == 11 for s in rnd.prunes):
        wrong.append("no prune ran")
    wrong += [f"{i}: pruned, though not past retention" for i in removed - rnd.aged]
    wrong += [f"{i}: past retention, not pruned" for i in rnd.aged - removed if i in listed]
    return lost, failed, wrong


@pytest.mark.parametrize(
    "rounds",
    [pytest.param(1, id="1-round"), pytest.param(20, id="20-rounds", marks=FULL)],
)
def test_mixed_creates_with_prune_and_delete(
    bench: Bench,
    small_pg_source: str,
    tmp_path: Path,
    tally: Callable[[str], Tally],
    rounds: int,
) -> None:
    seed = f"mixed-{rounds}"
    rng = random.Random(seed)
    print(f"seed {seed!r}")
    me = age.generate_identity()
    ident = tmp_path / "identity.txt"
    ident.write_text(me.secret_str + "\n")
    ident.chmod(0o600)
    bench.env |= {
        "DATABASE_URL": small_pg_source,
        "DB_BACKUP_ENCRYPTION_RECIPIENTS": me.recipient().public_key_str,
        "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": str(ident),
    }
    t = tally(f"{WIDTH} mixed creates with prune and delete")
    batch = [bench.spawn("create", "--json", *shape(rng)) for _ in range(SEED_BATCH)]
    assert all(s.wait().code == 0 for s in batch), [s.err.read_text() for s in batch]
    shapes: dict[str, int] = {}
    gone = 0
    for n in range(rounds):
        rnd = one_round(bench, rng, datetime.now(UTC))
        gone += len(rnd.aged) + len(rnd.deletes)
        for args, _ in rnd.creates:
            shapes[" ".join(args)] = shapes.get(" ".join(args), 0) + 1
        lost, failed, wrong = judge(bench, rnd)
        report = check_invariant(bench, then_create=False)
        held = not (lost or failed or wrong) and report.held
        t.add(reached=True, held=held)
        assert not lost, f"round {n}: exit-0 creates not listed with their checksum: {lost}"
        assert not failed, f"round {n}: {failed}"
        assert not wrong, f"round {n}: {wrong}"
        assert report.held, report.problems
        assert not report.partials and not report.temps, (report.partials, report.temps)
        bench.runs.clear()
    print(f"{rounds} rounds of {WIDTH} creates; {gone} backups pruned or deleted meanwhile")
    print(f"shapes: {dict(sorted(shapes.items()))}")
    report = check_invariant(bench)
    assert report.held, report.problems
    no_leftovers(report)
