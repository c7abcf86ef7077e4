"""What `sbbackup test` reports: the preflight checks, the drill, and the options it takes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ...errors import ConfigError, ExitCode
from ...model import iso


@dataclass
class Check:
    name: str
    status: str  # pass | fail | warn
    reason: str
    code: int = 0  # the exit code of a failure


@dataclass
class Drill:
    backupId: str | None = None
    target: str | None = None
    status: str = "skipped"  # passed | failed | skipped
    timings: dict[str, int] = field(default_factory=dict)  # milliseconds per step
    tables: int = 0
    differences: list[str] = field(default_factory=list)
    scratchDropped: bool = False
    leftoversDropped: list[str] = field(default_factory=list)
    error: str | None = None
    code: int = 0


@dataclass
class TestReport:
    __test__ = False  # not a pytest class

    checks: list[Check]
    drill: Drill
    startedAt: str
    finishedAt: str | None = None

    @property
    def ok(self) -> bool:
        """Every check passed or warned, and the drill passed (or was not asked for)."""
        if any(c.status == "fail" for c in self.checks):
            return False
        return self.drill.status == "passed" or (
            self.drill.status == "skipped" and self.drill.error is None
        )

    @property
    def exit_code(self) -> int:
        """0, or the exit code of the first failure (preflight order, then the drill)."""
        for c in self.checks:
            if c.status == "fail":
                return c.code or int(ExitCode.UNEXPECTED)
        if self.drill.status == "failed":
            return self.drill.code or int(ExitCode.UNEXPECTED)
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exitCode": self.exit_code,
            "startedAt": self.startedAt,
            "finishedAt": self.finishedAt,
            "checks": [asdict(c) for c in self.checks],
            "drill": asdict(self.drill),
        }


@dataclass(frozen=True)
class TestOptions:
    __test__ = False

    drill: bool = True
    backup_id: str | None = None
    latest: bool = False
    target_url: str | None = None


def config_failure(exc: ConfigError) -> TestReport:
    """The report when the settings themselves do not load."""
    now = iso(datetime.now(UTC)) or ""
    check = Check("config", "fail", exc.message, int(exc.exit_code))
    return TestReport([check], Drill(error="not run: the configuration is invalid"), now, now)
