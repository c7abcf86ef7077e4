"""Fuzzing the manifest parser: whatever sits in ``ID.json`` gives a record or a typed
integrity error (``show`` exit 13; ``list`` shows it as ``corrupt``), never another exception.

Drives the catalog's public doors (``Catalog.get`` and ``Catalog.list``) over a real local
storage directory, so the size and depth bounds and ``BackupRecord.from_json`` all take part.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sbbackup.catalog import MAX_MANIFEST_BYTES, BackupRecord, Catalog
from sbbackup.errors import IntegrityError
from sbbackup.model import Status
from sbbackup.storage.local import LocalStorage

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow],
)
ID = "streambuddy_backup_2026-11-24T14-05-00-123Z"
ROOT = Path(tempfile.mkdtemp(prefix="sbbackup-fuzz-manifest-"))
CATALOG = Catalog(LocalStorage(ROOT))
VALID: dict[str, Any] = {
    "id": ID,
    "filename": ID + ".sql.zst",
    "size": 123,
    "createdAt": "2026-11-24T14:05:00.123Z",
    "checksum": "0" * 64,
    "status": "completed",
    "duration": 5,
    "schemaVersion": 1,
    "database": {"engine": "sqlite"},
    "format": "plain",
    "compression": {"algorithm": "zstd", "level": 3},
    "encryption": None,
    "uncompressedSize": 456,
    "checksumAlgorithm": "sha256",
    "contentChecksum": "1" * 64,
    "contents": {"tables": {"t": 1}},
}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from([ID, ID + ".sql", "../x", "completed", "in_progress", "", "2026-13-45"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=15,
)
# A valid manifest with fields replaced by anything, removed, or added.
mutated = st.tuples(
    st.dictionaries(st.sampled_from(sorted(VALID) + ["extra"]), json_values, max_size=5),
    st.sets(st.sampled_from(sorted(VALID)), max_size=4),
).map(lambda t: {k: v for k, v in {**VALID, **t[0]}.items() if k not in t[1]})


def nested(depth: int, kind: str) -> bytes:
    inner = {"list": ("[" * depth, "]" * depth), "dict": ('{"a":' * depth, "}" * depth)}[kind]
    return inner[0].encode() + b"1" + inner[1].encode()


documents = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    mutated.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.tuples(st.integers(1, 200_000), st.sampled_from(["list", "dict"])).map(lambda t: nested(*t)),
    st.integers(4000, 6000).map(lambda n: b'{"size": ' + b"9" * n + b"}"),
    st.sampled_from([b"1e999", b'{"size": 1e999}', b"NaN", b'{"duration": -Infinity}']),
)


def read_back(raw: bytes) -> BackupRecord | IntegrityError:
    (ROOT / (ID + ".json")).write_bytes(raw)
    try:
        return CATALOG.get(ID)
    except IntegrityError as exc:
        return exc


@FUZZ
@given(raw=documents)
@example(raw=json.dumps(VALID).encode())
@example(raw=nested(100_000, "list"))
@example(raw=b" " * (MAX_MANIFEST_BYTES + 1))
@example(raw=b'{"schemaVersion": 99999999999999999999999}')
@example(raw=b'{"schemaVersion": true, "id": 1}')
def test_manifest_parses_to_a_record_or_an_integrity_error(raw: bytes) -> None:
    outcome = read_back(raw)
    assert isinstance(outcome, (BackupRecord, IntegrityError))
    if isinstance(outcome, BackupRecord):
        # What every command does with a record next must work too.
        assert outcome.id == ID
        json.dumps(outcome.to_json())
        CATALOG.with_file_status(outcome)
    # list never raises: a bad manifest is listed as corrupt.
    listed = CATALOG.list()
    assert [r.id for r in listed] == [ID]
    if isinstance(outcome, IntegrityError):
        assert listed[0].status == Status.CORRUPT


@FUZZ
@given(doc=mutated)
def test_mutated_manifest_round_trips_when_accepted(doc: dict[str, Any]) -> None:
    outcome = read_back(json.dumps(doc).encode())
    if isinstance(outcome, BackupRecord):
        again = BackupRecord.from_json(json.loads(json.dumps(outcome.to_json())), source="again")
        assert again == outcome
