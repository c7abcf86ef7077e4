"""Schedules: defaults, sources and precedence, runtime changes, cron and DST, next, crontab."""

from __future__ import annotations

import shlex
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.sched_helpers import run, sqlite_db

from sbbackup.config import load_settings
from sbbackup.errors import ConfigError, UsageError
from sbbackup.policy.schedules import (
    Schedule,
    due_after,
    next_runs,
    previous_run,
    schedule_from_mapping,
    validate_cron,
    validate_schedule_id,
)
from sbbackup.policy.sources import load_schedules
from sbbackup.state import StateDir

ROOT = Path(__file__).parents[2]
EXAMPLE_CONFIG = ROOT / "examples" / "config.yaml"
EXAMPLE_CRONTAB = ROOT / "examples" / "crontab"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    return tmp_path / "backups"


def test_defaults_match_the_seed(tmp_path: Path) -> None:
    sset = load_schedules(load_settings(env={}), StateDir(tmp_path))
    got = {
        s.id: (s.cron, s.retentionDays, s.encryption, s.minKeep) for s in sset.schedules.values()
    }
    assert got == {
        "daily": ("0 2 * * *", 7, False, 1),
        "weekly": ("0 3 * * 0", 30, True, 1),
        "monthly": ("0 4 1 * *", 365, True, 1),
    }


def test_precedence_defaults_yaml_env_runtime(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "schedules:\n  daily:\n    retentionDays: 10\n    minKeep: 2\n"
        "  extra:\n    cron: '*/5 * * * *'\n    retentionDays: 1\n"
    )
    before = cfg.read_text()
    settings = load_settings(
        str(cfg), env={"DB_BACKUP_DAILY_RETENTION": "14", "DB_BACKUP_WEEKLY_ENABLED": "false"}
    )
    sset = load_schedules(settings, StateDir(tmp_path))
    assert sset.schedules["daily"].retentionDays == 14  # env beats YAML
    assert sset.schedules["daily"].minKeep == 2  # YAML beats defaults
    assert sset.schedules["weekly"].enabled is False
    assert sset.sources["daily"] == "default+config+env"
    assert sset.schedules["extra"].cron == "*/5 * * * *"
    # runtime beats env, and the YAML file is never rewritten
    monkeypatch.setenv("DB_BACKUP_DAILY_RETENTION", "14")
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path))
    res = run(
        capsys,
        "--config",
        str(cfg),
        "schedules",
        "update",
        "daily",
        "--retention-days",
        "3",
        "--json",
    )
    assert res.code == 0, res.err
    assert res.json()["retentionDays"] == 3 and res.json()["source"].endswith("+runtime")
    assert cfg.read_text() == before
    state = tomllib.loads((tmp_path / "schedules.toml").read_text())
    assert state == {"schedules": {"daily": {"retentionDays": 3}}}


def test_runtime_add_update_remove_enable_disable(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run(
        capsys,
        "schedules",
        "add",
        "hourly",
        "--cron",
        "0 * * * *",
        "--retention-days",
        "2",
        "--timezone",
        "Europe/Berlin",
        "--json",
    )
    assert res.code == 0, res.err
    assert res.json()["source"] == "runtime" and res.json()["minKeep"] == 1
    assert (
        run(
            capsys, "schedules", "add", "hourly", "--cron", "0 * * * *", "--retention-days", "2"
        ).code
        == 2
    )
    assert run(capsys, "schedules", "update", "hourly", "--min-keep", "3").code == 0
    assert run(capsys, "schedules", "disable", "hourly").code == 0
    shown = run(capsys, "schedules", "show", "hourly", "--json").json()
    assert (shown["minKeep"], shown["enabled"], shown["nextRun"]) == (3, False, None)
    assert run(capsys, "schedules", "enable", "hourly").code == 0
    assert run(capsys, "schedules", "remove", "daily").code == 0
    ids = [s["scheduleId"] for s in run(capsys, "schedules", "list", "--json").json()]
    assert ids == ["weekly", "monthly", "hourly"]
    assert run(capsys, "schedules", "show", "daily").code == 10
    # human output works too
    assert "hourly" in run(capsys, "schedules").out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("add", "x", "--cron", "0 25 * * *", "--retention-days", "1"), 2, "invalid cron"),
        (("add", "x", "--cron", "0 2 * * * *", "--retention-days", "1"), 2, "five fields"),
        (("add", "x", "--cron", "@daily", "--retention-days", "1"), 2, "five fields"),
        (("add", "x", "--retention-days", "1"), 2, "--cron"),
        (
            (
                "add",
                "x",
                "--cron",
                "0 1 * * *",
                "--timezone",
                "Mars/Olympus",
                "--retention-days",
                "1",
            ),
            2,
            "unknown time zone",
        ),
        (("add", "../x", "--cron", "0 1 * * *", "--retention-days", "1"), 2, "invalid schedule"),
        (("add", "manual", "--cron", "0 1 * * *", "--retention-days", "1"), 2, "reserved"),
        (("update", "nope", "--cron", "0 1 * * *"), 10, "not found"),
        (("enable", "nope"), 10, "not found"),
        (("remove", "nope"), 10, "not found"),
    ],
)
def test_schedule_errors(
    env: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], code: int, message: str
) -> None:
    res = run(capsys, "schedules", *args)
    assert res.code == code, res.err
    assert message in res.err
    assert not (env / "schedules.toml").exists()


def test_yaml_errors_name_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("schedules:\n  daily:\n    cronn: '0 1 * * *'\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: schedules\.daily: unknown key 'cronn'"):
        load_schedules(load_settings(str(cfg), env={}), StateDir(tmp_path))
    with pytest.raises(ConfigError, match="DB_BACKUP_DAILY_RETENTION|DB_BACKUP_DAILY_"):
        load_schedules(load_settings(env={"DB_BACKUP_DAILY_RETENTION": "soon"}), StateDir(tmp_path))


def test_validators() -> None:
    assert validate_cron(" 0  2 * * * ") == "0 2 * * *"
    assert validate_cron("0 2 29 2 *") == "0 2 29 2 *"  # leap days come
    for bad in ("", "* * * *", "61 * * * *", "0 2 * * 8", "0 2 * * * 2026", "*/0 * * * *"):
        with pytest.raises(ConfigError, match="invalid cron expression"):
            validate_cron(bad)
    with pytest.raises(ConfigError, match="failed to find next date"):
        validate_cron("0 2 30 2 *")  # 30 February never comes
    for days in ("0", "36501", "99999999999999999999"):
        with pytest.raises(ConfigError, match="<= 36500"):
            schedule_from_mapping("x", {"cron": "0 2 * * *", "retentionDays": days}, "t", None)
    for bad in ("", "A", "-x", "a/b", "x" * 64, "test"):
        with pytest.raises(UsageError):
            validate_schedule_id(bad)
    s = schedule_from_mapping(
        "x",
        {"cron": "0 1 * * *", "retentionDays": "3", "enabled": "no", "compression": "off"},
        "here",
    )
    assert (s.retentionDays, s.enabled, s.compression, s.timezone) == (3, False, False, "local")


def test_dst_changes_in_the_schedule_zone() -> None:
    berlin = Schedule("b", "30 2 * * *", 7, timezone="Europe/Berlin")
    spring = next_runs(berlin, datetime(2026, 3, 27, 12, tzinfo=UTC), 4)
    # 2026-03-29 02:30 does not exist in Berlin: the run happens once, as the clocks jump.
    assert [w.isoformat() for w in spring] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    autumn = next_runs(berlin, datetime(2026, 10, 24, 12, tzinfo=UTC), 3)
    # 2026-10-25 02:30 happens twice in Berlin: cron runs it once.
    assert [w.isoformat() for w in autumn] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    four = Schedule("f", "0 4 * * *", 7, timezone="Europe/Berlin")
    utc_hours = [
        w.astimezone(UTC).hour for w in next_runs(four, datetime(2026, 3, 28, tzinfo=UTC), 2)
    ]
    assert utc_hours == [3, 2]  # same wall-clock time, one hour less offset after the change
    assert previous_run(four, datetime(2026, 3, 29, 2, 0, tzinfo=UTC)).isoformat() == (
        "2026-03-29T04:00:00+02:00"
    )


def test_the_repeated_hour_is_never_promised_after_its_first_run() -> None:
    # Between the two 02:30s of 2026-10-25 in Berlin, cron has already run the job: the next
    # run is the 26th's, not the repeat an hour later (which `next` once showed, and overdue
    # detection then expected, reporting a healthy daily schedule overdue for a day).
    berlin = Schedule("b", "30 2 * * *", 7, timezone="Europe/Berlin")
    after_first = datetime(2026, 10, 25, 0, 30, 1, tzinfo=UTC)  # 02:30:01+02:00
    assert [w.isoformat() for w in next_runs(berlin, after_first, 2)] == [
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    assert due_after(berlin, after_first).isoformat() == "2026-10-26T02:30:00+01:00"


def test_local_zone_follows_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    daily = Schedule("d", "0 2 * * *", 7)
    runs = next_runs(daily, datetime(2026, 3, 6, 12, tzinfo=UTC), 2)
    assert [w.utcoffset().total_seconds() / 3600 for w in runs] == [-5, -4]  # type: ignore[union-attr]


def test_next_lists_disabled_and_sorts(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "schedules", "disable", "monthly")
    res = run(capsys, "next", "--count", "2", "--now", "2026-03-06T12:00:00Z", "--json")
    assert res.code == 0, res.err
    rows = res.json()
    assert [(r["scheduleId"], r["nextRun"]) for r in rows] == [
        ("daily", "2026-03-07T02:00:00.000Z"),
        ("daily", "2026-03-08T02:00:00.000Z"),
        ("weekly", "2026-03-08T03:00:00.000Z"),
        ("weekly", "2026-03-15T03:00:00.000Z"),
        ("monthly", None),
    ]
    assert rows[-1]["reason"] == "disabled" and rows[-1]["enabled"] is False
    human = run(capsys, "next", "--now", "2026-03-06T12:00:00Z").out
    assert "disabled" in human and "2026-03-07 02:00" in human


def test_example_crontab_is_what_crontab_prints(capsys: pytest.CaptureFixture[str]) -> None:
    res = run(
        capsys,
        "--config",
        str(EXAMPLE_CONFIG),
        "crontab",
        "--cron",
        "debian",
        "--executable",
        "/usr/local/bin/sbbackup",
        "--config-path",
        "/etc/sbbackup/config.yaml",
    )
    assert res.code == 0, res.err
    assert res.out == EXAMPLE_CRONTAB.read_text()
    ids = set(
        load_schedules(
            load_settings(str(EXAMPLE_CONFIG), env={}), StateDir(Path("/nonexistent"))
        ).schedules
    )
    jobs = [
        ln
        for ln in res.out.splitlines()
        if ln.strip() and not ln.startswith("#") and "=" not in ln.split()[0]
    ]
    assert len(jobs) == 3
    for line in jobs:
        fields = line.split(None, 5)
        validate_cron(" ".join(fields[:5]))
        argv = shlex.split(fields[5])
        assert argv[0].startswith("/") and argv[argv.index("--config") + 1].startswith("/")
        assert argv[-2] == "run-schedule" and argv[-1] in ids


def test_crontab_defaults_are_absolute(
    env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "schedules:\n  eu:\n    cron: '0 1 * * *'\n    retentionDays: 2\n"
        "    timezone: Europe/Berlin\n"
    )
    res = run(
        capsys, "--config", str(cfg), "crontab", "--cron", "cronie", "--log", "/var/log/sb.log"
    )
    lines = res.out.splitlines()
    assert "CRON_TZ=Europe/Berlin" in lines
    job = next(ln for ln in lines if ln.endswith("run-schedule eu >> /var/log/sb.log 2>&1"))
    argv = shlex.split(job.split(None, 5)[5])
    assert Path(argv[0]).is_absolute() and argv[argv.index("--config") + 1] == str(cfg)
    assert run(capsys, "crontab", "--json").json()["lines"][0].startswith("#")


def test_weekly_is_encrypted_by_default(
    env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ident = tmp_path / "id.txt"
    key = run(capsys, "keygen", "--output", str(ident), "--json")
    assert key.code == 0, key.err
    # Without recipients the encrypted schedule fails closed, before anything is dumped: a
    # failed record with the reason and no data file.
    res = run(capsys, "run-schedule", "weekly")
    [refused] = run(capsys, "list", "--json").json()
    assert res.code == 2 and (refused["status"], refused["filename"]) == ("failed", None)
    monkeypatch.setenv("DB_BACKUP_ENCRYPTION_RECIPIENTS", key.json()["publicKey"])
    monkeypatch.setenv("DB_BACKUP_ENCRYPTION_IDENTITY_FILE", str(ident))
    weekly = run(capsys, "run-schedule", "weekly", "--json").json()["backup"]
    daily = run(capsys, "run-schedule", "daily", "--json").json()["backup"]
    assert weekly["filename"].endswith(".age") and weekly["encryption"]
    assert not daily["filename"].endswith(".age") and daily["encryption"] is None
    assert run(capsys, "verify", weekly["id"], "--deep").code == 0
