"""What a command-line run gave back, for both runners: the subprocess one (``SB`` in
tests/conftest.py) and the in-process one (``run`` in tests/sched_helpers.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


PATCHED_IMPORTS = (
    "import os, signal, sys, sbbackup.cli, sbbackup.ops.backups, sbbackup.ops.restore, "
    "sbbackup.state.files"
)


def run_patched(env: Mapping[str, str], patch: str, *args: str) -> Result:
    """The real CLI in a child, with ``patch`` (Python source) run first: the one way to make
    a random name predictable or to land a signal at an exact moment."""
    code = "\n".join((PATCHED_IMPORTS, patch, "sbbackup.cli.main(sys.argv[1:])"))
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**env, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)
