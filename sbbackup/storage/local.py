"""Local filesystem storage: 0700 directory, 0600 files, write-partial/fsync/rename/fsync-dir."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from ..errors import StorageError

PARTIAL_SUFFIX = ".partial"
DIR_MODE = 0o700
FILE_MODE = 0o600


def storage_error(exc: OSError, what: str) -> StorageError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    return StorageError(f"{what}: {reason}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with mode 0700 whatever the umask. An existing directory
    loses group and other access but never gains any: one made read-only on purpose stays so
    (writing then fails with exit 4)."""
    try:
        created = not path.is_dir()
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        mode = path.stat().st_mode & 0o777
        wanted = DIR_MODE if created else mode & DIR_MODE
        if mode != wanted:
            os.chmod(path, wanted)
    except OSError as exc:
        raise storage_error(exc, f"cannot create backup directory {path}") from None


class LocalWriter:
    """Writes ``name.partial`` (O_EXCL, 0600, flocked while alive); commit renames it."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.final = directory / name
        self.partial = directory / (name + PARTIAL_SUFFIX)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(self.partial, flags, FILE_MODE)
        except OSError as exc:
            raise storage_error(exc, f"cannot create {self.partial}") from None
        os.fchmod(fd, FILE_MODE)
        # The lock tells a sweeper that a live process owns this partial file.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
            if self.final.exists():
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

    @classmethod
    def from_url(cls, location: str) -> LocalStorage:
        path = location[len("file://") :] if location.startswith("file://") else location
        return cls(Path(path).expanduser().absolute())

    def ensure(self) -> None:
        ensure_private_dir(self.root)

    def _path(self, name: str) -> Path:
        if "/" in name or name.startswith(".") or "\0" in name:
            raise StorageError(f"invalid object name {name!r}")
        return self.root / name

    def open_write(self, name: str) -> LocalWriter:
        self.ensure()
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"cannot write to backup directory {self.root}: permission denied")
        return LocalWriter(self.root, self._path(name).name)

    def open_read(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")  # noqa: SIM115 - caller closes
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise storage_error(exc, f"cannot read {self._path(name)}") from None

    def read_bytes(self, name: str) -> bytes:
        with self.open_read(name) as fh:
            return fh.read()

    def write_bytes_atomic(self, name: str, data: bytes) -> None:
        self.ensure()
        path = self._path(name)
        tmp = self.root / f".{path.name}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                os.fchmod(fd, FILE_MODE)
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_dir(self.root)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise storage_error(exc, f"cannot write {path}") from None

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def size(self, name: str) -> int:
        try:
            return self._path(name).stat().st_size
        except OSError:
            return -1

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
        try:
            return [e.name for e in os.scandir(self.root) if e.is_file()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise storage_error(exc, f"cannot list {self.root}") from None

    def list_sizes(self) -> dict[str, int]:
        try:
            with os.scandir(self.root) as entries:
                return {e.name: e.stat().st_size for e in entries if e.is_file()}
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise storage_error(exc, f"cannot list {self.root}") from None

    def sweep_partials(self) -> list[str]:
        """Delete ``*.partial`` files whose writer is gone (its flock is free)."""
        removed = []
        for name in self.list_names():
            if not name.endswith(PARTIAL_SUFFIX):
                continue
            path = self.root / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a live run owns it
            try:
                path.unlink()
                removed.append(name)
            except OSError:
                pass
            finally:
                os.close(fd)
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
