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
    example = Path(__file__).parents[1] / "examples" / "config.yaml"
    s = load_settings(str(example), env={})
    assert s.backup_path
