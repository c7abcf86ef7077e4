"""The storage Protocols (in a module of their own, so backends and wrappers import them
without importing the package and its registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO, Protocol


class AtomicWriter(Protocol):
    """A write that is invisible under its final name until ``commit()``."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...

    def commit(self) -> None:
        """Make the object durable and visible under its final name."""

    def abort(self) -> None:
        """Throw the partial object away. Safe to call after commit (no-op)."""


class Storage(Protocol):
    """Where backups live. Names are flat, relative, and validated by the caller."""

    url: str

    def check_writable(self) -> None:
        """Raise StorageError (exit 4), naming the cause, if nothing can be written here."""

    def open_write(self, name: str) -> AtomicWriter: ...

    def open_read(self, name: str) -> BinaryIO: ...

    def read_bytes(self, name: str) -> bytes:
        """Raise FileNotFoundError when absent."""

    def write_bytes_atomic(self, name: str, data: bytes) -> None: ...

    def create_exclusive(self, name: str, data: bytes) -> None:
        """Write a whole new object, only if ``name`` does not exist (FileExistsError, and
        nothing changed, if it does): how a backup ID is reserved."""

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def delete(self, name: str) -> None: ...

    def list_names(self) -> list[str]: ...

    def list_sizes(self) -> Mapping[str, int]:
        """Every object's name and size, from one listing (a backend may read a size only
        when it is looked up: ``LocalStorage`` does, one ``lstat`` each)."""

    def unfinished(self) -> list[str]:
        """The names of objects whose write was interrupted and left something behind (a
        partial upload, a temp file); each may repeat."""

    def sweep(self, name: str) -> list[str]:
        """Remove what interrupted writes of ``name`` left; return what was removed. The
        caller makes sure no live writer of ``name`` exists (the backup ID's lock)."""

    def usage(self) -> tuple[int | None, int | None]:
        """(bytes used by backups, bytes free), None where unknown."""
