"""The use cases, one module per family. They never import click or rich, never print and
never exit: they return results or raise ``SbbackupError`` subclasses carrying exit codes.

- ``context``: ``Context``, built once from validated settings (storage, catalog, engine).
- ``options``: ``CreateOptions`` and ``RestoreOptions``, frozen and validated when made.
- ``backups``: create, list, show, delete.
- ``verify``: verify (checksum, or ``deep``), and the checks every reader shares.
- ``restore``: restore and its record; loading and comparing, shared with the drill.
- ``schedules``: run-schedule, schedules list/show/edit, prune, next, crontab.
- ``monitoring``: statistics, health, metrics.
- ``selftest``: `sbbackup test`, preflight checks and the restore drill.

This package re-exports the backup use cases (``ops.create_backup`` ...); what they return
lives in ``sbbackup.results``. The last three
families are imported by name (``from sbbackup.ops import schedules``) when a command needs
them: they load croniter, which every other command would pay for at startup.
"""

from .backups import (
    check_format,
    create_backup,
    delete_backup,
    list_backups,
    show_backup,
    unique_backup_id,
)
from .context import Context, preload_imports
from .options import CreateOptions, RestoreOptions
from .restore import RESTORE_ID_RE, get_restore, new_restore_id, restore_backup
from .verify import verify_backups

__all__ = [
    "RESTORE_ID_RE",
    "Context",
    "CreateOptions",
    "RestoreOptions",
    "check_format",
    "create_backup",
    "delete_backup",
    "get_restore",
    "list_backups",
    "new_restore_id",
    "preload_imports",
    "restore_backup",
    "show_backup",
    "unique_backup_id",
    "verify_backups",
]
