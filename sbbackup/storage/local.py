"""Local filesystem storage: 0700 directory, 0600 files, write-partial/fsync/rename/fsync-dir.

The directory is a state directory (see ``sbbackup.state.files``): checked like ssh checks
``~/.ssh`` before it is used, and no file in it is ever followed if it is a symlink.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from ..errors import StorageError
from ..state import files as state
from ..state.files import DIR_MODE, FILE_MODE, ensure_private_dir, fsync_dir, storage_error

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "PARTIAL_SUFFIX",
    "LocalStorage",
    "LocalWriter",
    "ensure_private_dir",
    "fsync_dir",
    "storage_error",
]

PARTIAL_SUFFIX = ".partial"


class LocalWriter:
    """Writes ``name.partial`` (O_EXCL, O_NOFOLLOW, 0600); commit renames it. Who may sweep a
    partial left behind is decided by the backup ID's lock in the state directory (``ops``),
    never here."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.final = directory / name
        self.partial = directory / (name + PARTIAL_SUFFIX)
        try:
            fd = state.create_exclusive(self.partial)
        except OSError as exc:
            raise storage_error(exc, f"cannot create {self.partial}") from None
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._done = False

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        try:
            view = memoryview(data)
            total = len(view)
            while view:
                n = self._file.write(view)
                view = view[n:] if n is not None else view
            return total
        except OSError as exc:
            raise storage_error(exc, f"cannot write {self.partial}") from None

    def commit(self) -> None:
        if self._done:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            if os.path.lexists(self.final):
                raise StorageError(f"refusing to overwrite existing {self.final}")
            os.replace(self.partial, self.final)
            fsync_dir(self.directory)
        except OSError as exc:
            self.abort()
            raise storage_error(exc, f"cannot commit {self.final}") from None
        self._done = True
        self._file.close()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self.partial.unlink()
        with contextlib.suppress(OSError):
            self._file.close()


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)
        self._prefix = os.path.join(self.url, "")  # "root/": names join as plain strings
        self._checked = False  # once checked, it stays safe: nobody else can change it

    @classmethod
    def from_url(cls, location: str) -> LocalStorage:
        """The configured directory, with any symlinks in it resolved once, here: everything
        sbbackup uses inside it (``locks/``, ``restores/``, each file) is then never a symlink.
        A symlink someone else could have planted or repointed is refused (exit 4)."""
        path = location[len("file://") :] if location.startswith("file://") else location
        return cls(state.resolve_dir(Path(path).expanduser()))

    def ensure(self) -> None:
        """Create the directory (0700) if need be; refuse one that others could tamper with."""
        ensure_private_dir(self.root)
        self._checked = True

    def _check(self) -> None:
        """Before reading: an existing directory must obey the rule too (it is not created)."""
        if not self._checked:
            self._checked = state.check_private_dir(self.root)

    def _path(self, name: str) -> Path:
        return self.root / state.check_name(name)

    def check_writable(self) -> None:
        self.ensure()
        if not os.access(self.root, os.W_OK):
            reason = "read-only file system" if _read_only(self.root) else "permission denied"
            raise StorageError(f"cannot write to backup directory {self.root}: {reason}")

    def open_write(self, name: str) -> LocalWriter:
        self.check_writable()
        return LocalWriter(self.root, self._path(name).name)

    def open_read(self, name: str) -> BinaryIO:
        """The object opened for reading; a symlink in its place is refused, never followed."""
        path = self._path(name)
        self._check()
        try:
            return state.open_read(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise storage_error(exc, f"cannot read {self._path(name)}") from None

    def read_bytes(self, name: str) -> bytes:
        """The whole object, read straight from its fd (listing reads 10,000 manifests: no
        buffered file object, no fstat to size a buffer). A read error propagates as is."""
        path = self._prefix + state.check_name(name)
        self._check()
        try:
            fd = state.open_read_fd(path)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise storage_error(exc, f"cannot read {path}") from None
        try:
            chunks = []
            while chunk := os.read(fd, _READ_CHUNK):
                chunks.append(chunk)
        finally:
            os.close(fd)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        self.ensure()
        state.write_atomic(self.root, name, data)

    def create_exclusive(self, name: str, data: bytes) -> None:
        self.ensure()
        state.write_new(self.root, name, data)

    def exists(self, name: str) -> bool:
        return os.path.lexists(self._path(name))

    def size(self, name: str) -> int:
        """The size of a regular file, -1 for anything else (a symlink is not followed)."""
        try:
            st = os.lstat(self._path(name))
        except OSError:
            return -1
        return st.st_size if stat.S_ISREG(st.st_mode) else -1

    def delete(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise storage_error(exc, f"cannot delete {self._path(name)}") from None
        with contextlib.suppress(OSError):
            fsync_dir(self.root)

    def list_names(self) -> list[str]:
        """Regular files and symlinks (listed so that reading one says why it is refused)."""
        self._check()
        try:
            return [e.name for e in os.scandir(self.root) if _listed(e)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise storage_error(exc, f"cannot list {self.root}") from None

    def list_sizes(self) -> Mapping[str, int]:
        """One ``scandir``; a size costs an ``lstat`` only when it is looked up (the catalog
        reads the manifests themselves and needs only the data files' sizes)."""
        self._check()
        try:
            with os.scandir(self.root) as entries:
                return _Sizes({e.name: e for e in entries if _listed(e)})
        except FileNotFoundError:
            return _Sizes({})
        except OSError as exc:
            raise storage_error(exc, f"cannot list {self.root}") from None

    def unfinished(self) -> list[str]:
        """``NAME.partial`` files and ``.NAME.<random>.tmp`` files (``state.temp_name``)."""
        out = []
        for name in self.list_names():
            if name.endswith(PARTIAL_SUFFIX):
                out.append(name[: -len(PARTIAL_SUFFIX)])
            elif (target := _temp_target(name)) is not None:
                out.append(target)
        return out

    def sweep(self, name: str) -> list[str]:
        self._path(name)
        leftovers = [
            n for n in self.list_names() if n == name + PARTIAL_SUFFIX or _temp_target(n) == name
        ]
        removed = []
        for leftover in leftovers:
            try:
                (self.root / leftover).unlink()
                removed.append(leftover)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise storage_error(exc, f"cannot delete {self.root / leftover}") from None
        if removed:
            with contextlib.suppress(OSError):
                fsync_dir(self.root)
        return removed

    def usage(self) -> tuple[int | None, int | None]:
        used = 0
        for name in self.list_names():
            used += max(self.size(name), 0)
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = None
        return used, free


def _temp_target(name: str) -> str | None:
    """``NAME`` for a temp file ``.NAME.<32 hex>.tmp``, else None."""
    if not (name.startswith(".") and name.endswith(state.TEMP_SUFFIX)):
        return None
    target, _, token = name[1 : -len(state.TEMP_SUFFIX)].rpartition(".")
    if not target or len(token) != 32 or any(c not in "0123456789abcdef" for c in token):
        return None
    return target


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _listed(entry: os.DirEntry[str]) -> bool:
    return entry.is_symlink() or entry.is_file(follow_symlinks=False)


def _lsize(entry: os.DirEntry[str]) -> int:
    """A regular file's size; -1 for a symlink (whatever it points at is not ours) and for a
    file gone since the directory was listed."""
    if entry.is_symlink():
        return -1
    try:
        return entry.stat(follow_symlinks=False).st_size  # cached by the entry
    except OSError:
        return -1


_READ_CHUNK = 1 << 16


class _Sizes(Mapping[str, int]):
    """``list_sizes``: the names of one directory scan; each size read when looked up."""

    def __init__(self, entries: dict[str, os.DirEntry[str]]) -> None:
        self._entries = entries

    def __getitem__(self, name: str) -> int:
        return _lsize(self._entries[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return repr(dict(self))
