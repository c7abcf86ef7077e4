"""Configuration: precedence, validation, and the seed's variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from sbbackup.config import load_settings, parse_bool
from sbbackup.errors import ConfigError


def test_defaults_are_the_seeds() -> None:
    s = load_settings(env={})
    assert (s.enabled, s.backup_path, s.retention_days, s.compression, s.encryption) == (
        True,
        "./backups",
        30,
        True,
        False,
    )
    assert s.database_url is None and s.format == "plain"


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("YES", True),
        (True, True),
        (1, True),
        ("false", False),
        ("0", False),
        ("no", False),
        (False, False),
        (0, False),
    ],
)
def test_booleans(raw: object, expected: bool) -> None:
    assert parse_bool(raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "", None, 2.5])
def test_bad_booleans(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_bool(raw)


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "backup:\n  path: /from/file\n  retentionDays: 5\n  compression: no\n"
        "database:\n  url: sqlite:///file.db\n"
    )
    s = load_settings(str(cfg), env={})
    assert (s.backup_path, s.retention_days, s.compression) == ("/from/file", 5, False)
    s = load_settings(str(cfg), env={"DB_BACKUP_PATH": "/from/env", "DATABASE_URL": "sqlite:///e"})
    assert s.backup_path == "/from/env" and s.retention_days == 5
    assert s.database_url == "sqlite:///e"
    s = load_settings(
        str(cfg), env={"DB_BACKUP_PATH": "/from/env"}, overrides={"backup_path": "/from/flag"}
    )
    assert s.backup_path == "/from/flag"
    s = load_settings(env={"SBBACKUP_CONFIG": str(cfg)})
    assert s.backup_path == "/from/file"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("backup:\n  retentionDayz: 3\n", "unknown key 'backup.retentionDayz'"),
        ("backup:\n  retentionDays: -1\n", "key 'backup.retentionDays'"),
        ("backup:\n  retentionDays: ten\n", "an integer >= 1"),
        ("backup:\n  format: tar\n", "one of plain, custom"),
        ("backup: [1, 2]\n", "must be a mapping"),
        ("- just a list\n", "mapping at the top level"),
        ("backup:\n  path: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(str(cfg), env={})
    assert str(cfg) in info.value.message and needle in info.value.message
    assert info.value.exit_code == 2


def test_bad_env_names_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"DB_BACKUP_COMPRESSION": "perhaps"})
    assert "DB_BACKUP_COMPRESSION" in info.value.message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(str(tmp_path / "nope.yaml"), env={})


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "config.yaml"
    s = load_settings(str(example), env={})
    assert s.backup_path


def test_api_policy_defaults() -> None:
    s = load_settings(env={})
    assert dict(s.api_restore_targets) == {} and s.api_restore_dir is None
    assert (s.api_allow_restore_over_source, s.api_allow_weaker_backups) == (False, False)
    assert (s.api_max_backup_jobs, s.api_max_restore_jobs, s.api_max_test_jobs) == (1, 1, 1)


def test_api_keys_from_file_and_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "api:\n  restoreTargets:\n    staging: postgresql://app:pw@db2:5432/staging?sslmode=require\n"
        "    scratch-1: sqlite:////srv/scratch.db\n  restoreDir: /srv/restores\n"
        "  allowWeakerBackups: yes\n  maxBackupJobs: 3\n"
    )
    s = load_settings(str(cfg), env={"SBBACKUP_API_MAX_RESTORE_JOBS": "2"})
    assert dict(s.api_restore_targets) == {
        "staging": "postgresql://app:pw@db2:5432/staging?sslmode=require",
        "scratch-1": "sqlite:////srv/scratch.db",
    }
    assert s.api_restore_dir == "/srv/restores" and s.api_allow_weaker_backups is True
    assert (s.api_max_backup_jobs, s.api_max_restore_jobs, s.api_max_test_jobs) == (3, 2, 1)
    assert "pw@" not in repr(s)  # declared URLs may hold passwords


@pytest.mark.parametrize(
    "targets,needle",
    [
        ("[a, b]", "a mapping of target names"),
        ("{Staging: postgresql://h/db}", "target names of 1 to 64"),
        ("{'a/b': postgresql://h/db}", "target names of 1 to 64"),
        ("{" + "a" * 65 + ": postgresql://h/db}", "target names of 1 to 64"),
        ("{staging: 'host=h dbname=x password=hunter2'}", "a postgresql:// URL or a sqlite"),
        ("{staging: 'mysql://u:hunter2@h/db'}", "a postgresql:// URL or a sqlite"),
        ("{staging: 'sqlite:///'}", "a postgresql:// URL or a sqlite"),
        ("{staging: 5}", "a postgresql:// URL or a sqlite"),
        ("{staging: 'postgresql://u:hunter2@h1,h2/db'}", "multi-host"),
        ("{staging: 'postgresql://u:hunter2@h/'}", "a database name"),
        ("{staging: 'postgresql://u:hunter2@h/db?dbname=other'}", "no dbname="),
        ("{staging: 'postgresql://u:hunter2@h/db?hostaddr=10.0.0.1'}", "no hostaddr="),
        ("{staging: 'postgresql://u:hunter2@h/db?passfile=/etc/shadow'}", "no passfile="),
        ("{staging: 'postgresql://u:hunter2@h/db?options=-c%20x%3Dy'}", "no options="),
        ("{staging: 'postgresql://u@h/db?password=hunter2'}", "no password="),
        ("{staging: 'postgresql://u@h/db?service=prod'}", "no service="),
    ],
)
def test_bad_restore_targets_never_echo_a_url(tmp_path: Path, targets: str, needle: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"api:\n  restoreTargets: {targets}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(str(cfg), env={})
    message = info.value.message
    assert "api.restoreTargets" in message and needle in message, message
    assert "hunter2" not in message and "@h" not in message and "h1," not in message


@pytest.mark.parametrize("key", ["maxBackupJobs", "maxRestoreJobs", "maxTestJobs"])
@pytest.mark.parametrize("value", ["0", "65", "-1", "many"])
def test_job_caps_are_bounded(tmp_path: Path, key: str, value: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"api:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=f"api.{key}.*an integer >= 1 and <= 64"):
        load_settings(str(cfg), env={})


def test_keys_are_the_only_source_of_defaults() -> None:
    """Every setting is declared once, in KEYS (its default included); Settings has no
    defaults of its own but for the file, its warnings, the schedules and the environment."""
    from dataclasses import MISSING, fields

    from sbbackup.config import KEYS, Settings

    own = {"config_file", "warnings", "schedules", "env"}
    assert {f.name for f in fields(Settings)} - own == {k.attr for k in KEYS}
    for f in fields(Settings):
        if f.name not in own:
            assert f.default is MISSING and f.default_factory is MISSING, f.name
    defaults = load_settings(env={})
    for key in KEYS:
        assert getattr(defaults, key.attr) == key.default, key.attr
