"""What an API client may ask for, beyond what the CLI's user may: the trust boundary.

A client names a restore target (a new database on the source's server, a target the
operator declared, a new file in ``api.restoreDir``); it never sends a URL, a path or a libpq
parameter. It can make a backup stronger, never weaker than the configuration.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import TARGET_NAME_RE, Settings
from ..errors import ConfigError, PolicyError, TargetExistsError, UsageError
from ..ops.selftest import SCRATCH_PREFIX
from .context import ApiContext
from .wire import DATABASE_NAME_RE, FILE_NAME_RE, RESERVED_DATABASES, TARGET_FIELDS, field

NO_TARGET_URL = (
    "'targetUrl' is not accepted: an API client never sends a URL. Send 'targetDatabase' (a new "
    "database on the source's server), 'target' (a restore target declared in the "
    "configuration's api.restoreTargets) or, for SQLite, 'targetFile' (a new file in "
    "api.restoreDir)"
)
NO_TEST_URL = (
    "'targetUrl' is not accepted: an API client never sends a URL. Send 'target', a "
    "restore target declared in api.restoreTargets (the drill's scratch database "
    "goes on its server), or nothing (the source's server)"
)
UNDECLARED = (
    "'target' must name a restore target declared in the configuration (api.restoreTargets)"
)
STRENGTHS = ("encryption", "compression")


def guard_strength(
    settings: Settings,
    ctx: ApiContext,
    requested: Mapping[str, bool | None],
    current: Mapping[str, bool],
) -> None:
    """A client may turn encryption or compression on, never off where the configuration
    (or the schedule) has it on: 403, unless ``api.allowWeakerBackups``, and then every
    audit line of the request says ``"encryption": "off"`` (or compression)."""
    weakened = [k for k in STRENGTHS if requested.get(k) is False and current[k]]
    if not weakened:
        return
    if not settings.api_allow_weaker_backups:
        raise PolicyError(
            f"the configuration has {' and '.join(weakened)} on: an API client cannot turn "
            "it off (the operator may allow it with api.allowWeakerBackups)"
        )
    for k in weakened:
        ctx.audit_extra[k] = "off"


def guard_schedule(
    settings: Settings, ctx: ApiContext, fields: Mapping[str, Any], current: Any
) -> None:
    """``guard_strength`` for schedule fields. ``current``: the schedule as it is (None for a
    new one, which is judged against the configuration's defaults, what it would inherit)."""
    effective = {"encryption": settings.encryption, "compression": settings.compression}
    for k in STRENGTHS:
        if current is not None and getattr(current, k) is not None:
            effective[k] = getattr(current, k)
    guard_strength(settings, ctx, {k: fields.get(k) for k in STRENGTHS}, effective)


def restore_target(
    settings: Settings, restore_dir: Path | None, ctx: ApiContext, body: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``RestoreOptions`` fields for the one target form the body names."""
    given = [k for k in TARGET_FIELDS if body.get(k) is not None]
    if len(given) != 1:
        raise UsageError(
            "name exactly one target: 'targetDatabase' (a new database on the source's "
            "server), 'target' (declared in api.restoreTargets) or 'targetFile' (SQLite: a "
            "new file in api.restoreDir)"
        )
    kind = given[0]
    value = field(body, kind, str)
    create = field(body, "createTarget", bool)
    clean = bool(field(body, "clean", bool))
    confirm = bool(field(body, "confirm", bool))
    if kind == "target":
        url = declared_target(settings, ctx, value)
        ctx.audit_extra["restoreTarget"] = f"declared:{value}"
        return {
            "target": url,
            "create_target": bool(create),
            "clean": clean,
            "confirmed": confirm,
            # A declared target that turns out to be the source (however it is spelled)
            # is refused unless the configuration allows restoring over the source.
            "source_allowed": settings.api_allow_restore_over_source,
        }
    if create is False:
        raise UsageError(f"a {kind} is always created by the restore: leave out createTarget")
    if kind == "targetDatabase":
        return new_database(settings, ctx, value, clean, confirm)
    return new_file(restore_dir, ctx, value, clean)


def declared_target(settings: Settings, ctx: ApiContext, name: str) -> str:
    """The operator's string for a declared target; the same 403 for a malformed name
    and an unknown one."""
    targets = settings.api_restore_targets
    if not TARGET_NAME_RE.fullmatch(name) or name not in targets:
        raise PolicyError(UNDECLARED)
    url = targets[name]
    if (ctx.engine.name == "sqlite") != url.startswith("sqlite:"):
        raise UsageError(f"restore target {name} is not a {ctx.engine.name} database")
    return url


def new_database(
    settings: Settings, ctx: ApiContext, name: str, clean: bool, confirm: bool
) -> dict[str, Any]:
    """A bare name: a database this restore creates on the source's server. The source's
    own name only with api.allowRestoreOverSource and ``"confirm": true``."""
    if ctx.engine.name != "postgresql":
        raise UsageError(
            "'targetDatabase' is for PostgreSQL: restore a SQLite backup to a 'targetFile' "
            "(in api.restoreDir) or a declared 'target'"
        )
    if len(name.encode()) > 63 or not DATABASE_NAME_RE.fullmatch(name):
        raise UsageError(
            "invalid targetDatabase: 1 to 63 letters, digits, '_', '$' or '-', starting "
            "with a letter or '_'"
        )
    ctx.audit_extra["restoreTarget"] = f"database:{name}"
    if name == ctx.engine.describe()["name"]:
        return over_source(settings, name, clean, confirm)
    if name.startswith(SCRATCH_PREFIX):
        raise UsageError(f"'{SCRATCH_PREFIX}...' names belong to restore drills")
    if name in RESERVED_DATABASES:
        raise PolicyError(f"{name} is a system database: never a restore target")
    if clean:
        raise PolicyError(
            "'clean' drops a database: through the API only a declared target may be "
            "cleaned (a targetDatabase is always a new database)"
        )
    return {
        "target": name,
        "create_target": True,
        "clean": False,
        "must_be_new": True,
        "source_allowed": False,
    }


def over_source(settings: Settings, name: str, clean: bool, confirm: bool) -> dict[str, Any]:
    """The source database by its own name: the one existing database the operator named
    (database.url), so ``clean`` may drop it, once the configuration and the request agree."""
    if not settings.api_allow_restore_over_source:
        raise PolicyError(
            "targetDatabase is the source database: the configuration does not allow "
            "restoring over it through the API (api.allowRestoreOverSource)"
        )
    if not confirm:
        raise UsageError('restoring over the source database is destructive: send "confirm": true')
    return {"target": name, "create_target": False, "clean": clean, "confirmed": True}


def new_file(restore_dir: Path | None, ctx: ApiContext, name: str, clean: bool) -> dict[str, Any]:
    """A bare file name: a new SQLite file directly inside api.restoreDir. No answer tells
    anything about a path outside it."""
    if ctx.engine.name != "sqlite":
        raise UsageError(
            "'targetFile' is for SQLite: restore a PostgreSQL backup to a 'targetDatabase' "
            "or a declared 'target'"
        )
    if restore_dir is None:
        raise PolicyError("restores to a file are off: the configuration has no api.restoreDir")
    if clean:
        raise PolicyError("'clean' replaces a file: a targetFile is always a new file")
    if ".." in name or "\0" in name or not FILE_NAME_RE.fullmatch(name):
        raise UsageError(
            "invalid targetFile: a bare file name of at most 200 letters, digits, '.', '_' "
            "or '-', not starting with '.', without '..'"
        )
    root = os.path.realpath(restore_dir)
    path = os.path.join(root, name)
    if os.path.lexists(path):  # a symlink counts, wherever it points
        raise TargetExistsError(f"{name} already exists in api.restoreDir: choose a new name")
    if os.path.dirname(os.path.realpath(path)) != root:
        raise PolicyError(f"{name} is not inside api.restoreDir")
    ctx.audit_extra["restoreTarget"] = f"file:{name}"
    return {"target": path, "create_target": True, "clean": False, "must_be_new": True}


def check_restore_dir(settings: Settings) -> Path | None:
    """``api.restoreDir`` as an absolute path, refused (exit 2) unless it is a directory owned
    by the running user (or root) that neither group nor others can write (ssh's rule): a
    restore must not land where someone else can swap the name under it."""
    if not settings.api_restore_dir:
        return None
    path = Path(settings.api_restore_dir).expanduser().absolute()
    where = f"api.restoreDir {path}"
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{where} is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"{where} is owned by uid {st.st_uid}, not by the user running sbbackup")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{where} is writable by group or others (mode {st.st_mode & 0o777:o}): chmod go-w it"
        )
    return path
