"""Storage backends: a Protocol plus a registry keyed by URL scheme."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, BinaryIO, Protocol

from ..errors import ConfigError

if TYPE_CHECKING:
    from .s3options import S3Options


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


# (location, the s3.* settings) -> a storage; a backend ignores the options it has no use for
StorageFactory = Callable[[str, "S3Options | None"], Storage]


def _local(location: str, _options: S3Options | None) -> Storage:
    from .local import LocalStorage

    return LocalStorage.from_url(location)


def _s3(location: str, options: S3Options | None) -> Storage:
    from .retry import RetryingStorage, botocore_transient
    from .s3 import S3Storage  # boto3 is imported there, on first use, for an s3:// path only

    s3 = S3Storage.from_url(location, options)
    return RetryingStorage(s3, botocore_transient)


REGISTRY: dict[str, StorageFactory] = {"file": _local, "": _local, "s3": _s3}


def scheme_of(location: str) -> str:
    return location.split("://", 1)[0] if "://" in location else ""


def open_storage(location: str, s3: S3Options | None = None) -> Storage:
    """A plain path or file:// URL is local, ``s3://bucket/prefix`` is S3 (``s3`` holds its
    settings; None: S3Options() defaults); other schemes are refused (exit 2)."""
    scheme = scheme_of(location)
    factory = REGISTRY.get(scheme)
    if factory is None:
        raise ConfigError(f"unsupported backup path scheme {scheme!r} in {location!r}")
    return factory(location, s3)
