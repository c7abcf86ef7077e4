"""Results of ``statistics``, ``health`` and ``metrics``: typed rows, never a dict read back
by key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from .base import JsonObject, plain

# --- statistics, health, metrics ---------------------------------------------------------


@dataclass(frozen=True)
class SuccessRate:
    """Completed over finished attempts, per window; None when there were none."""

    allTime: float | None
    last7d: float | None
    last30d: float | None


@dataclass(frozen=True)
class DurationStats:
    """Of completed backups, in milliseconds."""

    averageMs: int | None
    p95Ms: int | None


@dataclass(frozen=True)
class SizeStats:
    """Of completed backups, as stored; the ratio is uncompressed over stored bytes."""

    totalBytes: int
    averageBytes: int | None
    compressionRatio: float | None


@dataclass(frozen=True)
class DiskUsage:
    """Of the backup storage, when it can tell."""

    usedBytes: int | None
    freeBytes: int | None


@dataclass(frozen=True)
class ScheduleStats:
    """One schedule's row of `statistics` (``manual`` for backups without a schedule;
    ``enabled`` is None for a schedule that no longer exists)."""

    scheduleId: str
    enabled: bool | None
    total: int
    completed: int
    failed: int
    successRate: SuccessRate
    lastRun: str | None
    lastRunStatus: str | None
    lastSuccess: str | None
    lastDurationMs: int | None
    lastSizeBytes: int | None


@dataclass(frozen=True)
class Overdue:
    """A schedule whose run was due (plus grace) after its last success and did not happen."""

    scheduleId: str
    lastSuccess: str | None
    dueAt: str | None
    overdueMs: int


@dataclass(frozen=True)
class Statistics:
    """Everything `sbbackup statistics` shows. ``lastRestoreDrill`` is the newest restore drill
    that passed, as ``last_test.json`` keeps it (``at``, ``status``, ``backupId`` ...)."""

    generatedAt: str | None
    total: int
    completed: int
    failed: int
    byStatus: Mapping[str, int]
    successRate: SuccessRate
    duration: DurationStats
    size: SizeStats
    lastSuccess: Mapping[str, str | None]
    schedules: tuple[ScheduleStats, ...]
    graceMs: int
    overdueSchedules: tuple[Overdue, ...]
    disk: DiskUsage
    lastRestoreDrill: Mapping[str, object] | None

    def to_json(self) -> JsonObject:
        data: JsonObject = plain(self)
        return data


@dataclass(frozen=True)
class Finding:
    """A health problem or warning: which check, for which schedule (if any), and why."""

    check: str
    scheduleId: str | None
    reason: str


@dataclass
class HealthReport:
    """`health`: problems make it unhealthy, warnings do not."""

    checkedAt: str
    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> JsonObject:
        return {
            "ok": self.ok,
            "checkedAt": self.checkedAt,
            "problems": [asdict(f) for f in self.problems],
            "warnings": [asdict(f) for f in self.warnings],
        }


@dataclass
class Metrics:
    """Prometheus text exposition."""

    text: str

    def to_json(self) -> JsonObject:
        return {"text": self.text}
