"""How a complete plain-format pg_dump ends.

pg_dump writes ``--\\n-- PostgreSQL database dump complete\\n--\\n\\n`` last. Since the minor
releases of August 2025 (17.6, 16.10, 15.14, 14.19, 13.22) it also writes ``\\restrict KEY``
after its header comment and ``\\unrestrict KEY`` after the marker, with one random key per
dump (psql refuses meta-commands in between). A plain dump is complete when the marker is
followed by exactly what pg_dump writes there: the closing ``--`` line, blank lines, and the
``\\unrestrict`` line with the head's key when the head has one (none when it has not).
Anything else after the marker, a cut last line or a key that differs is not a dump pg_dump
finished (``end_problem``).
"""

from __future__ import annotations

import re

COMPLETE_LINE = b"\n-- PostgreSQL database dump complete\n"
RESTRICT_RE = re.compile(rb"\\restrict ([A-Za-z0-9]+)")  # pg_dump takes alphanumeric keys only
TRAILER_RE = re.compile(rb"--\n\n*(?:\\unrestrict ([A-Za-z0-9]+)\n\n*)?")


def restrict_key(head: bytes) -> bytes | None:
    """The key of the ``\\restrict`` line, the first line of the head that is neither blank
    nor a comment; None when that line is something else (pg_dump before August 2025)."""
    for line in head.split(b"\n")[:-1]:  # whole lines only
        if line and not line.startswith(b"--"):
            m = RESTRICT_RE.fullmatch(line)
            return m.group(1) if m else None
    return None


def end_problem(head: bytes, tail: bytes) -> str | None:
    """Why a plain dump with this head and tail is not one pg_dump finished; None if it is."""
    at = tail.rfind(COMPLETE_LINE)
    if at < 0:
        return "the dump is incomplete (no completion marker)"
    m = TRAILER_RE.fullmatch(tail, at + len(COMPLETE_LINE))
    if m is None:
        return "the dump does not end at its completion marker (data after it, or a cut line)"
    key, closing = restrict_key(head), m.group(1)
    if closing == key:
        return None
    if closing is None:
        return "the dump is incomplete (no \\unrestrict line after its completion marker)"
    if key is None:
        return "the dump ends with an \\unrestrict line but starts with no \\restrict line"
    return "the dump's \\unrestrict key is not the key of its \\restrict line"
