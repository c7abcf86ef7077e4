"""The C2SP age testkit (CCTV): every X25519 and scrypt vector must give the expected outcome.

Vectors live in /work/shared/testdata/age-testkit (see its README for the format). Two groups are
filtered out, each with its reason, and counted so that nothing is skipped silently:

- ``armored: yes``: sbbackup reads and writes binary age files only; it does not implement the
  optional ASCII armor (backups are never armored).
- identities ``AGE-SECRET-KEY-PQ-1...``: the post-quantum mlkem768x25519 hybrid recipient type
  is not implemented; only X25519 and scrypt are.
"""

from __future__ import annotations

import hashlib
import io
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sbbackup.crypto import age
from sbbackup.errors import IntegrityError, WrongKeyError

TESTKIT = Path(os.environ.get("AGE_TESTKIT", "/work/shared/testdata/age-testkit"))
SKIP_ARMOR = "ASCII armor is not supported (sbbackup stores binary age files only)"
SKIP_HYBRID = "mlkem768x25519 hybrid (post-quantum) identities are not supported"


@dataclass
class Vector:
    name: str
    expect: str
    payload: str | None
    identities: list[str] = field(default_factory=list)
    passphrases: list[str] = field(default_factory=list)
    armored: bool = False
    data: bytes = b""

    @property
    def skip_reason(self) -> str | None:
        if self.armored:
            return SKIP_ARMOR
        if any(i.startswith("AGE-SECRET-KEY-PQ-") for i in self.identities):
            return SKIP_HYBRID
        return None


def load(path: Path) -> Vector:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    v = Vector(path.name, "", None)
    compressed = False
    for line in head.decode().splitlines():
        key, _, value = line.partition(": ")
        if key == "expect":
            v.expect = value
        elif key == "payload":
            v.payload = value
        elif key == "identity":
            v.identities.append(value)
        elif key == "passphrase":
            v.passphrases.append(value)
        elif key == "armored":
            v.armored = value == "yes"
        elif key == "compressed":
            assert value == "zlib", (path, value)
            compressed = True
        elif key not in ("file key", "comment"):
            pytest.fail(f"{path.name}: unknown testkit header {key!r}")
    v.data = zlib.decompress(body) if compressed else body
    assert v.expect, path
    return v


VECTORS = sorted(
    (load(p) for p in TESTKIT.iterdir() if p.is_file() and p.name not in ("README.md", "LICENSE")),
    key=lambda v: v.name,
)
RUN = [v for v in VECTORS if v.skip_reason is None]
ERROR_CLASS = {
    "header failure": age.HeaderError,
    "HMAC failure": age.HeaderMACError,
    "no match": age.NoIdentityMatchError,
    "payload failure": age.PayloadError,
}


def run(v: Vector) -> tuple[str, bytes, Exception | None]:
    """Decrypt like an application would: returns (outcome, released plaintext, error)."""
    identities: list[age.Identity] = [age.parse_identity(i) for i in v.identities]
    identities += [age.ScryptIdentity(p.encode()) for p in v.passphrases]
    released = bytearray()
    try:
        reader = age.AgeReader(io.BytesIO(v.data), identities)
        while chunk := reader.read(1 << 20):
            released += chunk
    except (IntegrityError, WrongKeyError) as exc:
        for outcome, cls in ERROR_CLASS.items():
            if isinstance(exc, cls):
                return outcome, bytes(released), exc
        raise
    return "success", bytes(released), None


@pytest.mark.parametrize("v", RUN, ids=lambda v: v.name)
def test_vector(v: Vector) -> None:
    outcome, released, exc = run(v)
    assert outcome == v.expect, f"{v.name}: expected {v.expect}, got {outcome} ({exc})"
    if v.expect in ("success", "payload failure"):
        assert v.payload is not None
        assert hashlib.sha256(released).hexdigest() == v.payload, f"{v.name}: released plaintext"
    else:
        assert released == b""
    if exc is not None:
        # Exit codes users see: 12 for "no match", 13 for everything else.
        assert exc.exit_code == (12 if v.expect == "no match" else 13)  # type: ignore[attr-defined]


@pytest.mark.parametrize("v", [v for v in VECTORS if v.skip_reason], ids=lambda v: v.name)
def test_unsupported_vector(v: Vector) -> None:
    pytest.skip(f"{v.name}: {v.skip_reason}")


def test_vector_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Guard against silently running nothing, and report the tally."""
    by_reason: dict[str, int] = {}
    for v in VECTORS:
        if v.skip_reason:
            by_reason[v.skip_reason] = by_reason.get(v.skip_reason, 0) + 1
    passed = sum(1 for v in RUN if run(v)[0] == v.expect)
    with capsys.disabled():
        print(f"\nage testkit: {len(VECTORS)} vectors, {len(RUN)} run, {passed} passed")
        for reason, n in by_reason.items():
            print(f"  skipped {n}: {reason}")
    assert len(VECTORS) >= 140
    assert len(RUN) >= 90
    assert {v.expect for v in RUN} == set(ERROR_CLASS) | {"success"}
    assert passed == len(RUN)
