"""Issue 14, retention for everything: run-schedule also prunes manual and drill backups, drill
backups have their own DB_BACKUP_TEST_RETENTION_DAYS, and `test --no-keep` deletes the drill's
own backup. The real command line in-process against SQLite; the PostgreSQL fixture where the
drill matters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SB
from helpers.manifests import backdate
from helpers.pgcluster import Cluster
from helpers.sched_helpers import run, sqlite_db

from sbbackup.catalog import writer_lock
from sbbackup.state import StateDir

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def backups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    monkeypatch.setenv("TZ", "UTC")  # the machine's zone, as cron would see it
    return tmp_path / "backups"


def ok(capsys: Capsys, *args: str) -> dict[str, object]:
    res = run(capsys, *args)
    assert res.code == 0, res.err
    doc = res.json()
    assert isinstance(doc, dict)
    return doc


def ids_by_schedule(capsys: Capsys) -> dict[str | None, set[str]]:
    res = run(capsys, "list", "--json")
    assert res.code == 0, res.err
    out: dict[str | None, set[str]] = {}
    for r in res.json():
        out.setdefault(r["scheduleId"], set()).add(r["id"])
    return out


# --- retention for manual and drill backups ----------------------------------------------


def make_aged(capsys: Capsys, bp: Path, kind: str, days: list[float]) -> list[str]:
    """One backup per age (days before now): manual (`create`) or a drill's (`test`)."""
    now = datetime.now(UTC)
    made = []
    for age in days:
        if kind == "manual":
            backup_id = str(ok(capsys, "create", "--json")["id"])
        else:
            report = ok(capsys, "test", "--json")
            assert report["drill"]["status"] == "passed"  # type: ignore[index]
            backup_id = str(report["drill"]["backupId"])  # type: ignore[index]
        made.append(backdate(bp, backup_id, now - timedelta(days=age)))
    return made


def test_run_schedule_also_prunes_manual_and_drill_backups(
    backups: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    manual = make_aged(capsys, backups, "manual", [40, 35, 2])  # 30 days by default
    drills = make_aged(capsys, backups, "test", [3, 2, 0.1])  # 1 day by default
    # DB_BACKUP_TEST_RETENTION_DAYS is the drill backups' own: at 5 days every one stays.
    monkeypatch.setenv("DB_BACKUP_TEST_RETENTION_DAYS", "5")
    first = ok(capsys, "run-schedule", "daily", "--json")
    assert sorted(first["removed"]) == sorted(manual[:2])  # type: ignore[type-var]
    assert ids_by_schedule(capsys)["test"] == set(drills)
    monkeypatch.delenv("DB_BACKUP_TEST_RETENTION_DAYS")
    second = ok(capsys, "run-schedule", "daily", "--json")
    assert sorted(second["removed"]) == sorted(drills[:2])  # type: ignore[type-var]
    reasons = {
        d["id"]: (d["action"], d["reason"])
        for d in second["retention"]["decisions"]  # type: ignore[index]
    }
    assert reasons[drills[0]] == (
        "remove",
        "completed backup older than 1-day retention (drill backups)",
    )
    assert reasons[drills[2]] == (
        "keep",
        "within 1-day retention (drill backups); newest completed backup (minKeep 1)",
    )
    assert reasons[manual[2]][0] == "keep"
    left = ids_by_schedule(capsys)
    assert left[None] == {manual[2]} and left["test"] == {drills[2]}
    assert len(left["daily"]) == 2


def test_the_newest_manual_and_drill_backups_are_never_pruned(
    backups: Path, capsys: Capsys
) -> None:
    manual = make_aged(capsys, backups, "manual", [90, 60])
    drills = make_aged(capsys, backups, "test", [20, 10])
    res = ok(capsys, "run-schedule", "daily", "--json")
    assert sorted(res["removed"]) == sorted([manual[0], drills[0]])  # type: ignore[type-var]
    left = ids_by_schedule(capsys)
    assert left[None] == {manual[1]} and left["test"] == {drills[1]}
    # Nothing else would go either: the last good copy of each group stays whatever its age.
    plan = ok(capsys, "prune", "--dry-run", "--json")
    assert plan["remove"] == 0


def test_a_manual_backup_under_its_writers_lock_is_left_for_the_next_run(
    backups: Path, capsys: Capsys
) -> None:
    """The same lock rules as a schedule's own prune: each removal takes the backup's lock."""
    old, newest = make_aged(capsys, backups, "manual", [60, 40])
    with StateDir(backups).lock(writer_lock(old), "a test holding it"):
        first = ok(capsys, "run-schedule", "daily", "--json")
    assert first["removed"] == []
    assert old in ids_by_schedule(capsys)[None]
    second = ok(capsys, "run-schedule", "daily", "--json")
    assert second["removed"] == [old]
    assert ids_by_schedule(capsys)[None] == {newest}


def test_prune_stays_quiet_and_covers_drill_backups(backups: Path, capsys: Capsys) -> None:
    drills = make_aged(capsys, backups, "test", [4, 3])
    planned = run(capsys, "prune", "--dry-run").out
    assert "completed backup older than 1-day retention (drill backups)" in planned
    res = run(capsys, "prune")
    assert res.code == 0 and res.out == "" and res.err == ""  # cron mails nothing
    assert ids_by_schedule(capsys)["test"] == {drills[1]}


def test_a_disabled_schedule_or_system_prunes_nothing(
    backups: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    manual = make_aged(capsys, backups, "manual", [90, 60])
    assert run(capsys, "schedules", "disable", "daily").code == 0
    res = run(capsys, "run-schedule", "daily")
    assert (res.code, res.out) == (0, "")
    assert res.err.strip() == "sbbackup: schedule daily is disabled; nothing to do"
    monkeypatch.setenv("DB_BACKUP_ENABLED", "false")
    res = run(capsys, "run-schedule", "weekly")
    assert (res.code, res.out) == (0, "")
    assert res.err.startswith("sbbackup: scheduled backups are off (DB_BACKUP_ENABLED")
    assert ids_by_schedule(capsys) == {None: set(manual)}  # no backup, nothing pruned


# --- test --no-keep ----------------------------------------------------------------------


def test_no_keep_deletes_the_drills_own_backup(backups: Path, capsys: Capsys) -> None:
    kept = ok(capsys, "create", "--json")["id"]
    report = ok(capsys, "test", "--no-keep", "--json")
    drill = report["drill"]
    assert drill["status"] == "passed" and drill["backupDeleted"] is True  # type: ignore[index]
    assert ids_by_schedule(capsys) == {None: {kept}}  # only the drill's own backup went
    audit = [json.loads(line) for line in (backups / "audit.log").read_text().splitlines()]
    deleted = [a for a in audit if a.get("operation") == "delete"]
    assert [a["id"] for a in deleted] == [drill["backupId"]]  # type: ignore[index]
    human = run(capsys, "test", "--no-keep")
    assert human.code == 0, human.err
    assert "(--no-keep)" in human.out and "deleted backup" in human.out
    assert ids_by_schedule(capsys) == {None: {kept}}


def test_a_failed_drill_keeps_its_backup_for_inspection(
    backups: Path, capsys: Capsys, tmp_path: Path
) -> None:
    nowhere = f"sqlite:///{tmp_path}/no/such/dir/scratch.db"
    res = run(capsys, "test", "--no-keep", "--json", "--target-url", nowhere)
    assert res.code != 0
    drill = res.json()["drill"]
    assert drill["status"] == "failed" and drill["backupDeleted"] is False
    assert ids_by_schedule(capsys) == {"test": {drill["backupId"]}}


@pytest.mark.parametrize("other", [("--latest",), ("--no-drill",), ("--backup", "x")])
def test_no_keep_only_with_a_drill_that_makes_its_backup(
    backups: Path, capsys: Capsys, other: tuple[str, ...]
) -> None:
    res = run(capsys, "test", "--no-keep", *other)
    assert res.code == 2, res.err
    assert "--no-keep deletes the backup the drill makes" in res.err
    assert not backups.exists() or not list(backups.glob("*.json"))


def test_no_keep_on_postgresql(pg: Cluster, fresh_db: str, sb: SB) -> None:
    pg.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g", db=fresh_db)
    env = {"DATABASE_URL": pg.url(fresh_db)}
    res = sb("test", "--no-keep", "--json", env=env)
    assert res.code == 0, res.out + res.err
    drill = json.loads(res.out)["drill"]
    assert drill["status"] == "passed" and drill["tables"] == 1
    assert drill["scratchDropped"] is True and drill["backupDeleted"] is True
    assert sb.ok("list", "--json", env=env).json() == []
    # Without --no-keep the drill backup stays, and the next run-schedule ages it (1 day).
    kept = sb.ok("test", "--json", env=env).json()["drill"]["backupId"]
    old = backdate(sb.backup_path, kept, datetime.now(UTC) - timedelta(days=2))
    newer = sb.ok("test", "--json", env=env).json()["drill"]["backupId"]
    ran = sb.ok("run-schedule", "daily", "--json", env=env).json()
    assert ran["removed"] == [old]
    left = {(r["scheduleId"], r["id"]) for r in sb.ok("list", "--json", env=env).json()}
    assert left == {("test", newer), ("daily", ran["backup"]["id"])}


def test_test_retention_days_from_yaml(backups: Path, capsys: Capsys, tmp_path: Path) -> None:
    drills = make_aged(capsys, backups, "test", [3, 2])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backup:\n  testRetentionDays: 7\n")
    plan = ok(capsys, "--config", str(cfg), "prune", "--dry-run", "--json")
    assert plan["remove"] == 0
    plan = ok(capsys, "prune", "--dry-run", "--json")
    assert [d["id"] for d in plan["decisions"] if d["action"] == "remove"] == [  # type: ignore[union-attr]
        drills[0]
    ]


def test_run_schedule_never_removes_an_unreadable_manifest_or_an_orphan(
    backups: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A monthly backup (a year's retention) whose manifest cannot be read, or is gone, has lost
    its scheduleId: it would fall to the manual backups' 30 days. A cron run leaves both (a
    failed read looks the same as damage); an explicit prune still removes them."""
    monkeypatch.setenv("DB_BACKUP_MONTHLY_ENCRYPTION", "false")  # no key in this test
    now = datetime.now(UTC)
    damaged, lost = (
        backdate(
            backups,
            str(ok(capsys, "run-schedule", "monthly", "--json")["backup"]["id"]),  # type: ignore[index]
            now - timedelta(days=age),
        )
        for age in (45, 40)
    )
    data = {p.name for p in backups.iterdir() if p.name.startswith((damaged, lost))}
    assert len(data) == 4  # two data files, two manifests
    (backups / f"{damaged}.json").write_bytes(b"{ not json")
    (backups / f"{lost}.json").unlink()
    statuses = {r["id"]: r["status"] for r in run(capsys, "list", "--json").json()}
    assert (statuses[damaged], statuses[lost]) == ("corrupt", "orphan")

    res = ok(capsys, "run-schedule", "daily", "--json")
    assert res["removed"] == []
    assert {damaged, lost} <= {p.name.split(".")[0] for p in backups.iterdir()}
    assert (backups / f"{damaged}.json").read_bytes() == b"{ not json"

    pruned = ok(capsys, "prune", "--json")
    assert set(pruned["removed"]) == {damaged, lost}  # type: ignore[arg-type]
    print(f"run-schedule removed {len(res['removed'])}; prune removed {sorted(pruned['removed'])}")  # type: ignore[arg-type]
