"""What the use cases return: result value types, each with the ``to_json()`` that is its one
JSON shape (the CLI's ``--json`` and the API bodies), and the statuses they speak in.

``ops`` and ``policy`` produce them; ``render`` and ``api`` consume them. This package imports
nothing above ``model``, so the renderer can dispatch on these classes without loading a use
case. A status is a StrEnum: it compares equal to its string and JSON dumps as it.

- ``checks``: ``verify`` and the self test (checks, the restore drill);
- ``schedules``: retention plans, ``run-schedule``, ``prune``, ``schedules``, ``next``, ``crontab``;
- ``monitoring``: ``statistics``, ``health``, ``metrics``.
"""

from .base import JsonObject
from .checks import Check, CheckStatus, Drill, DrillStatus, TestReport, VerifyReport, VerifyResult
from .monitoring import (
    DiskUsage,
    DurationStats,
    Finding,
    HealthReport,
    Metrics,
    Overdue,
    ScheduleStats,
    SizeStats,
    Statistics,
    SuccessRate,
)
from .schedules import (
    KEEP,
    REMOVE,
    Crontab,
    Decision,
    NextFire,
    NextFires,
    PruneResult,
    RetentionPlan,
    RunOutcome,
    RunResult,
    ScheduleList,
    ScheduleRemoved,
    ScheduleView,
)

__all__ = [
    "KEEP",
    "REMOVE",
    "Check",
    "CheckStatus",
    "Crontab",
    "Decision",
    "DiskUsage",
    "Drill",
    "DrillStatus",
    "DurationStats",
    "Finding",
    "HealthReport",
    "JsonObject",
    "Metrics",
    "NextFire",
    "NextFires",
    "Overdue",
    "PruneResult",
    "RetentionPlan",
    "RunOutcome",
    "RunResult",
    "ScheduleList",
    "ScheduleRemoved",
    "ScheduleStats",
    "ScheduleView",
    "SizeStats",
    "Statistics",
    "SuccessRate",
    "TestReport",
    "VerifyReport",
    "VerifyResult",
]
