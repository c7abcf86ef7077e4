"""Results of retention, ``run-schedule`` and ``prune``, and the views of ``schedules``,
``next`` and ``crontab``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TypedDict

from ..model import BackupRecord
from .base import JsonObject

# --- retention, run-schedule, prune ------------------------------------------------------

KEEP = "keep"
REMOVE = "remove"


@dataclass(frozen=True)
class Decision:
    """Retention's verdict on one backup, with its reason."""

    id: str
    scheduleId: str | None
    createdAt: str
    status: str
    size: int
    action: str  # keep | remove
    reason: str

    def to_json(self) -> JsonObject:
        return asdict(self)


@dataclass
class RetentionPlan:
    """Every decision, newest backup first."""

    decisions: list[Decision] = field(default_factory=list)

    @property
    def keep(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == KEEP]

    @property
    def remove(self) -> list[Decision]:
        return [d for d in self.decisions if d.action == REMOVE]

    def to_json(self) -> JsonObject:
        return {
            "keep": len(self.keep),
            "remove": len(self.remove),
            "freedBytes": sum(d.size for d in self.remove),
            "decisions": [d.to_json() for d in self.decisions],
        }


class RunOutcome(StrEnum):
    """What `run-schedule` did: backed up (and pruned), or skipped a disabled schedule."""

    COMPLETED = "completed"
    SKIPPED = "skipped"


@dataclass
class RunResult:
    """What `run-schedule` did: the backup it took and the retention it then applied."""

    scheduleId: str
    status: RunOutcome
    reason: str | None = None
    backup: BackupRecord | None = None
    retention: RetentionPlan | None = None
    removed: list[str] = field(default_factory=list)
    # e.g. cron runs the schedule in another zone; each given at most once a day (stderr too)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> JsonObject:
        return {
            "scheduleId": self.scheduleId,
            "status": self.status,
            "reason": self.reason,
            "backup": self.backup.to_json() if self.backup else None,
            "retention": self.retention.to_json() if self.retention else None,
            "removed": self.removed,
            "warnings": self.warnings,
        }


@dataclass
class PruneResult:
    """A retention plan, and what was removed (nothing on a dry run)."""

    dryRun: bool
    scheduleId: str | None
    plan: RetentionPlan
    removed: list[str]

    def to_json(self) -> JsonObject:
        return {
            "dryRun": self.dryRun,
            "scheduleId": self.scheduleId,
            **self.plan.to_json(),
            "removed": self.removed,
        }


# --- schedules, next, crontab ------------------------------------------------------------


class ScheduleView(TypedDict):
    """A schedule's settings (``policy.schedules.Schedule``, in its field order), where it
    comes from, and what the catalog says of it."""

    scheduleId: str
    cron: str
    retentionDays: int
    timezone: str
    enabled: bool
    minKeep: int
    compression: bool | None
    encryption: bool | None
    format: str | None
    description: str | None
    source: str
    lastRun: str | None
    lastRunStatus: str | None
    lastSuccess: str | None
    nextRun: str | None  # UTC
    nextRunLocal: str | None  # the schedule's wall clock, with its offset
    backupCount: int
    totalSize: int
    # Will run-schedule back up with it? If not, why: the schedule is disabled, or backups
    # are off altogether (DB_BACKUP_ENABLED=false, or backup.enabled in the YAML file).
    willRun: bool
    reason: str | None
    # Where each setting above (cron ... description) was set: default, config (the YAML
    # file), env or runtime (schedules.toml).
    sources: dict[str, str]
    # Values a higher source hides: field -> {"source", "setting", "value"} of the hidden one
    # (e.g. a runtime retentionDays over DB_BACKUP_DAILY_RETENTION). Empty when none is.
    shadowed: dict[str, dict[str, object]]


class ScheduleRemoved(TypedDict):
    """What `schedules remove` answers."""

    scheduleId: str
    removed: bool


class NextFire(TypedDict):
    """One fire time of a schedule, or (``next`` None) why it has none."""

    scheduleId: str
    cron: str
    timezone: str
    enabled: bool
    nextRun: str | None  # UTC
    nextRunLocal: str | None  # the schedule's wall clock, with its offset
    reason: str | None


@dataclass
class ScheduleList:
    """`schedules list`: a view of every schedule."""

    rows: list[ScheduleView]
    notice: str | None = None  # for people: why no schedule runs at all (not in the JSON)

    def to_json(self) -> list[ScheduleView]:
        return self.rows


@dataclass
class NextFires:
    """`next`: the coming fire times, soonest first."""

    rows: list[NextFire]

    def to_json(self) -> list[NextFire]:
        return self.rows


class UnitFileView(TypedDict):
    """A systemd unit `crontab --cron systemd` makes: its file name and its text."""

    name: str
    content: str


@dataclass
class Crontab:
    """`crontab`: for a cron (``debian``, ``cronie``) its lines; for ``systemd`` a .service and
    a .timer per enabled schedule, and where ``--output-dir`` wrote them."""

    cron: str
    cronReason: str  # why this cron: "--cron" or what detection found
    lines: list[str]
    files: list[UnitFileView]
    written: list[str] = field(default_factory=list)

    def to_json(self) -> JsonObject:
        return {
            "cron": self.cron,
            "cronReason": self.cronReason,
            "lines": self.lines,
            "files": list(self.files),
            "written": self.written,
        }
