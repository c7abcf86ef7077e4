"""Integrity of what an engine reads back: a dump that is not whole is refused (exit 13) and
never commits, whether ``check_structure`` reads it or ``restore`` loads it.

Real databases only: a PostgreSQL database of its own on the session's cluster (``fresh_db``)
and SQLite files under ``tmp_path``. "No committed data" is asserted on a target that exists
before the restore (so dropping a created target cannot hide a commit).
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.pgcluster import Cluster
from hypothesis import given
from hypothesis import strategies as st

from sbbackup.config import load_settings
from sbbackup.engines import Engine, EngineSettings, IncompleteDumpError, RestoreRequest, engine_for
from sbbackup.engines.base import HEAD_SIZE, held_back
from sbbackup.engines.postgresql.trailer import end_problem, restrict_key
from sbbackup.errors import ExitCode, IntegrityError, SbbackupError

CHUNK = 4096

PG_SCHEMA = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE notes (id int, body text);
CREATE VIEW named AS SELECT name FROM items;
INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 3000) g;
INSERT INTO notes SELECT g, repeat('n', 50) FROM generate_series(1, 500) g;
"""

SQLITE_SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE VIEW named AS SELECT name FROM items;
"""

COMPLETE = b"\n-- PostgreSQL database dump complete\n"


def make_engine(url: str) -> Engine:
    env = {"DATABASE_URL": url, "PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}
    s = load_settings(env=env)
    return engine_for(EngineSettings(s.database_url, s.env, s.lock_wait_timeout))


def chunks(data: bytes, size: int = CHUNK) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def then_raise(data: bytes) -> Iterator[bytes]:
    """The whole good dump, then the error a caller's digest check raises at the end."""
    yield from chunks(data)
    raise IntegrityError("checksum mismatch (raised by the stream at its end)")


# --- the pure parts: held_back and pg_dump's end --------------------------------------------


@given(st.binary(max_size=3000), st.lists(st.integers(1, 700), min_size=1), st.integers(1, 900))
def test_held_back_passes_everything_on_and_sees_the_head_and_tail(
    data: bytes, sizes: list[int], tail: int
) -> None:
    pieces, at = [], 0
    while at < len(data):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(data[at : at + size])
        at += size
    seen: list[tuple[bytes, bytes]] = []
    out = held_back(pieces, lambda h, t: seen.append((h, t)), tail_size=tail)
    assert b"".join(out) == data
    assert seen == [(data[:HEAD_SIZE], data[-tail:] if len(data) > tail else data)]


def test_held_back_holds_the_tail_until_the_rule_accepts() -> None:
    data = b"x" * 100 + b"END"
    got: list[bytes] = []
    with pytest.raises(IncompleteDumpError, match="no end"):
        for piece in held_back(chunks(data, 10), lambda h, t: "no end", tail_size=8):
            got.append(piece)
    assert b"".join(got) == data[:-8]  # the last 8 bytes never went on


KEY = b"Abc123"
HEAD = b"--\n-- PostgreSQL database dump\n--\n\n\\restrict Abc123\n\n-- Dumped from\nSET x;\n"
BODY = b"CREATE TABLE t (a int);\n\n\n--"
END = COMPLETE + b"--\n\n"


@pytest.mark.parametrize(
    ("head", "tail", "problem"),
    [
        (HEAD, BODY + END + b"\\unrestrict Abc123\n\n", None),
        (HEAD, BODY + END + b"\\unrestrict Abc123\n", None),  # blank lines are blank lines
        (b"--\n-- PostgreSQL database dump\n--\n\nSET x;\n", BODY + END, None),  # before 15.14
        (HEAD, BODY + END + b"\\unrestrict Abc12", "cut line"),
        (HEAD, BODY + END + b"\\unrestrict Abc123", "cut line"),
        (HEAD, BODY + END + b"\\unrestrict Abc124\n\n", "not the key"),
        (HEAD, BODY + END + b"\\unrestrict Abc1234\n\n", "not the key"),
        (HEAD, BODY + END, "no \\\\unrestrict line"),
        (HEAD, BODY + COMPLETE, "cut line"),
        (HEAD, BODY + COMPLETE[:-5], "no completion marker"),
        (HEAD, BODY, "no completion marker"),
        (HEAD, BODY + END + b"\\unrestrict Abc123\n\nSELECT 1;\n", "data after it"),
        (HEAD, BODY + END + b"SELECT 1;\n\\unrestrict Abc123\n\n", "data after it"),
        (HEAD, BODY + END + b"\\unrestrict Abc123\n\n\\unrestrict Abc123\n\n", "data after it"),
        (HEAD, BODY + END + b"\\unrestrict Abc123 \n\n", "data after it"),
        (b"--\nSET x;\n", BODY + END + b"\\unrestrict Abc123\n\n", "no \\\\restrict line"),
    ],
)
def test_end_problem(head: bytes, tail: bytes, problem: str | None) -> None:
    got = end_problem(head, tail)
    if problem is None:
        assert got is None
    else:
        assert got is not None and re.search(problem, got), got


def test_restrict_key_is_the_first_line_that_is_no_comment() -> None:
    assert restrict_key(HEAD) == KEY
    assert restrict_key(b"--\n\nSET x;\n\\restrict Abc123\n") is None
    assert restrict_key(b"--\n\n\\restrict Abc123") is None  # not a whole line yet
    assert restrict_key(b"--\n\n\\restrict Ab;c\n") is None


# --- PostgreSQL ------------------------------------------------------------------------------


class PgCase:
    """A seeded source database, its engine, and empty targets made outside the engine."""

    def __init__(self, pg: Cluster, db: str) -> None:
        self.pg, self.db = pg, db
        pg.psql(PG_SCHEMA, db)
        self.engine = make_engine(pg.url(db))
        self.targets: list[str] = []

    def dump(self, fmt: str) -> bytes:
        buf = io.BytesIO()
        self.engine.dump(fmt, buf, row_counts=False)
        return buf.getvalue()

    def empty_target(self) -> str:
        name = "ti_" + uuid.uuid4().hex[:10]
        self.pg.psql(f"CREATE DATABASE {name}")
        self.targets.append(name)
        return name

    def tables(self, target: str) -> dict[str, int]:
        tables: dict[str, int] = make_engine(self.pg.url(self.db)).inventory(target)["tables"]
        return tables

    def drop(self) -> None:
        for name in self.targets:
            self.pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", check=False)


@pytest.fixture
def pgc(pg: Cluster, fresh_db: str) -> Iterator[PgCase]:
    c = PgCase(pg, fresh_db)
    yield c
    c.drop()


def _key(data: bytes) -> bytes:
    m = re.search(rb"\n\\restrict ([A-Za-z0-9]+)\n", data[:HEAD_SIZE])
    assert m, "pg_dump 15.14+ writes \\restrict KEY (the cluster's pg_dump is older?)"
    return m.group(1)


def _other_key(data: bytes) -> bytes:
    key = _key(data)
    return data.replace(b"\\unrestrict " + key, b"\\unrestrict " + key[::-1].swapcase())


def _cut_after_marker(data: bytes) -> bytes:
    return data[: data.rindex(COMPLETE) + len(COMPLETE) + len(b"--\n\n")]


BAD_PLAIN: dict[str, Callable[[bytes], bytes]] = {
    "halved": lambda d: d[: len(d) // 2],
    "cut inside a COPY block": lambda d: d[: d.index(b"\\.\n") - 20],
    "cut between statements": lambda d: d[: d.index(b"CREATE VIEW")],
    "cut just before the marker": lambda d: d[: d.rindex(COMPLETE)],
    "cut after the marker, before \\unrestrict": _cut_after_marker,
    "cut inside the \\unrestrict line": lambda d: d[:-8],
    "a statement after the marker": lambda d: d + b"DROP TABLE public.items;\n",
    "a line between the marker and \\unrestrict": lambda d: d.replace(
        b"--\n\n\\unrestrict ", b"--\n\nSELECT 1;\n\\unrestrict "
    ),
    "a mismatched \\unrestrict key": _other_key,
    "appended garbage": lambda d: d + os.urandom(300),
}


@pytest.mark.parametrize("damage", list(BAD_PLAIN), ids=list(BAD_PLAIN))
def test_a_damaged_plain_dump_is_refused_and_commits_nothing(pgc: PgCase, damage: str) -> None:
    data = pgc.dump("plain")
    bad = BAD_PLAIN[damage](data)
    assert bad != data
    with pytest.raises(IncompleteDumpError) as checked:
        pgc.engine.check_structure("plain", chunks(bad))
    assert checked.value.exit_code == ExitCode.INTEGRITY
    target = pgc.empty_target()
    with pytest.raises(IntegrityError) as restored:
        pgc.engine.restore("plain", chunks(bad), RestoreRequest(target))
    assert restored.value.exit_code == ExitCode.INTEGRITY
    assert "\n" not in restored.value.message
    assert pgc.tables(target) == {}


def test_a_whole_plain_dump_restores_in_any_chunking(pgc: PgCase) -> None:
    data = pgc.dump("plain")
    for size in (1 << 20, 4096, 97):
        pgc.engine.check_structure("plain", chunks(data, size))
        target = pgc.empty_target()
        pgc.engine.restore("plain", chunks(data, size), RestoreRequest(target))
        assert pgc.tables(target) == {"public.items": 3000, "public.notes": 500}


def test_a_plain_dump_of_an_older_pg_dump_is_whole(pgc: PgCase) -> None:
    """pg_dump before 15.14 writes neither \\restrict nor \\unrestrict."""
    data = pgc.dump("plain")
    key = _key(data)
    old = data.replace(b"\\restrict " + key + b"\n\n", b"").replace(
        b"\\unrestrict " + key + b"\n\n", b""
    )
    assert b"restrict" not in old[:HEAD_SIZE] and old.endswith(COMPLETE + b"--\n\n")
    pgc.engine.check_structure("plain", chunks(old))
    target = pgc.empty_target()
    pgc.engine.restore("plain", chunks(old), RestoreRequest(target))
    assert pgc.tables(target)["public.items"] == 3000
    with pytest.raises(IncompleteDumpError):  # and its \unrestrict alone does not belong
        pgc.engine.check_structure("plain", chunks(old + b"\\unrestrict " + key + b"\n\n"))


BAD_CUSTOM: dict[str, Callable[[bytes], bytes]] = {
    "halved": lambda d: d[: len(d) // 2],
    "cut inside the table of contents": lambda d: d[: d.index(b"CREATE VIEW")],
    "the last byte missing": lambda d: d[:-1],
    "the last 8 bytes missing": lambda d: d[:-8],
    "cut inside the last data block": lambda d: d[:-40],
}


@pytest.mark.parametrize("damage", list(BAD_CUSTOM), ids=list(BAD_CUSTOM))
def test_a_truncated_custom_archive_is_refused_and_commits_nothing(
    pgc: PgCase, damage: str
) -> None:
    bad = BAD_CUSTOM[damage](pgc.dump("custom"))
    with pytest.raises(IntegrityError) as checked:
        pgc.engine.check_structure("custom", chunks(bad))
    assert checked.value.exit_code == ExitCode.INTEGRITY
    one = pgc.empty_target()
    with pytest.raises(SbbackupError):  # pg_restore's own error (exit 3) in one transaction
        pgc.engine.restore("custom", chunks(bad), RestoreRequest(one))
    assert pgc.tables(one) == {}
    parallel = pgc.empty_target()
    with pytest.raises(IntegrityError):  # read through before a load that is not atomic
        pgc.engine.restore("custom", chunks(bad), RestoreRequest(parallel, jobs=2))
    assert pgc.tables(parallel) == {}


def test_a_whole_custom_archive_restores_in_one_and_in_parallel(pgc: PgCase) -> None:
    data = pgc.dump("custom")
    pgc.engine.check_structure("custom", chunks(data))
    for jobs in (1, 2):
        target = pgc.empty_target()
        pgc.engine.restore("custom", chunks(data), RestoreRequest(target, jobs=jobs))
        assert pgc.tables(target) == {"public.items": 3000, "public.notes": 500}


@pytest.mark.parametrize(("fmt", "jobs"), [("plain", 1), ("custom", 1), ("custom", 2)])
def test_a_stream_that_raises_at_its_end_commits_nothing(pgc: PgCase, fmt: str, jobs: int) -> None:
    """The loader got every byte of a good dump, then the stream failed (the caller's digest):
    it is killed, never given EOF (psql) or the archive's last block (pg_restore)."""
    data = pgc.dump(fmt)
    target = pgc.empty_target()
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        pgc.engine.restore(fmt, then_raise(data), RestoreRequest(target, jobs=jobs))
    assert pgc.tables(target) == {}


def test_a_refused_restore_drops_the_target_it_created(pgc: PgCase) -> None:
    bad = BAD_PLAIN["cut between statements"](pgc.dump("plain"))
    target = "ti_" + uuid.uuid4().hex[:10]
    pgc.targets.append(target)
    request = RestoreRequest(target, create_target=True, must_be_new=True)
    with pytest.raises(IntegrityError):
        pgc.engine.restore("plain", chunks(bad), request)
    assert not make_engine(pgc.pg.url(pgc.db)).resolve_target(target).exists


# --- SQLite ----------------------------------------------------------------------------------


@pytest.fixture
def lite(tmp_path: Path) -> Engine:
    path = tmp_path / "app.db"
    con = sqlite3.connect(path)
    con.executescript(SQLITE_SCHEMA)
    con.executemany("INSERT INTO items (name) VALUES (?)", [(f"item {i}",) for i in range(3000)])
    con.commit()
    con.close()
    return make_engine(f"sqlite:///{path}")


BAD_SQLITE: dict[str, Callable[[bytes], bytes]] = {
    "halved": lambda d: d[: len(d) // 2],
    "cut between statements": lambda d: d[: d.index(b"CREATE VIEW")],
    "cut before the last COMMIT": lambda d: d[: d.rindex(b"COMMIT;")],
    "cut inside the marker": lambda d: d[:-8],
    "a statement after the marker": lambda d: d + b"DROP TABLE items;\n",
    "appended garbage": lambda d: d + b"\x00" + os.urandom(300),
}


@pytest.mark.parametrize("damage", list(BAD_SQLITE), ids=list(BAD_SQLITE))
def test_a_damaged_sqlite_dump_is_refused_and_replaces_nothing(
    lite: Engine, tmp_path: Path, damage: str
) -> None:
    buf = io.BytesIO()
    lite.dump("plain", buf, row_counts=False)
    bad = BAD_SQLITE[damage](buf.getvalue())
    with pytest.raises(IncompleteDumpError):
        lite.check_structure("plain", chunks(bad))
    new = tmp_path / "new.db"
    with pytest.raises(IntegrityError):
        lite.restore("plain", chunks(bad), RestoreRequest(str(new)))
    assert not new.exists()
    old = _sqlite_target(tmp_path / "old.db")
    with pytest.raises(IntegrityError):
        lite.restore("plain", chunks(bad), RestoreRequest(str(old), clean=True))
    assert lite.inventory(str(old))["tables"] == {"kept": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db", "old.db"]  # no temp left


def test_a_sqlite_stream_that_raises_at_its_end_replaces_nothing(
    lite: Engine, tmp_path: Path
) -> None:
    buf = io.BytesIO()
    lite.dump("plain", buf, row_counts=False)
    old = _sqlite_target(tmp_path / "old.db")
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        lite.restore("plain", then_raise(buf.getvalue()), RestoreRequest(str(old), clean=True))
    assert lite.inventory(str(old))["tables"] == {"kept": 1}
    lite.restore("plain", chunks(buf.getvalue()), RestoreRequest(str(old), clean=True))
    assert lite.inventory(str(old))["tables"] == {"items": 3000}


def _sqlite_target(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE kept (x); INSERT INTO kept VALUES (1);")
    con.close()
    return path
