"""``Context``: what every use case needs, built once from validated settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..catalog import Catalog, writer_lock
from ..config import Settings
from ..engines import ENGINES, Engine, EngineSettings, engine_for, preload
from ..model import BackupRecord
from ..pipeline import Meter
from ..state import StateDir
from ..storage import Storage
from ..storage.local import LocalStorage


@dataclass
class Context:
    """Everything a use case needs, built once from validated settings."""

    settings: Settings
    remote: str | None = None  # the API's client address, for the audit log
    meter: Meter | None = None  # progress of reading a stored backup (the CLI's, on a TTY)

    @cached_property
    def storage(self) -> Storage:
        from ..storage import open_storage

        return open_storage(self.settings.backup_path)

    @cached_property
    def catalog(self) -> Catalog:
        state = self.state
        return Catalog(self.storage, lambda backup_id: not state.lock_free(writer_lock(backup_id)))

    @cached_property
    def engine(self) -> Engine:
        s = self.settings
        return engine_for(EngineSettings(s.database_url, s.env, s.lock_wait_timeout))

    def reader_for(self, record: BackupRecord) -> Engine:
        """The engine that can read ``record``'s dump: the configured one, or, for a backup
        another engine wrote (a SQLite backup deep-verified where the configuration names
        PostgreSQL, or nothing), one made for the manifest's engine. Structure checks need
        no connection, so its URL only has to have the right scheme."""
        kind = record.database.get("engine")
        s = self.settings
        if not isinstance(kind, str) or kind not in ENGINES or kind == self.engine.name:
            return self.engine
        url = record.database.get("url") if kind == "sqlite" else None
        if not isinstance(url, str) or not url.startswith("sqlite:"):
            url = "sqlite:///backup.db" if kind == "sqlite" else None
        return engine_for(EngineSettings(url, s.env, s.lock_wait_timeout))

    @cached_property
    def state(self) -> StateDir:
        """Audit log, locks, restore records, the last drill, runtime schedules: always on the
        local filesystem. A local backup directory is its own state directory; otherwise it
        is ``state.dir`` (``SBBACKUP_STATE_DIR``)."""
        storage = self.storage
        if isinstance(storage, LocalStorage):
            return StateDir(storage.root)
        from ..state.files import resolve_dir

        return StateDir(resolve_dir(Path(self.settings.state_dir).expanduser()))

    @cached_property
    def identities(self) -> list[Any]:
        """The configured age identities, read once: checking the key and then restoring reuse
        them, and a passphrase identity remembers its scrypt result (about a second each)."""
        from ..encryption import identities

        return identities(self.settings)

    def cancel(self) -> None:
        """Stop the engine's children, if an engine was ever made (server shutdown)."""
        if "engine" in self.__dict__:
            self.engine.cancel()

    def audit(self, operation: str, target_id: str | None, result: str, **extra: Any) -> None:
        if self.remote:
            extra["remote"] = self.remote
        self.state.audit(operation, target_id, result, **extra)


def preload_imports(settings: Settings) -> None:
    """Import now, in the calling thread, what the use cases import on first use (the
    configured engine and its driver, those of the declared restore targets, the age
    encryption and its cryptography): a server calls this before it starts request and job
    threads, whose first imports could otherwise race each other and see a half-initialised
    module."""
    from .. import encryption  # noqa: F401
    from ..crypto import age  # noqa: F401

    for url in (settings.database_url, *settings.api_restore_targets.values()):
        preload(url)  # a declared restore target may use another engine than the source
