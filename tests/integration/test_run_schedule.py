"""Real `run-schedule` processes against the real PostgreSQL cluster: locks and retention."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import SB
from helpers.manifests import backdate
from helpers.pgcluster import Cluster
from helpers.pgwait import dump_waiting, table_locked, wait_for


def start_run(sb: SB, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sbbackup", "run-schedule", *args],
        env={**sb.env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_runs_one_backup_one_exit_11(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    with table_locked(pg, fresh_db, "t"):
        first = start_run(sb, env, "daily")
        wait_for(lambda: dump_waiting(pg, fresh_db), "the first run's pg_dump to block")
        second = sb("run-schedule", "daily", env=env, timeout=30)
        assert second.code == 11, second.err
        assert f"pid {first.pid}" in second.err and "schedule daily" in second.err
        assert len(second.err.strip().splitlines()) == 1
        json_err = sb("run-schedule", "daily", "--json", env=env, timeout=30)
        assert json.loads(json_err.err.splitlines()[-1])["error"]["code"] == 11
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert out == "" and err == ""  # cron gets nothing to mail on success
    records = sb.ok("list", "--json", env=env).json()
    assert [(r["scheduleId"], r["status"]) for r in records] == [("daily", "completed")]


def test_kill_9_never_blocks_the_next_run(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    with table_locked(pg, fresh_db, "t"):
        victim = start_run(sb, env, "daily")
        wait_for(lambda: dump_waiting(pg, fresh_db), "the run's pg_dump to block")
        lock = sb.backup_path / "locks" / "schedule-daily.lock"
        assert lock.read_text().strip() == str(victim.pid)
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
    # pg_dump may outlive its parent for a moment; the lock does not (the kernel drops it).
    res = sb("run-schedule", "daily", "--json", env=env, timeout=60)
    assert res.code == 0, res.err
    assert json.loads(res.out)["backup"]["status"] == "completed"
    records = sb.ok("list", "--json", env=env).json()
    assert [r["status"] for r in records] == ["completed", "failed"]
    # The killed run is swept by the next create: its partial removed, its attempt failed.
    assert records[1]["error"].startswith("abandoned: its writer (pid "), records[1]
    assert not list(sb.backup_path.glob("*.partial"))


def files(sb: SB) -> set[str]:
    return {p.name for p in sb.backup_path.iterdir() if p.is_file() and p.name.startswith("stream")}


def test_retention_after_a_run_with_backdated_manifests(
    pg: Cluster, fresh_db: str, sb: SB, tmp_path: Path
) -> None:
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db), "DB_BACKUP_WEEKLY_ENCRYPTION": "false"}
    now = datetime.now(UTC)
    made = [sb.ok("run-schedule", "daily", "--json", env=env).json()["backup"] for _ in range(4)]
    weekly = sb.ok("run-schedule", "weekly", "--json", env=env).json()["backup"]
    manual = sb.ok("create", "--json", env=env).json()
    ages = [3, 8, 20, 40]  # days: the first is within daily's 7 days, the others are not
    bp = sb.backup_path
    ids = [backdate(bp, r["id"], now - timedelta(days=d)) for r, d in zip(made, ages, strict=True)]
    weekly_id = backdate(bp, weekly["id"], now - timedelta(days=45))  # past 30 days, the newest
    manual_id = backdate(bp, manual["id"], now - timedelta(days=31))  # past RETENTION_DAYS
    before = files(sb)
    plan = sb.ok("prune", "--dry-run", "--json", env=env).json()
    assert files(sb) == before
    actions = {d["id"]: (d["action"], d["reason"]) for d in plan["decisions"]}
    assert actions[ids[0]] == (
        "keep",
        "within 7-day retention (schedule daily); newest completed backup (minKeep 1)",
    )
    assert actions[weekly_id] == ("keep", "newest completed backup (minKeep 1)")
    assert actions[manual_id][0] == "keep"  # the newest manual backup, too
    assert {i for i, (a, _) in actions.items() if a == "remove"} == set(ids[1:])
    # A scheduled run applies its own schedule's retention after its backup, and the manual
    # and drill backups' (the old manual backup stays: it is the newest manual one).
    res = sb.ok("run-schedule", "daily", "--json", env=env).json()
    assert sorted(res["removed"]) == sorted(ids[1:])
    gone = {n for n in before if any(n.startswith(i + ".") for i in ids[1:])}
    assert len(gone) == 6  # three data files and three manifests
    assert files(sb) == (before - gone) | {res["backup"]["id"] + ".json", res["backup"]["filename"]}
    # Both daily survivors are kept; old weekly and manual stay as their schedules' newest.
    again = sb.ok("prune", "--json", env=env).json()
    assert again["removed"] == []


def test_a_failed_backup_never_prunes(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE TABLE t (id int)", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db), "SBBACKUP_LOCK_WAIT_TIMEOUT": "1"}
    old = sb.ok("run-schedule", "daily", "--json", env=env).json()["backup"]
    older = sb.ok("run-schedule", "daily", "--json", env=env).json()["backup"]
    old_id = backdate(sb.backup_path, str(old["id"]), datetime.now(UTC) - timedelta(days=30))
    older_id = backdate(sb.backup_path, str(older["id"]), datetime.now(UTC) - timedelta(days=60))
    assert sb.ok("prune", "--dry-run", "--json", env=env).json()["remove"] == 1
    with table_locked(pg, fresh_db, "t"):
        res = sb("run-schedule", "daily", env=env, timeout=60)
    assert res.code == 3, res.err
    statuses = {r["id"]: r["status"] for r in sb.ok("list", "--json", env=env).json()}
    assert statuses[old_id] == statuses[older_id] == "completed"  # nothing was pruned
    assert sorted(statuses.values()) == ["completed", "completed", "failed"]
