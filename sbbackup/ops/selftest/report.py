"""The options `sbbackup test` takes, and its report when the configuration does not load
(the report's types, ``TestReport``, ``Check`` and ``Drill``, are in ``sbbackup.results``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ...errors import ConfigError, UsageError
from ...model import iso
from ...results import Check, CheckStatus, Drill, TestReport


@dataclass(frozen=True)
class TestOptions:
    __test__ = False

    drill: bool = True
    backup_id: str | None = None
    latest: bool = False
    target_url: str | None = None
    keep: bool = True  # False (--no-keep): delete the backup the drill made, once it passed

    def __post_init__(self) -> None:
        if not self.keep and (not self.drill or self.backup_id or self.latest):
            raise UsageError(
                "--no-keep deletes the backup the drill makes: not with --backup, --latest "
                "or --no-drill (they make none)"
            )


def config_failure(exc: ConfigError) -> TestReport:
    """The report when the settings themselves do not load."""
    now = iso(datetime.now(UTC)) or ""
    check = Check("config", CheckStatus.FAIL, exc.message, int(exc.exit_code))
    return TestReport([check], Drill(error="not run: the configuration is invalid"), now, now)
