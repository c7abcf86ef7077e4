"""Where schedules come from, and the runtime state file that `schedules add/update/...` edit.

Sources, lowest to highest: built-in defaults (daily, weekly, monthly) < the YAML file's
``schedules:`` < the seed's ``DB_BACKUP_{DAILY,WEEKLY,MONTHLY}_*`` variables < runtime changes
in ``schedules.toml`` in the state directory (the backup path). The operator's YAML is never
rewritten; a runtime change wins until it is undone with another runtime change.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from difflib import get_close_matches
from pathlib import Path
from typing import Any

import tomli_w

from ..config import Settings
from ..errors import ConfigError, NotFoundError, UsageError
from ..state import StateDir
from .schedules import (
    DEFAULT_SCHEDULES,
    FIELDS,
    Schedule,
    schedule_from_mapping,
    validate_schedule_id,
)

SEED_IDS = ("daily", "weekly", "monthly")
SEED_ENV = {
    "ENABLED": "enabled",
    "RETENTION": "retentionDays",
    "COMPRESSION": "compression",
    "ENCRYPTION": "encryption",
}


@dataclass(frozen=True)
class Origin:
    """Where one field of a schedule was set: ``source`` is default, config (the YAML
    file), env or runtime (``schedules.toml``); ``setting`` names the variable, or the file
    and key path (None for a built-in default)."""

    source: str
    setting: str | None = None


DEFAULT = Origin("default")
FIELD_NAMES = tuple(FIELDS)


@dataclass(frozen=True)
class ScheduleSet:
    """The merged schedules; ``sources`` is each schedule's chain of sources
    (``default+config+env``), ``origins`` where each of its fields was set, and ``shadowed``
    the non-default values a higher source hides (field -> the hidden value's origin and
    value), e.g. a runtime change over ``DB_BACKUP_DAILY_RETENTION``."""

    schedules: dict[str, Schedule]
    sources: dict[str, str]
    origins: dict[str, dict[str, Origin]] = field(default_factory=dict)
    shadowed: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def get(self, schedule_id: str) -> Schedule:
        validate_schedule_id(schedule_id)
        try:
            return self.schedules[schedule_id]
        except KeyError:
            raise NotFoundError(
                f"schedule {schedule_id} not found (known: "
                f"{', '.join(sorted(self.schedules)) or 'none'})"
            ) from None

    def lay(self, schedule: Schedule, origins: Mapping[str, Origin]) -> None:
        """Lay ``schedule`` over what is there, its fields in ``origins`` set by this layer."""
        sid = schedule.id
        below = self.schedules.get(sid)
        mine = self.origins.setdefault(sid, dict.fromkeys(FIELD_NAMES, DEFAULT))
        for name, origin in origins.items():
            if below is not None and mine[name] != DEFAULT:
                hidden = {**asdict(mine[name]), "value": getattr(below, name)}
                self.shadowed.setdefault(sid, {})[name] = hidden
            mine[name] = origin
        self.schedules[sid] = schedule

    def drop(self, schedule_id: str) -> None:
        for table in (self.schedules, self.sources, self.origins, self.shadowed):
            table.pop(schedule_id, None)


def _read_state(state: StateDir) -> dict[str, Any]:
    """The runtime changes; a symlink in place of the file is refused (StorageError, exit 4)."""
    path = state.schedules_file
    raw = state.read_schedules()
    if raw is None:
        return {}
    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable schedule state ({exc})") from None
    schedules = data.get("schedules", {})
    if not isinstance(schedules, dict):
        raise ConfigError(f"{path}: 'schedules' must be a table")
    return schedules


def _write_state(state: StateDir, schedules: Mapping[str, Any]) -> None:
    body = tomli_w.dumps({"schedules": dict(schedules)}).encode()
    header = (
        b"# Runtime schedule changes made by `sbbackup schedules ...`.\n"
        b"# They override the YAML file and environment. Edit with sbbackup, not by hand.\n"
    )
    # A random O_EXCL temp name, then a rename: a planted symlink is replaced, never followed.
    state.write_schedules(header + body)


def load_schedules(settings: Settings, state: StateDir) -> ScheduleSet:
    """Every source merged, lowest to highest (see the module docstring)."""
    sset = _base_schedules(settings)
    _apply_state(sset, _read_state(state), state.schedules_file)
    return sset


def _base_schedules(settings: Settings) -> ScheduleSet:
    """Defaults, then the YAML file, then the seed's environment variables."""
    sset = ScheduleSet({}, {})
    for default in DEFAULT_SCHEDULES:
        sset.lay(default, {})
        sset.sources[default.id] = "default"
    where = str(settings.config_file or "config")
    for sid, body in (settings.schedules or {}).items():
        sid = str(sid)
        _valid_id(sid, f"{where}: key 'schedules.{sid[:80]}'")
        if body is not None and not isinstance(body, dict):
            raise ConfigError(f"{where}: key 'schedules.{sid}' must be a mapping")
        body = body or {}
        base = sset.schedules.get(sid)
        schedule = schedule_from_mapping(sid, body, f"{where}: schedules.{sid}", base)
        keys = [str(k) for k, v in body.items() if k != "id" and v is not None]
        sset.lay(schedule, {k: Origin("config", f"{where}: schedules.{sid}.{k}") for k in keys})
        sset.sources[sid] = "config" if sset.sources.get(sid) != "default" else "default+config"
    _refuse_unknown_seed_vars(settings.env)
    for sid in SEED_IDS:
        if sid in sset.schedules:
            _apply_env(sset, sid, settings.env)
    return sset


def _valid_id(schedule_id: str, where: str) -> None:
    """A bad schedule ID in a file is the file's error: name it and the key (exit 2)."""
    try:
        validate_schedule_id(schedule_id)
    except UsageError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def _refuse_unknown_seed_vars(env: Mapping[str, str]) -> None:
    """A mistyped seed variable (``DB_BACKUP_DAILY_RETENTION_DAYS`` for ``..._RETENTION``)
    would be ignored in silence, and the schedule would keep a retention nobody chose."""
    known = {f"DB_BACKUP_{sid.upper()}_{suffix}" for sid in SEED_IDS for suffix in SEED_ENV}
    prefixes = tuple(f"DB_BACKUP_{sid.upper()}_" for sid in SEED_IDS)
    for var in sorted(env):
        if var.startswith(prefixes) and var not in known and env[var] != "":
            close = get_close_matches(var, sorted(known), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"environment variable {var} is not a setting: {hint}(the schedule variables "
                "are DB_BACKUP_{DAILY,WEEKLY,MONTHLY}_{ENABLED,RETENTION,COMPRESSION,ENCRYPTION})"
            )


def _apply_env(sset: ScheduleSet, sid: str, env: Mapping[str, str]) -> None:
    """The seed's ``DB_BACKUP_<ID>_<FIELD>`` variables; a bad value names its variable."""
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for suffix, key in SEED_ENV.items():
        var = f"DB_BACKUP_{sid.upper()}_{suffix}"
        raw = env.get(var, "")
        if raw == "":
            continue
        try:
            values[key] = FIELDS[key](raw)
        except (ValueError, ConfigError) as exc:
            detail = exc.message if isinstance(exc, ConfigError) else f"expected {exc}"
            raise ConfigError(f"environment variable {var}: got {raw[:60]!r}, {detail}") from None
        origins[key] = Origin("env", var)
    if values:
        sset.lay(replace(sset.schedules[sid], **values), origins)
        sset.sources[sid] += "+env"


def _apply_state(sset: ScheduleSet, state: Mapping[str, Any], state_path: Path) -> None:
    for sid, body in state.items():
        _valid_id(sid, f"{state_path}: schedules.{sid[:80]}")
        if not isinstance(body, dict):
            raise ConfigError(f"{state_path}: schedules.{sid} must be a table")
        if body.get("removed"):
            sset.drop(sid)
            continue
        where = f"{state_path}: schedules.{sid}"
        schedule = schedule_from_mapping(sid, body, where, sset.schedules.get(sid))
        keys = [str(k) for k, v in body.items() if k != "id" and v is not None]
        sset.lay(schedule, {k: Origin("runtime", f"{where}.{k}") for k in keys})
        sources = sset.sources
        sources[sid] = sources[sid] + "+runtime" if sid in sources else "runtime"


def change_schedule(
    settings: Settings,
    state_dir: StateDir,
    schedule_id: str,
    action: str,
    fields: Mapping[str, Any] | None = None,
) -> Schedule | None:
    """add / update / remove / enable / disable, recorded in the state file.

    The merged result is validated exactly as ``load_schedules`` will build it, before the
    file is written; a lock keeps two concurrent changes from losing one.
    """
    validate_schedule_id(schedule_id)
    with state_dir.lock("schedules-state", "a schedule change"):
        state = _read_state(state_dir)
        current = _base_schedules(settings)
        _apply_state(current, state, state_dir.schedules_file)
        exists = schedule_id in current.schedules
        if action == "add" and exists:
            raise UsageError(f"schedule {schedule_id} already exists: use `schedules update`")
        if action != "add" and not exists:
            raise NotFoundError(
                f"schedule {schedule_id} not found "
                f"(known: {', '.join(sorted(current.schedules)) or 'none'})"
            )
        if action == "remove":
            state[schedule_id] = {"removed": True}
            _write_state(state_dir, state)
            return None
        if action in ("enable", "disable"):
            changes: dict[str, Any] = {"enabled": action == "enable"}
        else:
            changes = {k: v for k, v in (fields or {}).items() if v is not None}
            if action == "add" and "cron" not in changes:
                raise UsageError("a new schedule needs --cron")
            if action == "add" and "retentionDays" not in changes:
                raise UsageError("a new schedule needs --retention-days")
        entry = {k: v for k, v in dict(state.get(schedule_id, {})).items() if k != "removed"}
        if action == "add":
            entry = {}  # a re-added schedule starts afresh, not from its removed settings
        entry.update(changes)
        state[schedule_id] = entry
        merged = _base_schedules(settings)
        _apply_state(merged, state, Path("command line"))
        _write_state(state_dir, state)
        return merged.schedules[schedule_id]
