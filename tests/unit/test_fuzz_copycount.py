"""Fuzzing the COPY counter: one plain dump fed in any chunk split gives the same counts, a
damaged dump gives the same outcome whatever the split, and random bytes raise nothing but
``CopyStreamError``. (tests/integration/test_copycount.py checks the counts against a real
server; this one needs nothing but Python.)"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sbbackup.engines.postgresql.copycount import CopyCounter, CopyStreamError

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)

# What pg_dump --format=plain writes, with the constructs that could fool a lexer.
DUMP = (
    "--\n-- PostgreSQL database dump\n--\n\n"
    "SET statement_timeout = 0;\nSET standard_conforming_strings = on;\n"
    "SELECT pg_catalog.set_config('search_path', '', false);\n"
    "\\restrict abc123\n"
    "CREATE FUNCTION public.f() RETURNS text\n    LANGUAGE sql\n"
    "    AS $_$ SELECT 'COPY public.fake (a) FROM stdin;' $_$;\n"
    "CREATE FUNCTION public.g() RETURNS integer LANGUAGE sql\nBEGIN ATOMIC\n"
    " SELECT 1;\n SELECT 2;\nEND;\n"
    "COMMENT ON TABLE public.t IS 'it''s a table; COPY public.t FROM stdin;';\n"
    "/* a /* nested */ COPY public.x FROM stdin; */\n"
    'CREATE TABLE public."we;ird ""name""" (a integer);\n'
    "SELECT E'escaped \\' quote; COPY' AS x;\n"
    "COPY public.t (id, name) FROM stdin;\n"
    + "".join(f"{i}\trow {i} with \\\\N and \\t tab\n" for i in range(50))
    + "\\.\n\n"
    'COPY public."we;ird ""name""" (a) FROM stdin;\n1\n\\N\n\\.\n\n'
    'COPY "Schema".empty (a) FROM stdin;\n\\.\n\n'
    "COPY public.crlf (a) FROM stdin;\n1\n2\n3\n\\.\r\n\n"
    "-- COPY public.commented FROM stdin;\n"
    "\\unrestrict abc123\n"
    "--\n-- PostgreSQL database dump complete\n--\n"
).encode()
EXPECTED = {
    ("public", "t"): 50,
    ("public", 'we;ird "name"'): 2,
    ("Schema", "empty"): 0,
    ("public", "crlf"): 3,
}


def outcome(data: bytes, cuts: list[int]) -> dict[tuple[str, str], int] | str:
    """Counts, or the error's class name and message, after feeding ``data`` cut at ``cuts``."""
    counter = CopyCounter()
    prev = 0
    try:
        for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
            counter.feed(data[prev:cut])
            prev = cut
        return counter.finish()
    except CopyStreamError as exc:
        return f"CopyStreamError: {exc.message}"


splits = st.lists(st.integers(min_value=0, max_value=len(DUMP)), max_size=40)


def test_whole_dump_counts() -> None:
    assert outcome(DUMP, []) == EXPECTED


@FUZZ
@given(cuts=splits)
@example(cuts=list(range(len(DUMP))))  # one byte at a time
def test_any_split_gives_the_same_counts(cuts: list[int]) -> None:
    assert outcome(DUMP, cuts) == EXPECTED


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(DUMP)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b"'", b'"', b"$$", b"/*", b"\\.\n", b"COPY a.b FROM stdin;\n"])
                | st.binary(max_size=6)
            )
        else:
            del data[pos : pos + draw(st.integers(1, 20))]
    return bytes(data)


@FUZZ
@given(data=damaged(), cuts=splits)
def test_a_damaged_dump_gives_the_same_outcome_whatever_the_split(
    data: bytes, cuts: list[int]
) -> None:
    assert outcome(data, cuts) == outcome(data, [])


@FUZZ
@given(data=st.binary(max_size=500), cuts=st.lists(st.integers(0, 500), max_size=10))
@example(data=b"COPY public.t (a) FROM stdin;\n\xff\xfe\n", cuts=[])
@example(data=b'COPY "\xff".t (a) FROM stdin;\n\\.\n', cuts=[3])
def test_random_bytes_raise_only_copy_stream_errors(data: bytes, cuts: list[int]) -> None:
    result = outcome(data, cuts)  # anything but CopyStreamError propagates and fails here
    assert result == outcome(data, [])
