"""What the use cases return: result value types, each with the ``to_json()`` that is its one
JSON shape (the CLI's ``--json`` and the API bodies), and the statuses they speak in.

``ops`` and ``policy`` produce them; ``render`` and ``api`` consume them. This module imports
nothing above ``model``, so the renderer can dispatch on these classes without loading a use
case. A status is a StrEnum: it compares equal to its string and JSON dumps as it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import StrEnum
from typing import Any, TypedDict

from .errors import ExitCode
from .model import BackupRecord

JsonObject = dict[str, object]


def _plain(value: object) -> Any:
    """``value`` as JSON-ready data: a dataclass as an object in field order, a tuple as a
    list, a mapping item by item; anything else as it is."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- verify ------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    """One backup's verification: ``ok``, or the error and its exit code."""

    id: str
    filename: str | None
    ok: bool
    deep: bool
    checksum: str | None = None
    error: str | None = None
    exitCode: int = 0
    restore: Drill | None = None  # the drill, with `verify --deep --restore`

    def to_json(self) -> JsonObject:
        data: JsonObject = {f.name: getattr(self, f.name) for f in fields(self)}
        data["restore"] = self.restore.to_json() if self.restore else None
        return data


@dataclass
class VerifyReport:
    """What `verify` found, one result per backup checked."""

    results: list[VerifyResult] = field(default_factory=list)

    @property
    def failed(self) -> list[VerifyResult]:
        return [r for r in self.results if not r.ok]

    def to_json(self) -> JsonObject:
        return {"ok": not self.failed, "results": [r.to_json() for r in self.results]}


# --- the self test -----------------------------------------------------------------------


class CheckStatus(StrEnum):
    """A preflight check's outcome: a warning does not fail the test."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


class DrillStatus(StrEnum):
    """A restore drill's outcome; ``skipped`` when none was asked for or it could not run."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class Check:
    """One preflight check of `sbbackup test`."""

    name: str
    status: CheckStatus
    reason: str
    code: int = 0  # the exit code of a failure


@dataclass
class Drill:
    """A restore drill: which backup, where, how long each step took, what differed."""

    backupId: str | None = None
    target: str | None = None
    status: DrillStatus = DrillStatus.SKIPPED
    timings: dict[str, int] = field(default_factory=dict)  # milliseconds per step
    tables: int = 0
    differences: list[str] = field(default_factory=list)
    scratchDropped: bool = False
    leftoversDropped: list[str] = field(default_factory=list)
    error: str | None = None
    code: int = 0

    def to_json(self) -> JsonObject:
        return asdict(self)


@dataclass
class TestReport:
    """What `sbbackup test` reports: the preflight checks, then the drill."""

    __test__ = False  # not a pytest class

    checks: list[Check]
    drill: Drill
    startedAt: str
    finishedAt: str | None = None

    @property
    def ok(self) -> bool:
        """Every check passed or warned, and the drill passed (or was not asked for)."""
        if any(c.status == CheckStatus.FAIL for c in self.checks):
            return False
        return self.drill.status == DrillStatus.PASSED or (
            self.drill.status == DrillStatus.SKIPPED and self.drill.error is None
        )

    @property
    def exit_code(self) -> int:
        """0, or the exit code of the first failure (preflight order, then the drill)."""
        for c in self.checks:
            if c.status == CheckStatus.FAIL:
                return c.code or int(ExitCode.UNEXPECTED)
        if self.drill.status == DrillStatus.FAILED:
            return self.drill.code or int(ExitCode.UNEXPECTED)
        return 0

    def to_json(self) -> JsonObject:
        return {
            "ok": self.ok,
            "exitCode": self.exit_code,
            "startedAt": self.startedAt,
            "finishedAt": self.finishedAt,
            "checks": [asdict(c) for c in self.checks],
            "drill": self.drill.to_json(),
        }


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

    def to_json(self) -> JsonObject:
        return {
            "scheduleId": self.scheduleId,
            "status": self.status,
            "reason": self.reason,
            "backup": self.backup.to_json() if self.backup else None,
            "retention": self.retention.to_json() if self.retention else None,
            "removed": self.removed,
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

    id: str
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
    nextRun: str | None
    backupCount: int
    totalSize: int


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
    next: str | None
    nextUtc: str | None
    reason: str | None


@dataclass
class ScheduleList:
    """`schedules list`: a view of every schedule."""

    rows: list[ScheduleView]

    def to_json(self) -> list[ScheduleView]:
        return self.rows


@dataclass
class NextFires:
    """`next`: the coming fire times, soonest first."""

    rows: list[NextFire]

    def to_json(self) -> list[NextFire]:
        return self.rows


@dataclass
class Crontab:
    """`crontab`: one line per enabled schedule."""

    lines: list[str]

    def to_json(self) -> JsonObject:
        return {"lines": self.lines}


# --- statistics, health, metrics ---------------------------------------------------------


@dataclass(frozen=True)
class SuccessRate:
    """Completed over finished attempts, per window; None when there were none."""

    allTime: float | None
    last7d: float | None
    last30d: float | None


@dataclass(frozen=True)
class DurationStats:
    """Of completed backups, in seconds."""

    averageSeconds: float | None
    p95Seconds: float | None


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
    lastDurationSeconds: float | None
    lastSizeBytes: int | None


@dataclass(frozen=True)
class Overdue:
    """A schedule whose run was due (plus grace) after its last success and did not happen."""

    scheduleId: str
    lastSuccess: str | None
    dueAt: str | None
    overdueSeconds: int


@dataclass(frozen=True)
class Statistics:
    """Everything `sbbackup statistics` shows. ``lastRestoreTest`` and ``lastRestoreDrill`` are
    the drill entries as ``last_test.json`` keeps them (``at``, ``status``, ``backupId`` ...)."""

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
    graceSeconds: int
    overdueSchedules: tuple[Overdue, ...]
    disk: DiskUsage
    lastRestoreTest: Mapping[str, object] | None
    lastRestoreDrill: Mapping[str, object] | None

    def to_json(self) -> JsonObject:
        data: JsonObject = _plain(self)
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
