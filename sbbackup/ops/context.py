"""``Context``: what every use case needs, built once from validated settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..audit import append_audit
from ..catalog import Catalog
from ..config import Settings
from ..engines import Engine, EngineSettings, engine_for
from ..storage import Storage
from ..storage.local import LocalStorage


@dataclass
class Context:
    """Everything a use case needs, built once from validated settings."""

    settings: Settings
    remote: str | None = None  # the API's client address, for the audit log

    @cached_property
    def storage(self) -> Storage:
        from ..storage import open_storage

        return open_storage(self.settings.backup_path)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.storage)

    @cached_property
    def engine(self) -> Engine:
        s = self.settings
        return engine_for(EngineSettings(s.database_url, s.env, s.lock_wait_timeout))

    @property
    def state_dir(self) -> Path:
        """Audit log, restore records, locks: always on the local filesystem."""
        storage = self.storage
        if isinstance(storage, LocalStorage):
            return storage.root
        from ..state import resolve_dir

        state = self.settings.env.get("SBBACKUP_STATE_DIR", "~/.local/state/sbbackup")
        return resolve_dir(Path(state).expanduser())

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
        append_audit(self.state_dir, operation, target_id, result, **extra)
