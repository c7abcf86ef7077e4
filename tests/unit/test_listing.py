"""Listing the catalog: one directory scan, sizes only for data files, and every status exact.

The fast paths of ``Catalog.iter_records`` (a size read only when looked up, the nesting walk
skipped when the manifest's text has few brackets, the record built without a filtering
copy) must not change what is listed: missing, corrupt (wrong size, unreadable, too deep),
orphan and a data file that vanishes while the listing runs.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from sbbackup.catalog import MAX_MANIFEST_DEPTH, Catalog
from sbbackup.model import BackupRecord, Status
from sbbackup.storage import local
from sbbackup.storage.local import LocalStorage


def backup(root: Path, n: int, size: int = 100, **extra: object) -> BackupRecord:
    bid = f"streambuddy_backup_2026-01-0{n}T02-00-00-000Z"
    rec = BackupRecord(
        id=bid,
        filename=f"{bid}.sql.zst",
        size=size,
        createdAt=f"2026-01-0{n}T02:00:00.000Z",
        checksum="ab" * 32,
        status=Status.COMPLETED,
        duration=5,
        **extra,  # type: ignore[arg-type]
    )
    (root / rec.filename).write_bytes(b"x" * size)  # type: ignore[operator]
    (root / f"{bid}.json").write_text(json.dumps(rec.to_json()))
    return rec


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "b"
    path.mkdir(mode=0o700)
    return path


def statuses(root: Path) -> dict[str, str]:
    return {r.id.rsplit("_", 1)[1]: r.status for r in Catalog(LocalStorage(root)).list()}


def test_every_status_stays_exact(root: Path) -> None:
    backup(root, 1)
    missing = backup(root, 2)
    (root / str(missing.filename)).unlink()
    short = backup(root, 3)
    (root / str(short.filename)).write_bytes(b"x" * 99)  # one byte short: corrupt
    backup(root, 4, contents={"tables": {"[{" * 40: 1}})  # 80 brackets, in a string: shallow
    deep = backup(root, 5)
    nested: object = 1
    for _ in range(MAX_MANIFEST_DEPTH + 1):
        nested = [nested]
    data = json.loads((root / f"{deep.id}.json").read_text())
    data["contents"] = {"x": nested}
    (root / f"{deep.id}.json").write_text(json.dumps(data))
    (root / "streambuddy_backup_2026-01-06T02-00-00-000Z.sql.zst").write_bytes(b"o")  # orphan
    (root / "streambuddy_backup_2026-01-07T02-00-00-000Z.json").write_text("{not json")
    assert statuses(root) == {
        "2026-01-01T02-00-00-000Z": "completed",
        "2026-01-02T02-00-00-000Z": "missing",
        "2026-01-03T02-00-00-000Z": "corrupt",
        "2026-01-04T02-00-00-000Z": "completed",
        "2026-01-05T02-00-00-000Z": "corrupt",
        "2026-01-06T02-00-00-000Z": "orphan",
        "2026-01-07T02-00-00-000Z": "corrupt",
    }
    too_deep = next(r for r in Catalog(LocalStorage(root)).list() if r.id == deep.id)
    assert "nested too deeply" in str(too_deep.error)


def test_only_data_files_are_sized(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(1, 6):
        backup(root, n)
    (root / "streambuddy_backup_2026-01-08T02-00-00-000Z.sql.zst").write_bytes(b"o")  # orphan
    sized: list[str] = []
    real = local._lsize

    def counting(entry):  # type: ignore[no-untyped-def]
        sized.append(entry.name)
        return real(entry)

    monkeypatch.setattr(local, "_lsize", counting)
    records = Catalog(LocalStorage(root)).list()
    assert len(records) == 6
    assert sized and all(name.endswith(".sql.zst") for name in sized), sized
    assert len(sized) == 6  # each data file once; no manifest


def test_a_data_file_gone_after_the_scan_is_missing_not_an_empty_listing(root: Path) -> None:
    a, b = backup(root, 1), backup(root, 2)
    storage = LocalStorage(root)
    sizes = storage.list_sizes()
    (root / str(b.filename)).unlink()  # deleted between the scan and the size lookup
    assert sizes[str(a.filename)] == 100
    assert sizes[str(b.filename)] == -1
    assert sorted(sizes) == sorted(p.name for p in root.iterdir()) + [str(b.filename)]


def test_from_json_still_refuses_wrong_types_and_ignores_unknown_keys() -> None:
    good = {
        "id": "streambuddy_backup_2026-01-01T02-00-00-000Z",
        "filename": None,
        "size": 0,
        "createdAt": "2026-01-01T02:00:00.000Z",
        "checksum": None,
        "status": "failed",
        "duration": 1,
    }
    assert BackupRecord.from_json({**good, "fromTheFuture": 1}).status == "failed"
    assert BackupRecord.from_json({**good, "status": Status.FAILED}).status == "failed"
    for key, bad in (("size", True), ("size", "1"), ("database", []), ("filename", 3)):
        with pytest.raises(Exception, match=f"{key} has the wrong type"):
            BackupRecord.from_json({**good, key: bad})


def test_listing_pauses_the_cycle_collector_and_restores_it(root: Path) -> None:
    backup(root, 1)
    seen: list[bool] = []
    real = local._lsize

    def spying(entry):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return real(entry)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(local, "_lsize", spying)
        assert len(Catalog(LocalStorage(root)).list()) == 1
        assert seen == [False]  # paused while the records were built
        assert gc.isenabled()  # and on again afterwards
        gc.disable()
        try:
            Catalog(LocalStorage(root)).list()
            assert not gc.isenabled()  # a pause never turns on what someone else turned off
        finally:
            gc.enable()
