"""Results of ``verify`` and of the self test (``sbbackup test``): checks and the restore
drill, with the statuses they speak in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum

from ..errors import ExitCode
from .base import JsonObject

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
    backupDeleted: bool = False  # `test --no-keep` deleted the backup the drill made

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
