"""S3-compatible storage (placeholder until the backend lands: refuses every s3:// path)."""

from __future__ import annotations

from ..errors import ConfigError
from .s3options import S3Options, parse_s3_url


class S3Storage:
    @classmethod
    def from_url(cls, location: str, options: S3Options | None) -> S3Storage:
        parse_s3_url(location)
        raise ConfigError(f"{location}: S3 storage is not available in this build")
