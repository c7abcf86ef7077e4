"""SQLite, the embedded engine of the quick start.

The dump is SQL text in the shape of the ``sqlite3`` shell's ``.dump`` (``sqlite_dump``:
virtual tables and their shadow tables, ``user_version`` and ``application_id``, rowids)
inside one read transaction (a consistent snapshot), streamed line by line, and ends with
``DUMP_END``. Restore replays statements one at a time into a new file, which only replaces
the target once every statement succeeded and the dump ended with ``DUMP_END`` (blank lines
after it allowed, nothing else: ``end_problem``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import stat
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DatabaseError, TargetExistsError, UsageError
from ..pipeline import Writer
from .base import (
    BeforeCommit,
    DumpResult,
    EngineCheck,
    RestoreRequest,
    Target,
    check_end,
    held_back,
)
from .sqlite_dump import dump_lines, is_internal, quote_ident

FLUSH = 1 << 20
DUMP_COMPLETE = b"-- sbbackup SQLite dump complete"
DUMP_END = b"\nCOMMIT;\n" + DUMP_COMPLETE + b"\n"  # the last bytes ``dump`` writes


def path_of(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's convention)."""
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise ConfigError(f"SQLite URL must look like sqlite:///path/to/file.db, got {url!r}")
    return Path(url[len("sqlite:///") :]).expanduser().absolute()


class SQLiteEngine:
    name = "sqlite"
    formats: tuple[str, ...] = ("plain",)
    file_extension = {"plain": ".sql"}

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = path_of(url)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "name": self.path.name, "url": self.url}

    def cancel(self) -> None:
        """Nothing to stop: SQLite runs in-process, between bytecodes an interrupt lands."""

    def _is_source(self, target: str | None) -> bool:
        """The same file however it is spelled (``..``, symlinks, hard links)."""
        mine, theirs = self.path, self._target(target)
        try:
            return mine.samefile(theirs)
        except OSError:  # one of them does not exist: compare the resolved paths
            return mine.resolve() == theirs.resolve()

    def _target(self, target: str | None) -> Path:
        if target is None:
            return self.path
        return path_of(target) if target.startswith("sqlite:") else Path(target).absolute()

    def _connect(self, path: Path, must_exist: bool = True) -> sqlite3.Connection:
        if must_exist and not path.is_file():
            raise DatabaseError(f"SQLite database {path} does not exist")
        try:
            uri = f"file:{path}?mode=ro" if must_exist else str(path)
            return sqlite3.connect(uri, uri=must_exist, isolation_level=None)
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open SQLite database {path}: {exc}") from None

    def check(self) -> EngineCheck:
        """No client tools (SQLite runs in this process); the file must open and read."""
        source = str(self.path)
        try:
            con = self._connect(self.path)
        except DatabaseError as exc:
            return EngineCheck(source, {}, unreachable=exc.message)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            return EngineCheck(
                source, {}, unreachable=f"cannot read SQLite database {source}: {exc}"
            )
        finally:
            con.close()
        return EngineCheck(source, {}, server_version=sqlite3.sqlite_version)

    def dump(
        self, fmt: str, out: Writer, row_counts: bool, progress: Callable[[int], None] | None = None
    ) -> DumpResult:
        if fmt != "plain":
            raise ConfigError("the SQLite engine only writes the plain format")
        con = self._connect(self.path)
        total = 0
        try:
            con.execute("BEGIN")  # one read transaction: counts and dump see the same data
            contents = _inventory(con) if row_counts else None
            buf: list[str] = []
            size = 0
            for line in dump_lines(con):
                if line == "COMMIT;":
                    continue  # written below, followed by the completion marker
                buf.append(line + "\n")
                size += len(line) + 1
                if size >= FLUSH:
                    total += _emit(out, buf)
                    buf, size = [], 0
                    if progress:
                        progress(total)
            total += _emit(out, [*buf, DUMP_END[1:].decode()])
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            raise DatabaseError(f"dumping {self.path} failed: {exc}") from None
        finally:
            con.close()
        return DumpResult(
            database={
                "engine": self.name,
                "name": self.path.name,
                "serverVersion": sqlite3.sqlite_version,
            },
            tool_version=None,
            contents=contents,
        )

    def resolve_target(self, target: str | None) -> Target:
        path = self._target(target)
        return Target(
            key=f"sqlite:{os.path.realpath(path)}",
            display=str(path),
            exists=os.path.lexists(path),
            is_source=self._is_source(target),
        )

    def restore(
        self,
        fmt: str,
        chunks: Iterable[bytes],
        request: RestoreRequest,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        """Replay into a private (0600) file beside the target, let ``before_commit`` judge
        it, then move it into place: a new target is linked in only if the name is still
        free (never over a file or a symlink that appeared meanwhile); ``clean`` replaces
        the name itself, never a file a symlink points to. An existing empty target (0 bytes,
        or no schema) is replaced as if ``clean``; any other existing one without ``clean``
        is refused (TargetExistsError, exit 2). A missing target is always created; ``jobs``
        is ignored, and so are owners and privileges (SQLite has none)."""
        if request.into_existing or request.role is not None:
            raise UsageError(
                "--into-existing and --role are for PostgreSQL: a SQLite restore writes a new "
                "file (--clean replaces an existing one)"
            )
        dest = self._target(request.target)
        clean, must_be_new = request.clean, request.must_be_new
        if os.path.lexists(dest) and (must_be_new or not clean):
            if must_be_new:
                raise TargetExistsError(f"target {dest.name} already exists")
            if not _is_empty(dest):
                raise TargetExistsError(
                    f"target {dest} exists and is not an empty database: use --clean to "
                    "replace it, or restore to "
                    "a new path with --target-url sqlite:///new.db"
                )
            clean = True  # an empty database (no schema, no user_version): replaced
        if not dest.parent.is_dir():
            raise DatabaseError(f"target directory {dest.parent} does not exist")
        _refuse_pending_changes(dest)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.restoring")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except OSError as exc:
            raise DatabaseError(f"cannot create {tmp}: {exc.strerror}") from None
        con = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            con.execute("BEGIN")
            for stmt in _statements(held_back(chunks, end_problem)):
                if stmt.strip() in ("BEGIN TRANSACTION;", "COMMIT;"):
                    continue
                con.execute(stmt)
            con.execute("COMMIT")
            con.close()
            if before_commit is not None:
                before_commit(f"sqlite:///{tmp}")
            self._move_into_place(tmp, dest, replace=clean and not must_be_new)
        except sqlite3.Error as exc:
            raise DatabaseError(f"restore into {dest} failed: {exc}") from None
        finally:
            con.close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    @staticmethod
    def _move_into_place(tmp: Path, dest: Path, replace: bool) -> None:
        _refuse_pending_changes(dest)  # again: a writer may have opened the target meanwhile
        if replace:
            os.replace(tmp, dest)  # rename(2) replaces a symlink itself, never its target
        else:
            try:
                os.link(tmp, dest, follow_symlinks=False)  # fails if the name was taken
            except FileExistsError:
                raise TargetExistsError(f"target {dest.name} already exists") from None
            except OSError as exc:
                raise DatabaseError(f"cannot create {dest}: {exc.strerror}") from None
        _fsync_dir(dest.parent)

    def inventory(self, target: str | None) -> dict[str, Any]:
        con = self._connect(self._target(target))
        try:
            return _inventory(con)
        finally:
            con.close()

    def scratch_target(self, name: str, server: str | None) -> str:
        base = self._target(server).parent if server else Path(tempfile.gettempdir())
        return f"sqlite:///{base / (name + '.db')}"

    def drop_target(self, target: str, force: bool = True) -> None:
        path = self._target(target)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DatabaseError(f"cannot remove scratch database {path}: {exc.strerror}") from None

    def leftover_targets(self, prefix: str, server: str | None) -> list[str]:
        base = self._target(server).parent if server else Path(tempfile.gettempdir())
        pattern = prefix + "[0-9a-f]" * 8 + ".db"  # only what scratch_target made
        return [f"sqlite:///{p}" for p in sorted(base.glob(pattern))]

    def size_estimate(self) -> int:
        return self.path.stat().st_size

    def check_structure(self, fmt: str, chunks: Iterable[bytes]) -> None:
        """The dump must end with what ``dump`` writes last (``end_problem``)."""
        check_end(chunks, end_problem)


WAL_HEADER = 32  # a -wal file no longer than its header holds no frames
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # a rollback journal that is still live


def _refuse_pending_changes(dest: Path) -> None:
    """SQLite finds a database's -wal and -journal files by name, so a new file renamed to
    ``dest`` would take on the old one's: its WAL frames would be read over the restored
    pages, a hot journal rolled back into them. Refuse while either holds changes (a program
    has the target open, or died writing it); an empty -wal, or a journal whose header is
    zeroed (journal_mode=PERSIST), holds none."""
    for suffix, pending in (
        ("-wal", lambda head, size: size > WAL_HEADER),
        ("-journal", lambda head, size: head == JOURNAL_MAGIC),
    ):
        side = dest.with_name(dest.name + suffix)
        try:
            with open(side, "rb") as fh:
                head, size = fh.read(len(JOURNAL_MAGIC)), os.fstat(fh.fileno()).st_size
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DatabaseError(f"cannot read {side}: {exc.strerror}") from None
        if pending(head, size):
            raise DatabaseError(
                f"{side} holds changes to the target not yet in {dest.name}: a program has it "
                "open or stopped while writing it; close it (or open it once with sqlite3 to "
                "recover it), then restore again"
            )


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (SQLite's COMMIT already synced the file's contents). Best
    effort: the restore is complete either way, and some file systems refuse a directory."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def end_problem(head: bytes, tail: bytes) -> str | None:
    """Why a dump with this tail is not one ``dump`` finished; None when it is."""
    body = tail.rstrip(b"\n")
    if body != tail and body.endswith(DUMP_END.rstrip(b"\n")):
        return None
    if DUMP_COMPLETE not in tail:
        return "the dump is incomplete (no completion marker)"
    return "the dump does not end at its completion marker (data after it, or a cut line)"


def _emit(out: Writer, lines: list[str]) -> int:
    if not lines:
        return 0
    data = "".join(lines).encode()
    out.write(data)
    return len(data)


def _statements(chunks: Iterable[bytes]) -> Iterator[str]:
    """Split a dump into complete statements without holding it whole."""
    pending = ""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        text, rest = data[:cut].decode(), data[cut:]
        for line in text.splitlines(keepends=True):
            if line.startswith("-- ") and not pending:
                continue
            pending += line
            if sqlite3.complete_statement(pending):
                yield pending
                pending = ""
    tail = pending + rest.decode()
    if tail.strip() and not tail.lstrip().startswith("-- "):
        yield tail


OBJECT_KINDS = (
    ("index", "indexes"),
    ("view", "views"),
    ("trigger", "triggers"),
    ("virtual", "virtualTables"),
)


def _inventory(con: sqlite3.Connection) -> dict[str, Any]:
    """Exact row counts of every table that stores rows in this file, and object counts.
    SQLite's own objects (``is_internal``: ``sqlite_sequence``, ``sqlite_stat1``, automatic
    indexes) are left out; ``sqliteusers`` is a user's table like any other. A virtual table
    is counted once, under ``virtualTables``, with no row count: its rows live in its shadow
    tables (FTS5 ``docs_data``, ``docs_idx``, ...), which are counted as the tables they are,
    or outside the database, and counting them would need the module loaded. The dump copies
    shadow tables as they are, so source and restore count the same."""
    rows = con.execute(
        "SELECT CASE WHEN type = 'table' AND upper(substr(sql, 1, 20)) = 'CREATE VIRTUAL TABLE'"
        " THEN 'virtual' ELSE type END, name FROM sqlite_master ORDER BY name"
    ).fetchall()
    rows = [(kind, name) for kind, name in rows if not is_internal(name)]
    tables = {
        name: con.execute(f"SELECT count(*) FROM {quote_ident(name)}").fetchone()[0]
        for kind, name in rows
        if kind == "table"
    }
    objects = {plural: sum(1 for k, _ in rows if k == kind) for kind, plural in OBJECT_KINDS}
    return {"tables": tables, "objects": objects}


def _is_empty(path: Path) -> bool:
    """A regular file of 0 bytes, or a SQLite database with no schema objects and no
    ``user_version``/``application_id``: what a fresh ``sqlite3 new.db`` leaves (a symlink or
    anything unreadable is not empty: it is refused)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if st.st_size == 0:
        return True
    try:
        con = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", uri=True)
        try:
            objects = con.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            version = con.execute("PRAGMA user_version").fetchone()[0]
            app = con.execute("PRAGMA application_id").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return objects == 0 and version == 0 and app == 0
