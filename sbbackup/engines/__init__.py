"""Database engines: the Protocol (``base``) plus a registry keyed by URL scheme.

``engine_for`` imports a plugin only when its scheme is asked for; the plugins import
``base``, never this package, so there is no cycle.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .base import (
    BeforeCommit,
    DumpResult,
    Engine,
    EngineCheck,
    EngineSettings,
    IncompleteDumpError,
    RestoreRequest,
    Target,
    compare_contents,
    compare_properties,
    signals_deferred,
)

__all__ = [
    "ENGINES",
    "BeforeCommit",
    "DumpResult",
    "Engine",
    "EngineCheck",
    "EngineSettings",
    "IncompleteDumpError",
    "RestoreRequest",
    "Target",
    "compare_contents",
    "compare_properties",
    "engine_for",
    "preload",
    "signals_deferred",
]


def _sqlite(settings: EngineSettings) -> Engine:
    from .sqlite import SQLiteEngine

    assert settings.url is not None
    return SQLiteEngine(settings.url)


def _postgresql(settings: EngineSettings) -> Engine:
    from .postgresql import PostgreSQLEngine

    return PostgreSQLEngine(
        settings.url, env=settings.env, lock_wait_timeout=settings.lock_wait_timeout
    )


# URL scheme -> the engine it selects.
ENGINES: dict[str, Callable[[EngineSettings], Engine]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "postgres": _postgresql,
}


def preload(url: str | None) -> None:
    """Import now the plugin ``url`` selects and what it imports on first use. A server calls
    this before its threads start: the first import of a module graph in two threads at once
    can hand one of them a half-initialised module ("module X has no attribute Y"). An
    unsupported URL imports nothing (``engine_for`` says what is wrong)."""
    scheme = _scheme(url)
    if scheme == "sqlite":
        from . import sqlite  # noqa: F401
    elif scheme is not None:
        from .postgresql import preload as preload_postgresql

        preload_postgresql()


def engine_for(settings: EngineSettings) -> Engine:
    """``sqlite:///path`` selects SQLite; ``postgresql://``, ``postgres://``, a libpq
    ``key=value`` string or no URL (libpq ``PG*`` variables) select PostgreSQL."""
    url = settings.url
    scheme = _scheme(url)
    if scheme is None:
        assert url is not None
        raise ConfigError(
            f"unsupported database URL scheme in {url.split('://')[0]!r}: "
            "expected postgresql:// or sqlite:///path"
        )
    return ENGINES[scheme](settings)


def _scheme(url: str | None) -> str | None:
    if url is None:
        return "postgresql"  # the libpq environment
    if url.startswith("sqlite:"):
        return "sqlite"
    scheme, sep, _ = url.partition("://")
    if sep and scheme in ENGINES:
        return scheme
    if "=" in url:
        return "postgresql"  # a libpq connection string
    return None
