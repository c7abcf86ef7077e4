"""`sbbackup test`: preflight checks (``preflight``), then a restore drill into a scratch
target (``drill``); ``report`` holds what both return. Like every use case, never prints."""

from .drill import SCRATCH_PREFIX, drill_backup, run_drill, run_self_test, verify_with_restore
from .preflight import preflight
from .report import Check, Drill, TestOptions, TestReport, config_failure

__all__ = [
    "SCRATCH_PREFIX",
    "Check",
    "Drill",
    "TestOptions",
    "TestReport",
    "config_failure",
    "drill_backup",
    "preflight",
    "run_drill",
    "run_self_test",
    "verify_with_restore",
]
