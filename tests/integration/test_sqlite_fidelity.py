"""A restored SQLite database is the source: virtual tables (FTS5, rtree) and their shadow
tables, names near SQLite's reserved ``sqlite_`` prefix, ``user_version`` and
``application_id``, rowids, odd values; and a restore that fails leaves the target as it was.
Everything goes through the real command line except the iterator that raises mid-stream."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SB
from helpers.cli import Result
from helpers.manifests import edit_manifest, read_manifest

from sbbackup.engines import RestoreRequest
from sbbackup.engines.sqlite import SQLiteEngine

USER_VERSION = 42
APPLICATION_ID = 0x53424B50
EDGE_NAMES = ("sqliteusers", "sqlite-x", "sqlite%x", "xsqlite_", "Sqlite x")

SOURCE_SQL = f"""
PRAGMA user_version = {USER_VERSION};
PRAGMA application_id = {APPLICATION_ID};
CREATE VIRTUAL TABLE docs USING fts5(title, body);
CREATE TABLE posts (title TEXT, body TEXT);
CREATE VIRTUAL TABLE posts_fts USING fts5(title, body, content = posts);
CREATE VIRTUAL TABLE boxes USING rtree(id, x0, x1);
CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v, doubled AS (v * 2));
CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
CREATE INDEX t_v ON t (v);
CREATE VIEW docs_titles AS SELECT title FROM docs;
CREATE TRIGGER t_touch AFTER UPDATE ON t BEGIN SELECT 1; END;
"""

WORDS = ["alpha", "beta", "gamma", "delta", "quick", "brown", "fox", "lazy", "dog"]


def make_source(db: Path) -> None:
    con = sqlite3.connect(db, isolation_level=None)
    con.executescript(SOURCE_SQL)
    con.execute("BEGIN")
    for i in range(300):
        words = " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 6))
        con.execute("INSERT INTO docs VALUES (?, ?)", (f"doc {i}", words))
        con.execute("INSERT INTO posts VALUES (?, ?)", (f"post {i}", words))
        con.execute("INSERT INTO boxes VALUES (?, ?, ?)", (i, i, i + 10))
    con.execute("DELETE FROM docs WHERE rowid % 7 = 0")  # segments with tombstones
    con.execute("DELETE FROM posts WHERE rowid % 5 = 0")  # gaps the external index points past
    con.execute("INSERT INTO posts_fts (posts_fts) VALUES ('rebuild')")
    values: list[object] = [1, 2.5, 0.1 + 0.2, 1 / 3, 5e-324, float("inf"), float("-inf")]
    values += [-(2**63), 2**63 - 1, b"\x00\xff", "it's\nmultiline -- not a comment;", None]
    con.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in values])
    con.execute("INSERT INTO t (v) VALUES (CAST(X'610062' AS TEXT))")  # text with a NUL
    con.execute("INSERT INTO t (v) VALUES (CAST(X'ff41' AS TEXT))")  # text, not UTF-8
    con.execute("INSERT INTO kv VALUES ('a', 1), ('b', NULL)")
    for n, name in enumerate(EDGE_NAMES):
        q = '"' + name + '"'
        con.execute(f"CREATE TABLE {q} (x)")
        con.executemany(f"INSERT INTO {q} VALUES (?)", [(i,) for i in range(n + 1)])
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    db = tmp_path / "source.db"
    make_source(db)
    return db


def connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.text_factory = bytes  # compare stored bytes, not what decodes
    return con


def snapshot(db: Path) -> dict[str, object]:
    """What a faithful restore keeps: the schema text, every table's rows (rowid included
    where the table has one) with their storage classes, and the two header pragmas."""
    con = connect(db)
    try:
        schema = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        tables = con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%'"
        ).fetchall()
        rows = {}
        for (name,) in tables:
            q = '"' + name.decode().replace('"', '""') + '"'
            cols = [c[1] for c in con.execute(f"PRAGMA table_info({q})")]
            typed = ",".join(f'typeof("{c.decode()}"), "{c.decode()}"' for c in cols)
            try:
                got = con.execute(f"SELECT _rowid_, {typed} FROM {q}").fetchall()
            except sqlite3.OperationalError:  # WITHOUT ROWID
                got = con.execute(f"SELECT {typed} FROM {q}").fetchall()
            rows[name] = sorted(got, key=repr)
        pragmas = [
            con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("user_version", "application_id")
        ]
        return {"schema": sorted(schema, key=repr), "rows": rows, "pragmas": pragmas}
    finally:
        con.close()


def queries(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """What a user asks the virtual tables: full-text and range queries, with their ranks."""
    con = connect(db)
    try:
        return {
            "match": con.execute(
                "SELECT rowid, title, bm25(docs) FROM docs WHERE docs MATCH 'quick AND fox' "
                "ORDER BY rank, rowid"
            ).fetchall(),
            "phrase": con.execute(
                "SELECT rowid FROM docs WHERE docs MATCH '\"lazy dog\"' ORDER BY rowid"
            ).fetchall(),
            "external": con.execute(
                "SELECT rowid, title FROM posts_fts WHERE posts_fts MATCH 'gamma' ORDER BY rowid"
            ).fetchall(),
            "rtree": con.execute(
                "SELECT id FROM boxes WHERE x0 <= 100 AND x1 >= 100 ORDER BY id"
            ).fetchall(),
            "view": con.execute("SELECT count(*) FROM docs_titles").fetchall(),
            "integrity": con.execute("PRAGMA integrity_check").fetchall(),
        }
    finally:
        con.close()


def backup(sb: SB, db: Path) -> tuple[dict[str, str], dict[str, Any]]:
    env = {"DATABASE_URL": f"sqlite:///{db}"}
    return env, sb.ok("create", "--json", env=env).json()


def restore(sb: SB, env: dict[str, str], backup_id: str, target: Path, *extra: str) -> Result:
    return sb("restore", backup_id, "--target-url", f"sqlite:///{target}", *extra, env=env)


def test_fts5_backup_verifies_restores_and_answers_match_the_same(
    sb: SB, source: Path, tmp_path: Path
) -> None:
    env, rec = backup(sb, source)
    sb.ok("verify", "--deep", rec["id"], env=env)
    target = tmp_path / "restored.db"
    res = restore(sb, env, rec["id"], target, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["status"] == "completed"
    before, after = queries(source), queries(target)
    assert before["match"] and before["external"] and before["rtree"]  # the queries find rows
    assert after == before
    assert after["integrity"] == [(b"ok",)]


def test_restored_schema_and_every_row_equal_the_source(
    sb: SB, source: Path, tmp_path: Path
) -> None:
    env, rec = backup(sb, source)
    target = tmp_path / "restored.db"
    assert restore(sb, env, rec["id"], target).code == 0
    assert snapshot(target) == snapshot(source)


def test_user_version_and_application_id_survive(sb: SB, source: Path, tmp_path: Path) -> None:
    env, rec = backup(sb, source)
    target = tmp_path / "restored.db"
    assert restore(sb, env, rec["id"], target).code == 0
    assert snapshot(target)["pragmas"] == [USER_VERSION, APPLICATION_ID]


def test_names_near_the_reserved_prefix_are_counted_and_restored(
    sb: SB, source: Path, tmp_path: Path
) -> None:
    """``NOT LIKE 'sqlite_%'`` read ``_`` as any character and left ``sqliteusers`` out."""
    env, rec = backup(sb, source)
    tables = rec["contents"]["tables"]
    assert {name: tables.get(name) for name in EDGE_NAMES} == {
        name: n + 1 for n, name in enumerate(EDGE_NAMES)
    }
    assert not [name for name in tables if name.lower().startswith("sqlite_")]
    target = tmp_path / "restored.db"
    assert restore(sb, env, rec["id"], target).code == 0
    for n, name in enumerate(EDGE_NAMES):
        con = connect(target)
        assert con.execute(f'SELECT x FROM "{name}" ORDER BY x').fetchall() == [
            (i,) for i in range(n + 1)
        ]
        con.close()


def test_virtual_tables_are_counted_once_and_shadow_tables_as_tables(sb: SB, source: Path) -> None:
    _, rec = backup(sb, source)
    contents = rec["contents"]
    assert contents["objects"] == {"indexes": 1, "views": 1, "triggers": 1, "virtualTables": 3}
    tables = contents["tables"]
    assert "docs" not in tables and "boxes" not in tables and "posts_fts" not in tables
    assert tables["docs_content"] == 300 - 42  # the multiples of 7 were deleted
    assert tables["boxes_rowid"] == 300 and tables["posts"] == 240


def test_the_drill_passes_and_still_catches_an_edited_row_count(
    sb: SB, source: Path, tmp_path: Path
) -> None:
    env, rec = backup(sb, source)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    drill_args = ("test", "--backup", rec["id"], "--target-url", f"sqlite:///{scratch}/x.db")
    res = sb(*drill_args, "--json", env=env)
    assert res.code == 0, res.out + res.err
    drill = json.loads(res.out)["drill"]
    assert drill["status"] == "passed" and drill["differences"] == []
    assert drill["tables"] == len(rec["contents"]["tables"])
    assert list(scratch.iterdir()) == []

    contents = read_manifest(sb.backup_path, rec["id"])["contents"]
    contents["tables"]["sqliteusers"] = 2
    edit_manifest(sb.backup_path, rec["id"], contents=contents)
    res = sb(*drill_args, "--json", env=env)
    assert res.code == 13, res.out + res.err
    assert json.loads(res.out)["drill"]["differences"] == [
        "table sqliteusers: 2 rows in the backup, 1 restored"
    ]
    assert list(scratch.iterdir()) == []


def leftovers(directory: Path, keep: str) -> list[str]:
    """Everything beside the target but the target (temp files, journals)."""
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


def test_a_restore_that_fails_leaves_the_old_target_byte_identical(
    sb: SB, source: Path, tmp_path: Path
) -> None:
    """A source whose rows break its own schema (a CHECK written in with writable_schema):
    its backup is whole, but replaying it fails at an INSERT, well after the load began."""
    con = sqlite3.connect(source, isolation_level=None)
    con.executescript(
        "CREATE TABLE zz (x); INSERT INTO zz VALUES (1); PRAGMA writable_schema = ON;"
        "UPDATE sqlite_master SET sql = 'CREATE TABLE zz (x CHECK (x < 0))' WHERE name = 'zz';"
    )
    con.close()
    env, rec = backup(sb, source)
    place = tmp_path / "place"
    place.mkdir()
    target = place / "old.db"
    sqlite3.connect(target).executescript("CREATE TABLE old (x); INSERT INTO old VALUES (1);")
    before = target.read_bytes()
    res = restore(sb, env, rec["id"], target, "--clean")
    assert res.code == 3 and "CHECK constraint failed" in res.err, res.err
    assert target.read_bytes() == before
    assert leftovers(place, "old.db") == []


def test_an_exception_from_the_chunks_leaves_the_old_target_and_no_temp_file(
    source: Path, tmp_path: Path
) -> None:
    """The engine itself, fed by an iterator that raises halfway (a storage error, a digest
    that does not match): the statements it ran are rolled back with the temporary file."""
    engine = SQLiteEngine(f"sqlite:///{source}")
    out = io.BytesIO()
    engine.dump("plain", out, row_counts=False)
    data = out.getvalue()
    place = tmp_path / "place"
    place.mkdir()
    target = place / "old.db"
    sqlite3.connect(target).executescript("CREATE TABLE old (x); INSERT INTO old VALUES (1);")
    before = target.read_bytes()

    class Broken(Exception):
        pass

    def chunks() -> Iterator[bytes]:
        yield data[: len(data) // 2]  # statements are executed before the stream breaks
        raise Broken

    request = RestoreRequest(target=f"sqlite:///{target}", clean=True)
    with pytest.raises(Broken):
        engine.restore("plain", chunks(), request)
    assert target.read_bytes() == before
    assert leftovers(place, "old.db") == []

    # The whole dump then replaces the target, and leaves nothing else behind either.
    engine.restore("plain", [data[i : i + 4096] for i in range(0, len(data), 4096)], request)
    assert snapshot(target) == snapshot(source)
    assert leftovers(place, "old.db") == []


def crashed_wal_writer(db: Path) -> None:
    """``db`` as a writer in WAL mode leaves it when it dies: changes still in ``db-wal``."""
    live = db.with_name("live.db")
    con = sqlite3.connect(live, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA wal_autocheckpoint = 0")
    con.executescript("CREATE TABLE old (x); INSERT INTO old VALUES (1);")
    db.write_bytes(live.read_bytes())
    db.with_name(db.name + "-wal").write_bytes(live.with_name("live.db-wal").read_bytes())
    con.close()
    live.unlink()


def test_a_target_with_changes_in_its_wal_is_refused_not_replaced(
    sb: SB, source: Path, tmp_path: Path
) -> None:
    """A new file renamed over a target would take on the target's -wal: SQLite would read
    the old frames over the restored pages (the old table reappears)."""
    env, rec = backup(sb, source)
    place = tmp_path / "place"
    place.mkdir()
    target = place / "old.db"
    crashed_wal_writer(target)
    wal = place / "old.db-wal"
    before = {p.name: p.read_bytes() for p in place.iterdir()}
    res = restore(sb, env, rec["id"], target, "--clean")
    assert res.code == 3 and "old.db-wal holds changes" in res.err, res.err
    assert {p.name: p.read_bytes() for p in place.iterdir()} == before

    # A -wal left by a database since deleted would be read into a new file just the same.
    gone = place / "gone.db"
    wal.rename(place / "gone.db-wal")
    res = restore(sb, env, rec["id"], gone)
    assert res.code == 3 and "gone.db-wal holds changes" in res.err, res.err
    assert not gone.exists()

    # Opened once and closed, the database takes its WAL back; then it can be replaced.
    (place / "gone.db-wal").rename(wal)
    con = sqlite3.connect(target)
    assert con.execute("SELECT name FROM sqlite_master").fetchall() == [("old",)]
    con.close()  # the last connection checkpoints the WAL and removes it
    assert not wal.exists()
    assert restore(sb, env, rec["id"], target, "--clean").code == 0
    assert snapshot(target) == snapshot(source)
    assert leftovers(place, "old.db") == []
