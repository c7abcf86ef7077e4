"""Schedules: what runs when, evaluated by croniter (never a hand-written cron parser).

Pure: ``now`` is always a parameter. ``next_runs``, ``previous_run`` and ``due_after`` are the
one implementation that ``next``, ``run-schedule``'s listings and overdue detection share.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ..config import MAX_RETENTION_DAYS, int_range, parse_bool
from ..errors import ConfigError, UsageError

SCHEDULE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# ``manual`` labels backups without a schedule in statistics and metrics; ``test`` is the
# self-test's restore drill. Neither can be a schedule of its own.
# "manual" and "test" name the backups of `create` and of the drill; "next" and "statistics"
# are API paths beside /api/backup/schedules/{scheduleId}: such a schedule could not be read.
RESERVED_IDS = frozenset({"manual", "test", "next", "statistics"})
FORMATS = ("plain", "custom")
LOCAL = "local"


@dataclass(frozen=True)
class Schedule:
    """One schedule. ``None`` for compression/encryption/format means the ``backup:`` setting."""

    id: str
    cron: str
    retentionDays: int
    timezone: str = LOCAL
    enabled: bool = True
    minKeep: int = 1
    compression: bool | None = None
    encryption: bool | None = None
    format: str | None = None
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def zone(self) -> tzinfo:
        return zone_for(self.timezone)


DEFAULT_SCHEDULES: tuple[Schedule, ...] = (
    Schedule(
        "daily", "0 2 * * *", 7, compression=True, encryption=False, description="02:00 every day"
    ),
    Schedule(
        "weekly",
        "0 3 * * 0",
        30,
        compression=True,
        encryption=True,
        description="03:00 every Sunday",
    ),
    Schedule(
        "monthly",
        "0 4 1 * *",
        365,
        compression=True,
        encryption=True,
        description="04:00 on the 1st of the month",
    ),
)


def validate_schedule_id(schedule_id: str) -> str:
    """Refuse anything that is not a schedule ID before it reaches a lock file name (exit 2)."""
    if not isinstance(schedule_id, str) or not SCHEDULE_ID_RE.fullmatch(schedule_id):
        raise UsageError(
            f"invalid schedule ID {str(schedule_id)[:80]!r}: use 1-63 characters a-z, 0-9, "
            "'-' and '_', starting with a letter or digit"
        )
    if schedule_id in RESERVED_IDS:
        raise UsageError(
            f"schedule ID {schedule_id!r} is reserved (reserved: "
            f"{', '.join(sorted(RESERVED_IDS))}): choose another"
        )
    return schedule_id


def validate_cron(expr: str, where: str = "cron") -> str:
    """Exactly five fields, and croniter must accept them (exit 2 otherwise)."""
    text = " ".join(str(expr).split())
    shape = "'minute hour day-of-month month day-of-week', e.g. '0 2 * * *'"
    if len(text.split(" ")) != 5:
        raise ConfigError(
            f"{where}: invalid cron expression {str(expr)[:80]!r}: expected five fields {shape}"
        )
    try:
        # A date that never comes (e.g. 30 February) is refused here, not at the first run.
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"{where}: invalid cron expression {text!r} ({exc}): expected {shape}"
        ) from None
    return text


def local_zone() -> tzinfo:
    """The machine's zone with its DST rules: $TZ, else /etc/localtime, else a fixed offset."""
    for name in (os.environ.get("TZ", "").lstrip(":"), _etc_localtime_name()):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    fixed = datetime.now().astimezone().tzinfo
    assert fixed is not None
    return fixed


def _etc_localtime_name() -> str:
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        return ""
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else ""


def zone_for(name: str) -> tzinfo:
    if name == LOCAL:
        return local_zone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Berlin, or 'local')"
        ) from None


# --- parsing -----------------------------------------------------------------------------


def _text(value: Any) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value).strip() == "":
        raise ValueError("a non-empty string")
    return str(value).strip()


def _format(value: Any) -> str:
    if value not in FORMATS:
        raise ValueError("one of " + ", ".join(FORMATS))
    return str(value)


def _zone_name(value: Any) -> str:
    name = _text(value)
    zone_for(name)
    return name


FIELDS: dict[str, Any] = {
    "cron": _text,
    "timezone": _zone_name,
    "enabled": parse_bool,
    "retentionDays": int_range(1, MAX_RETENTION_DAYS),
    "minKeep": int_range(1, 10_000),
    "compression": parse_bool,
    "encryption": parse_bool,
    "format": _format,
    "description": _text,
}


def schedule_from_mapping(
    schedule_id: str, body: Mapping[str, Any], where: str, base: Schedule | None = None
) -> Schedule:
    """Build a schedule from YAML, TOML or environment values laid over ``base``.

    Unknown keys and bad values fail naming ``where`` and the key (exit 2).
    """
    values: dict[str, Any] = {}
    for key, raw in body.items():
        if key == "id":
            if str(raw) != schedule_id:
                raise ConfigError(f"{where}: id {raw!r} does not match the key {schedule_id!r}")
            continue
        parse = FIELDS.get(str(key))
        if parse is None:
            raise ConfigError(f"{where}: unknown key {key!r} (expected one of {', '.join(FIELDS)})")
        if raw is None:
            continue
        try:
            values[str(key)] = parse(raw)
        except (ValueError, ConfigError) as exc:
            detail = exc.message if isinstance(exc, ConfigError) else f"expected {exc}"
            raise ConfigError(f"{where}: key {key!r}: got {str(raw)[:60]!r}, {detail}") from None
    if "cron" in values:
        values["cron"] = validate_cron(values["cron"], f"{where}: key 'cron'")
    if base is not None:
        return replace(base, **values)
    missing = [k for k in ("cron", "retentionDays") if k not in values]
    if missing:
        raise ConfigError(f"{where}: a new schedule needs {' and '.join(missing)}")
    return Schedule(id=schedule_id, **values)


# --- time --------------------------------------------------------------------------------


def next_runs(schedule: Schedule, now: datetime, count: int = 1) -> list[datetime]:
    """The next ``count`` fire times strictly after ``now``, in the schedule's zone.

    A wall-clock time that happens twice when clocks go back fires once, at its first
    occurrence, as cron does: the repeat is skipped even when ``now`` falls between the two
    (otherwise ``next`` would promise a run cron never makes, and overdue detection would
    expect it).
    """
    it = croniter(schedule.cron, now.astimezone(schedule.zone))
    out: list[datetime] = []
    while len(out) < count:
        when: datetime = it.get_next(datetime)
        if _repeated_wall_time(when):
            continue
        out.append(when)
    return out


def _repeated_wall_time(when: datetime) -> bool:
    """True for the second occurrence of a wall-clock time that happens twice (DST ends)."""
    first = when.replace(tzinfo=None).replace(tzinfo=when.tzinfo, fold=0)
    return first.utcoffset() != when.utcoffset()


def previous_run(schedule: Schedule, now: datetime) -> datetime:
    """The latest fire time at or before ``now``."""
    it = croniter(schedule.cron, now.astimezone(schedule.zone) + timedelta(microseconds=1))
    when: datetime = it.get_prev(datetime)
    return when


def due_after(schedule: Schedule, since: datetime) -> datetime:
    """When the first run after ``since`` was (or is) due: overdue detection's deadline."""
    return next_runs(schedule, since, 1)[0]


# --- is cron running us in the schedule's zone? ------------------------------------------

# How late after its fire time cron may start a run (a busy machine, a slow start-up) and it
# still counts as that fire time.
FIRE_GRACE = timedelta(minutes=10)


def _fired_near(cron: str, zone: tzinfo, now: datetime) -> datetime | None:
    """The fire time of ``cron`` read in ``zone`` that ``now`` is a run of, or None."""
    local = now.astimezone(zone)
    when: datetime = croniter(cron, local + timedelta(microseconds=1)).get_prev(datetime)
    return when if local - when <= FIRE_GRACE else None


def zone_mismatch(schedule: Schedule, now: datetime, cron_zones: Iterable[tzinfo]) -> str | None:
    """Why a run at ``now`` looks like cron reads this schedule in another zone, or None.

    It does when ``now`` is no fire time of the cron in the schedule's own zone but is one in
    a zone cron may be using (``cron_zones``: the machine's zone, UTC): e.g. 02:00 UTC for
    ``0 2 * * *`` Europe/Berlin, because Debian's cron ignores ``CRON_TZ``. A run started by
    hand at another time matches neither and gets no warning.
    """
    own = schedule.zone
    if _fired_near(schedule.cron, own, now) is not None:
        return None
    offset = now.astimezone(own).utcoffset()
    for zone in cron_zones:
        if now.astimezone(zone).utcoffset() == offset:
            continue  # the same wall clock as the schedule's own zone right now
        fired = _fired_near(schedule.cron, zone, now)
        if fired is not None:
            there = now.astimezone(own)
            return (
                f"schedule {schedule.id} ran at {fired:%H:%M} {fired.tzname()} "
                f"({there:%H:%M} {there.tzname()}), but its cron '{schedule.cron}' is meant in "
                f"{schedule.timezone}: cron is running it in another zone (Debian's cron "
                "ignores CRON_TZ); regenerate the lines with `sbbackup crontab`"
            )
    return None
