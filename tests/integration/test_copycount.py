"""CopyCounter: row counts taken from a plain pg_dump stream.

Three kinds of evidence:
- real pg_dump output of a database built to confuse a lexer, compared with count(*) on
  every table and with what psql itself restores from the same dump;
- hypothesis: synthetic dumps quoted the way pg_dump quotes, split anywhere; random SQL
  soup whose outcome must not depend on chunk boundaries or on the fast paths;
- table-driven cases for each construct of psqlscan.l and for every error.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg
import pytest
from helpers.pgcluster import Cluster
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg import sql

from sbbackup.engines.postgresql.copycount import (
    MAX_HEADER,
    MAX_TOKEN,
    CopyCounter,
    CopyStreamError,
)
from sbbackup.errors import ExitCode, IntegrityError

FAKE = "COPY public.t (a) FROM stdin;\n1\n2\n\\.\n"
Counts = dict[tuple[str, str], int]


def count(dump: bytes, sizes: Iterable[int] | None = None, cuts: Iterable[int] = ()) -> Counts:
    """Feed ``dump`` in pieces of ``sizes`` (cycled) or cut at ``cuts``; return finish()."""
    counter = CopyCounter()
    for piece in pieces(dump, sizes, cuts):
        counter.feed(piece)
    return counter.finish()


def pieces(dump: bytes, sizes: Iterable[int] | None, cuts: Iterable[int]) -> Iterator[bytes]:
    if sizes is not None:
        sizes = list(sizes)
        pos, i = 0, 0
        while pos < len(dump):
            n = sizes[i % len(sizes)]
            yield dump[pos : pos + n]
            pos, i = pos + n, i + 1
        return
    prev = 0
    for cut in sorted(set(cuts)):
        yield dump[prev:cut]
        prev = cut
    yield dump[prev:]


def outcome(dump: bytes, **kw: object) -> object:
    try:
        return count(dump, **kw)  # type: ignore[arg-type]
    except CopyStreamError:
        return CopyStreamError


# --- real pg_dump ---------------------------------------------------------------------

LONG = "é" * 31 + "x"  # 63 bytes, the longest name PostgreSQL keeps
assert len(LONG.encode()) == 63
SCHEMAS = ['we"ird;\n\\.\nschema', "ünï©ødé 🐘", "MixedCase", LONG, "public"]
TABLES = [
    "t) FROM stdin;\n\\.\n",
    'a"b\\!c',
    "tab\x1fsep%s%%",
    "Upper",
    "1starts_with_digit",
    "\\.",
    ";",
    " ",
    '"',
    "copy",
    "stdin",
    "from",
    LONG,
    "\r\ncr",
    "$$",
    "plain_name",
]
COLUMNS = ["id", ") FROM stdin;", "\\.", 'a"b', "\n", "%s", "from", LONG]
VALUES = [
    "line1\nline2",
    "tab\there",
    "back\\slash",
    "x\n\\.\ny",
    "\\.",
    "\\.\n",
    "",
    None,
    "\r\n",
    FAKE,
    "é🐘\x1f",
]


def connect(pg: Cluster, db: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host=str(pg.sockdir),
        port=pg.port,
        user="postgres",
        dbname=db,
        autocommit=True,
    )


def build_pathological(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    ident = sql.Identifier
    conn.execute("SET check_function_bodies = off")
    n = 0
    for schema in SCHEMAS:
        if schema != "public":
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(schema)))
        for table in TABLES:
            n += 1
            cols = sql.SQL(", ").join(
                sql.SQL("{} text").format(ident(c)) if c != "id" else sql.SQL("id int")
                for c in COLUMNS
            )
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(ident(schema, table), cols))
            rows = n % 7  # a different count per table, so swapped names would show
            for r in range(rows):
                vals = [r] + [VALUES[(r + k + n) % len(VALUES)] for k in range(len(COLUMNS) - 1)]
                # literals, not parameters: with parameters psycopg would read the %s in
                # a quoted name as a placeholder
                conn.execute(
                    sql.SQL("INSERT INTO {} VALUES ({})").format(
                        ident(schema, table), sql.SQL(", ").join(map(sql.Literal, vals))
                    )
                )
    q = ident(SCHEMAS[0])
    statements = [
        # a table with no columns dumps its rows as empty lines; an empty table
        sql.SQL("CREATE TABLE {}.{} ()").format(q, ident("no columns")),
        sql.SQL("INSERT INTO {}.{} DEFAULT VALUES").format(q, ident("no columns")),
        sql.SQL("INSERT INTO {}.{} DEFAULT VALUES").format(q, ident("no columns")),
        sql.SQL("INSERT INTO {}.{} DEFAULT VALUES").format(q, ident("no columns")),
        sql.SQL("CREATE TABLE {}.{} ()").format(q, ident("empty no columns")),
        sql.SQL("CREATE TABLE public.empty (a int, b text)"),
        # a bigger table, so rows cross every chunk boundary
        sql.SQL(
            "CREATE TABLE public.big AS SELECT g AS id, repeat(chr(92) || 'x' || chr(10), g % 5) "
            "|| {} AS t FROM generate_series(1, 1000) g"
        ).format(sql.Literal(FAKE)),
        # text that looks like COPY data in a function body, a comment, a default, a LO
        sql.SQL("CREATE FUNCTION public.fake() RETURNS void LANGUAGE plpgsql AS {}").format(
            sql.Literal("\n" + FAKE + "$$ $_$ $__$ E'\\' ' \" /* -- \n" + FAKE)
        ),
        sql.SQL(
            "CREATE FUNCTION public.atomic(a text) RETURNS text LANGUAGE sql BEGIN ATOMIC "
            "SELECT a || {} || (CASE WHEN a = ';' THEN 'end;' ELSE 'begin;' END); "
            "SELECT {}; END"
        ).format(sql.Literal(FAKE), sql.Literal(";" + FAKE)),
        sql.SQL("COMMENT ON TABLE public.empty IS {}").format(sql.Literal(FAKE + "'; \\.")),
        sql.SQL("COMMENT ON COLUMN public.empty.b IS {}").format(sql.Literal("*/ " + FAKE)),
        sql.SQL("ALTER TABLE public.empty ALTER COLUMN b SET DEFAULT {}").format(sql.Literal(FAKE)),
        sql.SQL("SELECT lo_from_bytea(0, convert_to({}, 'UTF8'))").format(sql.Literal(FAKE)),
        sql.SQL("SELECT lo_from_bytea(0, '\\x00ff5c2e0a'::bytea)"),
        # partitions: the leaves get COPY blocks, the parent does not
        sql.SQL("CREATE TABLE public.parts (k int, v text) PARTITION BY RANGE (k)"),
        sql.SQL(
            "CREATE TABLE public.parts_lo PARTITION OF public.parts FOR VALUES FROM (0) TO (10)"
        ),
        sql.SQL(
            "CREATE TABLE {}.{} PARTITION OF public.parts FOR VALUES FROM (10) TO (100)"
        ).format(q, ident("parts hi;\n")),
        sql.SQL("INSERT INTO public.parts SELECT g, {} FROM generate_series(0, 40) g").format(
            sql.Literal(FAKE)
        ),
        # inheritance: each table's COPY holds only its own rows
        sql.SQL("CREATE TABLE public.parent (a int)"),
        sql.SQL("CREATE TABLE public.child (b text) INHERITS (public.parent)"),
        sql.SQL("INSERT INTO public.parent SELECT generate_series(1, 4)"),
        sql.SQL("INSERT INTO public.child SELECT 1, 'c' FROM generate_series(1, 6)"),
        # a materialized view: REFRESH in the dump, no COPY
        sql.SQL("CREATE MATERIALIZED VIEW public.mv AS SELECT * FROM public.big"),
        sql.SQL("CREATE VIEW {}.{} AS SELECT {} AS x").format(
            q, ident("view;\\."), sql.Literal(FAKE)
        ),
        sql.SQL("CREATE SEQUENCE {}.{}").format(q, ident("seq\n\\.")),
    ]
    for statement in statements:
        conn.execute(statement)


def table_counts(conn: psycopg.Connection[tuple[object, ...]]) -> Counts:
    """count(*) of every ordinary table, composed with sql.Identifier."""
    tables = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname <> 'information_schema'"
        " AND n.nspname NOT LIKE 'pg\\_%'"
    ).fetchall()
    result: Counts = {}
    for schema, table in tables:
        assert isinstance(schema, str) and isinstance(table, str)
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(schema, table))
        ).fetchone()
        assert row is not None
        result[(schema, table)] = int(row[0])  # type: ignore[call-overload]
    return result


@pytest.fixture(scope="module")
def pathological(pg: Cluster) -> Iterator[tuple[bytes, Counts, Cluster]]:
    db = "cc_" + uuid.uuid4().hex[:10]
    pg.psql(f"CREATE DATABASE {db}")
    try:
        with connect(pg, db) as conn:
            build_pathological(conn)
            expected = table_counts(conn)
        dump = subprocess.run(
            ["pg_dump", "--format=plain", "-d", db],
            env=pg.env(),
            capture_output=True,
            check=True,
        ).stdout
        yield dump, expected, pg
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", check=False)


def test_the_pathological_dump_is_what_it_claims(
    pathological: tuple[bytes, Counts, Cluster],
) -> None:
    dump, expected, _ = pathological
    assert dump.startswith(b"--") and b"\n\\restrict " in dump and b"\n\\unrestrict " in dump
    assert len(expected) == len(SCHEMAS) * len(TABLES) + 8
    assert expected[("public", "big")] == 1000 and expected[(SCHEMAS[0], "no columns")] == 3
    assert b"\nCOPY public.t (a) FROM stdin;\n" in dump  # the function body, verbatim
    assert b"lo_open" in dump and b"REFRESH MATERIALIZED VIEW public.mv;" in dump
    assert b"COPY public.parts " not in dump and b"COPY public.mv " not in dump
    assert b'COPY "we""ird;\n\\.\nschema"."no columns"  FROM stdin;\n\n\n\n\\.\n' in dump


@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096, 65536, None])
def test_real_dump_counts_match_count_star(
    pathological: tuple[bytes, Counts, Cluster], size: int | None
) -> None:
    dump, expected, _ = pathological
    got = count(dump, sizes=[size or len(dump)])
    assert got == expected
    assert ("public", "parts") not in got and ("public", "mv") not in got
    assert ("public", "t") not in got  # only ever named inside quotes


def test_psql_restores_the_same_counts(
    pathological: tuple[bytes, Counts, Cluster], tmp_path: Path
) -> None:
    """psql is the reference: restoring the dump gives the tables and rows the counter saw."""
    dump, _, pg = pathological
    db = "ccr_" + uuid.uuid4().hex[:10]
    path = tmp_path / "dump.sql"
    path.write_bytes(dump)
    pg.psql(f"CREATE DATABASE {db}")
    try:
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-f", str(path)],
            env=pg.env(),
            capture_output=True,
            check=True,
        )
        with connect(pg, db) as conn:
            restored = table_counts(conn)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", check=False)
    assert restored == count(dump)


def test_real_dump_with_memoryview_chunks_of_a_reused_buffer(
    pathological: tuple[bytes, Counts, Cluster],
) -> None:
    """The way pipeline.pump_fd hands blocks on: views of one buffer it overwrites."""
    dump, expected, _ = pathological
    counter = CopyCounter()
    buf = bytearray(5000)
    view = memoryview(buf)
    for i in range(0, len(dump), 4999):
        part = dump[i : i + 4999]
        buf[: len(part)] = part
        counter.feed(view[: len(part)])
        buf[:] = b"\\" * len(buf)  # the counter must not keep a reference
    assert counter.finish() == expected


def test_a_function_named_begin_swallows_the_rest_as_in_psql(pg: Cluster, tmp_path: Path) -> None:
    """psql's BEGIN ATOMIC heuristic sees BEGIN in `CREATE FUNCTION public.begin()` and never
    ends that statement, so psql itself cannot restore such a dump (PostgreSQL 15.18). The
    counter follows psql and finds no COPY; the caller must compare with the catalog."""
    db = "ccb_" + uuid.uuid4().hex[:10]
    pg.psql(f"CREATE DATABASE {db}")
    try:
        with connect(pg, db) as conn:
            conn.execute("CREATE FUNCTION public.begin() RETURNS int LANGUAGE sql AS 'SELECT 1'")
            conn.execute("CREATE TABLE public.zt AS SELECT generate_series(1, 3) AS a")
        dump = subprocess.run(
            ["pg_dump", "--format=plain", "-d", db],
            env=pg.env(),
            capture_output=True,
            check=True,
        ).stdout
        path = tmp_path / "dump.sql"
        path.write_bytes(dump)
        pg.psql(f"CREATE DATABASE {db}_r")
        restore = subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", f"{db}_r", "-f", str(path)],
            env=pg.env(),
            capture_output=True,
            text=True,
        )
        with connect(pg, f"{db}_r") as conn:
            restored = table_counts(conn)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", check=False)
        pg.psql(f"DROP DATABASE IF EXISTS {db}_r WITH (FORCE)", check=False)
    assert b"CREATE FUNCTION public.begin()" in dump and b"COPY public.zt (a) FROM stdin;" in dump
    assert restore.returncode != 0, restore.stderr  # psql read the COPY data as SQL...
    assert restored == count(dump) == {}  # ... and so did the counter


# --- synthetic dumps, quoted the way pg_dump quotes -------------------------------------

RESERVED = {"from", "select", "table", "where", "order", "user", "all", "and", "or", "end"}


def fmt_id(name: str) -> str:
    """PostgreSQL's fmtId: bare when lower-case letters, digits, underscores (not first
    digit) and not a reserved word; otherwise double-quoted with "" escapes."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


_COPY_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
)


def copy_row(values: list[str | None]) -> str:
    """A row in COPY text format, as COPY TO writes it."""
    return "\t".join("\\N" if v is None else v.translate(_COPY_ESCAPES) for v in values) + "\n"


def dollar_quote(body: str) -> str:
    """pg_dump's appendStringLiteralDQ: $$, then $_$, $_X$ ... until absent from the body."""
    suffixes, i, delim = "_XXXXXXX", 0, "$"
    while delim in body:
        delim += suffixes[i]
        i = (i + 1) % len(suffixes)
    return f"{delim}${body}{delim}$"


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def e_literal(text: str) -> str:
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def noise(text: str) -> str:
    """SQL that pg_dump might write between tables, every piece carrying ``text``."""
    comment = text.replace("*/", "* /").replace("/*", "/ *")
    return (
        f"--\n-- Name: {text.replace(chr(10), ' ').replace(chr(13), ' ')}; Type: TABLE\n--\n\n"
        f"CREATE FUNCTION public.f() RETURNS text\n    LANGUAGE sql\n"
        f"    AS {dollar_quote(text)};\n\n"
        f"COMMENT ON TABLE public.x IS {literal(text)};\n"
        f"SELECT {e_literal(text)}\n -- continued\n {e_literal(text)[1:]}, {e_literal(text)},"
        f" {fmt_id(text)} /* {comment} /* {comment} */ */;\n"
        f"CREATE FUNCTION public.g() RETURNS text LANGUAGE sql\n    BEGIN ATOMIC\n"
        f" SELECT {literal(text)}::text;\n SELECT (CASE WHEN true THEN 1 END);\nEND;\n\n"
    )


names = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=63,
)
tricky = st.lists(
    st.sampled_from(list("ab_Z9\"\\.;() \n\r\t\x1f$'-/*:é🐘") + ["copy", " FROM stdin;", "\\."]),
    min_size=1,
    max_size=12,
).map("".join)
identifiers = (
    st.one_of(names, tricky).map(lambda s: s.encode()[:63].decode(errors="ignore")).filter(bool)
)
values = st.one_of(
    st.none(),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=30),
    st.sampled_from(VALUES[:-1]),
)


@st.composite
def synthetic_dumps(draw: st.DrawFn) -> tuple[bytes, Counts, list[tuple[int, int]]]:
    """A dump, its counts, and for each COPY block the offsets of "COPY" and of its "\\."."""
    tables = draw(
        st.lists(
            st.tuples(identifiers, identifiers, st.lists(identifiers, max_size=4)),
            max_size=6,
            unique_by=lambda t: (t[0], t[1]),
        )
    )
    parts = [
        "--\n-- PostgreSQL database dump\n--\n\n\\restrict Zq9\n\n"
        "SET standard_conforming_strings = on;\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\n\n"
    ]
    expected: Counts = {}
    spans: list[tuple[int, int]] = []
    for schema, table, columns in tables:
        rows = draw(
            st.lists(st.lists(values, min_size=len(columns), max_size=len(columns)), max_size=8)
        )
        parts.append(noise(draw(tricky) + FAKE + draw(identifiers)))
        cols = " (" + ", ".join(fmt_id(c) for c in columns) + ")" if columns else " "
        start = len("".join(parts).encode())
        parts.append(f"COPY {fmt_id(schema)}.{fmt_id(table)}{cols} FROM stdin;\n")
        parts.extend(copy_row(r) for r in rows)
        spans.append((start, len("".join(parts).encode())))
        parts.append("\\.\n\n\n")
        expected[(schema, table)] = len(rows)
    parts.append("\\unrestrict Zq9\n\n")
    return "".join(parts).encode(), expected, spans


Synthetic = tuple[bytes, Counts, list[tuple[int, int]]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(synthetic_dumps(), st.data())
def test_synthetic_dumps_split_anywhere(case: Synthetic, data: st.DataObject) -> None:
    dump, expected, _ = case
    cuts = data.draw(st.lists(st.integers(0, len(dump)), max_size=40))
    assert count(dump, cuts=cuts) == expected
    assert count(dump, sizes=[data.draw(st.integers(1, 9))]) == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(synthetic_dumps(), st.data())
def test_a_dump_cut_inside_a_copy_block_raises(case: Synthetic, data: st.DataObject) -> None:
    dump, _, spans = case
    assume(spans)
    start, end = data.draw(st.sampled_from(spans))
    assert dump[start : start + 5] == b"COPY " and dump[end : end + 3] == b"\\.\n"
    # from "COPY" (already a header) to the backslash of "\." (the block not ended yet)
    cut = data.draw(st.integers(start + 4, end + 1))
    with pytest.raises(CopyStreamError, match="the dump ends inside"):
        count(dump[:cut], cuts=data.draw(st.lists(st.integers(0, cut), max_size=5)))


ATOMS = [
    "COPY ", "copy", "public", ".", '"t"', "(", ")", "a", ", ", " FROM stdin;\n", ";", "\n", "\r",
    " ", "\t", "'", "''", "E'", "e", "\\", "\\'", "\\.", "\\.\n", "\\.\r\n", "$$", "$a$", "$", "$1",
    "--", "/*", "*/", '"', '""', "-", "/", "*", ":", "::", ":'v'", ":v", "U&'", "u&\"", "N'",
    "1e", "BEGIN", "END", "CASE", "CREATE ", "FUNCTION ", "OR REPLACE ", "PROCEDURE ", "\\;",
    "\\restrict k\n", "x", "é", "🐘", "x" * 70,
]  # fmt: skip
# whole constructs, so that soups hold COPY blocks, quotes and function bodies often
MOLECULES = [
    "COPY public.t (a) FROM stdin;\n", 'COPY "s"."u"  FROM stdin;\n', "1\n", "\\.\n", "\n\\.\n",
    "\n", ";\n", "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC ", "END;\n",
    "E'a''b\\'", "E'\\''", "'x;y'", '"q;\\."', "$$ ; $$", "/* ; */", "-- ;\n", "\\connect x\n",
    *(f"COPY s.t{i} (a) FROM stdin;\n" + "1\n" * (i % 3) + "\\.\n" for i in range(12)),
]  # fmt: skip
soups = st.lists(st.one_of(st.sampled_from(ATOMS), st.sampled_from(MOLECULES)), max_size=60).map(
    "".join
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(soups, st.data())
def test_outcome_does_not_depend_on_chunk_boundaries(soup: str, data: st.DataObject) -> None:
    dump = soup.encode()
    whole = outcome(dump)
    assert outcome(dump, sizes=[1]) == whole
    assert outcome(dump, cuts=data.draw(st.lists(st.integers(0, len(dump)), max_size=12))) == whole


class _NoFastPaths(CopyCounter):
    """The same lexer with the fast runs switched off: every token goes one by one."""

    def _skip(self, run: object, data: bytes | bytearray, pos: int, end: int) -> int:
        return pos


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(soups)
def test_fast_paths_change_nothing(soup: str) -> None:
    dump = soup.encode()
    slow = _NoFastPaths()
    try:
        slow.feed(dump)
        expected: object = slow.finish()
    except CopyStreamError:
        expected = CopyStreamError
    assert outcome(dump) == expected


# --- table-driven cases -------------------------------------------------------------------

HEAD = "\\restrict abc\nSET standard_conforming_strings = on;\n"

T = "COPY public.t (a) FROM stdin;\n"  # a COPY header
END = "\\.\n"  # the end of a COPY block
PT = ("public", "t")
FN = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC "

CASES: list[tuple[str, str, Counts]] = [
    ("plain", "COPY public.t (a, b) FROM stdin;\n1\tx\n2\ty\n" + END, {PT: 2}),
    ("empty table", T + END, {PT: 0}),
    ("no columns", "COPY public.t  FROM stdin;\n\n\n\n" + END, {PT: 3}),
    ("upper case folds", "copy Public.T (a) from STDIN;\n1\n" + END, {PT: 1}),
    (
        "quoted names",
        'COPY "a""b;\n\\."."x) FROM stdin;" ("\\.", ") FROM stdin;") FROM stdin;\n1\t2\n' + END,
        {('a"b;\n\\.', "x) FROM stdin;"): 1},
    ),
    ("no space", 'COPY"s"."t"("a")FROM stdin ;  \r\n1\n' + END, {("s", "t"): 1}),
    ("comment before", "-- x\n/* y /* z */ */ " + T + "1\n" + END, {PT: 1}),
    ("CR LF terminator", T + "1\r\n\\.\r\n", {PT: 1}),
    ("terminator at EOF", T + "1\n\\.", {PT: 1}),
    ("rows that start with \\.", T + "\\.x\n\\\\.\n" + END, {PT: 2}),
    ("string", f"SELECT '{FAKE}';\n", {}),
    ("doubled quote", f"SELECT 'it''s {FAKE}';\n", {}),
    ("E string", f"SELECT E'\\' {FAKE}';\n", {}),
    ("E string doubled quote", f"SELECT E'a''b\\' {FAKE}';\n", {}),
    ("E string continued", f"SELECT E'a'\n  -- c\n'\\' {FAKE}';\n", {}),
    ("E string not continued", "SELECT E'a' '\\';\n" + T + "1\n" + END, {PT: 1}),
    ("plain string keeps backslash", "SELECT '\\';\n" + T + END, {PT: 0}),
    ("not an E prefix", "SELECT xe'\\';\n" + T + END, {PT: 0}),
    ("psql variable is not an E prefix", "SELECT :e'\\';\n" + T + END, {PT: 0}),
    ("longer psql variable", "SELECT :ve'\\';\n" + T + END, {PT: 0}),
    ("number junk is not an E prefix", "SELECT 1e'\\';\n" + T + END, {PT: 0}),  # as psql 15
    ("U& string", f"SELECT U&'\\0041 {FAKE}';\n", {}),
    ("quoted identifier", f'SELECT 1 AS "{FAKE}";\n', {}),
    ("dollar quote", f"SELECT $$ {FAKE} $$;\n", {}),
    ("tagged dollar quote", f"SELECT $f$ $$ {FAKE} $f$;\n", {}),
    ("dollar in identifier", "SELECT a$$ FROM t;\n" + T + END, {PT: 0}),
    ("line comment", f"-- {FAKE.splitlines()[0]}\n", {}),
    ("nested block comment", f"/* /* */ {FAKE} */ SELECT 1;\n", {}),
    ("parenthesis keeps the statement", f"SELECT (1;\n{FAKE});\n", {}),
    ("BEGIN ATOMIC body", FN + f"SELECT 1;\n{FAKE}END;\n" + T + END, {PT: 0}),
    (
        "OR REPLACE PROCEDURE",
        f"CREATE OR REPLACE PROCEDURE p() BEGIN ATOMIC SELECT 1;\n{FAKE}END;\n",
        {},
    ),
    ("CASE in BEGIN ATOMIC", FN + f"SELECT CASE WHEN true THEN 1 END;\n{FAKE}END;\n", {}),
    ("CASE in parentheses", FN + f"SELECT (CASE WHEN true THEN 1 END);\n{FAKE}END;\n", {}),
    ("backslash semicolon in BEGIN ATOMIC", FN + "SELECT 1 \\; SELECT 2; END;\n" + T + END, {}),
    ("unbalanced parenthesis", "SELECT 1);\n" + T + END, {PT: 0}),
    ("unbalanced parenthesis first", ") SELECT 1;\n" + T + END, {PT: 0}),
    (
        "BEGIN in parentheses",
        "CREATE FUNCTION f(begin int) RETURNS int RETURN 1;\n" + T + END,
        {PT: 0},
    ),
    ("BEGIN outside CREATE FUNCTION", "BEGIN;\n" + T + END + "COMMIT;\n", {PT: 0}),
    ("COPY not first", "SELECT 1 " + T + "1\n" + END, {}),
    ("meta-command", "\\connect - x;y\n" + T + "1\n" + END, {PT: 1}),
    ("meta-command mid-line", "SELECT 1 \\gset ;COPY\n;\n" + T + END, {PT: 0}),
    ("backslash semicolon", "SELECT 1 \\; " + T + "1\n" + END, {PT: 1}),
    (
        "two tables",
        "COPY a.b (x) FROM stdin;\n1\n\\.\nCOPY a.c (x) FROM stdin;\n1\n2\n" + END,
        {("a", "b"): 1, ("a", "c"): 2},
    ),
    (
        "quotes in data are data",
        T + "'\n\"\n$$\n/*\n" + END + "COPY public.u (a) FROM stdin;\n" + END,
        {PT: 4, ("public", "u"): 0},
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_cases(name: str, text: str, expected: Counts) -> None:
    dump = (HEAD + text).encode()
    for size in (1, 2, 3, 5, len(dump)):
        assert count(dump, sizes=[size]) == expected, size


BT, BEND = T.encode(), END.encode()

ERRORS: list[tuple[str, bytes, str]] = [
    ("ends in data", BT + b"1\n", "ends inside the COPY data of 'public'.'t' after 1 rows"),
    ("ends at the backslash", BT + b"1\n\\", "ends inside the COPY data"),
    ("ends in header", b'COPY public."t;', "ends inside a COPY header"),
    ("ends after the semicolon", BT[:-1], "ends inside a COPY header"),
    ("ends in string", b"SELECT 'abc", "ends inside a quoted string"),
    ("ends in E string", b"SELECT E'abc\\", "ends inside a quoted string"),
    ("ends in identifier", b'SELECT "abc', "ends inside a quoted identifier"),
    ("ends in dollar quote", b"SELECT $x$ abc $x", "ends inside a dollar-quoted string"),
    ("ends in comment", b"/* /* */", "ends inside a /* comment"),
    ("COPY TO", b"COPY public.t (a) TO stdout;\n", "not a COPY schema.table"),
    ("COPY query", b"COPY (SELECT 1) TO stdout;\n", "not a COPY schema.table"),
    ("unqualified", b"COPY t (a) FROM stdin;\n", "not a COPY schema.table"),
    ("from a file", b"COPY public.t FROM '/etc/passwd';\n", "not a COPY schema.table"),
    ("options", b"COPY public.t FROM stdin WITH (FORMAT csv);\n", "not a COPY schema.table"),
    ("glued name", b"COPY public.tFROM stdin;\n", "not a COPY schema.table"),
    ("text after the semicolon", BT[:-1] + b" SELECT 1;\n", "not followed by the end of the line"),
    (
        "two blocks",
        BT + BEND + b'COPY "public"."t" (b) FROM stdin;\n' + BEND,
        "two COPY blocks for 'public'.'t'",
    ),
    ("not UTF-8", b'COPY public."\xff" (a) FROM stdin;\n' + BEND, "not valid utf-8"),
]


@pytest.mark.parametrize(("name", "dump", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(name: str, dump: bytes, message: str) -> None:
    for size in (1, 3, len(dump)):
        with pytest.raises(CopyStreamError, match=re.escape(message)) as info:
            count(dump, sizes=[size])
    assert isinstance(info.value, IntegrityError)
    assert info.value.exit_code == ExitCode.INTEGRITY
    assert "\n" not in info.value.message


def test_a_header_over_the_bound_raises_before_it_is_all_read() -> None:
    counter = CopyCounter()
    counter.feed(b'COPY public.t ("')
    block = b"x" * (1 << 20)
    with pytest.raises(CopyStreamError, match="COPY header is longer than 4 MiB"):
        for _ in range(MAX_HEADER // len(block) + 1):
            counter.feed(block)


def test_a_wide_header_within_the_bound_is_fine() -> None:
    """1600 columns of 63 bytes, quoted, is ~200 KiB: well inside the bound."""
    cols = ", ".join('"' + f"{i:04d}" + "é" * 29 + '"' for i in range(1600))
    dump = f"COPY public.wide ({cols}) FROM stdin;\n1\n2\n\\.\n".encode()
    assert len(dump) > 100_000
    assert count(dump, sizes=[1]) == count(dump) == {("public", "wide"): 2}


def test_an_unquoted_token_over_the_bound_raises() -> None:
    counter = CopyCounter()
    with pytest.raises(CopyStreamError, match="unquoted token longer than 4 MiB"):
        for _ in range(MAX_TOKEN // (1 << 20) + 2):
            counter.feed(b"x" * (1 << 20))


def test_memory_stays_flat_across_a_long_copy_block() -> None:
    """Whatever the block size, nothing is carried between chunks but a few bytes."""
    counter = CopyCounter()
    counter.feed(b"COPY public.t (a) FROM stdin;\n")
    row = b"1\tsome text\t\\N\n"
    for i in range(2000):
        counter.feed(row * 50 + (b"\n\\" if i % 2 == 0 else b""))
        assert len(counter._carry) <= 3
    counter.feed(b"\\.\n")
    assert counter.finish() == {("public", "t"): 2000 * 50 + 1000}


def test_bytearray_and_memoryview_inputs() -> None:
    dump = (HEAD + "COPY public.t (a) FROM stdin;\n1\n2\n\\.\n").encode()
    backing = bytearray(b"#" + dump + b"#")
    for feed in (
        [bytearray(dump)],
        [memoryview(dump)],
        [memoryview(backing)[1:-1]],
        [memoryview(bytearray(dump))[i : i + 3] for i in range(0, len(dump), 3)],
    ):
        counter = CopyCounter()
        for part in feed:
            counter.feed(part)
        assert counter.finish() == {("public", "t"): 2}


def test_an_error_is_for_good() -> None:
    """After a CopyStreamError no later call hands out (partial) counts."""
    counter = CopyCounter()
    counter.feed(BT + BEND)
    with pytest.raises(CopyStreamError, match="two COPY blocks"):
        counter.feed(BT)
    for call in (lambda: counter.feed(BEND), counter.finish):
        with pytest.raises(CopyStreamError, match="two COPY blocks"):
            call()
    truncated = CopyCounter()
    truncated.feed(BT + b"1\n")
    for _ in range(2):
        with pytest.raises(CopyStreamError, match="ends inside the COPY data"):
            truncated.finish()


def test_finish_is_final() -> None:
    counter = CopyCounter()
    counter.feed(b"COPY public.t (a) FROM stdin;\n1\n\\.\n")
    assert counter.finish() == counter.finish() == {("public", "t"): 1}
    with pytest.raises(RuntimeError):
        counter.feed(b"")


def test_encoding_of_names() -> None:
    dump = 'COPY public."café" (a) FROM stdin;\n\\.\n'
    counter = CopyCounter(encoding="latin-1")
    counter.feed(dump.encode("latin-1"))
    assert counter.finish() == {("public", "café"): 0}
