"""A config file that holds a password and that others can read: one warning line, no error."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.sched_helpers import run

from sbbackup.config import load_settings

PW_URL = "database:\n  url: postgresql://backup:s3cret@127.0.0.1:5432/app\n"


def _cfg(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("text", "mode", "readable_by"),
    [
        (PW_URL, 0o644, "group and others"),
        (PW_URL, 0o640, "group"),
        (PW_URL, 0o604, "others"),
        ("database:\n  url: postgresql://b@127.0.0.1/app?password=x\n", 0o644, "group and others"),
        ("database:\n  url: host=127.0.0.1 dbname=app password=x\n", 0o644, "group and others"),
        (
            "api:\n  restoreTargets:\n    staging: postgresql://r:pw@db2:5432/app_staging\n",
            0o644,
            "group and others",
        ),
    ],
)
def test_a_readable_file_with_a_password_warns(
    tmp_path: Path, text: str, mode: int, readable_by: str
) -> None:
    path = _cfg(tmp_path, text, mode)
    assert load_settings(str(path), env={}).warnings == (
        f"warning: {path} holds a password and is readable by {readable_by} "
        f"(mode {mode:04o}): chmod 600 {path}",
    )


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        (PW_URL, 0o600),  # private
        (PW_URL, 0o400),
        ("database:\n  url: postgresql://backup@127.0.0.1:5432/app\n", 0o644),  # ~/.pgpass
        ("database:\n  url: sqlite:///srv/app.db\n", 0o644),
        ("encryption:\n  passphraseFile: /etc/sbbackup/passphrase\n", 0o644),  # only a name
    ],
)
def test_no_warning_without_an_exposed_password(tmp_path: Path, text: str, mode: int) -> None:
    assert load_settings(str(_cfg(tmp_path, text, mode)), env={}).warnings == ()


def test_a_password_from_the_environment_is_not_the_file_s(tmp_path: Path) -> None:
    path = _cfg(tmp_path, "backup:\n  retentionDays: 3\n", 0o644)
    env = {"DATABASE_URL": "postgresql://u:pw@127.0.0.1/app"}
    assert load_settings(str(path), env=env).warnings == ()


def test_the_command_line_prints_one_line_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_BACKUP_PATH", str(tmp_path / "backups"))
    path = _cfg(tmp_path, PW_URL, 0o644)
    res = run(capsys, "--config", str(path), "crontab", "--cron", "cronie")
    assert res.code == 0 and res.out.startswith("# sbbackup schedules")
    assert res.err.splitlines() == [
        f"warning: {path} holds a password and is readable by group and others (mode 0644): "
        f"chmod 600 {path}"
    ]
    assert "s3cret" not in res.err
    path.chmod(0o600)
    assert run(capsys, "--config", str(path), "crontab", "--cron", "cronie").err == ""
