"""The content digest and the zstd frame check, end to end through the real CLI (SQLite, no
server): ``contentChecksum`` is the SHA-256 of what the stock ``zstd -d`` gives back, and
``verify --deep`` catches a stored file rewritten together with its manifest's checksum:
cut inside its last frame, with a frame appended, with a byte flipped, or recompressed from
other content."""

from __future__ import annotations

import hashlib
import io
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import SB
from helpers.manifests import replace_data
from helpers.pgcluster import Cluster


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    db = tmp_path / "src.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, note TEXT)")
    con.executemany("INSERT INTO t (note) VALUES (?)", [(f"row {i} " * 20,) for i in range(20_000)])
    con.commit()
    con.close()
    return {"DATABASE_URL": f"sqlite:///{db}"}


def create(sb: SB, env: dict[str, str], *args: str) -> dict[str, Any]:
    rec = sb.ok("create", "--json", *args, env=env).json()
    assert isinstance(rec, dict)
    return rec


def zstd(data: bytes) -> bytes:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=3, write_checksum=True).stream_writer(
        out, closefd=False
    ) as w:
        w.write(data)
    return out.getvalue()


def test_the_content_digest_is_the_dump_stream_as_zstd_gives_it_back(
    sb: SB, env: dict[str, str]
) -> None:
    assert shutil.which("zstd"), "the stock zstd CLI is a test dependency (make deps)"
    rec = create(sb, env)
    stored = sb.backup_path / rec["filename"]
    dump = subprocess.run(["zstd", "-dc", str(stored)], capture_output=True, check=True).stdout
    assert rec["contentChecksum"] == hashlib.sha256(dump).hexdigest()
    assert rec["checksum"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert rec["contentChecksum"] != rec["checksum"]
    plain = create(sb, env, "--no-compress")
    data = (sb.backup_path / plain["filename"]).read_bytes()
    assert plain["contentChecksum"] == plain["checksum"] == hashlib.sha256(data).hexdigest()
    shown = sb.ok("show", plain["id"], "--json", env=env).json()
    assert shown["contentChecksum"] == plain["contentChecksum"]


def _rewrite(kind: str, stored: bytes) -> bytes:
    if kind == "cut inside the last frame":
        return stored[:-7]
    if kind == "a frame appended":
        return stored + zstd(b"DROP TABLE t;\n")
    if kind == "recompressed from other content":
        dump = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
        return zstd(dump.replace(b"row 1 ", b"row 9 ", 1))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["cut inside the last frame", "a frame appended", "recompressed from other content"]
)
def test_deep_verify_catches_a_compressed_file_rewritten_with_its_checksum(
    sb: SB, env: dict[str, str], kind: str
) -> None:
    rec = create(sb, env)
    stored = (sb.backup_path / rec["filename"]).read_bytes()
    replace_data(sb.backup_path, rec["id"], _rewrite(kind, stored))
    sb.ok(
        "verify", rec["id"], env=env
    )  # the stored checksum was recomputed: a shallow check passes
    res = sb("verify", "--deep", rec["id"], env=env)
    assert res.code == 13, (res.code, res.err)
    assert len(res.err.strip().splitlines()) == 1, res.err
    assert "Traceback" not in res.err


def test_deep_verify_catches_every_flipped_byte_of_a_plain_file_rewritten_with_its_checksum(
    sb: SB, env: dict[str, str]
) -> None:
    """Before the content digest, 159 of 160 such flips passed ``verify --deep``."""
    rec = create(sb, env, "--no-compress")
    original = (sb.backup_path / rec["filename"]).read_bytes()
    positions = [len(original) * k // 12 for k in range(1, 12)]
    for pos in positions:
        bad = bytearray(original)
        bad[pos] ^= 0x01
        replace_data(sb.backup_path, rec["id"], bytes(bad))
        res = sb("verify", "--deep", rec["id"], env=env)
        assert res.code == 13, (pos, res.code, res.err)
        assert "dump stream" in res.err or "incomplete" in res.err, res.err
    replace_data(sb.backup_path, rec["id"], original)
    sb.ok("verify", "--deep", rec["id"], env=env)


def test_restore_refuses_content_that_differs_from_the_manifest_and_leaves_no_target(
    sb: SB, env: dict[str, str], tmp_path: Path
) -> None:
    """A plain file rewritten with its checksum: still a whole, valid dump, with one value
    changed. Only the content digest can tell; the restore must fail with 13 before the
    load commits, and leave no restored file behind."""
    rec = create(sb, env, "--no-compress")
    original = (sb.backup_path / rec["filename"]).read_bytes()
    pos = original.index(b"row 1", len(original) // 2)
    changed = original[:pos] + b"rox 1" + original[pos + 5 :]
    replace_data(sb.backup_path, rec["id"], changed)
    target = tmp_path / "restored.db"
    res = sb("restore", rec["id"], "--target-url", f"sqlite:///{target}", env=env)
    assert res.code == 13, (res.code, res.err)
    assert "dump stream" in res.err and len(res.err.strip().splitlines()) == 1, res.err
    assert not target.exists()
    assert not list(tmp_path.glob("restored.db*"))
    replace_data(sb.backup_path, rec["id"], original)
    sb.ok("restore", rec["id"], "--target-url", f"sqlite:///{target}", env=env)
    assert target.exists()


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_postgresql_restore_refuses_changed_content_and_commits_nothing(
    pg: Cluster, fresh_db: str, sb: SB, fmt: str
) -> None:
    pg.psql(
        "CREATE TABLE public.notes AS SELECT g AS id, 'note ' || g AS body "
        "FROM generate_series(1, 5000) g",
        db=fresh_db,
    )
    env = {"DATABASE_URL": pg.url(fresh_db)}
    rec = create(sb, env, "--no-compress", "--format", fmt)
    original = (sb.backup_path / rec["filename"]).read_bytes()
    if fmt == "plain":
        pos = original.index(b"note 4000")
        changed = original[:pos] + b"note 9999" + original[pos + 9 :]
    else:  # a byte flipped inside the last data block pg_restore cannot vouch for
        pos = len(original) - 64
        changed = original[:pos] + bytes([original[pos] ^ 0x01]) + original[pos + 1 :]
    replace_data(sb.backup_path, rec["id"], changed)
    target = f"{fresh_db}_r"
    res = sb("restore", rec["id"], "--target-url", pg.url(target), "--create-target", env=env)
    assert res.code == 13, (res.code, res.err)
    assert len(res.err.strip().splitlines()) == 1, res.err
    exists = pg.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{target}'").strip()
    assert exists == "0", "the target the restore created must be gone"
