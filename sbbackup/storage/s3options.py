"""What an S3 repository is built from: the parsed ``s3://bucket/prefix`` URL and ``S3Options``.

Pure data and parsing: no boto3 (it is imported by ``storage.s3`` only, and only for an
``s3://`` backup path). Credentials are never part of either: they come from the standard
AWS chain (environment, ``AWS_PROFILE``/shared files, instance metadata), so they never sit in
argv, a manifest or the settings sbbackup echoes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError
from .s3plan import DEFAULT_MAX_PARTS, DEFAULT_PART_SIZE, S3_MAX_PART, S3_MAX_PARTS, S3_MIN_PART

ADDRESSING_STYLES = ("auto", "path", "virtual")
CHECKSUM_MODES = ("when_supported", "when_required")
SSE_MODES = ("AES256", "aws:kms")

# S3's bucket naming rules (what every compatible server accepts): 3-63 characters of
# lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._+=@,-]+")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ending in "/"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, name: str) -> str:
        return self.prefix + name


def parse_s3_url(location: str) -> S3Location:
    """``s3://bucket[/prefix[/]]`` -> bucket and a prefix ending in ``/`` (or empty).
    ConfigError (exit 2) for anything else: credentials, a query, an empty or odd segment."""
    if not location.startswith("s3://"):
        raise ConfigError(f"not an s3:// URL: {location!r}")
    rest = location[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise ConfigError(
            "s3:// URL: credentials and ports do not belong in the backup path "
            "(use the AWS credential chain and s3.endpointUrl)"
        )
    if "?" in rest or "#" in rest:
        raise ConfigError(f"s3:// URL {location!r}: no query or fragment allowed")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(f"s3:// URL {location!r}: {bucket!r} is not a valid bucket name")
    segments = [s for s in prefix.split("/")]
    if segments and segments[-1] == "":
        segments.pop()  # one trailing slash
    for segment in segments:
        if segment in ("", ".", "..") or not _PREFIX_SEGMENT.fullmatch(segment):
            raise ConfigError(
                f"s3:// URL {location!r}: prefix segment {segment!r} is not allowed "
                "(letters, digits and ._+=@,- only; no empty, . or .. segment)"
            )
    return S3Location(bucket, "".join(s + "/" for s in segments))


@dataclass(frozen=True)
class S3Options:
    """The ``s3.*`` settings. ``None`` means: leave it to boto3 (its own environment variables
    ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
    ``AWS_PROFILE``, ``AWS_CA_BUNDLE`` and its config files)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"
    verify_tls: bool = True
    ca_bundle: str | None = None
    # None: "when_required" for an endpoint that is not AWS (R2, B2, MinIO and others reject
    # or mishandle the default CRC checksum headers of boto3 >= 1.36), else "when_supported"
    checksums: str | None = None
    part_size: int = DEFAULT_PART_SIZE  # the smallest part; the plan grows it (s3plan)
    max_parts: int = DEFAULT_MAX_PARTS  # 1,000 for providers that cap it
    parts_in_flight: int = 2  # parts held in memory at once: memory is this x part size
    sse: str | None = None  # server-side encryption: AES256 (SSE-S3) or aws:kms (SSE-KMS)
    sse_kms_key_id: str | None = None

    def __post_init__(self) -> None:
        if self.addressing_style not in ADDRESSING_STYLES:
            raise ConfigError(f"s3.addressingStyle must be one of {', '.join(ADDRESSING_STYLES)}")
        if self.checksums is not None and self.checksums not in CHECKSUM_MODES:
            raise ConfigError(f"s3.checksums must be one of {', '.join(CHECKSUM_MODES)}")
        if self.sse is not None and self.sse not in SSE_MODES:
            raise ConfigError(f"s3.sse must be one of {', '.join(SSE_MODES)}")
        if self.sse_kms_key_id is not None and self.sse != "aws:kms":
            raise ConfigError("s3.sseKmsKeyId needs s3.sse: aws:kms")
        if self.parts_in_flight < 1:
            raise ConfigError("s3.partsInFlight must be at least 1")
        if not S3_MIN_PART <= self.part_size <= S3_MAX_PART:
            raise ConfigError("s3.partSize must be between 5 MiB and 5 GiB")
        if not 1 <= self.max_parts <= S3_MAX_PARTS:
            raise ConfigError(f"s3.maxParts must be between 1 and {S3_MAX_PARTS}")


def is_aws_endpoint(endpoint_url: str | None) -> bool:
    """No endpoint (boto3's default) or an ``*.amazonaws.com`` host is AWS."""
    if not endpoint_url:
        return True
    host = endpoint_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host = host.split(":", 1)[0].lower()
    return host == "amazonaws.com" or host.endswith(".amazonaws.com")


def checksum_mode(options: S3Options, endpoint_url: str | None) -> str:
    """boto3's ``request_checksum_calculation`` and ``response_checksum_validation``."""
    if options.checksums is not None:
        return options.checksums
    return "when_supported" if is_aws_endpoint(endpoint_url) else "when_required"
