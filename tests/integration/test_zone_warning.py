"""run-schedule warns on stderr, at most once a day, when cron fires a schedule at a time that
matches its cron in another zone (Debian's cron ignores CRON_TZ). The real command line
in-process against SQLite, with time travel through --now."""

from __future__ import annotations

import json
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


# --- the zone warning --------------------------------------------------------------------


def test_run_schedule_warns_once_a_day_when_cron_uses_another_zone(
    backups: Path, capsys: Capsys
) -> None:
    add = ("schedules", "add", "nightly", "--cron", "0 2 * * *", "--retention-days", "30")
    assert run(capsys, *add, "--timezone", "Europe/Berlin").code == 0
    warning = (
        "sbbackup: warning: schedule nightly ran at 02:00 UTC (03:00 CET), but its cron "
        "'0 2 * * *' is meant in Europe/Berlin: cron is running it in another zone"
    )

    def fire(now: str, *extra: str) -> tuple[str, str]:
        res = run(capsys, "run-schedule", "nightly", "--now", now, *extra)
        assert res.code == 0, res.err
        return res.out, res.err

    # 02:00 UTC is 03:00 in Berlin: the machine's cron (TZ=UTC) ignored CRON_TZ.
    out, err = fire("2026-01-15T02:00:04Z")
    assert out == "" and err.startswith(warning) and len(err.splitlines()) == 1
    assert fire("2026-01-15T02:01:00Z") == ("", "")  # at most once a day
    doc = json.loads(fire("2026-01-16T02:00:00Z", "--json")[0])  # the next day: again
    assert doc["warnings"][0].startswith(warning.removeprefix("sbbackup: warning: "))
    assert fire("2026-01-17T01:00:00Z") == ("", "")  # 02:00 in Berlin: right on time
    assert fire("2026-01-17T13:30:00Z") == ("", "")  # by hand, at no fire time: no warning
    state = json.loads((backups / "warned.json").read_text())
    assert state == {"zone-nightly": "2026-01-16"}
