"""Configuration: defaults < YAML file < environment < command flags, validated once.

Every key is declared once in ``KEYS`` with its YAML path, its environment variable, its
parser and its default. An unknown key or a bad value fails naming the source (file or
variable), the key, and what was expected (exit 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import ConfigError

DEFAULT_MIN_FREE = 1 << 30  # bytes that `health` wants free in the backup path by default

MAX_RETENTION_DAYS = 36500  # a century: larger values are typos, and overflow date math

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off"}


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise ValueError("a boolean (true/false/1/0/yes/no)")


def int_range(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    expected = f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")

    def parse(value: Any) -> int:
        try:
            if isinstance(value, bool):
                raise ValueError
            n = int(str(value).strip())
        except ValueError:
            raise ValueError(expected) from None
        if n < lo or (hi is not None and n > hi):
            raise ValueError(expected)
        return n

    return parse


def _str(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or str(value) == "":
        raise ValueError("a non-empty string")
    return str(value)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if str(value) not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return str(value)

    return parse


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise ValueError("a list of strings (or a comma-separated string)")
    return tuple(v for v in items if v)


# A declared restore target's name (api.restoreTargets): what an API client may send.
TARGET_NAME_RE = re.compile(r"[a-z0-9_-]{1,64}")
# libpq parameters that change the host, the database or the credentials: a declared target
# says exactly where it goes, in its host and path.
_TARGET_PARAMS_REFUSED = frozenset(
    {"host", "hostaddr", "port", "dbname", "user", "password", "passfile", "service"}
    | {"servicefile", "options", "target_session_attrs", "load_balance_hosts"}
)


def _restore_targets(value: Any) -> dict[str, str]:
    """``api.restoreTargets``: target name -> ``postgresql://`` URL or ``sqlite:///`` path.

    Messages never quote a URL: it may hold a password."""
    if not isinstance(value, dict):
        raise ValueError("a mapping of target names to postgresql:// URLs or sqlite:/// paths")
    targets: dict[str, str] = {}
    for name, url in value.items():
        if not isinstance(name, str) or not TARGET_NAME_RE.fullmatch(name):
            raise ValueError(
                f"target names of 1 to 64 characters a-z, 0-9, '_' and '-' (got {str(name)[:64]!r})"
            )
        if not isinstance(url, str):
            raise ValueError(f"a postgresql:// URL or a sqlite:/// path for target {name!r}")
        _check_target_url(name, url)
        targets[name] = url
    return targets


def _check_target_url(name: str, url: str) -> None:
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"a postgresql:// URL or a sqlite:/// path for target {name!r}")
    rest = url.split("://", 1)[1]
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "," in netloc.rpartition("@")[2]:
        raise ValueError(f"one host for target {name!r} (a multi-host URL is refused)")
    if not path:
        raise ValueError(f"a database name in the URL path of target {name!r}")
    params = {k for k, _ in parse_qsl(query, keep_blank_values=True)}
    refused = sorted(params & _TARGET_PARAMS_REFUSED)
    if refused:
        raise ValueError(
            f"no {refused[0]}= parameter for target {name!r} (host, database and credentials "
            "go in the URL itself)"
        )


@dataclass(frozen=True)
class Key:
    attr: str
    path: tuple[str, str]
    env: str | None
    parse: Callable[[Any], Any]
    default: Any
    echo: bool = True  # quote a bad value in the error (not for values that may hold secrets)


KEYS: tuple[Key, ...] = (
    Key("database_url", ("database", "url"), "DATABASE_URL", _str, None),
    Key(
        "lock_wait_timeout",
        ("database", "lockWaitTimeout"),
        "SBBACKUP_LOCK_WAIT_TIMEOUT",
        int_range(1),
        300,
    ),
    Key("enabled", ("backup", "enabled"), "DB_BACKUP_ENABLED", parse_bool, True),
    Key("backup_path", ("backup", "path"), "DB_BACKUP_PATH", _str, "./backups"),
    Key(
        "retention_days",
        ("backup", "retentionDays"),
        "DB_BACKUP_RETENTION_DAYS",
        int_range(1, MAX_RETENTION_DAYS),
        30,
    ),
    Key(
        "test_retention_days",
        ("backup", "testRetentionDays"),
        "DB_BACKUP_TEST_RETENTION_DAYS",
        int_range(1, MAX_RETENTION_DAYS),
        1,
    ),
    Key("compression", ("backup", "compression"), "DB_BACKUP_COMPRESSION", parse_bool, True),
    Key(
        "compression_level",
        ("backup", "compressionLevel"),
        "DB_BACKUP_COMPRESSION_LEVEL",
        int_range(1, 22),
        3,
    ),
    Key(
        "compression_threads",
        ("backup", "compressionThreads"),
        "DB_BACKUP_COMPRESSION_THREADS",
        int_range(-1, 64),
        -1,
    ),
    Key("encryption", ("backup", "encryption"), "DB_BACKUP_ENCRYPTION", parse_bool, False),
    Key("format", ("backup", "format"), "DB_BACKUP_FORMAT", _choice("plain", "custom"), "plain"),
    Key("row_counts", ("backup", "rowCounts"), "DB_BACKUP_ROW_COUNTS", parse_bool, True),
    Key("restore_jobs", ("restore", "jobs"), "DB_BACKUP_RESTORE_JOBS", int_range(1, 64), 2),
    Key(
        "recipients", ("encryption", "recipients"), "DB_BACKUP_ENCRYPTION_RECIPIENTS", _str_list, ()
    ),
    Key(
        "recipients_file",
        ("encryption", "recipientsFile"),
        "DB_BACKUP_ENCRYPTION_RECIPIENTS_FILE",
        _str,
        None,
    ),
    Key(
        "identity_file",
        ("encryption", "identityFile"),
        "DB_BACKUP_ENCRYPTION_IDENTITY_FILE",
        _str,
        None,
    ),
    Key(
        "passphrase_file",
        ("encryption", "passphraseFile"),
        "DB_BACKUP_ENCRYPTION_PASSPHRASE_FILE",
        _str,
        None,
    ),
    Key(
        "restore_test_days",
        ("health", "restoreTestDays"),
        "SBBACKUP_HEALTH_RESTORE_TEST_DAYS",
        int_range(1),
        None,
    ),
    Key("state_dir", ("state", "dir"), "SBBACKUP_STATE_DIR", _str, "~/.local/state/sbbackup"),
    Key("api_host", ("api", "host"), "SBBACKUP_API_HOST", _str, "127.0.0.1"),
    Key("api_port", ("api", "port"), "SBBACKUP_API_PORT", int_range(0, 65535), 8080),
    Key(
        "api_public_health",
        ("api", "publicHealth"),
        "SBBACKUP_API_PUBLIC_HEALTH",
        parse_bool,
        False,
    ),
    Key(
        "api_restore_targets",
        ("api", "restoreTargets"),
        None,
        _restore_targets,
        {},
        echo=False,
    ),
    Key("api_restore_dir", ("api", "restoreDir"), "SBBACKUP_API_RESTORE_DIR", _str, None),
    Key(
        "api_allow_restore_over_source",
        ("api", "allowRestoreOverSource"),
        "SBBACKUP_API_ALLOW_RESTORE_OVER_SOURCE",
        parse_bool,
        False,
    ),
    Key(
        "api_allow_weaker_backups",
        ("api", "allowWeakerBackups"),
        "SBBACKUP_API_ALLOW_WEAKER_BACKUPS",
        parse_bool,
        False,
    ),
    Key(
        "api_max_backup_jobs",
        ("api", "maxBackupJobs"),
        "SBBACKUP_API_MAX_BACKUP_JOBS",
        int_range(1, 64),
        1,
    ),
    Key(
        "api_max_restore_jobs",
        ("api", "maxRestoreJobs"),
        "SBBACKUP_API_MAX_RESTORE_JOBS",
        int_range(1, 64),
        1,
    ),
    Key(
        "api_max_test_jobs",
        ("api", "maxTestJobs"),
        "SBBACKUP_API_MAX_TEST_JOBS",
        int_range(1, 64),
        1,
    ),
)
SECTIONS = {k.path[0] for k in KEYS} | {"schedules"}


@dataclass(frozen=True)
class Settings:
    """Validated settings. Every field but the last four is a key of ``KEYS``, which holds
    its default: ``load_settings`` is the only constructor and fills them all."""

    database_url: str | None
    lock_wait_timeout: int
    enabled: bool
    backup_path: str
    retention_days: int  # manual backups (no schedule)
    test_retention_days: int  # the drill backups of `sbbackup test` (scheduleId "test")
    compression: bool
    compression_level: int
    compression_threads: int
    encryption: bool
    format: str
    row_counts: bool
    restore_jobs: int
    recipients: tuple[str, ...]
    recipients_file: str | None
    identity_file: str | None
    passphrase_file: str | None
    restore_test_days: int | None  # `health` warns without a restore drill this recent
    state_dir: str  # audit log, locks, restore records when the backup path is not local
    api_host: str
    api_port: int
    api_public_health: bool
    # name -> postgresql:// URL or sqlite:/// path; the URLs may hold passwords, so no repr
    api_restore_targets: Mapping[str, str] = field(repr=False)
    api_restore_dir: str | None  # SQLite restores through the API land only here
    api_allow_restore_over_source: bool
    api_allow_weaker_backups: bool  # an API client may turn encryption/compression off
    api_max_backup_jobs: int  # running API backups and schedule runs
    api_max_restore_jobs: int
    api_max_test_jobs: int
    config_file: Path | None = None
    # one line each for stderr: a config file holding a password that others can read
    warnings: tuple[str, ...] = ()
    schedules: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"{str(path)!r}: cannot read config file (invalid path)") from None
    import yaml  # only when there is a file: it is the slowest import on the backup path

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    except ValueError as exc:  # an integer past Python's int/str conversion limit
        raise ConfigError(f"{path}: invalid YAML ({str(exc)[:60]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _from_yaml(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    by_path = {k.path: k for k in KEYS}
    values: dict[str, Any] = {}
    for section, body in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{path}: unknown key {section!r} (expected one of {', '.join(sorted(SECTIONS))})"
            )
        if section == "schedules":
            if body is not None and not isinstance(body, dict):
                raise ConfigError(f"{path}: key 'schedules' must be a mapping of schedule IDs")
            values["schedules"] = body or {}
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: key {section!r} must be a mapping")
        for name, raw in body.items():
            key = by_path.get((section, str(name)))
            if key is None:
                allowed = sorted(k.path[1] for k in KEYS if k.path[0] == section)
                raise ConfigError(
                    f"{path}: unknown key '{section}.{name}' (expected one of {', '.join(allowed)})"
                )
            if raw is None:
                continue
            values[key.attr] = _parse(key, raw, f"{path}: key '{section}.{name}'")
    return values


def _parse(key: Key, raw: Any, where: str) -> Any:
    try:
        return key.parse(raw)
    except ValueError as exc:
        if not key.echo:
            raise ConfigError(f"{where}: expected {exc}") from None
        raise ConfigError(f"{where}: got {str(raw)[:60]!r}, expected {exc}") from None


def _default(key: Key) -> Any:
    """A fresh copy of a mutable default (a mapping), the value itself otherwise."""
    return dict(key.default) if isinstance(key.default, Mapping) else key.default


def load_settings(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build validated settings. ``overrides`` are command flags keyed by attribute name."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {k.attr: _default(k) for k in KEYS}
    path_str = config_file or env.get("SBBACKUP_CONFIG")
    try:
        path = Path(path_str).expanduser().absolute() if path_str else None
    except RuntimeError:  # ~user where there is no such user
        raise ConfigError(f"config file {path_str!r}: cannot expand '~'") from None
    warnings: tuple[str, ...] = ()
    if path is not None:
        from_file = _from_yaml(path, _read_yaml(path))
        values.update(from_file)
        warnings = _exposed_secrets(path, from_file)
    for key in KEYS:
        if key.env and env.get(key.env, "") != "":
            values[key.attr] = _parse(key, env[key.env], f"environment variable {key.env}")
    by_attr = {k.attr: k for k in KEYS}
    for attr, raw in (overrides or {}).items():
        if raw is None:
            continue
        key = by_attr[attr]
        # The flag is named after the setting (--database-url, --backup-path): say which.
        values[attr] = _parse(key, raw, f"option --{attr.replace('_', '-')}")
    return Settings(config_file=path, env=env, warnings=warnings, **values)


def _has_password(url: str) -> bool:
    """A password in a postgresql:// URL (``user:pw@`` or ``?password=``) or a libpq
    ``key=value`` string."""
    if re.search(r"(?:^|\s)password\s*=", url):
        return True
    if not url.startswith(("postgresql://", "postgres://")):
        return False
    try:
        parts = urlsplit(url)
        return bool(parts.password) or any(
            k == "password" for k, _ in parse_qsl(parts.query, keep_blank_values=True)
        )
    except ValueError:
        return False


def _exposed_secrets(path: Path, from_file: Mapping[str, Any]) -> tuple[str, ...]:
    """A warning when the file holds a password (``database.url``, ``api.restoreTargets``)
    and its group or others may read it. The other secrets (age identity and passphrase, API
    tokens) never sit in this file, only the names of their files."""
    urls = [from_file.get("database_url") or "", *from_file.get("api_restore_targets", {}).values()]
    if not any(_has_password(u) for u in urls):
        return ()
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return ()
    if not mode & 0o044:
        return ()
    return (
        f"warning: {path} holds a password and is readable by "
        f"{'group and others' if mode & 0o044 == 0o044 else 'group' if mode & 0o040 else 'others'}"
        f" (mode {mode:04o}): chmod 600 {path}",
    )
