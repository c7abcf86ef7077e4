"""--no-owner / --no-privileges for plain dumps: only top-level owner and privilege
statements leave the stream, whatever names, strings, function bodies or COPY data hold."""

from __future__ import annotations

import pytest

from sbbackup.engines.postgresql.stmtfilter import filter_statements

KEEP_HEAD = b"""--
-- PostgreSQL database dump
--

\\restrict abc123

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

CREATE TABLE public.t (
    x text
);

"""
OWNER = b"ALTER TABLE public.t OWNER TO app;\n"
LO_OWNER = b'ALTER LARGE OBJECT 16397 OWNER TO "App Role";\n'
GRANT = b"GRANT SELECT ON TABLE public.t TO reader;\n"
REVOKE = b"REVOKE ALL ON SCHEMA public FROM PUBLIC;\n"
DEFAULT_ACL = (
    b"ALTER DEFAULT PRIVILEGES FOR ROLE app IN SCHEMA public GRANT SELECT ON TABLES TO reader;\n"
)
# Things that look like owner or privilege statements but are not top-level ones.
COPY = (
    b"COPY public.t (x) FROM stdin;\n"
    b"ALTER TABLE public.t OWNER TO evil;\n"
    b"GRANT ALL ON TABLE public.t TO evil;\n"
    b"\\.\n\n"
)
FUNC = (
    b"CREATE FUNCTION public.f() RETURNS void\n    LANGUAGE sql\n    AS $$\n"
    b"GRANT ALL ON TABLE public.t TO evil;\n"
    b"ALTER TABLE public.t OWNER TO evil;\n$$;\n\n"
)
STRING = b"COMMENT ON TABLE public.t IS 'x\nGRANT ALL ON TABLE public.t TO evil;\n';\n\n"
NOT_OWNER = b"ALTER TABLE ONLY public.t ADD CONSTRAINT \"c OWNER TO app\" CHECK ((x <> 'y'));\n"
QUOTED_TRICK = b'ALTER TABLE public."x OWNER TO y;" RENAME TO z;\n'
NEWLINE_NAME = b'ALTER TABLE public."a\nGRANT ALL ON TABLE b TO c;" OWNER TO app;\n'
TAIL = b"\\unrestrict abc123\n\n--\n-- PostgreSQL database dump complete\n--\n\n"

DUMP = (
    KEEP_HEAD
    + OWNER
    + b"\n"
    + LO_OWNER
    + b"\n"
    + GRANT
    + REVOKE
    + DEFAULT_ACL
    + b"\n"
    + COPY
    + FUNC
    + STRING
    + NOT_OWNER
    + b"\n"
    + QUOTED_TRICK
    + b"\n"
    + NEWLINE_NAME
    + b"\n"
    + TAIL
)


def run(data: bytes, size: int, owner: bool, privileges: bool) -> bytes:
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(filter_statements(chunks, owner=owner, privileges=privileges))


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
def test_owner_and_privilege_statements_leave_in_any_chunking(size: int) -> None:
    out = run(DUMP, size, owner=True, privileges=True)
    for gone in (OWNER, LO_OWNER, GRANT, REVOKE, DEFAULT_ACL, NEWLINE_NAME):
        assert gone not in out, gone
    for kept in (KEEP_HEAD, COPY, FUNC, STRING, NOT_OWNER, QUOTED_TRICK, TAIL):
        assert kept in out, kept
    assert out == DUMP.replace(OWNER, b"").replace(LO_OWNER, b"").replace(GRANT, b"").replace(
        REVOKE, b""
    ).replace(DEFAULT_ACL, b"").replace(NEWLINE_NAME, b"")


@pytest.mark.parametrize("size", [1, 5, 1 << 20])
def test_each_option_alone(size: int) -> None:
    owners_only = run(DUMP, size, owner=True, privileges=False)
    assert OWNER not in owners_only and LO_OWNER not in owners_only
    assert GRANT in owners_only and REVOKE in owners_only and DEFAULT_ACL in owners_only
    privileges_only = run(DUMP, size, owner=False, privileges=True)
    assert OWNER in privileges_only and NEWLINE_NAME in privileges_only
    assert GRANT not in privileges_only and DEFAULT_ACL not in privileges_only
    assert run(DUMP, size, owner=False, privileges=False) == DUMP


def test_a_dump_without_a_final_newline_passes_whole() -> None:
    data = KEEP_HEAD + b"SELECT 1;"
    assert run(data, 3, owner=True, privileges=True) == data
    assert run(OWNER[:-1], 3, owner=True, privileges=True) == OWNER[:-1]  # not a whole one
