"""Bit flips and truncations of data files and manifests: ``verify --deep`` fails with a
documented exit code, ``restore`` never reports success, and the other backups stay whole."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.manifests import manifest_path, read_manifest, replace_data
from helpers.pgcluster import Cluster

from faults.harness import (
    Bench,
    RestoreSkipsContentChecksum,
    Tally,
    VerifyNeedsDatabaseUrl,
    check_invariant,
    no_leftovers,
    sample,
)
from sbbackup.crypto import age
from sbbackup.errors import ExitCode

pytestmark = pytest.mark.faults

DOCUMENTED = {int(c) for c in ExitCode} - {int(ExitCode.OK), int(ExitCode.UNEXPECTED)}
VARIANTS = ["sqlite", "sqlite-age", "pg"]


@dataclass(frozen=True)
class Damage:
    """What is done to one stored backup: ``where`` is "data" or "manifest"; ``kind`` "flip"
    (one bit at ``at``, a fraction of the length), "truncate" (to ``at`` of it) or "append";
    ``recompute``: the manifest's size and checksum are made to match the damaged data, so
    only the formats' own checks and the content checksum can object."""

    where: str
    kind: str
    at: float = 0.0
    recompute: bool = False
    key: str = ""  # manifest damage: flip a bit in this field's value (else anywhere)

    def __str__(self) -> str:
        more = "-resummed" if self.recompute else ""
        what = f"-{self.key}" if self.key else f"{self.at:g}"
        return f"{self.where}-{self.kind}{what}{more}"

    @property
    def seen_by_list(self) -> bool:
        """list reads manifests and sizes, never data: it sees a changed size or name, a
        broken manifest, not a flipped data byte or checksum (that is verify's job)."""
        if self.where == "manifest":
            return self.key not in ("checksum", "contentChecksum")
        return self.kind != "flip" and not self.recompute

    def apply(self, directory: Path, backup_id: str) -> None:
        if self.where == "manifest":
            path = manifest_path(directory, backup_id)
            raw = path.read_bytes()
            if self.key:  # the last character of the value: a digit or a hex digit
                start = raw.index(f'"{self.key}": '.encode()) + len(self.key) + 4
                end = start + 1
                while raw[end : end + 1] not in (b",", b"\n", b"}"):
                    end += 1
                pos = end - 2 if raw[end - 1 : end] == b'"' else end - 1
                raw = raw[:pos] + bytes([raw[pos] ^ 0x01]) + raw[pos + 1 :]
                path.write_bytes(raw)
            else:
                path.write_bytes(self.mangle(raw))
            return
        doc = read_manifest(directory, backup_id)
        data = self.mangle((directory / doc["filename"]).read_bytes())
        if self.recompute:
            replace_data(directory, backup_id, data)
        else:
            (directory / doc["filename"]).write_bytes(data)

    def mangle(self, data: bytes) -> bytes:
        pos = min(len(data) - 1, int(len(data) * self.at))
        if self.kind == "flip":
            return data[:pos] + bytes([data[pos] ^ 0x10]) + data[pos + 1 :]
        if self.kind == "truncate":
            return data[:pos]
        return data + b"\0garbage"


DAMAGES = [
    *(Damage("data", "flip", at, r) for r in (False, True) for at in (0.0, 0.001, 0.5, 0.9999)),
    *(Damage("data", "truncate", at, r) for r in (False, True) for at in (0.0, 0.5, 0.9999)),
    Damage("data", "append", 1.0, True),
    # A manifest flip that lands in, say, ``duration`` changes nothing verify checks; these
    # hit what it must check (and the JSON structure itself).
    *(Damage("manifest", "flip", key=k) for k in ("checksum", "contentChecksum", "size", "id")),
    Damage("manifest", "flip", key="filename"),
    Damage("manifest", "flip", 0.0),
    *(Damage("manifest", "truncate", at) for at in (0.0, 0.5, 0.99)),
]
CASES = [(v, d) for v in VARIANTS for d in DAMAGES]


@pytest.fixture
def variant_env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[str], tuple[dict[str, str], Callable[[], list[str]]]]:
    """(environment, the arguments naming a fresh restore target) for a variant."""

    def make(variant: str) -> tuple[dict[str, str], Callable[[], list[str]]]:
        if variant == "pg":
            pg: Cluster = request.getfixturevalue("pg")
            src = str(request.getfixturevalue("small_pg_source"))
            return {"DATABASE_URL": src}, lambda: [
                "--target-url",
                pg.url("r_" + uuid.uuid4().hex[:10]),
                "--create-target",
            ]
        env = {"DATABASE_URL": str(request.getfixturevalue("small_sqlite_source"))}
        if variant == "sqlite-age":
            me = age.generate_identity()
            ident = tmp_path / "identity.txt"
            ident.write_text(me.secret_str + "\n")
            ident.chmod(0o600)
            env |= {
                "DB_BACKUP_ENCRYPTION": "true",
                "DB_BACKUP_ENCRYPTION_RECIPIENTS": me.recipient().public_key_str,
                "DB_BACKUP_ENCRYPTION_IDENTITY_FILE": str(ident),
            }
        return env, lambda: [
            "--target-url",
            f"sqlite:///{tmp_path / ('r_' + uuid.uuid4().hex[:8] + '.db')}",
        ]

    return make


def case_id(case: tuple[str, Damage]) -> str:
    return f"{case[0]}-{case[1]}"


def case_marks(case: tuple[str, Damage]) -> list[pytest.MarkDecorator]:
    return []  # restore checks contentChecksum now (it skipped it: a known defect, fixed)


@pytest.mark.parametrize("source", ["sqlite", "sqlite-age", "pg"])
def test_undamaged_backup_verifies_and_restores(
    bench: Bench,
    variant_env: Callable[[str], tuple[dict[str, str], Callable[[], list[str]]]],
    source: str,
) -> None:
    """The control: the same harness restores an undamaged backup of each variant."""
    env, target = variant_env(source)
    bench.env.update(env)
    backup = bench.ok("create", "--json").json()["id"]
    bench.ok("verify", "--deep", backup)
    res = bench.ok("restore", backup, *target(), "--json")
    assert res.json()["status"] == "completed"


@pytest.mark.parametrize("case", sample(CASES, keep=4, ids=case_id, marks=case_marks))
def test_damaged_backup_fails_verify_and_restore(
    bench: Bench,
    variant_env: Callable[[str], tuple[dict[str, str], Callable[[], list[str]]]],
    tally: Callable[[str], Tally],
    case: tuple[str, Damage],
) -> None:
    variant, damage = case
    env, target = variant_env(variant)
    bench.env.update(env)
    t = tally(f"{damage.where} {damage.kind} ({variant})")
    keep = bench.ok("create", "--json").json()["id"]  # an undamaged neighbour
    victim = bench.ok("create", "--json").json()["id"]
    damage.apply(bench.backup_dir, victim)

    res = bench.run("verify", "--deep", victim)
    assert res.code != 0, f"verify --deep passed a damaged backup ({damage})"
    assert res.code in DOCUMENTED, (res.code, res.err)
    res = bench.run("restore", victim, *target(), "--json")
    if res.code == 0 and damage.key == "contentChecksum":
        raise RestoreSkipsContentChecksum(f"restore of {victim} reported {res.out[:200]}")
    assert res.code != 0 and '"completed"' not in res.out, (res.code, res.out)
    assert res.code in DOCUMENTED, (res.code, res.err)
    # list still parses and shows the victim as anything but a good backup, unless only its
    # bytes changed (list reads manifests and sizes, never data: a same-size flip is for verify)
    listed = {r["id"]: r["status"] for r in bench.ok("list", "--json").json()}
    assert listed[keep] == "completed"
    if damage.seen_by_list:
        assert listed.get(victim, "corrupt") != "completed", listed

    report = check_invariant(bench, damaged=frozenset({victim}))
    t.add(reached=True, held=report.held)
    assert report.held, report.problems
    assert keep in report.completed
    no_leftovers(report)


def test_verify_deep_of_a_sqlite_backup_needs_no_database_url(
    bench: Bench, small_sqlite_source: str
) -> None:
    """verify reads a stored backup: the engine to check it with is the one its manifest
    names, so a verification host without DATABASE_URL must not fail a good backup."""
    backup = bench.ok("create", "--json", env={"DATABASE_URL": small_sqlite_source}).json()["id"]
    res = bench.run("verify", "--deep", backup)
    if res.code == 13 and "completion marker" in res.err:
        raise VerifyNeedsDatabaseUrl(res.err.strip())
    assert res.code == 0, res.err
