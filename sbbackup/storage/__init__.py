"""Storage backends: a Protocol plus a registry keyed by URL scheme."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .protocol import AtomicWriter, Storage

__all__ = ["REGISTRY", "AtomicWriter", "Storage", "StorageFactory", "open_storage", "scheme_of"]

if TYPE_CHECKING:
    from .s3options import S3Options


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
