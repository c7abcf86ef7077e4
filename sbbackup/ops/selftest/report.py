"""The options `sbbackup test` takes, and its report when the configuration does not load
(the report's types, ``TestReport``, ``Check`` and ``Drill``, are in ``sbbackup.results``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ...errors import ConfigError
from ...model import iso
from ...results import Check, CheckStatus, Drill, TestReport


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
    check = Check("config", CheckStatus.FAIL, exc.message, int(exc.exit_code))
    return TestReport([check], Drill(error="not run: the configuration is invalid"), now, now)
