"""What every database engine offers: the ``Engine`` Protocol and the values it hands back.

The plugins (``sqlite``, ``postgresql``) import from here, never from the package, whose
registry imports them: no cycle.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import IntegrityError
from ..pipeline import Writer


@dataclass
class DumpResult:
    """What the engine learned while dumping, recorded in the manifest."""

    database: dict[str, Any]
    tool_version: str | None
    contents: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """A restore target after resolution: what it is, for the checks made before a restore."""

    key: str  # one identity however the target is spelled (locks are named by it)
    display: str  # as it may be logged and recorded: never with a password
    exists: bool
    is_source: bool  # the source database however it is spelled (a restore over it confirms)


@dataclass(frozen=True)
class RestoreRequest:
    """Where ``restore`` loads a dump, and what it does with what is there."""

    target: str | None  # a URL, a path or a name, as ``resolve_target`` takes; None: the source
    create_target: bool = False  # create the target when it does not exist
    clean: bool = False  # replace what is there (swapped in once the new copy validated)
    jobs: int = 1  # parallel loaders, where the format allows (PostgreSQL custom, unencrypted)
    must_be_new: bool = False  # this restore creates it: TargetExistsError if it exists
    # Load straight into an existing target that holds other objects: not atomic.
    into_existing: bool = False
    no_owner: bool = False  # do not restore owners: the restoring role owns what it creates
    no_privileges: bool = False  # do not restore GRANT/REVOKE (pg_restore -x)
    role: str | None = None  # SET ROLE before loading (pg_restore --role)
    properties: dict[str, Any] | None = None  # the manifest's database.properties, if any
    database_properties: bool = True  # re-apply its settings, comment and ACL after the load


@dataclass(frozen=True)
class EngineCheck:
    """What ``check()`` found: the source, its server, and the client tools compared with it."""

    source: str  # the source as it may be logged: never with a password
    tools: dict[str, str]  # client tool -> version; empty for an engine that needs none
    server_version: str | None = None  # "15.18"; None: the server did not answer
    server_major: int | None = None  # the major the tools were compared with; None: not compared
    unreachable: str | None = None  # why the server did not answer (a DatabaseError's message)


class IncompleteDumpError(IntegrityError):
    """The dump stream does not end the way the engine ends a dump: no completion marker (it
    was cut short), or something after it that the dumper does not write there. Raised by
    ``check_structure`` and by a plain ``restore`` only after every chunk was read, so the
    caller can check the file's digest first."""

    def __init__(self, message: str = "the dump is incomplete (no completion marker)") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class EngineSettings:
    """What an engine is built from: nothing else of the settings reaches it."""

    url: str | None  # the database URL; None: PostgreSQL through the libpq PG* environment
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # empty: the process's
    lock_wait_timeout: int = 300  # seconds pg_dump waits for a table lock


class Engine(Protocol):
    """One database. Targets are URLs (or paths for SQLite); ``None`` means the source."""

    name: str
    formats: tuple[str, ...]
    file_extension: dict[str, str]

    def describe(self) -> dict[str, Any]:
        """engine, name, and the source URL with no password."""

    def check(self) -> EngineCheck:
        """Find the client tools and reach the source: DatabaseError when a tool is missing or
        older than the server. A server that does not answer is reported (``unreachable``),
        not raised: the tools are still checked."""

    def dump(
        self, fmt: str, out: Writer, row_counts: bool, progress: Callable[[int], None] | None = None
    ) -> DumpResult:
        """Stream a consistent dump into ``out``. Raise DatabaseError on any failure."""

    def check_structure(self, fmt: str, chunks: Iterable[bytes]) -> None:
        """Read a whole dump and check its structure: IntegrityError when a tool rejects it,
        IncompleteDumpError (after the last chunk) when it does not end the way the engine
        ends a dump (no completion marker, or anything after it the dumper does not write)."""

    def restore(
        self,
        fmt: str,
        chunks: Iterable[bytes],
        request: RestoreRequest,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        """Load a dump into a new staging copy beside ``request.target``, call
        ``before_commit(staged)`` (``staged``: a target ``inventory`` accepts) to validate it,
        and only then make it the target. On any exception (a signal included) the staging
        copy is removed and the target is untouched. Nothing loads before ``chunks`` has
        ended without raising; a plain dump that does not end the way the engine ends one
        raises IncompleteDumpError. An existing target that holds objects needs ``clean``
        (replaced) or ``into_existing`` (loaded straight into, not atomic; ``before_commit``
        then gets the target itself): otherwise TargetExistsError."""

    def resolve_target(self, target: str | None) -> Target:
        """Reach ``target`` once (DatabaseError when it cannot be reached; ConfigError for a
        refused form) and pin it for every later call with the same ``target``. What it says
        is all a caller learns of a target: its identity, how it may be logged, whether it
        exists, whether it is the source however it is spelled."""

    def inventory(self, target: str | None) -> dict[str, Any]:
        """Tables with exact row counts and object counts, as ``DumpResult.contents``; an
        engine that records database properties in ``DumpResult.database["properties"]`` adds
        them here as ``properties``, in the same shape."""

    def scratch_target(self, name: str, server: str | None) -> str:
        """A throwaway target called ``name`` beside ``server`` (default: the source)."""

    def drop_target(self, target: str, force: bool = True) -> None:
        """Remove a scratch target. ``force=False`` leaves one that is in use (raises)."""

    def leftover_targets(self, prefix: str, server: str | None) -> list[str]:
        """Scratch targets named ``prefix`` plus 8 hex digits (what a drill creates)."""

    def cancel(self) -> None:
        """Stop whatever this engine is running (a server shutting down); refuse new work."""

    def size_estimate(self) -> int:
        """The database's size in bytes, for free-space estimates."""


# What ``held_back`` keeps: the head (where a dump may name a key its end repeats) and the
# tail (where its completion marker sits), whatever the size of the dump.
HEAD_SIZE = 4096
TAIL_SIZE = 1 << 16

BeforeCommit = Callable[[str | None], object]
"""``before_commit(staged)``: validate the loaded copy ``staged`` before it becomes the target
(raise to refuse it)."""


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM for the block (a swap or a cleanup must not stop halfway), then act
    on them (KeyboardInterrupt). Handlers can only be set in the main thread; elsewhere (the
    API server) there is nothing to defer."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def note(signum: int, frame: Any) -> None:
        pending.append(signum)

    old = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt


EndRule = Callable[[bytes, bytes], str | None]
"""``rule(head, tail)``: why a dump with this head and tail does not end the way its dumper
ends one (one line, for IncompleteDumpError); None when it does."""


def held_back(
    chunks: Iterable[bytes], rule: EndRule | None = None, tail_size: int = TAIL_SIZE
) -> Iterator[bytes]:
    """Pass ``chunks`` on, holding back their last ``tail_size`` bytes until the stream has
    ended. Then ``rule`` judges the end (IncompleteDumpError, after every chunk was read) and
    only a good end goes on. A loader fed from here never gets the end of a dump that ends
    wrong, nor of a stream that raised: it is killed before it could commit."""
    head = b""
    held = b""
    for chunk in chunks:
        if len(head) < HEAD_SIZE:
            head += chunk[: HEAD_SIZE - len(head)]
        if len(chunk) >= tail_size:  # the held bytes and the chunk's head go on
            cut = len(chunk) - tail_size
            out, held = held + chunk[:cut], chunk[cut:]
        else:
            data = held + chunk
            cut = max(0, len(data) - tail_size)
            out, held = data[:cut], data[cut:]
        if out:
            yield out
    problem = rule(head, held) if rule is not None else None
    if problem is not None:
        raise IncompleteDumpError(problem)
    if held:
        yield held


def check_end(chunks: Iterable[bytes], rule: EndRule) -> None:
    """Read every chunk; IncompleteDumpError when the dump does not end as ``rule`` says."""
    for _ in held_back(chunks, rule):
        pass


def compare_contents(expected: dict[str, Any] | None, actual: dict[str, Any]) -> list[str]:
    """Every difference between a manifest's recorded contents and a restored database."""
    if not expected:
        return []
    diffs: list[str] = []
    exp_tables: dict[str, int] = expected.get("tables", {})
    act_tables: dict[str, int] = actual.get("tables", {})
    for name in sorted(set(exp_tables) | set(act_tables)):
        if name not in act_tables:
            diffs.append(f"table {name} is missing from the restored database")
        elif name not in exp_tables:
            diffs.append(f"table {name} is in the restored database but not in the backup")
        elif exp_tables[name] != act_tables[name]:
            diffs.append(
                f"table {name}: {exp_tables[name]} rows in the backup, {act_tables[name]} restored"
            )
    exp_obj: dict[str, int] = expected.get("objects", {})
    act_obj: dict[str, int] = actual.get("objects", {})
    for kind in sorted(exp_obj):
        if kind not in act_obj:
            diffs.append(f"{kind}: {exp_obj[kind]} in the backup, none counted in the restore")
        elif exp_obj[kind] != act_obj[kind]:
            diffs.append(f"{kind}: {exp_obj[kind]} in the backup, {act_obj[kind]} restored")
    return diffs


# What a database's properties (``database.properties``) hold: its encoding and locale are
# always compared (a restore cannot change them and keep every row readable); its settings,
# comment and ACL only when the restore re-applied them.
LOCALE_PROPERTIES = ("encoding", "collate", "ctype", "localeProvider", "locale", "icuRules")
APPLIED_PROPERTIES = ("settings", "comment", "acl")


def compare_properties(
    expected: dict[str, Any] | None, actual: dict[str, Any] | None, applied: bool = True
) -> list[str]:
    """Every difference between the database properties a manifest recorded and those of the
    restored database. A manifest without them (older, or another engine) has none to compare;
    a key it does not hold is not compared."""
    if not expected:
        return []
    if not actual:
        return ["database properties: recorded in the backup, none read from the restore"]
    keys = LOCALE_PROPERTIES + (APPLIED_PROPERTIES if applied else ())
    diffs: list[str] = []
    for key in keys:
        if key not in expected:
            continue
        exp, act = expected.get(key), actual.get(key)
        if isinstance(exp, list) or isinstance(act, list):
            diffs += _list_diffs(key, exp or [], act or [])
        elif exp != act:
            diffs.append(f"database {key}: {_shown(exp)} in the backup, {_shown(act)} restored")
    return diffs


def _list_diffs(key: str, exp: list[Any], act: list[Any]) -> list[str]:
    def keyed(items: list[Any]) -> dict[str, Any]:
        return {json.dumps(i, sort_keys=True): i for i in items}

    e, a = keyed(exp), keyed(act)
    out = [
        f"database {key}: {_shown(e[k])} in the backup, not restored"
        for k in sorted(e.keys() - a.keys())
    ]
    out += [
        f"database {key}: {_shown(a[k])} restored, not in the backup"
        for k in sorted(a.keys() - e.keys())
    ]
    return out


def _shown(value: Any) -> str:
    """JSON: quoted, every control or non-ASCII character escaped, fit for one line."""
    return json.dumps(value, sort_keys=True)[:200]
