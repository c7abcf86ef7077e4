"""Where schedules come from, and the runtime state file that `schedules add/update/...` edit.

Sources, lowest to highest: built-in defaults (daily, weekly, monthly) < the YAML file's
``schedules:`` < the seed's ``DB_BACKUP_{DAILY,WEEKLY,MONTHLY}_*`` variables < runtime changes
in ``schedules.toml`` in the state directory (the backup path). The operator's YAML is never
rewritten; a runtime change wins until it is undone with another runtime change.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from ..config import Settings
from ..errors import ConfigError, NotFoundError, UsageError
from ..state import StateDir
from .schedules import DEFAULT_SCHEDULES, Schedule, schedule_from_mapping, validate_schedule_id

SEED_IDS = ("daily", "weekly", "monthly")
SEED_ENV = {
    "ENABLED": "enabled",
    "RETENTION": "retentionDays",
    "COMPRESSION": "compression",
    "ENCRYPTION": "encryption",
}


@dataclass(frozen=True)
class ScheduleSet:
    schedules: dict[str, Schedule]
    sources: dict[str, str]

    def get(self, schedule_id: str) -> Schedule:
        validate_schedule_id(schedule_id)
        try:
            return self.schedules[schedule_id]
        except KeyError:
            raise NotFoundError(
                f"schedule {schedule_id} not found (known: "
                f"{', '.join(sorted(self.schedules)) or 'none'})"
            ) from None


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
    schedules, sources = _base_schedules(settings)
    _apply_state(schedules, sources, _read_state(state), state.schedules_file)
    return ScheduleSet(schedules, sources)


def _base_schedules(settings: Settings) -> tuple[dict[str, Schedule], dict[str, str]]:
    """Defaults, then the YAML file, then the seed's environment variables."""
    schedules: dict[str, Schedule] = {s.id: s for s in DEFAULT_SCHEDULES}
    sources = dict.fromkeys(schedules, "default")
    where = str(settings.config_file or "config")
    for sid, body in (settings.schedules or {}).items():
        sid = str(sid)
        validate_schedule_id(sid)
        if body is not None and not isinstance(body, dict):
            raise ConfigError(f"{where}: key 'schedules.{sid}' must be a mapping")
        schedules[sid] = schedule_from_mapping(
            sid, body or {}, f"{where}: schedules.{sid}", schedules.get(sid)
        )
        sources[sid] = "config" if sources.get(sid) != "default" else "default+config"
    for sid in SEED_IDS:
        overrides = {}
        for suffix, key in SEED_ENV.items():
            var = f"DB_BACKUP_{sid.upper()}_{suffix}"
            if settings.env.get(var, "") != "":
                overrides[key] = settings.env[var]
        if overrides and sid in schedules:
            schedules[sid] = schedule_from_mapping(
                sid, overrides, f"environment variable DB_BACKUP_{sid.upper()}_*", schedules[sid]
            )
            sources[sid] += "+env"
    return schedules, sources


def _apply_state(
    schedules: dict[str, Schedule],
    sources: dict[str, str],
    state: Mapping[str, Any],
    state_path: Path,
) -> None:
    for sid, body in state.items():
        validate_schedule_id(sid)
        if not isinstance(body, dict):
            raise ConfigError(f"{state_path}: schedules.{sid} must be a table")
        if body.get("removed"):
            schedules.pop(sid, None)
            sources.pop(sid, None)
            continue
        schedules[sid] = schedule_from_mapping(
            sid, body, f"{state_path}: schedules.{sid}", schedules.get(sid)
        )
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
        schedules, sources = _base_schedules(settings)
        state = _read_state(state_dir)
        current = dict(schedules)
        _apply_state(current, dict(sources), state, state_dir.schedules_file)
        exists = schedule_id in current
        if action == "add" and exists:
            raise UsageError(f"schedule {schedule_id} already exists: use `schedules update`")
        if action != "add" and not exists:
            raise NotFoundError(
                f"schedule {schedule_id} not found (known: {', '.join(sorted(current)) or 'none'})"
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
        merged = dict(schedules)
        _apply_state(merged, dict(sources), state, Path("command line"))
        _write_state(state_dir, state)
        return merged[schedule_id]
