"""The command line: ``base`` holds the group and the error boundary; each module adds commands.

Command modules register themselves on ``cli`` when imported here.
"""

from __future__ import annotations

from . import backups, keys, schedules, selftest, serve  # noqa: F401 - registers commands
from .base import cli, main

__all__ = ["cli", "main"]
