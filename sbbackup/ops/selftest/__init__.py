"""`sbbackup test`: preflight checks (``preflight``), then a restore drill into a scratch
target (``drill``); what both return is in ``sbbackup.results``. Like every use case, it never
prints."""

from .drill import SCRATCH_PREFIX, drill_backup, run_drill, run_self_test, verify_with_restore
from .preflight import preflight
from .report import TestOptions, config_failure

__all__ = [
    "SCRATCH_PREFIX",
    "TestOptions",
    "config_failure",
    "drill_backup",
    "preflight",
    "run_drill",
    "run_self_test",
    "verify_with_restore",
]
