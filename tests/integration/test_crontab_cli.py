"""`sbbackup crontab --cron debian|cronie|systemd` through the command line, and the systemd
units checked by systemd's own parser (`systemd-analyze`)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.sched_helpers import run, sqlite_db

from sbbackup.policy.crontab import detect_cron
from sbbackup.policy.schedules import Schedule, next_runs

SBBACKUP = str(Path(sys.executable).with_name("sbbackup"))
SCHEDULES = {
    "eu": ("15 8-18 * * 1-5", "Europe/Berlin"),
    "nightly": ("30 0 * * *", "Europe/Berlin"),
    "sundays": ("0 3 * * 0", "local"),
    "firsts": ("0 4 1,15 * 1", "America/New_York"),
}


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATABASE_URL", sqlite_db(tmp_path / "app.db"))
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    monkeypatch.setenv("TZ", "UTC")  # the "system" zone, as local_zone() reads it
    body = "".join(
        f"  {sid}:\n    cron: '{cron}'\n    retentionDays: 2\n    timezone: {zone}\n"
        for sid, (cron, zone) in SCHEDULES.items()
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        "schedules:\n  daily: {enabled: false}\n  weekly: {enabled: false}\n"
        "  monthly: {enabled: false}\n" + body
    )
    path.chmod(0o600)
    return path


def test_debian_lines_are_in_the_system_zone(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run(capsys, "--config", str(cfg), "crontab", "--cron", "debian", "--now", "2026-12-04")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert not any(ln.startswith("CRON_TZ") for ln in lines)
    jobs = [ln for ln in lines if ln and ln[0] != "#"]
    assert [" ".join(j.split()[:5]) for j in jobs] == [
        "0 3 * * 0",
        "0 9 1,15 * 1",
        "15 7-17 * * 1-5",
        "30 23 * * *",
    ]
    assert (
        "# nightly: 00:30 Europe/Berlin = 23:30 UTC until 2027-03-28 01:00; rerun "
        "`sbbackup crontab` after that DST change"
    ) in lines
    print("\n".join(jobs))


def test_cronie_lines_carry_cron_tz(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = run(capsys, "--config", str(cfg), "crontab", "--cron", "cronie").out.splitlines()
    assert lines.index("CRON_TZ=America/New_York") < lines.index("CRON_TZ=Europe/Berlin")
    assert any(ln.startswith("15 8-18 * * 1-5 ") for ln in lines)


def test_the_default_is_what_detection_finds(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = run(capsys, "--config", str(cfg), "crontab", "--json").json()
    kind, why = detect_cron()
    assert (doc["cron"], doc["cronReason"]) == (kind, why)
    assert doc["files"] == [] and doc["written"] == [] and doc["lines"][0].startswith("#")
    print(f"this machine: {kind} ({why})")


def test_a_schedule_that_cannot_be_converted_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "UTC")
    path = tmp_path / "c.yaml"
    path.write_text(
        "schedules:\n  m: {cron: '0 0 1 * *', retentionDays: 2, timezone: Asia/Tokyo}\n"
    )
    res = run(capsys, "--config", str(path), "crontab", "--cron", "debian")
    assert res.code == 2 and res.out == ""
    assert len(res.err.strip().splitlines()) == 1 and "'m'" in res.err and "systemd" in res.err
    assert run(capsys, "--config", str(path), "crontab", "--cron", "cronie").code == 0
    res = run(capsys, "--config", str(path), "crontab", "--output-dir", str(tmp_path))
    assert res.code == 2 and "--cron systemd" in res.err


def _elapses(spec: str, count: int) -> list[datetime]:
    """What systemd itself says the calendar spec fires at, next ``count`` times, in UTC."""
    proc = subprocess.run(
        ["systemd-analyze", "calendar", f"--iterations={count}", spec],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", proc.stdout)
    return [datetime.fromisoformat(f).replace(tzinfo=UTC) for f in found]


@pytest.fixture
def analyze() -> None:
    if shutil.which("systemd-analyze") is None:  # a Debian base tool: present on CI and here
        pytest.skip("systemd-analyze is not installed: OnCalendar checked by test_on_calendar")


def test_systemd_units_written_and_accepted_by_systemd(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], analyze: None
) -> None:
    out = tmp_path / "units"
    out.mkdir()
    args = ["--config", str(cfg), "crontab", "--cron", "systemd", "--executable", SBBACKUP]
    res = run(capsys, *args, "--output-dir", str(out), "--json")
    assert res.code == 0, res.err
    doc = res.json()
    names = sorted(f["name"] for f in doc["files"])
    assert names == sorted(
        f"sbbackup-{sid}.{ext}" for sid in SCHEDULES for ext in ("service", "timer")
    )
    assert sorted(doc["written"]) == [str(out / n) for n in names]
    for f in doc["files"]:
        path = out / f["name"]
        assert path.read_text() == f["content"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(os.listdir(out)) == names  # no temp file left behind
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(out / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    checked = 0
    for sid, (cron, zone) in SCHEDULES.items():
        timer = (out / f"sbbackup-{sid}.timer").read_text()
        specs = re.findall(r"^OnCalendar=(.+)$", timer, re.MULTILINE)
        now = datetime.now(UTC)
        systemd = sorted({t for spec in specs for t in _elapses(spec, 6)})[:6]
        ours = [t.astimezone(UTC) for t in next_runs(Schedule(sid, cron, 2, timezone=zone), now, 6)]
        assert systemd == ours, (sid, specs)
        checked += len(ours)
    human = run(capsys, *args, "--output-dir", str(out))
    assert human.code == 0 and "systemctl daemon-reload" in human.out
    print(f"{len(names)} units verified; {checked} fire times agree with systemd-analyze")


def test_output_dir_refuses_a_symlinked_unit(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "units"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    (out / "sbbackup-eu.service").symlink_to(victim)
    res = run(
        capsys, "--config", str(cfg), "crontab", "--cron", "systemd", "--output-dir", str(out)
    )
    assert res.code == 4 and "symlink" in res.err
    assert victim.read_text() == "keep me\n"
    linked = tmp_path / "linked"
    linked.symlink_to(out)
    res = run(
        capsys, "--config", str(cfg), "crontab", "--cron", "systemd", "--output-dir", str(linked)
    )
    assert res.code == 2 and "symlink" in res.err
