"""Damaged manifests (row 15 of issue 12's fault table): missing, truncated, wrong types,
``../`` names, a newer schema, nested 100,000 deep, huge. Every reader flags the backup and
never counts it good, ``verify`` of it exits 13, nothing prints a traceback, the other backups
stay whole, and ``delete`` removes it (except a newer schema's, which no one may remove)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers.manifests import manifest_path, read_manifest

from faults.harness import Bench, Tally, check_invariant, no_leftovers, sample
from sbbackup.errors import ExitCode

pytestmark = pytest.mark.faults

DOCUMENTED = {int(c) for c in ExitCode} - {int(ExitCode.UNEXPECTED)}


def _set(**fields: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(doc: dict[str, Any]) -> Any:
        doc.update(fields)
        return doc

    return edit


def _nested(depth: int) -> Callable[[dict[str, Any]], Any]:
    def edit(doc: dict[str, Any]) -> Any:
        return "[" * depth + "]" * depth  # text: json.dumps itself would recurse

    return edit


@dataclass(frozen=True)
class Damage:
    name: str
    edit: Callable[[dict[str, Any]], Any] | None  # None: the manifest is removed
    truncate: float | None = None  # keep this fraction of the manifest's bytes
    newer: bool = False  # a newer sbbackup's: flagged, but nobody may delete it

    def apply(self, directory: Path, backup_id: str) -> None:
        path = manifest_path(directory, backup_id)
        if self.truncate is not None:
            raw = path.read_bytes()
            path.write_bytes(raw[: int(len(raw) * self.truncate)])
        elif self.edit is None:
            path.unlink()
        else:
            out = self.edit(read_manifest(directory, backup_id))
            path.write_text(out if isinstance(out, str) else json.dumps(out))


DAMAGES = [
    Damage("missing", None),
    *(Damage(f"truncated-{f:g}", None, truncate=f) for f in (0.0, 0.3, 0.97)),
    Damage("size-is-a-string", _set(size="12")),
    Damage("status-is-a-number", _set(status=7)),
    Damage("contents-is-a-list", _set(contents=[1, 2])),
    Damage("checksum-is-a-number", _set(checksum=12)),
    Damage("not-an-object", lambda doc: [doc]),
    Damage("filename-escapes", _set(filename="../outside.sql")),
    Damage("filename-absolute", _set(filename="/etc/passwd")),
    Damage("id-escapes", _set(id="../streambuddy_backup_2026-01-01T00-00-00-000Z")),
    Damage("id-of-another-backup", _set(id="streambuddy_backup_2026-01-01T00-00-00-000Z")),
    Damage("newer-schema", _set(schemaVersion=99), newer=True),
    Damage("nested-100000", _nested(100_000)),
    Damage(
        "nested-in-a-field",
        lambda doc: json.dumps(doc)[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}",
    ),
    Damage("huge", _set(error="x" * (3 << 20))),
]

READERS = [
    ("list", "--json"),
    ("list",),
    ("statistics", "--json"),
    ("health", "--json"),
    ("metrics",),
    ("verify", "--all"),
    ("prune", "--dry-run"),
    ("schedules",),
]


@pytest.mark.parametrize("damage", sample(DAMAGES, keep=3, ids=lambda d: d.name))
def test_damaged_manifest_is_flagged_never_counted_never_a_traceback(
    bench: Bench, small_sqlite_source: str, tally: Callable[[str], Tally], damage: Damage
) -> None:
    bench.env["DATABASE_URL"] = small_sqlite_source
    t = tally("damaged manifest")
    good = [bench.ok("create", "--json").json()["id"] for _ in range(2)]
    victim = bench.ok("create", "--json").json()["id"]
    damage.apply(bench.backup_dir, victim)

    for args in READERS:
        res = bench.run(*args)
        assert res.code in DOCUMENTED, f"sbbackup {' '.join(args)} exited {res.code}: {res.err}"
        assert "Traceback" not in res.err, f"sbbackup {' '.join(args)}:\n{res.err}"
    listed = {r["id"]: r for r in bench.ok("list", "--json").json()}
    assert listed.get(victim, {}).get("status") != "completed", listed.get(victim)
    assert victim in listed, "the damaged backup is not flagged at all"
    assert all(listed[g]["status"] == "completed" for g in good)
    stats = bench.ok("statistics", "--json").json()
    completed = stats.get("backups", stats).get("completed", stats.get("completed"))
    assert completed == len(good), stats

    res = bench.run("verify", victim)
    assert res.code == ExitCode.INTEGRITY, f"verify of {damage.name} exited {res.code}: {res.err}"
    assert len(res.err.strip().splitlines()) == 1, res.err
    res = bench.run("verify", "--all")
    assert res.code == ExitCode.INTEGRITY, f"verify --all exited {res.code}: {res.err}"

    report = check_invariant(bench, damaged=frozenset({victim}))
    assert report.held, report.problems
    assert set(good) <= set(report.completed)

    res = bench.run("delete", "--yes", victim)
    if damage.newer:
        assert res.code != 0 and manifest_path(bench.backup_dir, victim).exists(), res.err
    else:
        assert res.code == 0, f"delete of {damage.name} exited {res.code}: {res.err}"
        left = [n for n in bench.names() if n.startswith(victim + ".")]
        assert not left, left
        after = check_invariant(bench, then_create=False)
        assert after.held, after.problems
        no_leftovers(after)
    assert all(t not in bench.names() for t in ("outside.sql",))
    assert not (bench.backup_dir.parent / "outside.sql").exists()
    t.add(reached=True, held=report.held)
