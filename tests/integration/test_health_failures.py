"""Health sees every failure: a newest backup that is missing, corrupt, orphaned or abandoned,
a run that failed closed, backups switched off, and a backup path that cannot be used; and the
metrics that count them. Real files, the real command line (in-process, or a child process
where a mount or another user is involved)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import SB
from helpers.api_server import Client, api_servers, url_of
from helpers.cli import Result
from helpers.manifests import edit_manifest, manifest_path, read_manifest
from helpers.records import record
from helpers.sched_helpers import run, sqlite_db
from prometheus_client.parser import text_string_to_metric_families

from sbbackup.config import load_settings
from sbbackup.model import parse_iso
from sbbackup.policy import stats
from sbbackup.policy.schedules import Schedule

RUNS = ("2026-03-18T02:00:00Z", "2026-03-19T02:00:00Z", "2026-03-20T02:00:00Z")
CHECKED = "2026-03-20T03:00:00Z"  # daily's run of the 20th is within its interval: not overdue


@pytest.fixture
def daily(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """Three daily backups (18th, 19th, 20th) of a SQLite database; newest first."""
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    for when in RUNS:
        res = run(capsys, "run-schedule", "daily", "--now", when)
        assert res.code == 0, res.err
    backups = run(capsys, "list", "--json").json()
    assert [b["status"] for b in backups] == ["completed"] * 3
    res = health(capsys)
    assert res.code == 0 and res.json()["problems"] == [], res.out  # the baseline is green
    return list(backups)


def health(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    return run(capsys, "health", "--json", "--min-free", "0", "--now", CHECKED, *args)


def checks(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in findings}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def data_file(tmp_path: Path, backup: dict[str, Any]) -> Path:
    return tmp_path / "backups" / backup["filename"]


def test_newest_missing_and_an_older_truncated_one_make_health_red(
    daily: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: the newest daily data file deleted, another truncated. It was green
    (the 19th's success is recent enough not to be overdue, and a missing newest was no
    failure)."""
    newest, _, oldest = daily
    data_file(tmp_path, newest).unlink()
    truncated = data_file(tmp_path, oldest)
    truncated.write_bytes(truncated.read_bytes()[:10])
    res = health(capsys)
    assert res.code == 14, res.out
    report = res.json()
    assert report["ok"] is False
    [problem] = report["problems"]
    assert (problem["check"], problem["scheduleId"]) == ("newest-missing", "daily")
    assert newest["id"] in problem["reason"] and "missing" in problem["reason"]
    warned = checks(report["warnings"])
    assert oldest["id"] in warned["corrupt"]["reason"]
    assert warned["missing"]["reason"].startswith("1 backup(s) whose data file is missing")
    human = run(capsys, "health", "--min-free", "0", "--now", CHECKED)
    assert human.code == 14 and newest["id"] in human.err
    metrics = samples(run(capsys, "metrics", "--now", CHECKED).out)
    assert metrics[("sbbackup_backups", (("status", "missing"),))] == 1
    assert metrics[("sbbackup_backups", (("status", "corrupt"),))] == 1
    assert metrics[("sbbackup_backups", (("status", "completed"),))] == 1


def test_an_older_missing_backup_only_warns(
    daily: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    oldest = daily[-1]
    data_file(tmp_path, oldest).unlink()
    res = health(capsys)
    assert res.code == 0 and res.json()["problems"] == []
    assert oldest["id"] in checks(res.json()["warnings"])["missing"]["reason"]


def test_newest_truncated_is_corrupt(
    daily: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newest = daily[0]
    path = data_file(tmp_path, newest)
    path.write_bytes(path.read_bytes()[:-1])
    res = health(capsys)
    assert res.code == 14
    [problem] = res.json()["problems"]
    assert (problem["check"], problem["scheduleId"]) == ("newest-corrupt", "daily")
    assert newest["id"] in problem["reason"] and "wrong size" in problem["reason"]


def test_newest_orphaned_is_attributed_to_its_schedule_by_the_audit_log(
    daily: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The newest manifest is gone: the data file is no backup. The audit log still says
    daily made it, so daily's newest backup is orphaned (it was green: the 19th's backup was
    then daily's newest record, and recent)."""
    newest = daily[0]
    manifest_path(tmp_path / "backups", newest["id"]).unlink()
    res = health(capsys)
    assert res.code == 14
    [problem] = res.json()["problems"]
    assert (problem["check"], problem["scheduleId"]) == ("newest-orphaned", "daily")
    assert newest["id"] in problem["reason"]
    assert newest["id"] in checks(res.json()["warnings"])["orphan"]["reason"]
    metrics = samples(run(capsys, "metrics", "--now", CHECKED).out)
    key = (("schedule", "daily"), ("status", "orphan"))
    assert metrics[("sbbackup_schedule_backups", key)] == 1
    # Without the audit log nobody knows whose it was: a warning, not a problem.
    (tmp_path / "backups" / "audit.log").unlink()
    res = health(capsys)
    assert res.code == 0 and "orphan" in checks(res.json()["warnings"])


def test_newest_abandoned_is_a_failed_run(
    daily: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer that died (its manifest still in progress, its lock free)."""
    newest = daily[0]
    edit_manifest(tmp_path / "backups", newest["id"], status="in_progress", completedAt=None)
    res = health(capsys)
    assert res.code == 14
    [problem] = res.json()["problems"]
    assert (problem["check"], problem["scheduleId"]) == ("last-run-failed", "daily")
    assert f"the last run of daily, {newest['id']} (" in problem["reason"]
    assert "was abandoned: its writer (pid " in problem["reason"]
    assert "abandoned" in checks(res.json()["warnings"])


def test_a_run_that_fails_closed_leaves_a_failed_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """weekly encrypts by default; with no recipient it refuses before dumping (exit 2). The
    refusal is a failed run, counted at once by statistics, metrics and health."""
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    sunday = "2026-03-22T03:00:00Z"
    res = run(capsys, "run-schedule", "weekly", "--now", sunday)
    assert res.code == 2 and "recipient" in res.err, res.err
    [failed] = run(capsys, "list", "--json").json()
    assert (failed["status"], failed["scheduleId"]) == ("failed", "weekly")
    assert failed["createdAt"] == "2026-03-22T03:00:00.000Z" and failed["filename"] is None
    assert "recipient" in failed["error"]
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted(
        ["audit.log", "locks", f"{failed['id']}.json"]
    )
    shown = run(capsys, "show", failed["id"], "--json").json()
    assert shown["status"] == "failed" and shown["error"] == failed["error"]
    audit = [
        json.loads(line) for line in (tmp_path / "backups" / "audit.log").read_text().splitlines()
    ]
    assert [(a["operation"], a["id"], a["result"]) for a in audit] == [
        ("create", failed["id"], "failed")
    ]
    later = "2026-03-22T03:05:00Z"
    st = run(capsys, "statistics", "--json", "--now", later).json()
    assert st["failed"] == 1 and st["total"] == 1
    weekly = next(p for p in st["schedules"] if p["scheduleId"] == "weekly")
    assert weekly["lastRunStatus"] == "failed"
    metrics = samples(run(capsys, "metrics", "--now", later).out)
    assert metrics[("sbbackup_backups", (("status", "failed"),))] == 1
    assert metrics[("sbbackup_schedule_backups", (("schedule", "weekly"), ("status", "failed")))]
    res = run(capsys, "health", "--json", "--min-free", "0", "--now", later)
    assert res.code == 14
    problem = checks(res.json()["problems"])["last-run-failed"]
    assert problem["scheduleId"] == "weekly" and "recipient" in problem["reason"]
    assert failed["id"] in problem["reason"]
    # Retention treats it as any failed attempt: kept while young, removed once past it.
    plan = run(capsys, "prune", "--dry-run", "--json", "--now", later).json()
    assert plan["remove"] == 0
    res = run(capsys, "prune", "--json", "--now", "2026-05-01T00:00:00Z")
    assert res.code == 0 and res.json()["removed"] == [failed["id"]], res.out
    assert run(capsys, "list", "--json").json() == []


def test_a_refusal_of_what_the_caller_asked_leaves_no_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`create --encrypt` without a recipient is bad input for this one backup: refused,
    nothing recorded. Encryption switched on in the settings is configuration: recorded."""
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    assert run(capsys, "create", "--encrypt").code == 2
    assert run(capsys, "list", "--json").json() == []
    monkeypatch.setenv("DB_BACKUP_ENCRYPTION", "true")
    res = run(capsys, "create", "--json")
    assert res.code == 2 and '"error"' in res.err
    [failed] = run(capsys, "list", "--json").json()
    assert failed["status"] == "failed" and failed["scheduleId"] is None
    assert "recipient" in failed["error"]


def test_backups_switched_off_warn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    assert run(capsys, "create").code == 0
    monkeypatch.setenv("DB_BACKUP_ENABLED", "false")
    res = run(capsys, "health", "--json", "--min-free", "0")
    assert res.code == 0 and res.json()["problems"] == []
    warning = checks(res.json()["warnings"])["disabled"]
    assert warning["reason"] == ("backups are disabled (DB_BACKUP_ENABLED=false): no schedule runs")
    human = run(capsys, "health", "--min-free", "0")
    assert human.code == 0 and "DB_BACKUP_ENABLED=false" in human.out
    # Off in the config file instead: the warning says where.
    monkeypatch.delenv("DB_BACKUP_ENABLED")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("backup:\n  enabled: false\n")
    res = run(capsys, "--config", str(cfg), "health", "--json", "--min-free", "0")
    assert res.code == 0
    assert f"backup.enabled: false in {cfg}" in checks(res.json()["warnings"])["disabled"]["reason"]


# --- a backup path that cannot be used ----------------------------------------------------


def _unusable(sb: SB | _Wrapped, env: dict[str, str], *prefix: str) -> str:
    """health (JSON and human) reports the path as a problem, exit 14, never a traceback."""
    res = sb(*prefix, "health", "--json", "--min-free", "0", env=env)
    assert res.code == 14, (res.code, res.out, res.err)
    assert "Traceback" not in res.err
    report = res.json()
    [problem] = report["problems"]
    assert problem["check"] == "backup-path", report
    assert problem["reason"].startswith("backup path ") and " unusable: " in problem["reason"]
    human = sb(*prefix, "health", "--min-free", "0", env=env)
    assert human.code == 14 and "unusable" in human.out and "Traceback" not in human.err
    return problem["reason"]


def _sqlite_env(tmp_path: Path, path: Path) -> dict[str, str]:
    db = tmp_path / "app.db"
    if not db.exists():
        sqlite_db(db)
    return {"DATABASE_URL": f"sqlite:///{db}", "DB_BACKUP_PATH": str(path)}


def test_health_on_a_missing_path_or_a_file_in_its_place(sb: SB, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert "does not exist" in _unusable(sb, _sqlite_env(tmp_path, missing))
    assert not missing.exists(), "health created the backup path"
    afile = tmp_path / "afile"
    afile.write_text("")
    assert "not a directory" in _unusable(sb, _sqlite_env(tmp_path, afile))


def test_health_on_a_read_only_path(sb: SB, tmp_path: Path) -> None:
    where = tmp_path / "m"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], check=True)
    try:
        env = _sqlite_env(tmp_path, where / "b")
        sb.ok("create", env=env)
        assert sb("health", "--min-free", "0", env=env).code == 0
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        assert "read-only file system" in _unusable(sb, env)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_health_as_another_user(sb: SB) -> None:
    """As nobody: a backup directory root owns (0700), one nobody owns but cannot write, and
    one below a directory nobody cannot enter."""
    top = Path(tempfile.mkdtemp(prefix="sbhealth-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        env = _sqlite_env(top, top / "backups")
        os.chmod(top / "app.db", 0o644)
        sb.ok("create", env=env)  # as root: the directory is root's, mode 700
        nobody = _Wrapped(sb, ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
        as_nobody = {**env, "HOME": str(top), "SBBACKUP_STATE_DIR": str(top / "st")}
        assert "owned by root" in _unusable(nobody, as_nobody)
        mine = top / "nobodys"
        mine.mkdir(mode=0o500)
        os.chown(mine, 65534, 65534)
        reason = _unusable(nobody, {**as_nobody, "DB_BACKUP_PATH": str(mine)})
        assert reason.endswith(f"{mine} unusable: permission denied"), reason
        closed = top / "closed"
        closed.mkdir(mode=0o700)
        reason = _unusable(nobody, {**as_nobody, "DB_BACKUP_PATH": str(closed / "b")})
        assert "Permission denied" in reason, reason
    finally:
        shutil.rmtree(top)


class _Wrapped:
    """``sb`` run under a command prefix (setpriv)."""

    def __init__(self, sb: SB, prefix: tuple[str, ...]) -> None:
        self.sb, self.prefix = sb, prefix

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        full_env = {**self.sb.env, **(env or {})}
        proc = subprocess.run(
            [*self.prefix, sys.executable, "-m", "sbbackup", *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


# --- metrics -----------------------------------------------------------------------------


def test_metrics_last_verified_and_backups_by_status(
    daily: list[dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = samples(run(capsys, "metrics", "--now", CHECKED).out)
    assert (
        before[("sbbackup_backup_last_verified_timestamp_seconds", (("schedule", "daily"),))] == 0
    )
    res = run(capsys, "test", "--backup", daily[1]["id"], "--json")
    assert res.code == 0, res.out + res.err
    state = json.loads((tmp_path / "backups" / "last_test.json").read_text())
    at = state["lastSuccessBySchedule"]["daily"]["at"]
    assert state["lastSuccessBySchedule"]["daily"]["backupId"] == daily[1]["id"]
    text = run(capsys, "metrics", "--now", CHECKED).out
    after = samples(text)
    when = parse_iso(at)
    assert when is not None
    verified = "sbbackup_backup_last_verified_timestamp_seconds"
    assert after[(verified, (("schedule", "daily"),))] == round(when.timestamp(), 3)
    assert after[(verified, (("schedule", "weekly"),))] == 0
    assert f"# TYPE {verified} gauge" in text and f"# HELP {verified} " in text
    # By status over all schedules; the per-schedule series under its new name and its old.
    assert after[("sbbackup_backups", (("status", "completed"),))] == 3
    assert after[("sbbackup_backups", (("status", "failed"),))] == 0
    daily_done = (("schedule", "daily"), ("status", "completed"))
    assert after[("sbbackup_schedule_backups", daily_done)] == 3
    assert after[("sbbackup_backups_total", daily_done)] == 3
    assert "Deprecated" in text.split("# HELP sbbackup_backups_total ", 1)[1].split("\n")[0]
    # A failed drill leaves the last verified time alone.
    edit_manifest(
        tmp_path / "backups",
        daily[0]["id"],
        contents={
            **read_manifest(tmp_path / "backups", daily[0]["id"])["contents"],
            "tables": {"t": 1},
        },
    )
    assert run(capsys, "test", "--backup", daily[0]["id"]).code == 13
    again = samples(run(capsys, "metrics", "--now", CHECKED).out)
    assert (
        again[(verified, (("schedule", "daily"),))] == after[(verified, (("schedule", "daily"),))]
    )


# --- the API says the same -----------------------------------------------------------------


def test_api_health_reports_an_unusable_path_and_a_failed_closed_run(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": sqlite_db(tmp_path / "app.db")}
    env["DB_BACKUP_PATH"] = str(tmp_path / "backups")
    env.pop("SBBACKUP_STATE_DIR", None)
    with api_servers() as start:
        server = start(load_settings(env=env))
        c = Client(url_of(server), tmp_path / "backups", env, server)
        health = c.call("GET", "/api/health")
        assert health.status == 503, health
        [problem] = health.body["problems"]
        assert problem["check"] == "backup-path" and "does not exist" in problem["reason"]
        assert not (tmp_path / "backups").exists()
        # weekly encrypts and no recipient is configured: the refusal is a failed run.
        run = c.call("POST", "/api/backup/schedules/weekly/run")
        if run.status == 202:
            job = c.poll(run.headers["Location"], lambda b: b["status"] != "in_progress")
            assert job["status"] == "failed" and job["error"]["code"] == 2, job
        else:
            assert run.status in (400, 500) and "recipient" in run.error["message"], run
        [failed] = c.call("GET", "/api/backup?status=failed").body
        assert failed["scheduleId"] == "weekly" and "recipient" in failed["error"]
        health = c.call("GET", "/api/health")
        assert health.status == 503
        found = checks(health.body["problems"])
        assert found["last-run-failed"]["scheduleId"] == "weekly", health.body
        metrics = samples(c.call("GET", "/metrics").body)
        key = (("schedule", "weekly"), ("status", "failed"))
        assert metrics[("sbbackup_schedule_backups", key)] == 1


# --- the pure rule, status by status -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        ("completed", None),
        ("failed", "last-run-failed"),
        ("abandoned", "last-run-failed"),
        ("missing", "newest-missing"),
        ("corrupt", "newest-corrupt"),
        ("orphan", "newest-orphaned"),
        ("in_progress", None),  # a live writer says nothing yet: the good one before counts
    ],
)
def test_the_newest_record_decides(status: str, problem: str | None) -> None:
    now = datetime(2026, 3, 20, 3, tzinfo=UTC)
    daily = Schedule("daily", "0 2 * * *", 7, timezone="UTC")
    newest = record(datetime(2026, 3, 20, 2, tzinfo=UTC), "daily", status, error="why")
    records = [newest, record(datetime(2026, 3, 19, 2, tzinfo=UTC), "daily")]
    st = stats.statistics(records, [daily], now, timedelta(hours=1), 0, 10)
    report = stats.health(st, [daily], records, now, timedelta(hours=1), min_free=0)
    assert [(p.check, p.scheduleId) for p in report.problems] == (
        [(problem, "daily")] if problem else []
    )
    if problem:
        assert newest.id in report.problems[0].reason and "why" in report.problems[0].reason
    off = Schedule("daily", "0 2 * * *", 7, timezone="UTC", enabled=False)
    assert stats.health(st, [off], records, now, timedelta(hours=1), min_free=0).ok
