"""Issue 14, schedules: where each schedule field comes from and what a runtime change
shadows, why a disabled system runs nothing, errors that name the variable or the file and key
path. The real command line in-process against SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.sched_helpers import run, sqlite_db

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


# --- schedules: sources, shadowing, a disabled system -----------------------------------


def test_show_names_the_source_of_each_field_and_what_runtime_shadows(
    backups: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("schedules:\n  daily:\n    minKeep: 2\n    cron: '30 1 * * *'\n")
    monkeypatch.setenv("SBBACKUP_CONFIG", str(cfg))
    monkeypatch.setenv("DB_BACKUP_DAILY_RETENTION", "14")
    monkeypatch.setenv("DB_BACKUP_DAILY_COMPRESSION", "false")
    before = ok(capsys, "schedules", "show", "daily", "--json")
    assert before["sources"] == {
        "cron": "config",
        "timezone": "default",
        "enabled": "default",
        "retentionDays": "env",
        "minKeep": "config",
        "compression": "env",
        "encryption": "default",
        "format": "default",
        "description": "default",
    }
    assert before["shadowed"] == {}
    ok(capsys, "schedules", "update", "daily", "--retention-days", "3", "--min-keep", "4", "--json")
    after = ok(capsys, "schedules", "show", "daily", "--json")
    sources = after["sources"]
    assert isinstance(sources, dict)
    assert (sources["retentionDays"], sources["minKeep"], sources["compression"]) == (
        "runtime",
        "runtime",
        "env",
    )
    assert after["retentionDays"] == 3 and after["source"] == "default+config+env+runtime"
    assert after["shadowed"] == {
        "retentionDays": {"source": "env", "setting": "DB_BACKUP_DAILY_RETENTION", "value": 14},
        "minKeep": {"source": "config", "setting": f"{cfg}: schedules.daily.minKeep", "value": 2},
    }
    human = run(capsys, "schedules", "show", "daily")
    assert human.code == 0, human.err
    lines = [line.split() for line in human.out.splitlines()]
    assert ["retentionDays", "runtime"] in lines  # under "sources"
    assert ["setting", "DB_BACKUP_DAILY_RETENTION"] in lines  # under "shadowed"
    # The list carries the same map for every schedule.
    rows = run(capsys, "schedules", "--json").json()
    assert {r["scheduleId"]: r["sources"]["retentionDays"] for r in rows} == {
        "daily": "runtime",
        "weekly": "default",
        "monthly": "default",
    }


def test_a_disabled_system_says_why_nothing_runs(
    backups: Path, capsys: Capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert run(capsys, "schedules", "disable", "monthly").code == 0
    on = {r["scheduleId"]: r for r in run(capsys, "schedules", "--json").json()}
    assert (on["daily"]["willRun"], on["daily"]["reason"]) == (True, None)
    assert (on["monthly"]["willRun"], on["monthly"]["reason"]) == (
        False,
        "schedule monthly is disabled",
    )
    monkeypatch.setenv("DB_BACKUP_ENABLED", "false")
    why = "scheduled backups are off (DB_BACKUP_ENABLED=false)"
    for args in (("schedules", "--json"), ("schedules", "list", "--json")):
        rows = run(capsys, *args).json()
        assert [(r["willRun"], r["reason"], r["nextRun"]) for r in rows] == [(False, why, None)] * 3
        assert [r["enabled"] for r in rows] == [True, True, False]  # their own switches
    shown = ok(capsys, "schedules", "show", "daily", "--json")
    assert (shown["willRun"], shown["reason"]) == (False, why)
    human = run(capsys, "schedules")
    assert human.out.splitlines()[-1] == f"nothing will run: {why}"
    assert ["reason", *why.split()] in [
        line.split() for line in run(capsys, "schedules", "show", "daily").out.splitlines()
    ]
    # Set in the YAML file instead, the reason names the file.
    monkeypatch.delenv("DB_BACKUP_ENABLED")
    cfg = tmp_path / "off.yaml"
    cfg.write_text("backup:\n  enabled: false\n")
    shown = ok(capsys, "--config", str(cfg), "schedules", "show", "weekly", "--json")
    assert shown["reason"] == f"scheduled backups are off (backup.enabled: false in {cfg})"


# --- error messages name the variable ----------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "DB_BACKUP_DAILY_RETENTION",
            "soon",
            "environment variable DB_BACKUP_DAILY_RETENTION: got 'soon', expected an integer "
            ">= 1 and <= 36500",
        ),
        (
            "DB_BACKUP_WEEKLY_ENABLED",
            "maybe",
            "environment variable DB_BACKUP_WEEKLY_ENABLED: got 'maybe', expected a boolean",
        ),
        (
            "DB_BACKUP_DAILY_RETENTION_DAYS",
            "14",
            "environment variable DB_BACKUP_DAILY_RETENTION_DAYS is not a setting: did you "
            "mean DB_BACKUP_DAILY_RETENTION?",
        ),
        (
            "DB_BACKUP_TEST_RETENTION_DAYS",
            "0",
            "environment variable DB_BACKUP_TEST_RETENTION_DAYS: got '0', expected an integer >= 1",
        ),
    ],
)
def test_a_bad_variable_is_named(
    backups: Path,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    var: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(var, value)
    for args in (("schedules",), ("run-schedule", "daily"), ("prune", "--dry-run")):
        res = run(capsys, *args)
        assert res.code == 2, (args, res.err)
        assert len(res.err.strip().splitlines()) == 1
        assert message in res.err, res.err


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        ("backup:\n  testRetentionDays: soon\n", "key 'backup.testRetentionDays': got 'soon'"),
        (
            "schedules:\n  daily:\n    retentionDays: -1\n",
            "schedules.daily: key 'retentionDays': got '-1', expected an integer >= 1",
        ),
        ("schedules:\n  daily:\n    timezone: Mars/Base\n", "schedules.daily: key 'timezone'"),
        (
            "schedules:\n  test:\n    cron: '0 1 * * *'\n    retentionDays: 2\n",
            "key 'schedules.test': schedule ID 'test' is reserved",
        ),
        (
            "schedules:\n  Daily:\n    retentionDays: 2\n",
            "key 'schedules.Daily': invalid schedule ID",
        ),
    ],
)
def test_a_bad_yaml_key_names_file_and_key_path(
    backups: Path, capsys: Capsys, tmp_path: Path, yaml: str, message: str
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml)
    res = run(capsys, "--config", str(cfg), "schedules", "show", "daily")
    assert res.code == 2, res.err
    assert f"{cfg}: " in res.err and message in res.err, res.err
