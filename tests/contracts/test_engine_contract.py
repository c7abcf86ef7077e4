"""The engine contract: every engine in the registry passes the same tests, through the
``Engine`` Protocol only (``sbbackup.engines.base``).

Each case is a real database: an SQLite file, or a PostgreSQL database of its own on the
session's throwaway cluster, reached through a URL with a password. A new engine joins by
adding one entry to ``CASES`` (a function that seeds a source and says what the engine
promises where the Protocol leaves a choice to it: see ``Promises``).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.pgcluster import PASSWORD, Cluster

from sbbackup.config import load_settings
from sbbackup.engines import (
    DumpResult,
    Engine,
    EngineCheck,
    EngineSettings,
    IncompleteDumpError,
    RestoreRequest,
    compare_contents,
    compare_properties,
    engine_for,
)
from sbbackup.errors import (
    ConfigError,
    DatabaseError,
    IntegrityError,
    InterruptedError_,
    SbbackupError,
    TargetExistsError,
)

CHUNK = 4096  # small, so statements and COPY blocks straddle chunk boundaries

SQLITE_SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT);
CREATE TABLE empty_t (x INTEGER);
CREATE INDEX items_name ON items (name);
CREATE VIEW named AS SELECT name FROM items WHERE note IS NOT NULL;
CREATE TRIGGER items_touch AFTER UPDATE ON items BEGIN SELECT 1; END;
INSERT INTO items (name, note) VALUES ('a', 'x'), ('b', NULL), ('it''s', 'line
break'), ('d', 'tab	here');
"""

PG_SCHEMA = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, note text);
CREATE TABLE empty_t (x int);
CREATE INDEX items_name ON items (name);
CREATE VIEW named AS SELECT name FROM items WHERE note IS NOT NULL;
INSERT INTO items (name, note) VALUES ('a', 'x'), ('b', NULL), ('it''s', E'line\\nbreak'),
  ('d', E'tab\\there');
"""


@dataclass(frozen=True)
class Promises:
    """Where the Protocol leaves the behaviour to the engine, what this one does."""

    # restore(create_target=False) into a target that does not exist: False -> DatabaseError
    # and nothing created; True -> the engine creates it anyway.
    creates_missing_target_anyway: bool
    # restore(clean=False) into an existing *empty* target: True -> loads into it;
    # False -> refuses (DatabaseError) whatever the target holds.
    loads_into_existing_target: bool
    # cancel() then new work: True -> InterruptedError_; False -> cancel is a no-op.
    cancel_refuses_new_work: bool
    # dump() with a format outside ``engine.formats``: True -> ConfigError.
    refuses_unknown_format: bool


@dataclass
class Case:
    """One engine on a seeded source database, and the scratch targets a test made."""

    kind: str
    url: str  # the source, as DATABASE_URL
    alias: str  # the source spelled another way
    password: str | None  # in ``url``; must never come out of the engine
    promises: Promises
    make_engine: Callable[[], Engine]  # a new engine on the same source (nothing cached)
    make_empty: Callable[[str], None]  # create an empty target (outside the Protocol)
    prefix: str = field(default_factory=lambda: "ct" + uuid.uuid4().hex[:6] + "_")
    made: list[str] = field(default_factory=list)
    engine: Engine = field(init=False)

    def __post_init__(self) -> None:
        self.engine = self.make_engine()

    def scratch(self, name: str | None = None) -> str:
        """A scratch target of the drill's shape (prefix + 8 hex digits), or ``name``."""
        target = self.engine.scratch_target(self.prefix + (name or secrets.token_hex(4)), None)
        self.made.append(target)
        return target

    def exists(self, target: str | None) -> bool:
        """Asked of a new engine, so nothing one engine remembers can answer."""
        return self.make_engine().resolve_target(target).exists


def settings_env(url: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}


def make_engine(url: str) -> Engine:
    s = load_settings(env=settings_env(url))
    return engine_for(EngineSettings(s.database_url, s.env, s.lock_wait_timeout))


def sqlite_case(tmp_path: Path) -> Case:
    path = tmp_path / "src" / "app.db"
    path.parent.mkdir()
    con = sqlite3.connect(path)
    con.executescript(SQLITE_SCHEMA)
    con.commit()
    con.close()
    url = f"sqlite:///{path}"

    def make_empty(target: str) -> None:
        sqlite3.connect(target.removeprefix("sqlite:///")).close()  # a 0-byte file

    return Case(
        kind="sqlite",
        url=url,
        alias=f"sqlite:///{path.parent}/../src/./{path.name}",
        password=None,
        promises=Promises(
            creates_missing_target_anyway=True,
            loads_into_existing_target=True,
            cancel_refuses_new_work=False,
            refuses_unknown_format=True,
        ),
        make_engine=lambda: make_engine(url),
        make_empty=make_empty,
    )


def postgresql_case(pg: Cluster, db: str) -> Case:
    pg.psql(PG_SCHEMA, db)
    url = pg.url(db)

    def make_empty(target: str) -> None:
        name = target.rsplit("/", 1)[-1]
        pg.psql(f'CREATE DATABASE "{name}"')

    return Case(
        kind="postgresql",
        url=url,
        alias=db,  # a bare name: a database on the source's server
        password=PASSWORD,
        promises=Promises(
            creates_missing_target_anyway=False,
            loads_into_existing_target=True,
            cancel_refuses_new_work=True,
            refuses_unknown_format=False,
        ),
        make_engine=lambda: make_engine(url),
        make_empty=make_empty,
    )


# What each engine writes; the ``case`` fixture checks it against ``engine.formats``.
FORMATS = {"sqlite": ("plain",), "postgresql": ("plain", "custom")}

# Known defects, as strict xfails: the contract is what should hold; when a fix lands the
# test passes, pytest reports XPASS as a failure, and the entry is removed.
DEFECTS: dict[tuple[str, str, str | None], str] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``case`` runs once per engine; a test that also takes ``fmt`` runs once per format
    the engine writes."""
    if "case" not in metafunc.fixturenames:
        return
    test = metafunc.function.__name__
    if "fmt" in metafunc.fixturenames:
        pairs = [(k, f) for k, fmts in FORMATS.items() for f in fmts]
        params = [pytest.param(k, f, id=f"{k}-{f}", marks=_defect(test, k, f)) for k, f in pairs]
        metafunc.parametrize(("case", "fmt"), params, indirect=["case"])
    else:
        params = [pytest.param(k, id=k, marks=_defect(test, k, None)) for k in FORMATS]
        metafunc.parametrize("case", params, indirect=True)


def _defect(test: str, kind: str, fmt: str | None) -> list[pytest.MarkDecorator]:
    reason = DEFECTS.get((test, kind, fmt))
    return [pytest.mark.xfail(reason=reason, strict=True)] if reason else []


@pytest.fixture
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    if request.param == "sqlite":
        c = sqlite_case(tmp_path)
    else:
        c = postgresql_case(request.getfixturevalue("pg"), request.getfixturevalue("fresh_db"))
    assert c.engine.formats == FORMATS[c.kind]
    yield c
    cleaner = c.make_engine()  # the case's own engine may have been cancelled
    for target in [*c.made, *cleaner.leftover_targets(c.prefix, None)]:
        with contextlib.suppress(SbbackupError):
            cleaner.drop_target(target)


def dump(engine: Engine, fmt: str) -> tuple[bytes, DumpResult]:
    buf = io.BytesIO()
    result = engine.dump(fmt, buf, row_counts=True)
    return buf.getvalue(), result


def chunks(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]


def restore_new(
    engine: Engine, fmt: str, data: bytes, target: str | None, props: Any = None
) -> None:
    request = RestoreRequest(target, create_target=True, must_be_new=True, properties=props)
    engine.restore(fmt, chunks(data), request)


def inventory(case: Case, target: str | None) -> dict[str, Any]:
    """What a restore is compared by, in ``DumpResult.contents``' shape: without the database
    properties an engine may add (those compare with ``DumpResult.database``)."""
    found = case.make_engine().inventory(target)
    found.pop("properties", None)
    return found


# --- dump, restore, inventory -----------------------------------------------------------


def test_dump_then_restore_gives_back_the_dumped_contents(case: Case, fmt: str) -> None:
    engine = case.engine
    assert set(engine.file_extension) == set(engine.formats)
    data, result = dump(engine, fmt)
    assert result.contents is not None
    # Keys are the engine's own spelling: "items" (SQLite), "public.items" (PostgreSQL).
    tables = {k.rsplit(".", 1)[-1]: v for k, v in result.contents["tables"].items()}
    assert tables == {"items": 4, "empty_t": 0}
    assert result.contents["objects"]["views"] == 1
    assert result.contents["objects"]["indexes"] >= 1
    assert compare_contents(result.contents, engine.inventory(None)) == []
    assert result.database["engine"] == engine.name
    target = case.scratch()
    props = result.database.get("properties")
    restore_new(engine, fmt, data, target, props)
    assert engine.resolve_target(target).exists
    restored = inventory(case, target)
    assert compare_contents(result.contents, restored) == []
    assert restored == result.contents  # the same shape, not only no differences
    # An engine that records database properties gives them back (and compares them).
    assert engine.inventory(target).get("properties") == props
    assert compare_properties(props, engine.inventory(target).get("properties")) == []


def test_dump_without_row_counts_has_no_contents(case: Case) -> None:
    buf = io.BytesIO()
    assert case.engine.dump("plain", buf, row_counts=False).contents is None
    case.engine.check_structure("plain", chunks(buf.getvalue()))


def test_a_format_the_engine_does_not_write(case: Case) -> None:
    if case.promises.refuses_unknown_format:
        with pytest.raises(ConfigError):
            case.engine.dump("tar", io.BytesIO(), row_counts=False)
    else:  # the divergence is stated, not hidden: PostgreSQL writes plain for any other name
        data, _ = dump(case.engine, "tar")
        case.engine.check_structure("plain", chunks(data))


# --- check_structure ----------------------------------------------------------------------


def test_check_structure_accepts_a_complete_dump_and_rejects_a_halved_one(
    case: Case, fmt: str
) -> None:
    data, _ = dump(case.engine, fmt)
    case.engine.check_structure(fmt, chunks(data))
    with pytest.raises(IntegrityError):
        case.engine.check_structure(fmt, chunks(data[: len(data) // 2]))


def test_check_structure_rejects_a_dump_missing_its_last_bytes(case: Case, fmt: str) -> None:
    data, _ = dump(case.engine, fmt)
    with pytest.raises(IntegrityError):
        case.engine.check_structure(fmt, chunks(data[:-8]))


def test_check_structure_rejects_a_plain_dump_without_its_marker_as_incomplete(
    case: Case,
) -> None:
    data, _ = dump(case.engine, "plain")
    with pytest.raises(IncompleteDumpError):
        case.engine.check_structure("plain", chunks(data[: len(data) // 2]))


# --- targets --------------------------------------------------------------------------------


def test_resolve_target_says_what_a_target_is(case: Case) -> None:
    engine = case.engine
    source = engine.resolve_target(None)
    assert source.exists and source.is_source
    alias = engine.resolve_target(case.alias)
    assert alias.is_source
    assert alias.key == source.key  # one identity however the target is spelled
    new = engine.resolve_target(case.scratch())
    assert not new.exists and not new.is_source
    assert new.key != source.key


def test_must_be_new_on_an_existing_target_raises_and_leaves_it_untouched(case: Case) -> None:
    engine = case.engine
    data, result = dump(engine, "plain")
    target = case.scratch()
    restore_new(engine, "plain", data, target)
    for where in (target, None):  # a scratch target, and the source itself
        before = inventory(case, where)
        with pytest.raises(TargetExistsError):
            restore_new(case.make_engine(), "plain", data, where)
        assert inventory(case, where) == before == result.contents


def test_restore_into_a_full_target_without_clean_fails_and_keeps_it(case: Case) -> None:
    """Both engines refuse here before loading anything (the target is not empty:
    TargetExistsError, exit 2, naming --clean), and the target keeps exactly what it held."""
    data, result = dump(case.engine, "plain")
    target = case.scratch()
    restore_new(case.engine, "plain", data, target)
    for create in (False, True):
        with pytest.raises(TargetExistsError, match="--clean"):
            case.make_engine().restore(
                "plain", chunks(data), RestoreRequest(target, create_target=create)
            )
        assert inventory(case, target) == result.contents


def test_restore_with_clean_replaces_an_existing_target(case: Case) -> None:
    data, result = dump(case.engine, "plain")
    target = case.scratch()
    restore_new(case.engine, "plain", data, target)
    case.make_engine().restore("plain", chunks(data), RestoreRequest(target, clean=True))
    assert inventory(case, target) == result.contents


def test_restore_into_an_existing_empty_target_without_clean(case: Case) -> None:
    data, result = dump(case.engine, "plain")
    target = case.scratch()
    case.make_empty(target)
    assert case.exists(target)
    restore = case.make_engine().restore
    if case.promises.loads_into_existing_target:
        restore("plain", chunks(data), RestoreRequest(target))
        assert inventory(case, target) == result.contents
    else:
        with pytest.raises(DatabaseError):
            restore("plain", chunks(data), RestoreRequest(target))
        assert inventory(case, target)["tables"] == {}  # still empty: nothing half-restored


def test_restore_into_a_missing_target_without_create_target(case: Case) -> None:
    data, result = dump(case.engine, "plain")
    target = case.scratch()
    restore = case.make_engine().restore
    if case.promises.creates_missing_target_anyway:
        restore("plain", chunks(data), RestoreRequest(target))
        assert inventory(case, target) == result.contents
    else:
        with pytest.raises(DatabaseError):
            restore("plain", chunks(data), RestoreRequest(target))
        assert not case.exists(target)


def test_a_failing_restore_leaves_no_created_target_behind(case: Case, fmt: str) -> None:
    data, _ = dump(case.engine, fmt)
    target = case.scratch()
    with pytest.raises(DatabaseError):
        restore_new(case.make_engine(), fmt, corrupted(fmt, data), target)
    assert not case.exists(target)
    assert case.make_engine().leftover_targets(case.prefix, None) == []


def test_a_dump_cut_at_a_statement_boundary_is_not_restored(case: Case, fmt: str) -> None:
    """The Protocol says "atomically where the format allows": a dump without its
    completion marker should load nothing."""
    data, _ = dump(case.engine, fmt)
    cut = data.index(b"CREATE VIEW")  # after the tables and their rows, between statements
    target = case.scratch()
    with contextlib.suppress(SbbackupError):
        restore_new(case.make_engine(), fmt, data[:cut], target)
    assert not case.exists(target)


def corrupted(fmt: str, data: bytes) -> bytes:
    """A dump that fails to load: a statement no engine accepts halfway through (plain), or
    a custom archive cut in the middle of its data."""
    if fmt == "plain":
        cut = data.index(b"\n", len(data) // 2) + 1
        return data[:cut] + b"THIS IS NOT SQL;\n" + data[cut:]
    return data[: len(data) // 2]


def test_drop_target_removes_a_scratch_target(case: Case) -> None:
    data, _ = dump(case.engine, "plain")
    target = case.scratch()
    restore_new(case.engine, "plain", data, target)
    assert case.exists(target)
    case.make_engine().drop_target(target)
    assert not case.exists(target)
    case.make_engine().drop_target(target)  # dropping a missing one is fine


def test_resolve_target_is_current_after_a_drop(case: Case) -> None:
    """One engine lives as long as ``sbbackup serve``: what it says of a target must not go
    stale after its own drop."""
    data, _ = dump(case.engine, "plain")
    target = case.scratch()
    restore_new(case.engine, "plain", data, target)
    assert case.engine.resolve_target(target).exists
    case.engine.drop_target(target)
    assert not case.engine.resolve_target(target).exists


def test_leftover_targets_lists_only_names_of_the_scratch_shape(case: Case) -> None:
    data, _ = dump(case.engine, "plain")
    scratch = sorted(case.scratch() for _ in range(2))
    others = [case.scratch(n) for n in ("notscratch", "abcdef0", "abcdef012", "ABCDEF01")]
    for target in [*scratch, *others]:
        restore_new(case.engine, "plain", data, target)
    assert sorted(case.make_engine().leftover_targets(case.prefix, None)) == scratch
    assert case.engine.leftover_targets(case.prefix + "nomatch", None) == []


# --- redaction, cancel, checks ----------------------------------------------------------------


def test_redact_never_shows_a_password(case: Case) -> None:
    engine = case.engine
    target = engine.scratch_target(case.prefix + "00000000", case.url)  # beside the URL
    shown = [
        str(engine.describe()),
        engine.check().source,
        engine.resolve_target(None).display,
        engine.resolve_target(case.url).display,
        engine.resolve_target(target).display,
    ]
    if case.password is None:  # SQLite: a path has no credential to hide
        assert "@" not in case.url
        assert engine.describe()["url"] == case.url
    else:
        assert case.password in case.url and case.password in target
        for text in shown:
            assert case.password not in text, text
    assert engine.describe()["engine"] == engine.name


def test_cancel_then_new_work(case: Case) -> None:
    data, result = dump(case.engine, "plain")
    engine = case.make_engine()
    engine.cancel()
    target = case.scratch()
    if case.promises.cancel_refuses_new_work:
        with pytest.raises(InterruptedError_):
            dump(engine, "plain")
        with pytest.raises(InterruptedError_):
            engine.inventory(None)
        with pytest.raises(InterruptedError_):
            restore_new(engine, "plain", data, target)
        assert not case.exists(target)
    else:  # SQLite: cancel() is a no-op (it runs in-process); work goes on
        assert dump(engine, "plain")[1].contents == result.contents
        restore_new(engine, "plain", data, target)
        assert inventory(case, target) == result.contents


def test_check_tools_and_size(case: Case) -> None:
    engine = case.engine
    checked = engine.check()
    assert isinstance(checked, EngineCheck)
    assert checked.server_version and checked.unreachable is None
    assert checked.source == engine.resolve_target(None).display
    if checked.tools:  # an engine with client tools compares them with the server
        assert checked.server_major is not None
        assert all(v for v in checked.tools.values())
    else:
        assert checked.server_major is None
    assert engine.size_estimate() > 0


def test_check_reports_a_source_that_does_not_answer(case: Case, tmp_path: Path) -> None:
    """The tools are still checked; why the source did not answer is said, not raised."""
    gone = make_engine(unreachable_url(case, tmp_path))
    checked = gone.check()
    assert checked.server_version is None and checked.server_major is None
    assert checked.unreachable
    if case.password is not None:
        assert case.password not in checked.unreachable
        assert case.password not in checked.source
    with pytest.raises(DatabaseError):  # and what needs it says so
        gone.inventory(None)


def unreachable_url(case: Case, tmp_path: Path) -> str:
    """The case's source URL pointed at nothing: a missing file, a closed port."""
    if case.kind == "sqlite":
        return f"sqlite:///{tmp_path / 'missing' / 'app.db'}"
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    head, _, rest = case.url.partition("@")
    return f"{head}@127.0.0.1:{port}/{rest.rsplit('/', 1)[-1]}"
