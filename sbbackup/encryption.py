"""From settings to age recipients and identities. Fail closed: never fall back to plaintext."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from .config import Settings
from .errors import ConfigError, IntegrityError, WrongKeyError
from .pipeline import ReaderFactory, Stage, StageFactory, Writer

PASSPHRASE_WORK_FACTOR = 18


@dataclass(frozen=True)
class EncryptionPlan:
    stage: StageFactory
    manifest: dict[str, Any]


def _read_secret_file(path_str: str, what: str) -> bytes:
    path = Path(path_str).expanduser()
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{what} {path} is readable by others (mode {st.st_mode & 0o777:o}): chmod 600 it"
        )
    return data


def read_passphrase(settings: Settings) -> bytes | None:
    if not settings.passphrase_file:
        return None
    data = _read_secret_file(settings.passphrase_file, "passphrase file").rstrip(b"\r\n")
    if not data:
        raise ConfigError(f"passphrase file {settings.passphrase_file} is empty")
    return data


def plan_encryption(settings: Settings) -> EncryptionPlan:
    """Resolve recipients before any dumping starts; raise ConfigError (exit 2) if none."""
    from .crypto import age

    recipients: list[Any] = [age.parse_recipient(r) for r in settings.recipients]
    if settings.recipients_file:
        recipients += age.parse_recipients_file(Path(settings.recipients_file).expanduser())
    passphrase = read_passphrase(settings)
    if recipients and passphrase is not None:
        raise ConfigError(
            "configure either encryption recipients or a passphrase file, not both "
            "(an age passphrase file has exactly one recipient)"
        )
    if passphrase is not None:
        scrypt = age.ScryptRecipient(passphrase, PASSPHRASE_WORK_FACTOR)
        manifest = {
            "algorithm": "age-v1",
            "recipientType": "scrypt",
            "recipients": [],
            "workFactor": PASSPHRASE_WORK_FACTOR,
        }
        return EncryptionPlan(lambda out: _writer(age, out, [scrypt]), manifest)
    if not recipients:
        raise ConfigError(
            "encryption is on but no recipient is configured: set "
            "DB_BACKUP_ENCRYPTION_RECIPIENTS, DB_BACKUP_ENCRYPTION_RECIPIENTS_FILE "
            "or DB_BACKUP_ENCRYPTION_PASSPHRASE_FILE (see `sbbackup keygen`)"
        )
    keys = [r.public_key_str for r in recipients]
    manifest = {"algorithm": "age-v1", "recipientType": "X25519", "recipients": keys}
    return EncryptionPlan(lambda out: _writer(age, out, recipients), manifest)


def _writer(age: Any, out: Writer, recipients: list[Any]) -> Stage:
    w: Stage = age.AgeWriter(out, recipients)
    return w


def identities(settings: Settings) -> list[Any]:
    """Everything that may open a backup: identity file entries and/or the passphrase."""
    from .crypto import age

    found: list[Any] = []
    if settings.identity_file:
        path = Path(settings.identity_file).expanduser()
        _read_secret_file(str(path), "identity file")
        found += age.parse_identity_file(path)
    passphrase = read_passphrase(settings)
    if passphrase is not None:
        found.append(age.ScryptIdentity(passphrase))
    return found


def decryptor(
    settings: Settings,
    record_id: str,
    ids: list[Any] | None = None,
    recipients: Sequence[str] = (),
) -> ReaderFactory:
    """Opens age streams with ``ids`` (default: the configured identities). ``recipients``
    are the public keys the manifest says the file was encrypted to: if one of them is an
    identity's here and still no stanza opens, the header is damaged (IntegrityError, exit
    13), not the key wrong (exit 12)."""
    ids = identities(settings) if ids is None else ids
    if not ids:
        raise WrongKeyError(
            f"backup {record_id} is encrypted and no identity is configured: set "
            "DB_BACKUP_ENCRYPTION_IDENTITY_FILE or DB_BACKUP_ENCRYPTION_PASSPHRASE_FILE"
        )
    from .crypto import age

    listed = [k for k in _public_keys(ids) if k in recipients]

    def factory(src: BinaryIO) -> BinaryIO:
        # An io.RawIOBase: reads like a binary file, raises on any defect.
        try:
            return cast(BinaryIO, age.AgeReader(src, ids))
        except age.NoIdentityMatchError:
            if not listed:
                raise
            raise IntegrityError(
                f"backup {record_id} is encrypted to {listed[0]}, whose identity is configured, "
                "but no stanza of its age header opens with it: the header is damaged"
            ) from None

    return factory


def _public_keys(ids: Sequence[Any]) -> list[str]:
    """The X25519 recipients of ``ids`` (a passphrase has no public key to compare)."""
    return [str(i.recipient().public_key_str) for i in ids if hasattr(i, "recipient")]


def keygen(output: str | None) -> dict[str, Any]:
    """A new X25519 identity, written like ``age-keygen -o`` (0600, never overwriting)."""
    from datetime import UTC, datetime

    from .crypto import age
    from .errors import StorageError, UsageError

    identity = age.generate_identity()
    public = identity.recipient().public_key_str
    created = datetime.now(UTC).isoformat(timespec="seconds")
    text = f"# created: {created}\n# public key: {public}\n{identity.secret_str}\n"
    if output is None:
        return {"publicKey": public, "output": None, "identity": text}
    path = Path(output).expanduser()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists: refusing to overwrite an identity") from None
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return {"publicKey": public, "output": str(path.absolute()), "identity": None}
