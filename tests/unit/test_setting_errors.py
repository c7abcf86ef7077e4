"""Settings errors name what the user set: the flag, the variable, or the file and key path;
and the drill backups' retention setting (DB_BACKUP_TEST_RETENTION_DAYS) in all three forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbbackup.config import load_settings
from sbbackup.errors import ConfigError


def test_test_retention_days_default_env_yaml(tmp_path: Path) -> None:
    assert load_settings(env={}).test_retention_days == 1
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backup:\n  testRetentionDays: 3\n")
    assert load_settings(str(cfg), env={}).test_retention_days == 3
    env = {"DB_BACKUP_TEST_RETENTION_DAYS": "5"}
    assert load_settings(str(cfg), env=env).test_retention_days == 5  # env beats the file


@pytest.mark.parametrize(
    ("env", "overrides", "yaml", "message"),
    [
        (
            {},
            {"backup_path": ""},
            None,
            "option --backup-path: got '', expected a non-empty string",
        ),
        (
            {"DB_BACKUP_TEST_RETENTION_DAYS": "36501"},
            {},
            None,
            "environment variable DB_BACKUP_TEST_RETENTION_DAYS: got '36501', expected an "
            "integer >= 1 and <= 36500",
        ),
        (
            {},
            {},
            "backup:\n  testRetentionDays: 0\n",
            "c.yaml: key 'backup.testRetentionDays': got '0', expected an integer >= 1",
        ),
        (
            {},
            {},
            "backup:\n  testRetention: 2\n",
            "c.yaml: unknown key 'backup.testRetention' (expected one of",
        ),
    ],
)
def test_errors_name_what_was_set(
    tmp_path: Path,
    env: dict[str, str],
    overrides: dict[str, str],
    yaml: str | None,
    message: str,
) -> None:
    cfg = tmp_path / "c.yaml"
    if yaml is not None:
        cfg.write_text(yaml)
    with pytest.raises(ConfigError) as caught:
        load_settings(str(cfg) if yaml else None, env=env, overrides=overrides)
    assert message in caught.value.message
