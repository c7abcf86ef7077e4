"""Backup IDs are reserved, writers that died are swept, orphans are seen and removed.

Each create takes its ID's lock, then creates the ID's manifest (in progress) only if none
exists; a loser moves on to ``ID-1``... So concurrent creates in one millisecond never share
an ID, and no exit-0 create's backup is lost. Real CLI runs, real files, real locks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SB
from helpers.cli import Result
from helpers.manifests import backdate, edit_manifest, manifest_path, read_manifest

FIXED_ID = "streambuddy_backup_2026-12-03T10-00-00-000Z"
PINNED = f"sbbackup.ops.backups.new_backup_id = lambda now: {FIXED_ID!r}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "shop.db"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
        "INSERT INTO t (v) SELECT hex(randomblob(64)) FROM "
        "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000) "
        "SELECT x FROM c);"
    )
    con.commit()
    con.close()
    return path


@pytest.fixture
def env(db: Path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{db}"}


def spawn(sb: SB, env: dict[str, str], patch: str, *args: str) -> subprocess.Popen[str]:
    """The real CLI in a child, with ``patch`` applied first (to pin the ID clock)."""
    code = (
        f"import sys, sbbackup.cli, sbbackup.ops.backups\n{patch}\nsbbackup.cli.main(sys.argv[1:])"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env={**sb.env, **env, "PYTHONPATH": str(Path(__file__).parents[2])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> Result:
    out, err = proc.communicate(timeout=300)
    return Result(proc.returncode, out, err)


def audit(sb: SB) -> list[dict[str, object]]:
    return [json.loads(line) for line in (sb.backup_path / "audit.log").read_text().splitlines()]


@pytest.mark.parametrize("pinned", [True, False], ids=["one-millisecond", "real-clock"])
def test_concurrent_creates_never_lose_a_backup(sb: SB, env: dict[str, str], pinned: bool) -> None:
    """20 creates at once, with the ID clock pinned to one millisecond or not: every exit-0
    create's backup is listed, completed, with its own ID, and verifies."""
    patch = PINNED if pinned else "pass"
    procs = [spawn(sb, env, patch, "create", "--json") for _ in range(20)]
    results = [finish(p) for p in procs]
    for res in results:
        assert res.code == 0, res.err
        assert "Traceback" not in res.err
    made = [json.loads(res.out)["id"] for res in results]
    assert len(set(made)) == 20, made
    if pinned:
        assert set(made) == {FIXED_ID} | {f"{FIXED_ID}-{n}" for n in range(1, 20)}
    listed = {r["id"]: r for r in sb.ok("list", "--json", env=env).json()}
    assert set(listed) == set(made)
    assert {r["status"] for r in listed.values()} == {"completed"}
    assert len({r["filename"] for r in listed.values()}) == 20
    completed = [e["id"] for e in audit(sb) if e["operation"] == "create"]
    assert sorted(completed) == sorted(made)  # the audit log and the catalog agree
    verify = sb("verify", "--all", "--json", env=env)
    assert verify.code == 0, verify.err
    assert not list((sb.backup_path / "locks").glob("backup-*.lock"))  # removed when done
    assert not [n for n in os.listdir(sb.backup_path) if n.endswith((".partial", ".tmp"))]


def test_an_id_asked_for_that_is_taken_is_refused(sb: SB, env: dict[str, str]) -> None:
    first = finish(spawn(sb, env, PINNED, "create", "--json"))
    assert first.code == 0, first.err
    code = (
        "import sys\n"
        "from sbbackup.config import load_settings\n"
        "from sbbackup.errors import SbbackupError\n"
        "from sbbackup.ops import Context, CreateOptions, create_backup\n"
        "ctx = Context(load_settings())\n"
        "try:\n"
        f"    create_backup(ctx, CreateOptions(backup_id={FIXED_ID!r}))\n"
        "except SbbackupError as exc:\n"
        "    print(int(exc.exit_code), exc.message)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**sb.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert out.strip() == f"2 backup ID {FIXED_ID} is taken"
    assert read_manifest(sb.backup_path, FIXED_ID)["status"] == "completed"


def test_an_in_progress_backup_whose_writer_died_is_abandoned_then_swept(
    sb: SB, env: dict[str, str]
) -> None:
    """A writer killed after its data file was committed but before its manifest said so:
    ``list`` shows it abandoned (read-only: no lock file is created), ``health`` warns, and
    ``prune`` fails it and removes the data file."""
    rec = sb.ok("create", "--json", env=env).json()
    data = sb.backup_path / rec["filename"]
    edit_manifest(
        sb.backup_path,
        rec["id"],
        status="in_progress",
        completedAt=None,
        writer={"pid": 999999, "host": socket.gethostname()},
    )
    listed = sb.ok("list", "--json", env=env).json()
    assert [(r["id"], r["status"]) for r in listed] == [(rec["id"], "abandoned")]
    assert "pid 999999" in listed[0]["error"]
    assert not (sb.backup_path / "locks" / f"backup-{rec['id']}.lock").exists()
    health = sb("health", "--json", env=env)
    warnings = [w["check"] for w in health.json()["warnings"]]
    assert "abandoned" in warnings, health.out
    pruned = sb("prune", "--json", env=env)
    assert pruned.code == 0, pruned.err
    after = read_manifest(sb.backup_path, rec["id"])
    assert after["status"] == "failed" and after["filename"] is None
    assert after["error"].startswith("abandoned: its writer (pid 999999 on ")
    assert not data.exists()
    sweeps = [e for e in audit(sb) if e["operation"] == "sweep"]
    assert [(e["id"], e["result"]) for e in sweeps] == [(rec["id"], "failed")]


def test_a_live_writer_is_never_swept(sb: SB, env: dict[str, str], db: Path) -> None:
    """A create holding its ID (its SQLite source locked, so it waits) is listed in progress;
    a concurrent create and prune leave its files alone; it then completes."""
    blocker = sqlite3.connect(db, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    slow = spawn(sb, {**env}, "pass", "create", "--json")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(r["status"] == "in_progress" for r in sb.ok("list", "--json").json()):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the blocked create never showed up as in progress")
        live = [r for r in sb.ok("list", "--json").json() if r["status"] == "in_progress"]
        assert live[0]["writer"]["pid"] == slow.pid
        assert sb("prune", env=env).code == 0
        assert read_manifest(sb.backup_path, live[0]["id"])["status"] == "in_progress"
    finally:
        blocker.rollback()
        blocker.close()
    res = finish(slow)
    if res.code == 0:
        assert read_manifest(sb.backup_path, live[0]["id"])["status"] == "completed"
    else:  # SQLite gave up on the lock: a clean failure of its own, never a sweep
        assert read_manifest(sb.backup_path, live[0]["id"])["status"] == "failed", res.err
        assert "abandoned" not in read_manifest(sb.backup_path, live[0]["id"])["error"]


def test_kill_9_mid_dump_is_swept_by_the_next_create(sb: SB, env: dict[str, str], db: Path) -> None:
    blocker = sqlite3.connect(db, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    victim = spawn(sb, env, "pass", "create")
    try:
        deadline = time.monotonic() + 60
        while not list(sb.backup_path.glob("*.partial")) and time.monotonic() < deadline:
            time.sleep(0.05)
        partials = list(sb.backup_path.glob("*.partial"))
        if not partials:  # the SQLite engine may open its source before the data file
            pytest.fail(f"no partial file appeared: {os.listdir(sb.backup_path)}")
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    killed = [r for r in sb.ok("list", "--json").json()]
    assert [r["status"] for r in killed] == ["abandoned"]
    rec = sb.ok("create", "--json", env=env).json()
    statuses = {r["id"]: r["status"] for r in sb.ok("list", "--json").json()}
    assert statuses == {rec["id"]: "completed", killed[0]["id"]: "failed"}
    assert not list(sb.backup_path.glob("*.partial"))


def test_orphan_data_files_are_listed_warned_pruned_and_deletable(
    sb: SB, env: dict[str, str]
) -> None:
    old = sb.ok("create", "--json", env=env).json()
    old_id = backdate(sb.backup_path, old["id"], datetime.now(UTC) - timedelta(days=40))
    new = sb.ok("create", "--json", env=env).json()
    keep = sb.ok("create", "--json", env=env).json()
    for backup_id in (old_id, new["id"]):
        manifest_path(sb.backup_path, backup_id).unlink()
    listed = {r["id"]: r for r in sb.ok("list", "--json").json()}
    assert {k: r["status"] for k, r in listed.items()} == {
        old_id: "orphan",
        new["id"]: "orphan",
        keep["id"]: "completed",
    }
    assert "has no manifest" in listed[old_id]["error"]
    assert sb("verify", old_id).code == 13  # an orphan is no backup: flagged, not "not found"
    health = sb("health", "--json", env=env).json()
    orphan = [w for w in health["warnings"] if w["check"] == "orphan"]
    assert len(orphan) == 1 and orphan[0]["reason"].startswith("2 data file(s)"), health
    pruned = sb.ok("prune", "--json", env=env).json()
    assert pruned["removed"] == [old_id], pruned  # past the 30-day retention; the young one stays
    assert sb.ok("delete", new["id"], "--yes").code == 0
    assert [r["id"] for r in sb.ok("list", "--json").json()] == [keep["id"]]
    assert sorted(os.listdir(sb.backup_path)) == sorted(
        ["audit.log", "locks", keep["filename"], f"{keep['id']}.json"]
    )


def test_prune_of_an_unreadable_manifest_removes_its_data_and_never_a_newer_schema(
    sb: SB, env: dict[str, str]
) -> None:
    bad = sb.ok("create", "--json", env=env).json()
    bad_id = backdate(sb.backup_path, bad["id"], datetime.now(UTC) - timedelta(days=40))
    newer = sb.ok("create", "--json", env=env).json()
    newer_id = backdate(sb.backup_path, newer["id"], datetime.now(UTC) - timedelta(days=50))
    keep = sb.ok("create", "--json", env=env).json()
    bad_file = read_manifest(sb.backup_path, bad_id)["filename"]
    manifest_path(sb.backup_path, bad_id).write_text("{not json")
    doc = edit_manifest(sb.backup_path, newer_id, schemaVersion=99)
    pruned = sb.ok("prune", "--json", env=env).json()
    assert pruned["removed"] == [bad_id], pruned
    assert not (sb.backup_path / bad_file).exists()
    assert not manifest_path(sb.backup_path, bad_id).exists()
    assert read_manifest(sb.backup_path, newer_id) == doc
    assert (sb.backup_path / doc["filename"]).exists()
    decisions = {d["id"]: d for d in pruned["decisions"]}
    assert "newer sbbackup" in decisions[newer_id]["reason"]
    assert keep["id"] in decisions
